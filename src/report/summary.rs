//! The terminal summary (and its `--json` form): what was recorded, each window's counts, and
//! where the CPU went.
//!
//! A capture recorded with `--off-cpu` adds where the threads waited: an off-CPU section (text)
//! and the `off_cpu` object (JSON), whatever `--event` says, since a summary tells what the
//! capture holds; `--event off-cpu` leaves the on-CPU top lists out (their JSON arrays are then
//! empty). A capture without off-CPU samples gives exactly what it gave before: the off-CPU
//! columns, section and fields appear only with them.
//!
//! Off-CPU "self" time goes to the innermost *user* frame of a stack (the innermost frame of a
//! stack without user frames, e.g. a kernel thread's): a blocked thread's kernel frames end in
//! the scheduler, every one the same, so the innermost frame would rank `schedule` first and
//! say nothing. The kernel frames (which tell a futex from a read) still rank in the total
//! (self + children) list.

use std::io::Write;

use anyhow::Result;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use crate::{
    capture::{
        Completeness, Event, Meta, Selection,
        format::{Problems, Stack, TargetKind, Unwinding, Window},
        off_cpu_samples,
    },
    encode::{Encoder, Ending, frames},
    text::printable,
};

#[derive(Debug, Serialize)]
pub struct Summary {
    pub capture: CaptureInfo,
    pub windows: Vec<WindowInfo>,
    pub totals: Totals,
    pub top_self: Vec<FunctionCount>,
    pub top_total: Vec<FunctionCount>,
    pub top_processes: Vec<ProcessCount>,
    /// Captures recorded with `--off-cpu` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub off_cpu: Option<OffCpuSummary>,
    /// The text shows the on-CPU top lists (not `--event off-cpu`).
    #[serde(skip)]
    pub on_cpu_lists: bool,
}

/// Off-CPU time of the selected processes (JSON `off_cpu`): nanoseconds, as integers.
#[derive(Debug, Serialize)]
pub struct OffCpuSummary {
    /// Off-CPU time a thread accumulates per off-CPU sample (`Meta::off_cpu_period_ns`).
    pub period_ns: u64,
    /// Off-CPU samples.
    pub samples: u64,
    /// Off-CPU samples the kernel side could not deliver (all processes).
    pub lost: u64,
    /// Time off the CPU, blocked and runnable.
    pub total_ns: u64,
    /// Waiting for something: a sleep, a lock, I/O.
    pub blocked_ns: u64,
    /// Preempted, waiting for a CPU (the run queue).
    pub runnable_ns: u64,
    /// Functions by off-CPU time as the innermost user frame (see the module documentation).
    pub top_self: Vec<FunctionTime>,
    /// Functions by off-CPU time anywhere in the stack.
    pub top_total: Vec<FunctionTime>,
    pub top_processes: Vec<ProcessTime>,
}

#[derive(Debug, Serialize)]
pub struct FunctionTime {
    pub function: String,
    pub module: String,
    pub ns: u64,
    /// Share of `total_ns`.
    pub percent: f64,
}

#[derive(Debug, Serialize)]
pub struct ProcessTime {
    pub pid: u32,
    pub name: String,
    pub ns: u64,
    /// Share of `total_ns`.
    pub percent: f64,
}

#[derive(Debug, Serialize)]
pub struct CaptureInfo {
    pub amprof_version: String,
    pub hostname: String,
    pub kernel_release: String,
    pub arch: String,
    pub cpus: u32,
    pub event: String,
    pub frequency_hz: u64,
    pub call_graph: String,
    /// What the recording's kernel refused and what was done instead.
    pub kernel_limits: Vec<String>,
    pub window_seconds: f64,
    /// Ring capacity (0: every window kept).
    pub keep: u32,
    /// `system`, `pids` or `command`.
    pub target: String,
    pub target_pids: Vec<u32>,
    pub target_command: Vec<String>,
    pub command_line: Vec<String>,
    /// Start of window 0, RFC 3339.
    pub start: String,
    pub start_unix_ns: i64,
    /// Seconds from the start to the end of the last window.
    pub duration_seconds: f64,
    /// `finalized`, `not-finalized` or `truncated`.
    pub state: String,
    /// Why recording stopped, when finalized.
    pub stopped_by: Option<String>,
    pub windows_evicted: u64,
}

