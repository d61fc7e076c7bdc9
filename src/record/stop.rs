//! Why and when a recording stops, decided from what the sampling loop sees at each poll; kept
//! apart from the loop so that the rules (which reason wins, where the last window ends) are
//! tested without root.

use std::time::Duration;

use serde::Serialize;

/// Why a recording stopped: the capture's end record and `record --json`'s `stopped_by` give
/// its [`StopReason::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// `--duration` ran out.
    Duration,
    /// Ctrl-C, SIGTERM or SIGHUP.
    Signal,
    /// The writer failed (its error is the recording's).
    Error,
    /// In command mode, the command exited.
    CommandExited,
    /// With `--pid`, every target exited.
    TargetsExited,
}

impl StopReason {
    pub fn name(self) -> &'static str {
        match self {
            Self::Duration => "duration",
            Self::Signal => "signal",
            Self::Error => "error",
            Self::CommandExited => "command-exited",
            Self::TargetsExited => "targets-exited",
        }
    }
}

/// A stop decided: why, and the monotonic ns where the recording ends (samples taken after it
/// are dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped {
    pub reason: StopReason,
    pub end_ns: u64,
}

/// What the loop sees at one poll. The command and targets are looked at only when nothing
/// before them stops the recording (each look is a system call).
pub struct Poll<C, T> {
    pub now_ns: u64,
    pub signalled: bool,
    pub writer_failed: bool,
    /// True once the command has exited (command mode).
    pub command_exited: C,
    /// True once every `--pid` target has exited (false without targets).
    pub targets_gone: T,
}

/// Whether to stop, and where the recording ends. The order is the rule: a `--duration` past
/// its end wins (and ends at the duration, not at the late poll that saw it, so a recording is
/// never longer than asked for), then a signal, a failed writer, the command, the targets.
pub fn check<C: FnOnce() -> bool, T: FnOnce() -> bool>(
    deadline_ns: Option<u64>,
    poll: Poll<C, T>,
) -> Option<Stopped> {
    let now = poll.now_ns;
    let stop = |reason, end_ns| Some(Stopped { reason, end_ns });
    if let Some(deadline) = deadline_ns.filter(|&d| now >= d) {
        stop(StopReason::Duration, deadline)
    } else if poll.signalled {
        stop(StopReason::Signal, now)
    } else if poll.writer_failed {
        stop(StopReason::Error, now)
    } else if (poll.command_exited)() {
        stop(StopReason::CommandExited, now)
    } else if (poll.targets_gone)() {
        stop(StopReason::TargetsExited, now)
    } else {
        None
    }
}

/// How long the writer may still name windows after a stop: only a signal hurries it (the user
/// wants out, within [`super::STOP_WITHIN`]); other ends take the time naming needs.
pub fn naming_budget(reason: StopReason) -> Option<Duration> {
    (reason == StopReason::Signal).then_some(super::SYMBOLIZE_AFTER_STOP)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(now_ns: u64, signalled: bool, command: bool, targets: bool) -> Option<Stopped> {
        check(
            Some(1_000),
            Poll {
                now_ns,
                signalled,
                writer_failed: false,
                command_exited: || command,
                targets_gone: || targets,
            },
        )
    }

    #[test]
    fn a_duration_ends_where_it_was_asked_to_not_at_the_late_poll() {
        let stopped = poll(1_070, true, true, false).expect("past the deadline");
        assert_eq!(stopped.reason, StopReason::Duration);
        assert_eq!(stopped.end_ns, 1_000);
    }

    #[test]
    fn before_the_deadline_a_signal_wins_over_an_exited_command() {
        let stopped = poll(500, true, true, true).expect("a signal");
        assert_eq!(
            stopped,
            Stopped {
                reason: StopReason::Signal,
                end_ns: 500
            }
        );
        assert_eq!(
            poll(500, false, true, true).map(|s| s.reason),
            Some(StopReason::CommandExited)
        );
        assert_eq!(
            poll(500, false, false, true).map(|s| s.reason),
            Some(StopReason::TargetsExited)
        );
        assert_eq!(poll(500, false, false, false), None);
    }

    #[test]
    fn a_failed_writer_stops_before_the_command_is_looked_at() {
        let stopped = check(
            None,
            Poll {
                now_ns: 7,
                signalled: false,
                writer_failed: true,
                command_exited: || panic!("not looked at"),
                targets_gone: || panic!("not looked at"),
            },
        );
        assert_eq!(stopped.map(|s| s.reason), Some(StopReason::Error));
    }

    #[test]
    fn only_a_signal_hurries_the_naming_of_the_last_windows() {
        assert!(naming_budget(StopReason::Signal).is_some());
        for reason in [
            StopReason::Duration,
            StopReason::Error,
            StopReason::CommandExited,
            StopReason::TargetsExited,
        ] {
            assert_eq!(naming_budget(reason), None);
        }
    }

    #[test]
    fn reasons_serialize_as_their_names() {
        for reason in [StopReason::CommandExited, StopReason::Signal] {
            let json = serde_json::to_string(&reason).expect("serializes");
            assert_eq!(json, format!("\"{}\"", reason.name()));
        }
    }
}
