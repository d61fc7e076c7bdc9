//! One recording, in three phases: [`Recording::start`] (load and attach the eBPF programs,
//! start the command, create the capture and its writer thread), [`Recording::sample`] (drain,
//! aggregate and close windows until a [`Stopped`]), [`Recording::finish`] (hand the last
//! windows and the end record to the writer within the stop rules, wait for the command).

use std::{
    collections::VecDeque,
    process::{Child, ExitStatus},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};

use super::{
    CallGraph, GRACE, Observer, OffCpuSummary, POLL, Progress, RecordOptions, RecordSummary,
    STOP_WITHIN, WindowSink, default_ring_bytes, host, kernel_tables, off_cpu_budget,
    procs::ProcessTable,
    ring_capacity,
    sampler::{OffCpuConfig, RingEvent, Sampler, SamplerConfig, TableSpace},
    stop::{self, Poll, Stopped},
    target, unwind,
    window::WindowAggregator,
    writer::{self, WriterMessage, WriterProgress, WriterSetup, Written},
};
use crate::capture::{
    CaptureWriter, SampleKind,
    format::{End, Meta, Target, TargetKind},
};

/// A recording under way: what the sampling thread holds.
pub struct Recording<'o> {
    options: &'o RecordOptions,
    sampler: Sampler,
    aggregator: WindowAggregator,
    call_graph: CallGraph,
    start_ns: u64,
    deadline_ns: Option<u64>,
    cpus: usize,
    child: Option<Child>,
    command_status: Option<ExitStatus>,
    /// Closed windows not yet taken by the writer, in order.
    queued: VecDeque<WriterMessage>,
    to_writer: mpsc::SyncSender<WriterMessage>,
    written: Arc<WriterProgress>,
    writer_thread: thread::JoinHandle<Result<Written>>,
    lost: u64,
    idle: u64,
    off_cpu_lost: u64,
}

impl<'o> Recording<'o> {
    /// Starts sampling (the kernel's limits told to `observer`), the command in command mode,
    /// the capture and its writer thread. Window 0 starts once sampling has.
    pub fn start(
        options: &'o RecordOptions,
        sink: Option<Box<dyn WindowSink>>,
        observer: &mut dyn Observer,
    ) -> Result<Self> {
        let cpus = aya::util::online_cpus().map_or(1, |c| c.len());
        let command_mode = !options.command.is_empty();
        let mut meta = initial_meta(options, cpus);
        let mut sampler = Sampler::start(&sampler_config(options, cpus))?;
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
            observer.warning(limit);
        }
        // Window 0 starts once sampling has started (attaching can take seconds on a saturated
        // machine); the few samples taken before this are dropped, as before any recording.
        let start_ns = host::monotonic_ns();
        sampler.start_windows(start_ns)?;
        let mut child = None;
        if command_mode {
            let spawned = target::spawn_gated(&options.command, |pid| sampler.add_target(pid))?;
            if let Some(target) = meta.target.as_mut() {
                target.pids = vec![spawned.id()];
            }
            child = Some(spawned);
        }
        meta.start_ns = start_ns;
        meta.realtime_offset_ns = host::realtime_offset_ns();

        let capture = CaptureWriter::create(&options.output, &meta, ring_capacity(options))?;
        let (to_writer, from_sampler) = mpsc::sync_channel(writer::CHANNEL_CAPACITY);
        let written = Arc::new(WriterProgress::default());
        let setup = WriterSetup {
            writer: capture,
            inline: options.inline,
            meta,
            sink,
        };
        let writer_thread = {
            let written = Arc::clone(&written);
            thread::Builder::new()
                .name("amprof-writer".into())
                .spawn(move || writer::write_windows(setup, from_sampler, &written))
                .context("cannot start the writer thread")?
        };