#[derive(Debug, Serialize)]
pub struct WindowInfo {
    pub index: u64,
    /// Seconds from the start of the recording.
    pub start_offset_seconds: f64,
    pub seconds: f64,
    pub samples: u64,
    pub lost: u64,
    pub idle: u64,
    pub late: u64,
    /// Samples whose user stack unwinding stopped early (dwarf mode).
    pub truncated: u64,
    pub processes: usize,
    /// What the profiled system's files made amprof refuse or cut short in this window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Problems>,
    /// Captures recorded with `--off-cpu` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub off_cpu: Option<WindowOffCpu>,
}

/// A window's off-CPU samples (of the selected processes; `lost`: all processes).
#[derive(Debug, Serialize)]
pub struct WindowOffCpu {
    pub samples: u64,
    pub ns: u64,
    pub lost: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Totals {
    /// Selected samples.
    pub samples: u64,
    pub lost: u64,
    pub idle: u64,
    /// Samples whose user stack unwinding stopped early (dwarf mode).
    pub truncated: u64,
    /// Share of selected samples whose every frame has a symbol.
    pub fully_symbolized: f64,
    /// The windows' problems, summed (see the capture format's `Problems`).
    pub problems: Problems,
    /// DWARF mode: how user stacks were unwound (all samples of the windows read), and the
    /// unwind tables' size at the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unwinding: Option<Unwinding>,
}

#[derive(Debug, Serialize)]
pub struct FunctionCount {
    pub function: String,
    pub module: String,
    pub samples: u64,
    pub percent: f64,
}

#[derive(Debug, Serialize)]
pub struct ProcessCount {
    pub pid: u32,
    pub name: String,
    pub samples: u64,
    pub percent: f64,
}

/// `(key, weight)`, heaviest first.
type Ranked<K> = Vec<(K, u64)>;

/// The heaviest of a [`Ranking`]: functions (and their module) and processes.
struct Top {
    self_weights: Ranked<(String, String)>,
    total_weights: Ranked<(String, String)>,
    processes: Ranked<(u32, String)>,
}

/// Functions and processes by a weight: on-CPU samples, or off-CPU nanoseconds.
#[derive(Default)]
struct Ranking {
    self_weights: FxHashMap<(String, String), u64>,
    total_weights: FxHashMap<(String, String), u64>,
    processes: FxHashMap<(u32, String), u64>,
    /// Functions of the stack being added (a recursive one counts once in the total).
    seen: FxHashSet<(String, String)>,
}

impl Ranking {
    /// Adds `weight` to the frames of `stack` (self: the innermost frame of location
    /// `self_depth`) and to its process; true if every location has a symbol.
    fn add(&mut self, window: &Window, stack: &Stack, weight: u64, self_depth: usize) -> bool {
        // Off-CPU weights are a capture's nanoseconds: any u64, so every sum saturates.
        if let Some(process) = window.processes.get(stack.process as usize) {
            let total = self
                .processes
                .entry((process.pid, process.name.clone()))
                .or_default();
            *total = total.saturating_add(weight);
        }
        let mut all_named = true;
        self.seen.clear();
        for (depth, &id) in stack.locations.iter().enumerate() {
            let Some(location) = window.locations.get(id as usize) else {
                continue;
            };
            all_named &= !location.lines.is_empty();
            let module = frames::location_module(window, location)
                .map(|m| frames::basename(&m.path).to_string())
                .unwrap_or_default();
            let mut innermost = true;
            frames::for_each_frame(window, location, |frame| {
                let key = (frame.to_string(), module.clone());
                if depth == self_depth && innermost {
                    let total = self.self_weights.entry(key.clone()).or_default();
                    *total = total.saturating_add(weight);
                }
                innermost = false;
                if self.seen.insert(key.clone()) {
                    let total = self.total_weights.entry(key).or_default();
                    *total = total.saturating_add(weight);
                }
            });
        }
        all_named
    }

