//! `amprof record`: sample stacks into a ring of time windows and write them to a capture.
//!
//! Data flows one way, on two threads:
//!
//! ```text
//! eBPF ring buffer ─▶ sampler::Event ─▶ window::WindowAggregator ─▶ ClosedWindow   (this thread)
//!                                                                     │ channel
//!                      capture::CaptureWriter ◀─ symbolize::WindowSymbolizer ◀┘   (writer thread)
//! ```
//!
//! The sampling thread does only cheap per-sample work and reads `/proc` for new processes;
//! symbolization, encoding and disk writes happen on the writer thread, window by window.
//!
//! Nothing a sampled process chooses is trusted (see docs/guarantees.md): its files are opened
//! one way ([`files`]), on worker threads that nothing waits on for long ([`worker`]: the
//! unwinder's loader, the symbolizer's resolver), and the sampling thread never blocks on the
//! writer. Ctrl-C or SIGTERM ends a recording within [`STOP_WITHIN`]: windows not named by then
//! are written unnamed (counted), and a second signal exits at once, the capture readable.

pub mod debuginfo;
pub mod elf;
pub mod files;
pub mod kernel_tables;
pub mod perf_map;
pub mod procs;
pub mod refusal;
pub mod resolve;
pub mod sampler;
pub mod sigbus;
pub mod symbolize;
pub mod target;
pub mod unwind;
pub mod unwind_table;
pub mod window;
pub mod worker;

