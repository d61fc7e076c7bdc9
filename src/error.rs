//! Exit codes, and the errors that carry them.
//!
//! Every failure reaches `main` as an [`anyhow::Error`] and is printed on one line. Its exit code
//! comes from the first [`Coded`] error in its chain; an error without one exits with
//! [`Exit::Failure`]. The codes are part of amprof's interface (README, man page): scripts rely on
//! them, so they never change meaning.

use std::fmt;

/// amprof's exit codes. With `record -- COMMAND`, amprof exits with the command's status instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Success = 0,
    /// Anything else went wrong (I/O, the kernel refused the eBPF program, a bug).
    Failure = 1,
    /// Bad command line: unknown flag, bad value, conflicting options.
    Usage = 2,
    /// The input capture is missing, unreadable, corrupt, foreign or from a newer amprof.
    BadInput = 3,
    /// Not privileged enough to load eBPF programs (root, or CAP_BPF + CAP_PERFMON).
    NoPermission = 4,
    /// A push failed for at least one window (the summary says which).
    PushFailed = 5,
    /// A target process does not exist, or the command could not be started.
    NoTarget = 6,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// An error that decides amprof's exit code.
#[derive(Debug)]
pub struct Coded {
    pub exit: Exit,
    pub message: String,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

/// An error with exit code `exit`.
pub fn coded(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        exit,
        message: message.into(),
    })
}

/// A bad command-line value.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    coded(Exit::Usage, message)
}

/// A bad input file.
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    coded(Exit::BadInput, message)
}

/// The exit code for `error`.
pub fn exit_of(error: &anyhow::Error) -> Exit {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Coded>())
        .map_or(Exit::Failure, |coded| coded.exit)
}