    /// The `top` functions by self and by total weight, and processes: `(name, weight)`
    /// heaviest first, ties by name.
    fn top(self, top: usize) -> Top {
        fn ranked<K: Ord>(weights: FxHashMap<K, u64>, top: usize) -> Ranked<K> {
            let mut list: Vec<_> = weights.into_iter().collect();
            list.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            list.truncate(top);
            list
        }
        Top {
            self_weights: ranked(self.self_weights, top),
            total_weights: ranked(self.total_weights, top),
            processes: ranked(self.processes, top),
        }
    }
}

/// Every function's weight of one event, from a [`Tally`] (for `report --diff`): keyed by
/// `(function, module)` as the summary's lists are.
#[derive(Debug, Default)]
pub struct FunctionWeights {
    /// Weight as the self frame (the innermost frame; for off-CPU weight, the innermost user
    /// frame: see the module documentation).
    pub self_weights: FxHashMap<(String, String), u64>,
    /// Weight anywhere in the stack (self + children; a recursive function once per stack).
    pub total_weights: FxHashMap<(String, String), u64>,
    /// The whole weight, what shares are of.
    pub total: u64,
    /// Samples of the event: on-CPU, off-CPU, or both (`wall`).
    pub samples: u64,
}

impl FunctionWeights {
    /// Adds `ranking`'s weights times `scale`.
    fn add(&mut self, ranking: Ranking, scale: u64) {
        for (into, from) in [
            (&mut self.self_weights, ranking.self_weights),
            (&mut self.total_weights, ranking.total_weights),
        ] {
            for (key, weight) in from {
                let total = into.entry(key).or_default();
                *total = total.saturating_add(weight.saturating_mul(scale));
            }
        }
    }
}

/// Off-CPU samples added (captures recorded with `--off-cpu`).
#[derive(Default)]
struct OffCpuTally {
    ranking: Ranking,
    samples: u64,
    lost: u64,
    /// By reason: blocked, runnable.
    ns: [u64; 2],
}

/// What the summary counts, window by window as the capture is read.
#[derive(Default)]
pub struct Tally {
    on_cpu: Ranking,
    /// `None`: the capture has no off-CPU samples.
    off_cpu: Option<OffCpuTally>,
    totals: Totals,
    symbolized: u64,
    windows: Vec<WindowInfo>,
    /// End and `evicted_before` of the last window added.
    last: Option<(u64, u64)>,
    /// The event of the last window added.
    event: Event,
}

impl Tally {
    /// Counts the stacks of `window` that `selection` keeps (`meta` places the window).
    pub fn add(&mut self, meta: &Meta, window: &Window, selection: &Selection) {
        let mut samples = 0;
        let mut processes = FxHashSet::default();
        let on_cpu_lists = selection.event != Event::OffCpu;
        self.event = selection.event;
        for stack in &window.stacks {
            // A stack only off the CPU has no on-CPU sample to count.
            if !selection.includes_stack(window, stack)
                || (stack.count == 0 && stack.off_cpu_count > 0)
            {
                continue;
            }
            samples = stack.count.saturating_add(samples);
            if let Some(process) = window.processes.get(stack.process as usize) {
                processes.insert(process.pid);
            }
            let all_named = if on_cpu_lists {
                self.on_cpu.add(window, stack, stack.count, 0)
            } else {
                stack.locations.iter().all(|&id| {
                    window
                        .locations
                        .get(id as usize)
                        .is_none_or(|l| !l.lines.is_empty())
                })
            };
            if all_named {
                self.symbolized = self.symbolized.saturating_add(stack.count);
            }
        }
        let window_off_cpu = (meta.off_cpu_period_ns != 0).then(|| {
            let tally = self.off_cpu.get_or_insert_default();
            tally.add(window, selection)
        });
        let totals = &mut self.totals;
        totals.samples = totals.samples.saturating_add(samples);
        totals.lost = totals.lost.saturating_add(window.lost);
        totals.idle = totals.idle.saturating_add(window.idle);
        totals.truncated = totals.truncated.saturating_add(window.truncated);
        if let Some(problems) = &window.problems {
            totals.problems.add(problems);
        }
        if let Some(unwinding) = &window.unwinding {
            totals.unwinding.get_or_insert_default().add(unwinding);
        }
        self.windows.push(WindowInfo {
            index: window.index,
            start_offset_seconds: window.start_ns.saturating_sub(meta.start_ns) as f64 / 1e9,
            seconds: window.end_ns.saturating_sub(window.start_ns) as f64 / 1e9,
            samples,
            lost: window.lost,
            idle: window.idle,
            late: window.late,
            truncated: window.truncated,
            processes: processes.len(),
            problems: window.problems.clone(),
            off_cpu: window_off_cpu,
        });
        self.last = Some((window.end_ns, window.evicted_before));
    }

