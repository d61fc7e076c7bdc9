//! Exit codes, and the errors that carry them.
//!
//! Every failure reaches `main` as an [`anyhow::Error`] and is printed on one line. Its exit code
//! comes from the first [`Coded`] error in its chain; an error without one exits with
//! [`Exit::Failure`]. The codes are part of amprof's interface: scripts rely on them, so they
//! never change meaning. [`Exit::ALL`] is the one table of them: `amprof --help`, the man page
//! and the README's table are generated from it (a test keeps the README's in step).

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
    /// Every exit code, in order.
    pub const ALL: [Exit; 7] = [
        Exit::Success,
        Exit::Failure,
        Exit::Usage,
        Exit::BadInput,
        Exit::NoPermission,
        Exit::PushFailed,
        Exit::NoTarget,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    /// What the code means, as the help and the README say it.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Failure => "failure (I/O, the kernel refused the eBPF program, ...)",
            Exit::Usage => "bad command line (unknown flag, bad value)",
            Exit::BadInput => "bad input capture (missing, corrupt, foreign, newer format version)",
            Exit::NoPermission => {
                "not privileged enough to load eBPF (root, or CAP_BPF + CAP_PERFMON)"
            }
            Exit::PushFailed => "a push failed for at least one window",
            Exit::NoTarget => {
                "a target process does not exist, or the command could not be started"
            }
        }
    }
}

/// What `record -- COMMAND` exits with instead.
pub const COMMAND_EXIT: &str =
    "With `record -- COMMAND`, amprof exits with the command's exit code (128 + signal if killed).";

/// The exit codes as `amprof --help` lists them.
pub fn exit_codes_help() -> String {
    let mut text = String::from("Exit codes:\n");
    for exit in Exit::ALL {
        text.push_str(&format!("  {}  {}\n", exit.code(), exit.meaning()));
    }
    text.push_str("  ");
    text.push_str(COMMAND_EXIT);
    text
}

/// The exit codes as the README's table.
pub fn exit_codes_markdown() -> String {
    let mut text = String::from("| code | meaning |\n| --- | --- |\n");
    for exit in Exit::ALL {
        text.push_str(&format!("| {} | {} |\n", exit.code(), exit.meaning()));
    }
    text.push('\n');
    text.push_str(COMMAND_EXIT);
    text.push('\n');
    text
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
