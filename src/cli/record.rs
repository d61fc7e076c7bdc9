//! `amprof record`: its flags, and the options and summary line they become.

use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use clap::{Args, ValueEnum};

use super::values::{parse_duration, parse_ring_bytes};
use crate::{
    error::Exit,
    record::{self, CallGraph, DEFAULT_STACK_SIZE, RecordOptions, RecordSummary},
};

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
    #[arg(short = 'g', long, value_enum, value_name = "MODE", default_value_t = CallGraphArg::Dwarf)]
    pub call_graph: CallGraphArg,

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

/// `--call-graph` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CallGraphArg {
    /// Frame pointers, walked by the kernel: cheapest, but stops at code built without them
    /// (most distribution binaries and libraries).
    Fp,
    /// DWARF call frame information: the kernel copies the top of the user stack with each
    /// sample and amprof unwinds it with the binaries' .eh_frame. Complete stacks through
    /// glibc and stripped distribution binaries, for more bytes per sample.
    Dwarf,
}

impl RecordArgs {
    /// The options `record` runs with.
    pub fn options(self) -> RecordOptions {
        RecordOptions {
            output: self.output,
            frequency_hz: self.frequency,
            duration: self.duration,
            window: self.window,
            keep: self.keep,
            pids: self.pid,
            command: self.command,
            quiet: self.quiet,
            json: self.json,
            ring_bytes: self.buffer_size,
            call_graph: match self.call_graph {
                CallGraphArg::Fp => CallGraph::Fp,
                CallGraphArg::Dwarf => CallGraph::Dwarf,
            },
            stack_size: self.stack_size,
            inline: self.inline,
        }
    }
}

/// Records, prints the summary line (and `--json`), and returns the exit code: the command's in
/// command mode.
pub fn run(args: RecordArgs) -> Result<u8> {
    let options = args.options();
    let summary = record::record(&options)?;
    eprintln!("amprof: {}", summary_line(&summary));
    let problems = summary.problems.phrases();
    if !problems.is_empty() && !options.quiet {
        eprintln!(
            "amprof: note: the profiled system's files: {} (never fatal; see `amprof report`)",
            problems.join(", ")
        );
    }
    if options.json {
        crate::text::write_json(&mut std::io::stdout().lock(), &summary)?;
        println!();
    }
    Ok(summary.command_exit_code.unwrap_or(Exit::Success.code()))
}

/// `recorded 10.0 s on 2 CPUs at 99 Hz: 1980 samples (0 lost) in 1 window -> amprof.data (12 KiB)`.
fn summary_line(summary: &RecordSummary) -> String {
    let windows = summary.windows - summary.windows_evicted.min(summary.windows);
    format!(
        "recorded {:.1} s on {} CPUs at {} Hz: {} samples ({} lost) in {windows} {}{} -> {} ({} KiB)",
        summary.seconds,
        summary.cpus,
        summary.frequency_hz,
        summary.samples,
        summary.lost,
        plural(windows, "window", "windows"),
        if summary.windows_evicted > 0 {
            format!(" ({} older evicted)", summary.windows_evicted)
        } else {
            String::new()
        },
        summary.output.display(),
        summary.bytes.div_ceil(1024),
    )
}

/// `one` or `many`, as `n` asks.
pub fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}