    /// Takes every function's weight of `event` out of the tally (not a top list): on-CPU
    /// samples (`on-cpu`), off-CPU nanoseconds (`off-cpu`), or nanoseconds of both (`wall`, an
    /// on-CPU sample standing for `period_ns`), as the summary ranks them. The tally's lists
    /// are empty afterwards; its windows and totals stay.
    pub fn take_function_weights(&mut self, event: Event, period_ns: u64) -> FunctionWeights {
        let mut weights = FunctionWeights::default();
        if event.includes_on_cpu() {
            let scale = if event == Event::OnCpu { 1 } else { period_ns };
            weights.add(std::mem::take(&mut self.on_cpu), scale);
            weights.samples = self.totals.samples;
            weights.total = self.totals.samples.saturating_mul(scale);
        }
        if event.includes_off_cpu()
            && let Some(off) = &mut self.off_cpu
        {
            weights.add(std::mem::take(&mut off.ranking), 1);
            weights.samples = weights.samples.saturating_add(off.samples);
            weights.total = off
                .ns
                .iter()
                .fold(weights.total, |t, &ns| t.saturating_add(ns));
        }
        weights
    }

    /// The summary of what was added: `top` functions and processes of each list.
    pub fn summary(mut self, meta: &Meta, ending: &Ending<'_>, top: usize) -> Summary {
        self.totals.fully_symbolized = ratio(self.symbolized, self.totals.samples);
        let total_samples = self.totals.samples;
        let Top {
            self_weights: top_self,
            total_weights: top_total,
            processes: top_processes,
        } = self.on_cpu.top(top);
        let function_counts = |list: Vec<((String, String), u64)>| -> Vec<FunctionCount> {
            list.into_iter()
                .map(|((function, module), samples)| FunctionCount {
                    function,
                    module,
                    samples,
                    percent: 100.0 * ratio(samples, total_samples),
                })
                .collect()
        };
        let top_self = function_counts(top_self);
        let top_total = function_counts(top_total);
        let top_processes = top_processes
            .into_iter()
            .map(|((pid, name), samples)| ProcessCount {
                pid,
                name,
                samples,
                percent: 100.0 * ratio(samples, total_samples),
            })
            .collect();
        let off_cpu = if meta.off_cpu_period_ns == 0 {
            None
        } else {
            Some(
                self.off_cpu
                    .take()
                    .unwrap_or_default()
                    .summary(meta.off_cpu_period_ns, top),
            )
        };

        let target = meta.target.clone().unwrap_or_default();
        let end = ending.end;
        let last_end = self
            .last
            .map(|(end_ns, _)| end_ns)
            .or(end.map(|e| e.end_ns))
            .unwrap_or(meta.start_ns);
        let start_unix_ns = meta.start_ns as i64 + meta.realtime_offset_ns;
        Summary {
            capture: CaptureInfo {
                amprof_version: meta.amprof_version.clone(),
                hostname: meta.hostname.clone(),
                kernel_release: meta.kernel_release.clone(),
                arch: meta.arch.clone(),
                cpus: meta.cpus,
                event: meta.event.clone(),
                frequency_hz: meta.frequency_hz,
                call_graph: meta.call_graph.clone(),
                kernel_limits: meta.kernel_limits.clone(),
                window_seconds: meta.window_ns as f64 / 1e9,
                keep: meta.keep,
                target: match TargetKind::try_from(target.kind) {
                    Ok(TargetKind::Pids) => "pids",
                    Ok(TargetKind::Command) => "command",
                    _ => "system",
                }
                .into(),
                target_pids: target.pids,
                target_command: target.command,
                command_line: meta.command_line.clone(),
                start: rfc3339(start_unix_ns),
                start_unix_ns,
                duration_seconds: last_end.saturating_sub(meta.start_ns) as f64 / 1e9,
                state: match ending.completeness {
                    Completeness::Finalized => "finalized",
                    Completeness::Truncated { .. } => "truncated",
                    Completeness::NotFinalized => "not-finalized",
                }
                .into(),
                stopped_by: end.map(|e| e.reason.clone()),
                windows_evicted: end.map_or_else(
                    || self.last.map_or(0, |(_, evicted)| evicted),
                    |e| e.windows_evicted,
                ),
            },
            windows: self.windows,
            totals: self.totals,
            top_self,
            top_total,
            top_processes,
            off_cpu,
            on_cpu_lists: self.event != Event::OffCpu,
        }
    }
}

impl OffCpuTally {
    /// Adds the off-CPU samples of `window` whose process `selection` keeps; returns the
    /// window's counts.
    fn add(&mut self, window: &Window, selection: &Selection) -> WindowOffCpu {
        // Per stack, from the samples (the reasons are theirs).
        let mut by_stack = vec![0u64; window.stacks.len()];
        let (mut samples, mut ns) = (0, 0u64);
        for sample in off_cpu_samples(window) {
            let Some(off) = sample.off_cpu() else {
                continue;
            };
            if !selection.includes_stack(window, sample.stack) {
                continue;
            }
            samples += 1;
            ns = ns.saturating_add(off.ns);
            let reason = &mut self.ns[off.reason as usize];
            *reason = reason.saturating_add(off.ns);
            if let Some(total) = by_stack.get_mut(sample.stack_index as usize) {
                *total = total.saturating_add(off.ns);
            }
        }
        for (stack, &weight) in window.stacks.iter().zip(&by_stack) {
            if weight > 0 {
                let user = stack.kernel_frames as usize;
                let self_depth = if user < stack.locations.len() {
                    user
                } else {
                    0
                };
                self.ranking.add(window, stack, weight, self_depth);
            }
        }
        self.samples += samples;
        self.lost = self.lost.saturating_add(window.off_cpu_lost);
        WindowOffCpu {
            samples,
            ns,
            lost: window.off_cpu_lost,
        }
    }

