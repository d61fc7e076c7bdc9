//! `amprof record`: sample stacks into a ring of time windows and write them to a capture.
//!
//! Data flows one way, on two threads:
//!
//! ```text
//! eBPF ring buffer ─▶ sampler::RingEvent ─▶ window::WindowAggregator ─▶ ClosedWindow   (this thread)
//!                                                                         │ channel
//!                      capture::CaptureWriter ◀─ symbolize::WindowSymbolizer ◀┘   (writer thread)
//! ```
//!
//! The sampling thread ([`recording`]) does only cheap per-sample work and reads `/proc` for
//! new processes; symbolization, encoding and disk writes happen on the writer thread
//! ([`writer`]), window by window. What the person running it should see (the kernel's limits,
//! progress) goes to an [`Observer`] that `cli` implements: this module never prints.
//!
//! Nothing a sampled process chooses is trusted (see docs/guarantees.md): its files are opened
//! one way ([`files`]), on worker threads that nothing waits on for long ([`worker`]: the
//! unwinder's loader, the symbolizer's resolver), and the sampling thread never blocks on the
//! writer. Ctrl-C or SIGTERM ends a recording within [`STOP_WITHIN`] ([`stop`]): windows not
//! named by then are written unnamed (counted), and a second signal exits at once, the capture
//! readable.

pub mod debuginfo;
pub mod elf;
pub mod files;
pub mod host;
pub mod kernel_tables;
pub mod perf_map;
pub mod procs;
pub mod python;
pub mod recording;
pub mod refusal;
pub mod resolve;
pub mod sampler;
pub mod sigbus;
pub mod stop;
pub mod symbolize;
pub mod target;
pub mod unwind;
pub mod unwind_table;
pub mod window;
pub mod worker;
pub mod writer;

use std::{
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde::Serialize;

pub use host::monotonic_ns;
use recording::Recording;
pub use stop::StopReason;

use crate::{
    capture::format::{Meta, Problems, Unwinding, Window},
    error::usage,
};
/// Everything `record` needs, validated by the CLI layer.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub output: PathBuf,
    pub frequency_hz: u64,
    pub duration: Option<Duration>,
    pub window: Duration,
    /// Ring capacity; `None` keeps every window.
    pub keep: Option<usize>,
    pub pids: Vec<u32>,
    pub command: Vec<String>,
    pub ring_bytes: Option<u32>,
    pub call_graph: CallGraph,
    /// Bytes of user stack copied per sample in DWARF mode.
    pub stack_size: u32,
    /// Room for unwind tables in the kernel, in rows (8 bytes each), in DWARF mode.
    pub unwind_table_rows: u32,
    /// Symbolize inlined functions (and their source lines).
    pub inline: bool,
    /// `--off-cpu`: record time off the CPU, one sample per this much of a thread's.
    pub off_cpu: Option<Duration>,
}

/// How user stacks are unwound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallGraph {
    /// Frame pointers, walked by the kernel: cheapest, but stops at code built without them
    /// (most distribution binaries and libraries).
    Fp,
    /// DWARF call frame information, walked in the kernel: amprof turns each binary's
    /// .eh_frame into an unwind table the eBPF program follows, so only frame addresses leave
    /// the kernel and stacks are complete at any depth. Code without a table (JIT code, a
    /// binary whose table is still being built, a process's first samples) is unwound as in
    /// `DwarfCopy`, from where the tables end.
    Dwarf,
    /// DWARF call frame information, perf's way: the kernel copies the top of the user stack
    /// with each sample and amprof unwinds it with the binaries' .eh_frame. Stacks deeper
    /// than the copy are cut short.
    DwarfCopy,
}

impl CallGraph {
    pub fn name(self) -> &'static str {
        match self {
            CallGraph::Fp => "fp",
            CallGraph::Dwarf => "dwarf",
            CallGraph::DwarfCopy => "dwarf-copy",
        }
    }

    /// Whether user stacks are unwound with the binaries' CFI (and stacks copied).
    pub fn is_dwarf(self) -> bool {
        matches!(self, CallGraph::Dwarf | CallGraph::DwarfCopy)
    }
}