        let window_ns = options.window.as_nanos() as u64;
        let mut aggregator = WindowAggregator::new(start_ns, window_ns, ProcessTable::default());
        if call_graph.is_dwarf() {
            aggregator = aggregator.with_unwinder(unwind::DwarfUnwinder::new());
        }
        if let Some(maps) = sampler.take_table_maps() {
            aggregator = aggregator.with_kernel_tables(kernel_tables::KernelTables::new(maps)?);
        }
        let deadline_ns = options.duration.map(|d| start_ns + d.as_nanos() as u64);
        if let Some(deadline) = deadline_ns {
            aggregator.set_end(deadline);
        }
        observer.started(options.duration);
        Ok(Self {
            options,
            sampler,
            aggregator,
            call_graph,
            start_ns,
            deadline_ns,
            cpus,
            child,
            command_status: None,
            queued: VecDeque::new(),
            to_writer,
            written,
            writer_thread,
            lost: 0,
            idle: 0,
            off_cpu_lost: 0,
        })
    }

    /// Samples until a stop (`stop` is the signal flag), closing each window as it is due and
    /// handing it to the writer without waiting; returns once the last window is closed (or
    /// the writer is gone).
    pub fn sample(&mut self, stop: &AtomicBool, observer: &mut dyn Observer) -> Option<Stopped> {
        let mut stopped = None;
        loop {
            self.sampler.wait(POLL);
            self.drain();
            let now = host::monotonic_ns();
            if stopped.is_none() {
                stopped = self.check_stop(now, stop);
                if let Some(Stopped { reason, end_ns }) = stopped {
                    if let Some(budget) = stop::naming_budget(reason) {
                        let until = host::monotonic_ns() + budget.as_nanos() as u64;
                        self.written.hurry_until.store(until, Ordering::Relaxed);
                    }
                    // Samples taken after the end (still in the ring buffer) are dropped.
                    self.aggregator.set_end(end_ns);
                    self.sampler.stop();
                    self.drain();
                    self.aggregator.stop(end_ns);
                }
            }
            self.close_due_windows(now);
            // Hand closed windows over without waiting: the writer may be naming a big window.
            if !writer::hand_over(&mut self.queued, &self.to_writer, stop) {
                return stopped; // the writer failed; its error is reported by finish
            }
            observer.progress(&Progress {
                samples: self.aggregator.samples(),
                windows: self.written.windows.load(Ordering::Relaxed),
                lost: self.lost,
                processes: self.aggregator.processes().len(),
            });
            let writer_failed = self.written.failed.load(Ordering::Relaxed);
            if stopped.is_some() && (self.aggregator.finished() || writer_failed) {
                return stopped;
            }
        }
    }

    fn check_stop(&mut self, now_ns: u64, stop: &AtomicBool) -> Option<Stopped> {
        let (child, status, pids) = (
            &mut self.child,
            &mut self.command_status,
            &self.options.pids,
        );
        stop::check(
            self.deadline_ns,
            Poll {
                now_ns,
                signalled: stop.load(Ordering::Relaxed),
                writer_failed: self.written.failed.load(Ordering::Relaxed),
                command_exited: || {
                    *status = child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                    status.is_some()
                },
                targets_gone: || !pids.is_empty() && !pids.iter().any(|&p| target::is_alive(p)),
            },
        )
    }

    fn drain(&mut self) {
        let aggregator = &mut self.aggregator;
        self.sampler.drain(|event| match event {
            RingEvent::Sample(sample) => aggregator.add(&sample),
            RingEvent::Exec { pid, .. } => aggregator.exec(pid),
        });
    }

    fn close_due_windows(&mut self, now_ns: u64) {
        while let Some(index) = self.aggregator.due(now_ns, GRACE.as_nanos() as u64) {
            let counters = self.sampler.take_window_counters(index);
            self.lost += counters.lost;
            self.idle += counters.idle;
            self.off_cpu_lost += counters.off_cpu_lost;
            let closed =
                self.aggregator
                    .close_next(counters.lost, counters.idle, counters.off_cpu_lost);
            self.queued
                .push_back(WriterMessage::Window(Box::new(closed)));
        }
    }

    /// Hands the last windows and the end record to the writer, waits for it (after a signal,
    /// within [`STOP_WITHIN`]) and for the command, and returns the summary.
    pub fn finish(
        mut self,
        stopped: Option<Stopped>,
        observer: &mut dyn Observer,
    ) -> Result<RecordSummary> {
        let Stopped { reason, end_ns } = stopped.unwrap_or(Stopped {
            reason: stop::StopReason::Error,
            end_ns: host::monotonic_ns(),
        });
        let stopped_at = Instant::now();
        self.queued.push_back(WriterMessage::End(End {
            end_ns,
            windows_closed: 0, // filled in by the writer
            windows_evicted: 0,
            reason: reason.name().into(),
        }));
        let by_signal = reason == stop::StopReason::Signal;
        // The writer finishes within STOP_WITHIN of a signal (it stops naming windows before); a
        // writer still busy after that (a disk that does not answer) is left behind: every window
        // it wrote is readable.
        let give_up = by_signal.then(|| stopped_at + STOP_WITHIN);
        writer::send_remaining(&mut self.queued, &self.to_writer, give_up);
        drop(self.to_writer);
        while by_signal && !self.writer_thread.is_finished() && stopped_at.elapsed() < STOP_WITHIN {
            thread::sleep(Duration::from_millis(10));
        }
        if by_signal && !self.writer_thread.is_finished() {
            observer.finished();
            return Err(anyhow!(
                "stopped before the capture could be finalized: the windows written to {} are readable",
                self.options.output.display()
            ));
        }
        // The progress display stays while the writer names and writes the last windows.
        let written = self.writer_thread.join();
        observer.finished();
        let Written {
            windows,
            evicted,
            bytes,
            problems,
            unwinding,
        } = written.map_err(|_| anyhow!("the writer thread panicked"))??;

        // The command outlives a --duration: wait for it, as its exit code is amprof's. After a
        // signal, only until STOP_WITHIN: a command that ignores it is left running.
        let mut command_status = self.command_status;
        if let Some(child) = self.child.as_mut()
            && command_status.is_none()
        {
            command_status = if by_signal {
                target::wait_timeout(child, STOP_WITHIN.saturating_sub(stopped_at.elapsed()))
            } else {
                Some(child.wait().context("cannot wait for the command")?)
            };
            if command_status.is_none() {
                observer.warning(&format!(
                    "the command (pid {}) is still running; recording stopped",
                    child.id()
                ));
            }
        }
        let options = self.options;
        Ok(RecordSummary {
            output: options.output.clone(),
            seconds: (end_ns - self.start_ns) as f64 / 1e9,
            cpus: self.cpus,
            frequency_hz: options.frequency_hz,
            samples: self.aggregator.samples(),
            lost: self.lost,
            idle: self.idle,
            windows,
            windows_evicted: evicted,
            bytes,
            stopped_by: reason,
            command_exit_code: command_status.map(target::exit_code),
            problems,
            cpu_seconds: host::own_cpu_seconds(),
            peak_rss_kib: host::own_peak_rss_kib(),
            ring_bytes: self.sampler.ring_bytes(),
            unwinding,
            call_graph: self.call_graph.name().into(),
            kernel_limits: self.sampler.kernel_limits().to_vec(),
            off_cpu: self.sampler.off_cpu().then(|| OffCpuSummary {
                samples: self.aggregator.totals().samples(SampleKind::OffCpu),
                seconds: self.aggregator.totals().weight(SampleKind::OffCpu) as f64 / 1e9,
                lost: self.off_cpu_lost,
            }),
        })
    }
}