    fn summary(self, period_ns: u64, top: usize) -> OffCpuSummary {
        let [blocked_ns, runnable_ns] = self.ns;
        let total_ns = blocked_ns.saturating_add(runnable_ns);
        let Top {
            self_weights: top_self,
            total_weights: top_total,
            processes: top_processes,
        } = self.ranking.top(top);
        let function_times = |list: Vec<((String, String), u64)>| -> Vec<FunctionTime> {
            list.into_iter()
                .map(|((function, module), ns)| FunctionTime {
                    function,
                    module,
                    ns,
                    percent: 100.0 * ratio(ns, total_ns),
                })
                .collect()
        };
        OffCpuSummary {
            period_ns,
            samples: self.samples,
            lost: self.lost,
            total_ns,
            blocked_ns,
            runnable_ns,
            top_self: function_times(top_self),
            top_total: function_times(top_total),
            top_processes: top_processes
                .into_iter()
                .map(|((pid, name), ns)| ProcessTime {
                    pid,
                    name,
                    ns,
                    percent: 100.0 * ratio(ns, total_ns),
                })
                .collect(),
        }
    }
}

/// `report` (the default format): the summary, as text or `--json`.
pub struct SummaryReport<'o, W: Write> {
    tally: Tally,
    meta: Meta,
    top: usize,
    json: bool,
    out: &'o mut W,
}

impl<'o, W: Write> SummaryReport<'o, W> {
    pub fn new(meta: &Meta, top: usize, json: bool, out: &'o mut W) -> Self {
        Self {
            tally: Tally::default(),
            meta: meta.clone(),
            top,
            json,
            out,
        }
    }
}

impl<W: Write> Encoder for SummaryReport<'_, W> {
    fn add(&mut self, window: &Window, selection: &Selection) -> Result<()> {
        self.tally.add(&self.meta, window, selection);
        Ok(())
    }

    fn finish(self: Box<Self>, ending: &Ending<'_>) -> Result<Vec<String>> {
        let this = *self;
        let summary = this.tally.summary(&this.meta, ending, this.top);
        if this.json {
            crate::text::write_json(&mut *this.out, &summary)?;
            writeln!(this.out)?;
        } else {
            summary.write_text(this.out)?;
        }
        Ok(Vec::new())
    }
}