/// Default bytes of user stack per sample in DWARF mode: perf copies 8 KiB, ddprof 32 KiB;
/// 16 KiB gave the same complete-stack share as 32 KiB on the workloads of benches/stacks.py
/// (python3 deepest among them) at half the bandwidth.
pub const DEFAULT_STACK_SIZE: u32 = 16 * 1024;

/// Where each window goes besides the capture, as soon as it is written (`record --push-to`).
/// It must not block: the writer thread calls it between windows.
pub trait WindowSink: Send {
    /// `window` of the capture described by `meta`, just written.
    fn window(&mut self, meta: &Meta, window: &Window);
}

/// What the person running a recording should hear as it runs. `cli` implements it (a
/// progress bar on a terminal, warning lines on stderr, nothing with `--quiet` on a pipe);
/// the library never prints.
pub trait Observer {
    /// A sentence to show now: a limit of the kernel and what was done instead, a command left
    /// running.
    fn warning(&mut self, message: &str);
    /// Sampling has started, for `duration` if given.
    fn started(&mut self, _duration: Option<Duration>) {}
    /// The counts so far, at every poll of the ring buffer (about 20 times a second).
    fn progress(&mut self, _progress: &Progress) {}
    /// Sampling is over; the summary follows.
    fn finished(&mut self) {}
}

/// A recording's counts so far, for a progress display.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// On-CPU samples aggregated.
    pub samples: u64,
    /// Windows written.
    pub windows: usize,
    /// Samples the ring buffer had no room for.
    pub lost: u64,
    /// Processes seen.
    pub processes: usize,
}

/// What a recording did, for the final line and `--json`.
#[derive(Debug, Serialize)]
pub struct RecordSummary {
    pub output: PathBuf,
    pub seconds: f64,
    pub cpus: usize,
    pub frequency_hz: u64,
    /// The `-g` mode that ran: the one asked for, or what the kernel left of it.
    pub call_graph: String,
    /// What the kernel refused and what was done instead, one sentence each.
    pub kernel_limits: Vec<String>,
    pub samples: u64,
    pub lost: u64,
    pub idle: u64,
    pub windows: u64,
    pub windows_evicted: u64,
    pub bytes: u64,
    pub stopped_by: StopReason,
    /// The command's exit code, in command mode.
    pub command_exit_code: Option<u8>,
    /// What the profiled system's files made amprof refuse or cut short, over all windows.
    pub problems: Problems,
    /// amprof's own CPU time (user + system) and peak resident memory, so far.
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
    /// Bytes of sample records the kernel handed to amprof (a sample's cost in copying).
    pub ring_bytes: u64,
    /// DWARF mode: how user stacks were unwound, over all windows, and the final size of the
    /// unwind tables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unwinding: Option<Unwinding>,
    /// `--off-cpu`: the off-CPU samples and the time they stand for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub off_cpu: Option<OffCpuSummary>,
}

/// What `--off-cpu` recorded, over all windows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OffCpuSummary {
    /// Off-CPU samples in the windows.
    pub samples: u64,
    /// The time off the CPU they stand for, in seconds (summed over threads).
    pub seconds: f64,
    /// Off-CPU samples the ring buffer had no room for.
    pub lost: u64,
}

/// A window is closed this long after its end, so that samples still in flight from other
/// CPUs land in it.
const GRACE: Duration = Duration::from_millis(100);
/// Longest wait for ring-buffer records: also how often timers and signals are checked.
const POLL: Duration = Duration::from_millis(50);
/// Ctrl-C or SIGTERM ends a recording within this, whatever symbolization is doing.
pub const STOP_WITHIN: Duration = Duration::from_secs(2);
/// What of [`STOP_WITHIN`] symbolization may still use once a stop is asked for.
const SYMBOLIZE_AFTER_STOP: Duration = Duration::from_millis(1200);