use std::{
    collections::VecDeque,
    io::IsTerminal as _,
    path::PathBuf,
    process::Child,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::{
    capture::{
        CaptureWriter,
        format::{End, Meta, Problems, Target, TargetKind, Unwinding, Window},
    },
    error::usage,
};
use procs::ProcessTable;
use sampler::{Event, OffCpuConfig, Sampler, SamplerConfig, TableSpace};
use symbolize::WindowSymbolizer;
use window::{ClosedWindow, WindowAggregator};

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
    pub quiet: bool,
    pub json: bool,
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
    pub stopped_by: String,
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

/// What the writer thread reports when it is done.
struct Written {
    windows: u64,
    evicted: u64,
    bytes: u64,
    problems: Problems,
    unwinding: Option<Unwinding>,
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
/// Closed windows the sampling thread holds while the writer is busy; beyond, it waits for the
/// writer (while still watching for signals).
const MAX_QUEUED_WINDOWS: usize = 64;

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

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
/// window written is also handed to `sink`, if any.
pub fn record(options: &RecordOptions, sink: Option<Box<dyn WindowSink>>) -> Result<RecordSummary> {
    validate(options)?;
    sampler::check_privileges()?;
    target::check_pids(&options.pids)?;

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        // A second signal exits at once (registered first: the first signal only arms it).
        // Every window written so far stays readable: each is appended and synced whole.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    sigbus::install();
    raise_file_limit();

    let cpus = aya::util::online_cpus().map_or(1, |c| c.len());
    let window_ns = options.window.as_nanos() as u64;
    let command_mode = !options.command.is_empty();
    let targets = if command_mode {
        Some(Vec::new())
    } else if options.pids.is_empty() {
        None
    } else {
        Some(options.pids.clone())
    };
    let user_stack_bytes = match options.call_graph {
        CallGraph::Fp => 0,
        CallGraph::Dwarf | CallGraph::DwarfCopy => options.stack_size,
    };
    let ring_bytes = options.ring_bytes.unwrap_or_else(|| {
        default_ring_bytes(
            cpus,
            options.frequency_hz,
            user_stack_bytes,
            options.off_cpu.is_some(),
        )
    });

    let mut meta = Meta {
        amprof_version: env!("CARGO_PKG_VERSION").into(),
        hostname: hostname(),
        kernel_release: uname_field(|u| &u.release),
        arch: uname_field(|u| &u.machine),
        cpus: cpus as u32,
        frequency_hz: options.frequency_hz,
        event: "cpu-clock".into(),
        window_ns,
        keep: options.keep.unwrap_or(0) as u32,
        target: Some(Target {
            kind: if command_mode {
                TargetKind::Command
            } else if options.pids.is_empty() {
                TargetKind::System
            } else {
                TargetKind::Pids
            } as i32,
            pids: options.pids.clone(),
            command: options.command.clone(),
        }),
        command_line: std::env::args().collect(),
        call_graph: options.call_graph.name().into(),
        user_stack_bytes,
        inline: options.inline,
        duration_ns: options.duration.map_or(0, |d| d.as_nanos() as u64),
        off_cpu_period_ns: options.off_cpu.map_or(0, |p| p.as_nanos() as u64),
        ..Meta::default()
    };

    let mut sampler = Sampler::start(&SamplerConfig {
        frequency_hz: options.frequency_hz,
        window_len_ns: window_ns,
        targets,
        follow_children: command_mode,
        ring_bytes,
        call_graph: options.call_graph,
        user_stack_bytes,
        unwind_tables: TableSpace {
            rows: options.unwind_table_rows,
            mappings: kernel_tables::DEFAULT_MAPPINGS,
        },
        off_cpu: options.off_cpu.map(|period| OffCpuConfig {
            period_ns: period.as_nanos() as u64,
            max_per_window: off_cpu_budget(options.frequency_hz, window_ns),
        }),
    })?;
    // What ran, which the kernel may have made less than what was asked for.
    let call_graph = sampler.stack_mode().call_graph();
    meta.call_graph = call_graph.name().into();
    if call_graph == CallGraph::Fp {
        meta.user_stack_bytes = 0;
    }
    if !sampler.off_cpu() {
        meta.off_cpu_period_ns = 0;
    }
    meta.kernel_limits = sampler.kernel_limits().to_vec();
    for limit in sampler.kernel_limits() {
        eprintln!("amprof: warning: {limit}");
    }
    // Window 0 starts once sampling has started (attaching can take seconds on a saturated
    // machine); the few samples taken before this are dropped, as before any recording.
    let start_ns = monotonic_ns();
    sampler.start_windows(start_ns)?;
    let mut child: Option<Child> = None;
    let mut command_pid = None;
    if command_mode {
        let spawned = target::spawn_gated(&options.command, |pid| sampler.add_target(pid))?;
        command_pid = Some(spawned.id());
        child = Some(spawned);
    }
    if let (Some(pid), Some(target)) = (command_pid, meta.target.as_mut()) {
        target.pids = vec![pid];
    }
    meta.start_ns = start_ns;
    meta.realtime_offset_ns = clock_ns(libc::CLOCK_REALTIME) as i64 - monotonic_ns() as i64;

    let writer = CaptureWriter::create(&options.output, &meta, ring_capacity(options))?;
    let (to_writer, from_sampler) = mpsc::sync_channel::<WriterMessage>(4);
    let written = Arc::new(WriterProgress::default());
    let mut queued: VecDeque<WriterMessage> = VecDeque::new();
    let inline = options.inline;
    let writer_thread = {
        let written = Arc::clone(&written);
        thread::Builder::new()
            .name("amprof-writer".into())
            .spawn({
                let meta = meta.clone();
                move || write_windows(writer, from_sampler, &written, inline, &meta, sink)
            })
            .context("cannot start the writer thread")?
    };

    let progress = Progress::new(options);
    let mut aggregator = WindowAggregator::new(start_ns, window_ns, ProcessTable::default());
    if call_graph.is_dwarf() {
        aggregator = aggregator.with_unwinder(unwind::DwarfUnwinder::new());
    }
    if let Some(maps) = sampler.take_table_maps() {
        aggregator = aggregator.with_kernel_tables(kernel_tables::KernelTables::new(maps)?);
    }
    let deadline = options.duration.map(|d| start_ns + d.as_nanos() as u64);
    if let Some(deadline) = deadline {
        aggregator.set_end(deadline);
    }
    let mut totals = (0u64, 0u64); // lost, idle
    let mut off_cpu_lost = 0u64;
    let mut stopped_by = None;
    let mut command_status = None;

    loop {
        sampler.wait(POLL);
        drain(&mut sampler, &mut aggregator);
        let now = monotonic_ns();
        if stopped_by.is_none() {
            stopped_by = if deadline.is_some_and(|d| now >= d) {
                Some(("duration", deadline.unwrap_or(now)))
            } else if stop.load(Ordering::Relaxed) {
                Some(("signal", now))
            } else if written.failed.load(Ordering::Relaxed) {
                Some(("error", now))
            } else if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                command_status = Some(status);
                Some(("command-exited", now))
            } else if !options.pids.is_empty() && !options.pids.iter().any(|&p| target::is_alive(p))
            {
                Some(("targets-exited", now))
            } else {
                None
            };
            if let Some((reason, end_ns)) = stopped_by {
                if reason == "signal" {
                    // The user wants out: from now on the writer names windows only until
                    // shortly before STOP_WITHIN. (Other ends take the time naming needs.)
                    written.hurry_until.store(
                        monotonic_ns() + SYMBOLIZE_AFTER_STOP.as_nanos() as u64,
                        Ordering::Relaxed,
                    );
                }
                // Samples taken after the end (still in the ring buffer) are dropped.
                aggregator.set_end(end_ns);
                sampler.stop();
                drain(&mut sampler, &mut aggregator);
                aggregator.stop(end_ns);
            }
        }
        while let Some(index) = aggregator.due(now, GRACE.as_nanos() as u64) {
            let counters = sampler.take_window_counters(index);
            totals.0 += counters.lost;
            totals.1 += counters.idle;
            off_cpu_lost += counters.off_cpu_lost;
            let closed = aggregator.close_next(counters.lost, counters.idle, counters.off_cpu_lost);
            queued.push_back(WriterMessage::Window(Box::new(closed)));
        }
        // Hand closed windows over without waiting: the writer may be naming a big window.
        if !hand_over(&mut queued, &to_writer, &stop) {
            break; // the writer failed; its error is reported below
        }
        progress.update(
            &aggregator,
            totals.0,
            written.windows.load(Ordering::Relaxed),
        );
        if stopped_by.is_some() && (aggregator.finished() || written.failed.load(Ordering::Relaxed))
        {
            break;
        }
    }
    let (reason, end_ns) = stopped_by.unwrap_or(("error", monotonic_ns()));
    let stopped_at = Instant::now();
    queued.push_back(WriterMessage::End(End {
        end_ns,
        windows_closed: 0, // filled in by the writer
        windows_evicted: 0,
        reason: reason.into(),
    }));
    let by_signal = reason == "signal";
    // The writer finishes within STOP_WITHIN of a signal (it stops naming windows before); a
    // writer still busy after that (a disk that does not answer) is left behind: every window
    // it wrote is readable.
    while let Some(message) = queued.pop_front() {
        match to_writer.try_send(message) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(message)) if !by_signal => {
                if to_writer.send(message).is_err() {
                    break;
                }
            }
            Err(mpsc::TrySendError::Full(message)) if stopped_at.elapsed() < STOP_WITHIN => {
                queued.push_front(message);
                thread::sleep(Duration::from_millis(10));
            }
            Err(_) => break,
        }
    }
    drop(to_writer);
    while by_signal && !writer_thread.is_finished() && stopped_at.elapsed() < STOP_WITHIN {
        thread::sleep(Duration::from_millis(10));
    }
    if by_signal && !writer_thread.is_finished() {
        progress.finish();
        return Err(anyhow!(
            "stopped before the capture could be finalized: the windows written to {} are readable",
            options.output.display()
        ));
    }
    let outcome = writer_thread
        .join()
        .map_err(|_| anyhow!("the writer thread panicked"))?;
    progress.finish();
    let Written {
        windows,
        evicted,
        bytes,
        problems,
        unwinding,
    } = outcome?;

    // The command outlives a --duration: wait for it, as its exit code is amprof's. After a
    // signal, only until STOP_WITHIN: a command that ignores it is left running.
    if let Some(child) = child.as_mut()
        && command_status.is_none()
    {
        command_status = if by_signal {
            target::wait_timeout(child, STOP_WITHIN.saturating_sub(stopped_at.elapsed()))
        } else {
            Some(child.wait().context("cannot wait for the command")?)
        };
        if command_status.is_none() {
            eprintln!(
                "amprof: the command (pid {}) is still running; recording stopped",
                child.id()
            );
        }
    }
    Ok(RecordSummary {
        output: options.output.clone(),
        seconds: (end_ns - start_ns) as f64 / 1e9,
        cpus,
        frequency_hz: options.frequency_hz,
        samples: aggregator.samples(),
        lost: totals.0,
        idle: totals.1,
        windows,
        windows_evicted: evicted,
        bytes,
        stopped_by: reason.into(),
        command_exit_code: command_status.map(target::exit_code),
        problems,
        cpu_seconds: own_cpu_seconds(),
        peak_rss_kib: own_peak_rss_kib(),
        ring_bytes: sampler.ring_bytes(),
        unwinding,
        call_graph: call_graph.name().into(),
        kernel_limits: sampler.kernel_limits().to_vec(),
        off_cpu: sampler.off_cpu().then(|| OffCpuSummary {
            samples: aggregator.off_cpu_samples(),
            seconds: aggregator.off_cpu_ns() as f64 / 1e9,
            lost: off_cpu_lost,
        }),
    })
}