impl Summary {
    /// The summary for a terminal. Every text that comes from the capture (names, the command,
    /// the host) is shown through [`printable`]: it may come from a hostile process or machine.
    pub fn write_text(&self, out: &mut impl Write) -> Result<()> {
        let c = &self.capture;
        let target = match c.target.as_str() {
            "pids" => format!("processes {:?}", c.target_pids),
            "command" => format!("command `{}`", printable(&c.target_command.join(" "))),
            _ => "the whole system".into(),
        };
        writeln!(
            out,
            "host      {} · Linux {} {} · {} CPUs",
            printable(&c.hostname),
            printable(&c.kernel_release),
            printable(&c.arch),
            c.cpus
        )?;
        writeln!(
            out,
            "sampling  {} at {} Hz, {} call graphs, {} s windows{}",
            printable(&c.event),
            c.frequency_hz,
            printable(&c.call_graph),
            c.window_seconds,
            if c.keep > 0 {
                format!(", ring of {}", c.keep)
            } else {
                String::new()
            }
        )?;
        for limit in &c.kernel_limits {
            writeln!(out, "kernel    {}", printable(limit))?;
        }
        if let Some(off) = &self.off_cpu {
            writeln!(
                out,
                "off-cpu   a sample per {} ms a thread spends off the CPU",
                off.period_ns as f64 / 1e6
            )?;
        }
        writeln!(out, "target    {target}")?;
        writeln!(
            out,
            "recorded  {}, {:.1} s, {}{}",
            c.start,
            c.duration_seconds,
            c.state,
            c.stopped_by
                .as_ref()
                .map(|r| format!(" (stopped by {})", printable(r)))
                .unwrap_or_default()
        )?;
        if c.windows_evicted > 0 {
            writeln!(out, "evicted   {} older windows (ring)", c.windows_evicted)?;
        }
        writeln!(out)?;
        // Off-CPU columns, for captures that have them (seconds off the CPU, samples lost).
        let off_columns = |off: Option<(u64, u64)>| match (&self.off_cpu, off) {
            (None, _) => String::new(),
            (Some(_), Some((ns, lost))) => format!(" {:>8.3}s {:>8}", ns as f64 / 1e9, lost),
            (Some(_), None) => format!(" {:>9} {:>8}", "off-cpu", "off-lost"),
        };
        writeln!(
            out,
            "{:>6} {:>9} {:>8} {:>9} {:>7} {:>9} {:>9} {:>9}{}",
            "window",
            "start",
            "length",
            "samples",
            "lost",
            "idle",
            "truncated",
            "processes",
            off_columns(None)
        )?;
        for w in &self.windows {
            writeln!(
                out,
                "{:>6} {:>8.1}s {:>7.1}s {:>9} {:>7} {:>9} {:>9} {:>9}{}",
                w.index,
                w.start_offset_seconds,
                w.seconds,
                w.samples,
                w.lost,
                w.idle,
                w.truncated,
                w.processes,
                off_columns(Some(w.off_cpu.as_ref().map_or((0, 0), |o| (o.ns, o.lost))))
            )?;
        }
        let t = &self.totals;
        if let Some(off) = &self.off_cpu {
            writeln!(
                out,
                "{:>6} {:>9} {:>8} {:>9} {:>7} {:>9} {:>9} {:>9}{}",
                "total",
                "",
                "",
                t.samples,
                t.lost,
                t.idle,
                t.truncated,
                "",
                off_columns(Some((off.total_ns, off.lost)))
            )?;
        } else {
            writeln!(
                out,
                "{:>6} {:>9} {:>8} {:>9} {:>7} {:>9} {:>9}",
                "total", "", "", t.samples, t.lost, t.idle, t.truncated
            )?;
        }
        writeln!(
            out,
            "fully symbolized stacks: {:.1}% of samples",
            100.0 * t.fully_symbolized
        )?;
        if let Some(unwinding) = t.unwinding.as_ref().filter(|u| u.samples() > 0) {
            writeln!(out, "{}", unwinding.phrase())?;
        }
        let problems = t.problems.phrases();
        if !problems.is_empty() {
            writeln!(
                out,
                "problems  the profiled system's files: {} (counted, never fatal)",
                problems.join(", ")
            )?;
        }
        if self.on_cpu_lists {
            for (title, list) in [
                ("top functions by self samples", &self.top_self),
                (
                    "top functions by total samples (self + children)",
                    &self.top_total,
                ),
            ] {
                writeln!(out)?;
                writeln!(out, "{title}")?;
                writeln!(out, "{:>9} {:>6}  function", "samples", "%")?;
                for f in list {
                    let samples = f.samples.to_string();
                    write_function(out, &samples, f.percent, &f.function, &f.module)?;
                }
            }
            writeln!(out)?;
            writeln!(out, "top processes")?;
            writeln!(out, "{:>9} {:>6}  {:>7}  name", "samples", "%", "pid")?;
            for p in &self.top_processes {
                writeln!(
                    out,
                    "{:>9} {:>5.1}%  {:>7}  {}",
                    p.samples,
                    p.percent,
                    p.pid,
                    printable(&p.name)
                )?;
            }
        }
        if let Some(off) = &self.off_cpu {
            off.write_text(out)?;
        }
        Ok(())
    }
}

