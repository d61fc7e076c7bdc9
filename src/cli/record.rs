//! `amprof record`: its flags, and the options and summary line they become.

use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use clap::{Args, ValueEnum};

use serde::Serialize;

use super::{
    progress::{RecordProgress, Show},
    push::{Backend, DatadogArgs, OtlpArgs, SendArgs},
    values::{parse_duration, parse_ring_bytes},
};
use crate::{
    error::{Exit, coded, usage},
    push::{
        datadog::{self, DatadogConfig},
        otlp::{self, OtlpConfig},
        stream::{self, Stream, StreamReport, StreamSettings},
    },
    record::{
        self, CallGraph, DEFAULT_STACK_SIZE, RecordOptions, RecordSummary, StopReason, WindowSink,
        kernel_tables::DEFAULT_TABLE_ROWS,
    },
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

    /// How to unwind user stacks: dwarf (the binaries' CFI, walked in the kernel: complete stacks
    /// through code built without frame pointers), fp (frame pointers, cheapest; stops at code
    /// without them) or dwarf-copy (CFI unwinding of a copy of the stack, perf's way).
    #[arg(short = 'g', long, value_enum, value_name = "MODE", default_value_t = CallGraphArg::Dwarf)]
    pub call_graph: CallGraphArg,

    /// Bytes of user stack copied with each sample in dwarf-copy mode, and in dwarf mode where
    /// code has no unwind table (512 to 65536).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_STACK_SIZE)]
    pub stack_size: u32,

    /// Room for unwind tables in the kernel in dwarf mode, in rows of 8 bytes (the default,
    /// 8388608, is 64 MiB: every binary of a busy machine). Tables that do not fit are
    /// counted, and their code unwound from stack copies.
    #[arg(long, value_name = "ROWS", default_value_t = DEFAULT_TABLE_ROWS,
          value_parser = clap::value_parser!(u32).range(1024..=1 << 28))]
    pub unwind_table_rows: u32,

    /// Show inlined functions as frames of their own, with source lines (needs debug info).
    #[arg(long)]
    pub inline: bool,

    /// Also record where threads wait off the CPU (blocked on sleeps, locks, I/O, or runnable
    /// and waiting for a CPU), and for how long: the stack each blocked in, taken when it runs
    /// again. `amprof report --event off-cpu` or `--event wall` shows it.
    #[arg(long)]
    pub off_cpu: bool,

    /// With --off-cpu: a thread's short waits are summed in the kernel, and one off-CPU sample
    /// is sent per this much of its time off the CPU (a longer wait is sent alone, whole).
    /// Default: the sampling period (1/frequency).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "off_cpu")]
    pub off_cpu_period: Option<Duration>,

    /// Size of the kernel-to-userspace ring buffer in bytes (a power of two); default scales with
    /// CPUs and frequency.
    #[arg(long, value_name = "BYTES", value_parser = parse_ring_bytes)]
    pub buffer_size: Option<u32>,

    /// Also send each window to Datadog or an OTLP endpoint as it closes, while recording goes
    /// on, with the settings of `amprof push` (the same flags and environment variables). The
    /// capture is written all the same: it is what `amprof push --windows` resends from (with
    /// --keep it stays small); it cannot be skipped.
    #[arg(long, value_name = "TO")]
    pub push_to: Option<Backend>,

    /// With --push-to: windows waiting to be sent, at most; when the backend is slower or
    /// down, the oldest waiting window is dropped (and counted) to make room.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub push_queue: Option<u64>,

    #[command(flatten)]
    pub send: SendArgs,

    #[command(flatten)]
    pub datadog: DatadogArgs,

    #[command(flatten)]
    pub otlp: OtlpArgs,

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
    /// DWARF call frame information, walked in the kernel with unwind tables amprof builds
    /// from the binaries' .eh_frame: complete stacks at any depth through glibc and stripped
    /// distribution binaries. Code without a table is unwound from a stack copy.
    Dwarf,
    /// DWARF call frame information, perf's way: the kernel copies the top of the user stack
    /// (--stack-size) with each sample and amprof unwinds it. Deeper stacks are cut short.
    DwarfCopy,
}

