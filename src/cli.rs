//! The command line, defined once: `main` parses it, and the man pages and shell completions in
//! `man/` and `completions/` are generated from it (`tests/cli_docs.rs` keeps them current).

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    record::{CallGraph, DEFAULT_STACK_SIZE},
    report::{Format, WindowRange},
};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (I/O, the kernel refused the eBPF program, ...)
  2  bad command line (unknown flag, bad value)
  3  bad input capture (missing, corrupt, truncated header, foreign, newer version)
  4  not privileged enough to load eBPF (needs root, or CAP_BPF + CAP_PERFMON)
  5  a push failed for at least one window
  6  a target process does not exist, or the command could not be started
  With `record -- COMMAND`, amprof exits with the command's exit code.";

/// amprof: an on-demand eBPF CPU profiler for Linux.
///
/// `record` samples on-CPU stacks into a ring of time windows and writes a capture file;
/// `report` turns a capture into a summary, flamegraph or folded stacks.
#[derive(Debug, Parser)]
#[command(name = "amprof", version, about, long_about, after_long_help = EXIT_CODES)]
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
    Record(RecordArgs),
    Report(ReportArgs),
    Push(PushArgs),
}

/// Sample on-CPU stacks of the whole system, some processes, or a command.
///
/// Samples user and kernel stacks on every online CPU from the cpu-clock perf event, keeps them
/// in time windows (a ring when recording until Ctrl-C), symbolizes while the processes are
/// alive and writes the capture window by window: a crash loses at most the window in progress.
/// Needs root (or CAP_BPF + CAP_PERFMON).
#[derive(Debug, Args)]
#[command(after_long_help = concat!("Examples:
  sudo amprof record --duration 30s                 the whole system for 30 s
  sudo amprof record -p 1234,1240 -d 10s            two processes (all their threads)
  sudo amprof record -o build.data -- make -j2      a command and its children, until it exits
  sudo amprof record --window 10s --keep 6          flight recorder: the last minute, until Ctrl-C
", "\n", "Exit codes: see amprof --help; with -- COMMAND, the command's own."))]
pub struct RecordArgs {
    /// Samples per second on each CPU.
    #[arg(short = 'F', long, value_name = "HZ", default_value_t = 99)]
    pub frequency: u64,

    /// How long to record (e.g. 30s, 2m, 500ms); without it, until Ctrl-C or SIGTERM (or the
    /// command or target processes exit).
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Length of a time window.
    #[arg(short, long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub window: Duration,

    /// Keep only the last N windows (a ring). Default: all with --duration, 6 without.
    #[arg(short, long, value_name = "N")]
    pub keep: Option<usize>,

    /// Profile only these processes, all their threads (comma-separated or repeated).
    #[arg(
        short,
        long,
        value_name = "PID",
        value_delimiter = ',',
        conflicts_with = "command"
    )]
    pub pid: Vec<u32>,

    /// Capture file to write (an existing one is kept as FILE.old).
    #[arg(short, long, value_name = "FILE", default_value = "amprof.data")]
    pub output: PathBuf,

    /// No progress bar: only the final summary line.
    #[arg(short, long)]
    pub quiet: bool,

    /// Print the final summary as JSON on standard output.
    #[arg(long)]
    pub json: bool,

    /// How to unwind user stacks: fp (frame pointers, cheapest) or dwarf (CFI: complete stacks
    /// through binaries built without frame pointers, at the cost of copying stack bytes).
    #[arg(short = 'g', long, value_enum, value_name = "MODE", default_value_t = CallGraph::Dwarf)]
    pub call_graph: CallGraph,

    /// Bytes of user stack copied with each sample in dwarf mode (512 to 65536).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_STACK_SIZE)]
    pub stack_size: u32,

    /// Show inlined functions as frames of their own, with source lines (needs debug info).
    #[arg(long)]
    pub inline: bool,

    /// Size of the kernel-to-userspace ring buffer in bytes (a power of two); default scales with
    /// CPUs and frequency.
    #[arg(long, value_name = "BYTES", value_parser = parse_ring_bytes)]
    pub buffer_size: Option<u32>,

    /// Command to start and profile, with its children, until it exits.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Turn a capture into a summary, a flamegraph or folded stacks.
#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  amprof report                                     summary of amprof.data
  amprof report --format flamegraph -o flame.svg    interactive SVG flamegraph
  amprof report --format folded --pid 1234 > out.folded
  amprof report --window 2..4 --comm python3 --json  JSON summary of windows 2 to 4