impl OffCpuSummary {
    /// The off-CPU section of the text summary: times in ms.
    fn write_text(&self, out: &mut impl Write) -> Result<()> {
        let ms = |ns: u64| format!("{:.1}", ns as f64 / 1e6);
        let share = |ns: u64| 100.0 * ratio(ns, self.total_ns);
        writeln!(out)?;
        writeln!(
            out,
            "off-CPU   {:.3} s: {:.3} s blocked ({:.1}%), {:.3} s runnable ({:.1}%) · {} samples, {} lost",
            self.total_ns as f64 / 1e9,
            self.blocked_ns as f64 / 1e9,
            share(self.blocked_ns),
            self.runnable_ns as f64 / 1e9,
            share(self.runnable_ns),
            self.samples,
            self.lost
        )?;
        for (title, list) in [
            (
                "top off-CPU functions by self time (innermost user frame: where the threads waited)",
                &self.top_self,
            ),
            (
                "top off-CPU functions by total time (self + children)",
                &self.top_total,
            ),
        ] {
            writeln!(out)?;
            writeln!(out, "{title}")?;
            writeln!(out, "{:>9} {:>6}  function", "ms", "%")?;
            for f in list {
                write_function(out, &ms(f.ns), f.percent, &f.function, &f.module)?;
            }
        }
        writeln!(out)?;
        writeln!(out, "top processes by off-CPU time")?;
        writeln!(out, "{:>9} {:>6}  {:>7}  name", "ms", "%", "pid")?;
        for p in &self.top_processes {
            writeln!(
                out,
                "{:>9} {:>5.1}%  {:>7}  {}",
                ms(p.ns),
                p.percent,
                p.pid,
                printable(&p.name)
            )?;
        }
        Ok(())
    }
}

/// One line of a top functions list: weight, share, escaped name and module.
fn write_function(
    out: &mut impl Write,
    weight: &str,
    percent: f64,
    function: &str,
    module: &str,
) -> Result<()> {
    writeln!(
        out,
        "{weight:>9} {percent:>5.1}%  {}{}",
        printable(function),
        module_label(module)
    )?;
    Ok(())
}

/// What follows a function's name in a text list: its escaped module in brackets, after two
/// spaces (nothing for no module).
pub(super) fn module_label(module: &str) -> String {
    if module.is_empty() {
        String::new()
    } else if module.starts_with('[') && module.ends_with(']') {
        // Pseudo-modules are bracketed already: `[kernel.kallsyms]`, `[vdso]`.
        format!("  {}", printable(module))
    } else {
        format!("  [{}]", printable(module))
    }
}