/// A streaming push, started: the recording's end, the sender's end, the destination's name.
struct Streaming {
    sink: Box<dyn WindowSink>,
    stream: Stream,
    to: Backend,
}

/// Windows waiting to be pushed by default: a minute at the default window length.
const DEFAULT_PUSH_QUEUE: u64 = 6;

impl RecordArgs {
    /// The streaming push `--push-to` asks for, started: the sink for the recording and the
    /// stream to finish. Flags of a destination need `--push-to` that destination.
    fn stream(&mut self) -> Result<Option<Streaming>> {
        let (datadog_flag, otlp_flag) = (self.datadog.given(), self.otlp.given());
        let Some(to) = self.push_to else {
            if let Some(flag) = self
                .send
                .given()
                .or(datadog_flag)
                .or(otlp_flag)
                .or(self.push_queue.map(|_| "--push-queue"))
            {
                return Err(usage(format!("{flag} applies to --push-to only")));
            }
            return Ok(None);
        };
        match (to, datadog_flag, otlp_flag) {
            (Backend::Datadog, _, Some(flag)) => {
                return Err(usage(format!("{flag} applies to --push-to otlp only")));
            }
            (Backend::Otlp, Some(flag), _) => {
                return Err(usage(format!("{flag} applies to --push-to datadog only")));
            }
            _ => {}
        }
        let timeout = self.send.timeout(to)?;
        crate::push::check_timeout(timeout)?;
        let settings = StreamSettings {
            timeout,
            retries: self.send.retries(),
            queue: self.push_queue.unwrap_or(DEFAULT_PUSH_QUEUE) as usize,
        };
        // Bad settings are a usage error now, not a warning once recording runs.
        let make: stream::MakeDestination = match to {
            Backend::Datadog => {
                let config = DatadogConfig::from(std::mem::take(&mut self.datadog));
                datadog::destination(&config)?;
                Box::new(move || datadog::destination(&config))
            }
            Backend::Otlp => {
                let config = OtlpConfig::from(std::mem::take(&mut self.otlp));
                otlp::destination(&config)?;
                Box::new(move || otlp::destination(&config))
            }
        };
        let (sink, stream) = stream::start(make, settings);
        Ok(Some(Streaming {
            sink: Box::new(sink),
            stream,
            to,
        }))
    }

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
            ring_bytes: self.buffer_size,
            call_graph: match self.call_graph {
                CallGraphArg::Fp => CallGraph::Fp,
                CallGraphArg::Dwarf => CallGraph::Dwarf,
                CallGraphArg::DwarfCopy => CallGraph::DwarfCopy,
            },
            stack_size: self.stack_size,
            unwind_table_rows: self.unwind_table_rows,
            inline: self.inline,
            off_cpu: self.off_cpu.then(|| {
                self.off_cpu_period
                    .unwrap_or(Duration::from_nanos(1_000_000_000 / self.frequency.max(1)))
            }),
        }
    }
}

/// What `record --json` prints.
#[derive(Serialize)]
struct JsonSummary<'a> {
    #[serde(flatten)]
    record: &'a RecordSummary,
    /// With --push-to: what streaming did.
    #[serde(skip_serializing_if = "Option::is_none")]
    push: Option<&'a StreamReport>,
}