Exit codes: see amprof --help.")]
pub struct ReportArgs {
    /// Capture file to read.
    #[arg(short, long, value_name = "FILE", default_value = "amprof.data")]
    pub input: PathBuf,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Summary)]
    pub format: Format,

    /// Where to write: a file, or - for standard output. Default: flamegraph.svg for
    /// flamegraphs, standard output for the others.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Only window N, or windows A..B (inclusive), by the index the summary shows.
    #[arg(long, value_name = "N|A..B")]
    pub window: Option<WindowRange>,

    /// Only these processes (comma-separated or repeated).
    #[arg(short, long, value_name = "PID", value_delimiter = ',')]
    pub pid: Vec<u32>,

    /// Only processes with these names (comma-separated or repeated).
    #[arg(short, long, value_name = "NAME", value_delimiter = ',')]
    pub comm: Vec<String>,

    /// The summary as JSON.
    #[arg(long)]
    pub json: bool,

    /// Functions and processes listed in the summary.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,

    /// No notes on standard error.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Where `amprof push` sends profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PushTarget {
    /// A Datadog Agent, or Datadog's intake with DD_API_KEY.
    Datadog,
    /// An OpenTelemetry (OTLP) profiles endpoint, over HTTP or gRPC.
    Otlp,
}

/// Send a capture's windows as profiles to Datadog or an OTLP endpoint.
///
/// One profile per window, with the window's true start and end. Failed windows are retried
/// (bounded, with backoff), listed in the summary, and can be resent with --windows. The capture
/// file is only read.
#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  amprof push --to datadog --check                  does the Datadog Agent take profiles?
  amprof push --to datadog                          every window to the local Datadog Agent
  amprof push --to datadog --windows 3,5            resend windows 3 and 5
  amprof push --to otlp --endpoint http://collector:4318
  amprof push --to datadog --dry-run -o requests/   write the requests instead of sending

Exit codes: see amprof --help; 5 when any window failed.")]
pub struct PushArgs {
    /// Where to send.
    #[arg(long, value_enum)]
    pub to: PushTarget,

    /// Capture file to read.
    #[arg(short, long, value_name = "FILE", default_value = "amprof.data")]
    pub input: PathBuf,

    /// Only these windows (indices or ranges, comma-separated: 3,5..7), e.g. those that failed.
    #[arg(long, value_name = "N|A..B", value_delimiter = ',')]
    pub windows: Vec<WindowRange>,

    /// Only these processes (comma-separated or repeated).
    #[arg(short, long, value_name = "PID", value_delimiter = ',')]
    pub pid: Vec<u32>,

    /// Only processes with these names (comma-separated or repeated).
    #[arg(short, long, value_name = "NAME", value_delimiter = ',')]
    pub comm: Vec<String>,

    /// Write each request (headers and body) to files in the -o directory instead of sending.
    #[arg(long, requires = "output")]
    pub dry_run: bool,

    /// Directory for --dry-run.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Longest wait for one request. Default: 10s; with --to otlp,
    /// $OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT or $OTEL_EXPORTER_OTLP_TIMEOUT (milliseconds) if set.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Retries of a request after a retryable failure (connection refused, 429, 5xx), 0 to 10.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: u32,

    /// Print the summary as JSON on standard output.
    #[arg(long)]
    pub json: bool,

    /// No progress bar: only the final summary line.
    #[arg(short, long)]
    pub quiet: bool,

    #[command(flatten)]
    pub datadog: crate::push::datadog::DatadogArgs,

    #[command(flatten)]
    pub otlp: crate::push::otlp::OtlpArgs,
}

/// `30s`, `1m30s`, `500ms`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let parsed = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.0..1e9).contains(&seconds) => {
            Ok(Duration::from_secs_f64(seconds))
        }
        Ok(_) => Err(format!("`{text}` is not a duration")),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("`{text}` is not a duration like 30s, 2m or 500ms ({e})")),
    }?;
    if parsed > Duration::from_secs(365 * 24 * 3600) {
        return Err(format!("`{text}` is longer than a year"));
    }
    Ok(parsed)
}

fn parse_ring_bytes(text: &str) -> Result<u32, String> {
    let bytes: u32 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of bytes"))?;
    if !bytes.is_power_of_two() || bytes < 4096 {
        return Err(format!("{bytes} is not a power of two of at least 4096"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("NaN").is_err());
        assert!(parse_duration("100y").is_err());
    }

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
