//! The command line, in one place: every flag and value parser, the conversion to the plain
//! options and configurations the library takes (nothing below `cli` sees clap), and what each
//! command prints when it is done. `main` parses ([`parse`]) and runs ([`run`]); the man pages and
//! shell completions in `man/` and `completions/` are generated from these definitions, and the
//! exit codes from [`crate::error::Exit`] (`tests/fast/docs.rs` keeps them all current).
//!
//! - [`record`], [`report`], [`push`], [`check`]: one module per command;
//! - [`values`]: durations, sizes, window lists.

pub mod check;
pub mod progress;
pub mod push;
pub mod record;
pub mod report;
pub mod values;

use std::ffi::OsString;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::error::{Exit, exit_codes_help};

/// amprof: an on-demand eBPF CPU profiler for Linux.
///
/// `record` samples on-CPU stacks into a ring of time windows and writes a capture file;
/// `report` turns a capture into a summary, a flamegraph, folded stacks, perf.data or pprof;
/// `push` sends its windows as profiles to Datadog or an OpenTelemetry (OTLP) endpoint.
#[derive(Debug, Parser)]
#[command(name = "amprof", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per run: boxing the push settings would buy nothing"
)]
pub enum Command {
    Record(record::RecordArgs),
    Report(report::ReportArgs),
    Push(push::PushArgs),
    Check(check::CheckArgs),
}

impl Cli {
    /// The clap command, with what derive attributes cannot say (the generated exit codes).
    pub fn command_with_help() -> clap::Command {
        Cli::command().after_long_help(exit_codes_help())
    }
}

/// Parses `args` (the program's name first). `push --to X` is read as `push X`, the form of
/// earlier versions.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, clap::Error> {
    let args = with_push_target(args);
    let mut command = Cli::command_with_help();
    let matches = command
        .try_get_matches_from_mut(&args)
        .map_err(|error| misplaced_push_flag(&command, &args, error))?;
    Cli::from_arg_matches(&matches)
}

/// A flag of one push destination given to the other: say so, rather than that it is unknown.
fn misplaced_push_flag(
    command: &clap::Command,
    args: &[OsString],
    error: clap::Error,
) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let given = match (error.kind(), error.get(ContextKind::InvalidArg)) {
        (ErrorKind::UnknownArgument, Some(ContextValue::String(flag))) => flag.clone(),
        _ => return error,
    };
    let (Some(push), Some(to)) = (args.get(1), args.get(2)) else {
        return error;
    };
    let other = match to.to_str() {
        Some("datadog") if push == "push" => "otlp",
        Some("otlp") if push == "push" => "datadog",
        _ => return error,
    };
    let name = given.split('=').next().unwrap_or(&given);
    let known = command
        .find_subcommand("push")
        .and_then(|push| push.find_subcommand(other))
        .is_some_and(|other| {
            other.get_arguments().any(|arg| {
                arg.get_long()
                    .is_some_and(|long| name == format!("--{long}"))
                    || arg
                        .get_short()
                        .is_some_and(|short| name == format!("-{short}"))
            })
        });
    if !known {
        return error;
    }
    clap::Error::raw(
        ErrorKind::ArgumentConflict,
        format!("{name} applies to --to {other} only\n"),
    )
}

/// `args` with `push ... --to X ...` (or `--to=X`) as `push X ...`.
fn with_push_target(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    // The subcommand is the first argument after the program's name (amprof has no global
    // options but --help and --version).
    if args.get(1).is_none_or(|a| a != "push") {
        return args;
    }
    let position = args
        .iter()
        .skip(2)
        .position(|a| a == "--to" || a.to_str().is_some_and(|a| a.starts_with("--to=")));
    let Some(i) = position.map(|p| p + 2) else {
        return args;
    };
    let (value, len) = if args[i] == "--to" {
        (args.get(i + 1).cloned(), 2)
    } else {
        let flag = args[i].to_string_lossy();
        (Some(OsString::from(&flag["--to=".len()..])), 1)
    };
    match value {
        Some(value) if value == "datadog" || value == "otlp" => {
            args.drain(i..i + len);
            args.insert(2, value);
        }
        // Anything else: clap says what is wrong with it, before any other flag.
        Some(value) => {
            args.truncate(2);
            args.extend([OsString::from("--to"), value]);
        }
        None => {}
    }
    args
}

/// Runs the command; the exit code on success (a recorded command's own).
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Record(args) => record::run(args),
        Command::Report(args) => report::run(args).map(|()| Exit::Success.code()),
        Command::Push(args) => push::run(args).map(|()| Exit::Success.code()),
        Command::Check(args) => check::run(args),
    }
}

/// A command-line error on one line: clap's message and tips, without the usage block (the
/// message already names the flag; `--help` has the rest).
pub fn one_line(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let mut parts: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line.trim_start_matches("error: ").to_string());
        }
    }
    parts.join(" ")
}

/// `one` or `many`, as `n` asks (for the lines `record` and `push` print).
fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn the_cli_is_consistent() {
        Cli::command_with_help().debug_assert();
    }

    #[test]
    fn push_to_is_the_subcommand() {
        assert_eq!(
            with_push_target(args("amprof push -i x --to datadog --env prod")),
            args("amprof push datadog -i x --env prod")
        );
        assert_eq!(
            with_push_target(args("amprof push --to=otlp")),
            args("amprof push otlp")
        );
        assert_eq!(
            with_push_target(args("amprof report --to x")),
            args("amprof report --to x")
        );
        assert!(parse(args("amprof push --to datadog --endpoint http://x")).is_err());
        assert!(parse(args("amprof push otlp --max-request-size 1MiB")).is_ok());
        assert!(parse(args("amprof push --to datadog --max-request-size 1MiB")).is_err());
    }
}