/// The capture's description of the recording asked for (what the kernel gives is filled in
/// once sampling starts).
fn initial_meta(options: &RecordOptions, cpus: usize) -> Meta {
    let command_mode = !options.command.is_empty();
    Meta {
        amprof_version: env!("CARGO_PKG_VERSION").into(),
        hostname: host::hostname(),
        kernel_release: host::uname_field(|u| &u.release),
        arch: host::uname_field(|u| &u.machine),
        cpus: cpus as u32,
        frequency_hz: options.frequency_hz,
        event: "cpu-clock".into(),
        window_ns: options.window.as_nanos() as u64,
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
        user_stack_bytes: user_stack_bytes(options),
        inline: options.inline,
        duration_ns: options.duration.map_or(0, |d| d.as_nanos() as u64),
        off_cpu_period_ns: options.off_cpu.map_or(0, |p| p.as_nanos() as u64),
        ..Meta::default()
    }
}

fn user_stack_bytes(options: &RecordOptions) -> u32 {
    match options.call_graph {
        CallGraph::Fp => 0,
        CallGraph::Dwarf | CallGraph::DwarfCopy => options.stack_size,
    }
}

fn sampler_config(options: &RecordOptions, cpus: usize) -> SamplerConfig {
    let command_mode = !options.command.is_empty();
    let window_ns = options.window.as_nanos() as u64;
    let user_stack_bytes = user_stack_bytes(options);
    SamplerConfig {
        frequency_hz: options.frequency_hz,
        window_len_ns: window_ns,
        targets: if command_mode {
            Some(Vec::new())
        } else if options.pids.is_empty() {
            None
        } else {
            Some(options.pids.clone())
        },
        follow_children: command_mode,
        ring_bytes: options.ring_bytes.unwrap_or_else(|| {
            default_ring_bytes(
                cpus,
                options.frequency_hz,
                user_stack_bytes,
                options.off_cpu.is_some(),
            )
        }),
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
    }
}