/// Off-CPU samples one CPU may send per window: twenty times what the cpu-clock event takes
/// there, and at least 2,000. A bound on what a process that blocks and wakes without end
/// can cost (the time beyond it waits in the threads' sums: it is attributed late, not lost).
fn off_cpu_budget(frequency_hz: u64, window_ns: u64) -> u64 {
    let on_cpu = u128::from(frequency_hz) * u128::from(window_ns) / 1_000_000_000;
    (on_cpu * 20).clamp(2_000, 1 << 24) as u64
}

/// This process's CPU time, user and system, in seconds.
fn own_cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rusage buffer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// This process's peak resident memory (`VmHWM`: of its own address space, unlike
/// `ru_maxrss`, which also counts what it had before its exec).
fn own_peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Sends the queued messages the writer can take now. When the queue is long (the writer is
/// far behind), waits for the writer, but never past a stop request. False if the writer is
/// gone.
fn hand_over(
    queued: &mut VecDeque<WriterMessage>,
    to_writer: &mpsc::SyncSender<WriterMessage>,
    stop: &AtomicBool,
) -> bool {
    while let Some(message) = queued.pop_front() {
        match to_writer.try_send(message) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(message)) => {
                queued.push_front(message);
                if queued.len() <= MAX_QUEUED_WINDOWS || stop.load(Ordering::Relaxed) {
                    return true;
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return false,
        }
    }
    true
}

/// Raises the soft limit on open files to the hard one (up to 65,536): amprof pins the files of
/// the processes it samples, and must still be able to open its own.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain calls with a valid rlimit buffer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_cur.max(limit.rlim_max.min(65_536));
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn drain(sampler: &mut Sampler, aggregator: &mut WindowAggregator) {
    sampler.drain(|event| match event {
        Event::Sample(sample) => aggregator.add(&sample),
        Event::Exec { pid, .. } => aggregator.exec(pid),
    });
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

enum WriterMessage {
    /// Boxed: a window is large, and the queue holds many messages.
    Window(Box<ClosedWindow>),
    End(End),
}

#[derive(Default)]
struct WriterProgress {
    windows: AtomicUsize,
    failed: AtomicBool,
    /// Monotonic ns after which windows are written without waiting for names (0: not set):
    /// recording is stopping.
    hurry_until: AtomicU64,
}

/// The writer thread: symbolizes and writes each closed window, then the end record. Returns
/// (windows written, windows evicted, bytes in the file).
fn write_windows(
    mut writer: CaptureWriter,
    from_sampler: mpsc::Receiver<WriterMessage>,
    progress: &WriterProgress,
    inline: bool,
    meta: &Meta,
    mut sink: Option<Box<dyn WindowSink>>,
) -> Result<Written> {
    let mut symbolizer = WindowSymbolizer::new(inline);
    let mut windows = 0u64;
    let mut problems = Problems::default();
    let mut unwinding: Option<Unwinding> = None;
    for message in from_sampler {
        match message {
            WriterMessage::Window(closed) => {
                let mut deadline = Instant::now() + symbolize::SYMBOLIZE_BUDGET;
                let hurry = progress.hurry_until.load(Ordering::Relaxed);
                if hurry != 0 {
                    let left = hurry.saturating_sub(monotonic_ns());
                    deadline = deadline.min(Instant::now() + Duration::from_nanos(left));
                }
                let mut window = symbolizer.build(*closed, deadline);
                if let Some(window_problems) = &window.problems {
                    problems.add(window_problems);
                }
                if let Some(counts) = &window.unwinding {
                    unwinding.get_or_insert_default().add(counts);
                }
                if let Err(e) = writer.write_window(&mut window) {
                    progress.failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                windows += 1;
                progress.windows.fetch_add(1, Ordering::Relaxed);
                if let Some(sink) = sink.as_mut() {
                    sink.window(meta, &window);
                }
            }
            WriterMessage::End(mut end) => {
                end.windows_closed = windows;
                end.windows_evicted = writer.windows_evicted();
                let evicted = writer.windows_evicted();
                let path = writer.path().to_path_buf();
                let bytes_before = writer.bytes();
                writer.finish(&end)?;
                let bytes = std::fs::metadata(&path).map_or(bytes_before, |m| m.len());
                return Ok(Written {
                    windows,
                    evicted,
                    bytes,
                    problems,
                    unwinding,
                });
            }
        }
    }
    Err(anyhow!("recording stopped before it finished"))
}

/// The progress bar on a terminal; nothing otherwise.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(options: &RecordOptions) -> Self {
        if options.quiet || !std::io::stderr().is_terminal() {
            return Self { bar: None };
        }
        let bar = match options.duration {
            Some(d) => ProgressBar::new(d.as_millis() as u64).with_style(
                ProgressStyle::with_template(
                    "{spinner} recording {elapsed_precise} [{bar:30}] {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template(
                    "{spinner} recording {elapsed_precise} (Ctrl-C stops) {msg}",
                )
                .expect("valid template"),
            ),
        };
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar: Some(bar) }
    }

    fn update(&self, aggregator: &WindowAggregator, lost: u64, windows: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(bar.elapsed().as_millis() as u64);
            bar.set_message(format!(
                "{} samples · {windows} windows · {lost} lost · {} processes",
                aggregator.samples(),
                aggregator.processes().len()
            ));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return String::new();
    }
    procs::comm_to_string(&buf)
}

fn uname_field(field: impl Fn(&libc::utsname) -> &[libc::c_char]) -> String {
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = field(&uts).iter().map(|&c| c as u8).collect();
    procs::comm_to_string(&bytes)
}