pub(super) fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Nanoseconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(unix_ns: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_ns.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Seconds a window lasts.
pub fn window_seconds(window: &Window) -> f64 {
    (window.end_ns - window.start_ns) as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{
        format::OffCpuReason,
        testing::{WindowBuilder, meta},
    };

    /// `app` blocks in `read` (user) → `sys_read`, `schedule` (kernel) for 3 ms, and is
    /// preempted in `spin` for 1 ms; kernel thread `kworker` (no user frames) sleeps 2 ms.
    fn window() -> Window {
        let mut w = WindowBuilder::new(0);
        let app = w.process(1, "app");
        let kworker = w.process(2, "kworker");
        let k = w.kernel_module();
        let [read, spin, sys_read, schedule, worker] =
            ["read", "spin", "sys_read", "schedule", "worker_thread"].map(|f| w.function(f));
        let (l_read, l_spin) = (w.location(0x10, &[read]), w.location(0x20, &[spin]));
        let [k_sys, k_sched, k_worker] = [sys_read, schedule, worker]
            .map(|f| w.kernel_location(k, 0xffff_0000 + u64::from(f), &[f]));
        let blocked = w.stack(app, &[k_sched, k_sys, l_read], 2);
        let preempted = w.stack(app, &[l_spin], 0);
        let kernel = w.stack(kworker, &[k_sched, k_worker], 2);
        w.sample(1, 1, 0, preempted);
        w.off_cpu_sample(2, 1, 0, blocked, 3_000_000, OffCpuReason::Blocked);
        w.off_cpu_sample(3, 1, 0, preempted, 1_000_000, OffCpuReason::Runnable);
        w.off_cpu_sample(4, 3, 1, kernel, 2_000_000, OffCpuReason::Blocked);
        w.build()
    }

    fn summary(event: Event, period_ns: u64) -> Summary {
        let meta = Meta {
            off_cpu_period_ns: period_ns,
            ..meta()
        };
        let mut tally = Tally::default();
        let selection = Selection {
            event,
            ..Selection::default()
        };
        tally.add(&meta, &window(), &selection);
        let ending = Ending {
            completeness: Completeness::Finalized,
            end: None,
        };
        tally.summary(&meta, &ending, 10)
    }

    #[test]
    fn off_cpu_self_time_goes_to_the_innermost_user_frame() {
        let summary = summary(Event::OnCpu, 1_000_000);
        let off = summary.off_cpu.expect("an off-CPU section");
        assert_eq!(
            (off.blocked_ns, off.runnable_ns, off.total_ns),
            (5_000_000, 1_000_000, 6_000_000)
        );
        let self_times: Vec<(&str, u64)> = off
            .top_self
            .iter()
            .map(|f| (f.function.as_str(), f.ns))
            .collect();
        // A user stack's self is its innermost user frame, not the scheduler's; a stack without
        // user frames (a kernel thread's) keeps its innermost frame.
        assert_eq!(
            self_times,
            [
                ("read", 3_000_000),
                ("schedule", 2_000_000),
                ("spin", 1_000_000)
            ]
        );
        assert_eq!(off.top_total[0].function, "schedule");
        assert_eq!(off.top_total[0].ns, 5_000_000);
        assert!((off.top_total[0].percent - 500.0 / 6.0).abs() < 1e-9);
        // The on-CPU lists count the one on-CPU sample, and only it.
        assert_eq!(summary.totals.samples, 1);
        assert_eq!(summary.top_processes.len(), 1);
        assert_eq!(summary.windows[0].processes, 1);
        assert!(summary.on_cpu_lists);
    }

    #[test]
    fn off_cpu_event_leaves_the_on_cpu_lists_out() {
        let summary = summary(Event::OffCpu, 1_000_000);
        assert!(!summary.on_cpu_lists);
        assert!(summary.top_self.is_empty() && summary.top_processes.is_empty());
        assert_eq!(summary.off_cpu.unwrap().samples, 3);
    }

    #[test]
    fn no_off_cpu_section_without_off_cpu_recording() {
        let summary = summary(Event::OnCpu, 0);
        assert!(summary.off_cpu.is_none());
        assert!(summary.windows[0].off_cpu.is_none());
        let json = serde_json::to_string(&summary).unwrap();
        assert!(!json.contains("off_cpu"), "{json}");
        let mut text = Vec::new();
        summary.write_text(&mut text).unwrap();
        assert!(!String::from_utf8(text).unwrap().contains("off-"));
    }
}