/// Checks values the kernel would reject later with a less helpful message.
pub fn validate(options: &RecordOptions) -> Result<()> {
    let max_rate = std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if options.frequency_hz == 0 {
        return Err(usage("--frequency must be at least 1 Hz"));
    }
    if let Some(max) = max_rate
        && options.frequency_hz > max
    {
        return Err(usage(format!(
            "--frequency {} Hz is above the kernel's limit of {max} Hz (kernel.perf_event_max_sample_rate)",
            options.frequency_hz
        )));
    }
    if options.window < Duration::from_millis(100) {
        return Err(usage("--window must be at least 100ms"));
    }
    if options.duration.is_some_and(|d| d.is_zero()) {
        return Err(usage("--duration must be more than 0"));
    }
    let max_stack = amprof_abi::MAX_USER_STACK_BYTES as u32;
    if options.call_graph.is_dwarf()
        && !(amprof_abi::MIN_USER_STACK_BYTES as u32..=max_stack).contains(&options.stack_size)
    {
        return Err(usage(format!(
            "--stack-size must be between {} and {max_stack} bytes",
            amprof_abi::MIN_USER_STACK_BYTES
        )));
    }
    if let Some(period) = options.off_cpu
        && !(Duration::from_micros(10)..=Duration::from_secs(10)).contains(&period)
    {
        return Err(usage("--off-cpu-period must be between 10us and 10s"));
    }
    if options.keep == Some(0) {
        return Err(usage("--keep must be at least 1"));
    }
    if !options.pids.is_empty() && !options.command.is_empty() {
        return Err(usage("give either --pid or a command, not both"));
    }
    crate::output::check_output_path(&options.output)?;
    Ok(())
}

/// Records, and returns the summary (in command mode, with the command's exit code). Each
/// window written is also handed to `sink`, if any; `observer` hears what the user should.
pub fn record(
    options: &RecordOptions,
    sink: Option<Box<dyn WindowSink>>,
    observer: &mut dyn Observer,
) -> Result<RecordSummary> {
    validate(options)?;
    sampler::check_privileges()?;
    target::check_pids(&options.pids)?;
    let stop = install_signal_handlers()?;
    sigbus::install();
    host::raise_file_limit();
    let mut recording = Recording::start(options, sink, observer)?;
    let stopped = recording.sample(&stop, observer);
    recording.finish(stopped, observer)
}

/// The flag Ctrl-C, SIGTERM and SIGHUP set; a second signal exits at once (registered first:
/// the first signal only arms it). Every window written so far stays readable: each is
/// appended and synced whole.
fn install_signal_handlers() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    Ok(stop)
}

/// Off-CPU samples one CPU may send per window: twenty times what the cpu-clock event takes
/// there, and at least 2,000. A bound on what a process that blocks and wakes without end
/// can cost (the time beyond it waits in the threads' sums: it is attributed late, not lost).
fn off_cpu_budget(frequency_hz: u64, window_ns: u64) -> u64 {
    let on_cpu = u128::from(frequency_hz) * u128::from(window_ns) / 1_000_000_000;
    (on_cpu * 20).clamp(2_000, 1 << 24) as u64
}

/// The ring capacity: `--keep`, or without `--duration` a flight recorder of the default size.
fn ring_capacity(options: &RecordOptions) -> Option<usize> {
    match (options.keep, options.duration) {
        (Some(keep), _) => Some(keep),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_KEEP),
    }
}

/// Windows a flight recorder keeps by default: one minute at the default window length.
pub const DEFAULT_KEEP: usize = 6;

/// A fifth of a second of full-size samples on every CPU (four times the 50 ms between drains),
/// as a power of two between 4 and 64 MiB. Beyond that, samples are counted lost rather than
/// pinning more kernel memory; `--buffer-size` overrides it.
fn default_ring_bytes(cpus: usize, frequency_hz: u64, user_stack_bytes: u32, off_cpu: bool) -> u32 {
    let full_sample = (size_of::<amprof_abi::SampleHead>()
        + 2 * amprof_abi::MAX_STACK_BYTES
        + user_stack_bytes as usize) as u64;
    // Off-CPU samples come on top: each waiting thread can send as many as a CPU takes on-CPU
    // samples (and each CPU up to 20 times that, its budget); room for four times as many
    // keeps a busy machine's bursts.
    let kinds = if off_cpu { 4 } else { 1 };
    let want = (cpus as u64 * frequency_hz * full_sample * kinds / 5).next_power_of_two();
    want.clamp(4 << 20, 64 << 20) as u32
}