/// Records (streaming each window with --push-to), prints the summary line (and `--json`), and
/// returns the exit code: the command's in command mode; 5 when a window did not reach the
/// backend (unless the command failed: its code wins).
pub fn run(mut args: RecordArgs) -> Result<u8> {
    let streaming = args.stream()?;
    let show = Show {
        quiet: args.quiet,
        json: args.json,
    };
    let options = args.options();
    let (sink, stream, to) = match streaming {
        Some(Streaming { sink, stream, to }) => (Some(sink), Some(stream), Some(to)),
        None => (None, None, None),
    };
    let summary = record::record(&options, sink, &mut RecordProgress::new(show))?;
    let interrupted = summary.stopped_by == StopReason::Signal;
    // After a signal the recording has used some of its 2 s: the push gets what is left.
    let report = stream.map(|s| s.finish(interrupted, std::time::Duration::from_millis(700)));
    eprintln!("amprof: {}", summary_line(&summary));
    if let Some(unwinding) = summary.unwinding.as_ref().filter(|u| u.samples() > 0)
        && !show.quiet
    {
        eprintln!("amprof: {}", unwinding.phrase());
    }
    let problems = summary.problems.phrases();
    if !problems.is_empty() && !show.quiet {
        eprintln!(
            "amprof: note: the profiled system's files: {} (never fatal; see `amprof report`)",
            problems.join(", ")
        );
    }
    if let (Some(report), Some(to)) = (&report, to) {
        if let Some(warning) = &report.warning {
            eprintln!("amprof: warning: {warning}");
        }
        if !show.quiet || report.resend().is_some() {
            eprintln!("amprof: {}", push_line(report, to));
        }
    }
    if show.json {
        let json = JsonSummary {
            record: &summary,
            push: report.as_ref(),
        };
        crate::text::write_json(&mut std::io::stdout().lock(), &json)?;
        println!();
    }
    let code = summary.command_exit_code.unwrap_or(Exit::Success.code());
    if let (Some(report), Some(to), 0) = (&report, to, code)
        && let Some(windows) = report.resend()
    {
        let first = report
            .failed
            .first()
            .map_or("dropped from a full queue".to_string(), |(_, why)| {
                why.clone()
            });
        return Err(coded(
            Exit::PushFailed,
            format!(
                "windows {windows} did not reach {} ({first}); resend them with `amprof push {} -i {} --windows {windows}`",
                report.destination,
                to.name(),
                options.output.display()
            ),
        ));
    }
    Ok(code)
}

/// `pushed 3 windows to ... (0 retried, 0 dropped, 0 failed; window end to acknowledgement: median 50 ms, max 80 ms)`.
fn push_line(report: &StreamReport, to: Backend) -> String {
    let sent = report.sent.len() as u64;
    let latency = report.latency().map_or(String::new(), |(median, max)| {
        format!("; window end to acknowledgement: median {median:.0} ms, max {max:.0} ms")
    });
    let destination = if report.destination.is_empty() {
        to.name()
    } else {
        &report.destination
    };
    format!(
        "pushed {sent} {} to {destination} ({} retried, {} dropped, {} failed{latency})",
        super::plural(sent, "window", "windows"),
        report.retried,
        report.dropped.len(),
        report.failed.len(),
    )
}

/// `recorded 10.0 s on 2 CPUs at 99 Hz: 1980 samples (0 lost) in 1 window -> amprof.data (12 KiB)`;
/// with `--off-cpu`, `... 1980 samples (0 lost), 412 off-CPU samples of 30.1 s (0 lost) in ...`.
fn summary_line(summary: &RecordSummary) -> String {
    let windows = summary.windows - summary.windows_evicted.min(summary.windows);
    let off_cpu = summary.off_cpu.as_ref().map_or(String::new(), |off| {
        format!(
            ", {} off-CPU samples of {:.1} s ({} lost)",
            off.samples, off.seconds, off.lost
        )
    });
    format!(
        "recorded {:.1} s on {} CPUs at {} Hz: {} samples ({} lost){off_cpu} in {windows} {}{} -> {} ({} KiB)",
        summary.seconds,
        summary.cpus,
        summary.frequency_hz,
        summary.samples,
        summary.lost,
        super::plural(windows, "window", "windows"),
        if summary.windows_evicted > 0 {
            format!(" ({} older evicted)", summary.windows_evicted)
        } else {
            String::new()
        },
        summary.output.display(),
        summary.bytes.div_ceil(1024),
    )
}
