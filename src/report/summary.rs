//! The terminal summary (and its `--json` form): what was recorded, each window's counts, and
//! where the CPU went.

use std::io::Write;

use anyhow::Result;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use crate::{
    capture::{
        Completeness, Meta, Selection,
        format::{Problems, TargetKind, Unwinding, Window},
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

/// What the summary counts, window by window as the capture is read.
#[derive(Default)]
pub struct Tally {
    self_counts: FxHashMap<(String, String), u64>,
    total_counts: FxHashMap<(String, String), u64>,
    process_counts: FxHashMap<(u32, String), u64>,
    totals: Totals,
    symbolized: u64,
    windows: Vec<WindowInfo>,
    /// End and `evicted_before` of the last window added.
    last: Option<(u64, u64)>,
    seen: FxHashSet<(String, String)>,
}

impl Tally {
    /// Counts the stacks of `window` that `selection` keeps (`meta` places the window).
    pub fn add(&mut self, meta: &Meta, window: &Window, selection: &Selection) {
        let mut samples = 0;
        let mut processes = FxHashSet::default();
        for stack in &window.stacks {
            if !selection.includes_stack(window, stack) {
                continue;
            }
            samples += stack.count;
            if let Some(process) = window.processes.get(stack.process as usize) {
                processes.insert(process.pid);
                *self
                    .process_counts
                    .entry((process.pid, process.name.clone()))
                    .or_default() += stack.count;
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
                    if depth == 0 && innermost {
                        *self.self_counts.entry(key.clone()).or_default() += stack.count;
                    }
                    innermost = false;
                    if self.seen.insert(key.clone()) {
                        *self.total_counts.entry(key).or_default() += stack.count;
                    }
                });
            }
            if all_named {
                self.symbolized += stack.count;
            }
        }
        let totals = &mut self.totals;
        totals.samples += samples;
        totals.lost += window.lost;
        totals.idle += window.idle;
        totals.truncated += window.truncated;
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
        });
        self.last = Some((window.end_ns, window.evicted_before));
    }

    /// The summary of what was added: `top` functions and processes of each list.
    pub fn summary(mut self, meta: &Meta, ending: &Ending<'_>, top: usize) -> Summary {
        self.totals.fully_symbolized = ratio(self.symbolized, self.totals.samples);
        let total_samples = self.totals.samples;
        let ranked = |counts: FxHashMap<(String, String), u64>| -> Vec<FunctionCount> {
            let mut list: Vec<_> = counts.into_iter().collect();
            list.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            list.into_iter()
                .take(top)
                .map(|((function, module), samples)| FunctionCount {
                    function,
                    module,
                    samples,
                    percent: 100.0 * ratio(samples, total_samples),
                })
                .collect()
        };
        let mut top_processes: Vec<_> = self.process_counts.into_iter().collect();
        top_processes.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let top_processes = top_processes
            .into_iter()
            .take(top)
            .map(|((pid, name), samples)| ProcessCount {
                pid,
                name,
                samples,
                percent: 100.0 * ratio(samples, total_samples),
            })
            .collect();

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
            top_self: ranked(self.self_counts),
            top_total: ranked(self.total_counts),
            top_processes,
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
        writeln!(
            out,
            "{:>6} {:>9} {:>8} {:>9} {:>7} {:>9} {:>9} {:>9}",
            "window", "start", "length", "samples", "lost", "idle", "truncated", "processes"
        )?;
        for w in &self.windows {
            writeln!(
                out,
                "{:>6} {:>8.1}s {:>7.1}s {:>9} {:>7} {:>9} {:>9} {:>9}",
                w.index,
                w.start_offset_seconds,
                w.seconds,
                w.samples,
                w.lost,
                w.idle,
                w.truncated,
                w.processes
            )?;
        }
        let t = &self.totals;
        writeln!(
            out,
            "{:>6} {:>9} {:>8} {:>9} {:>7} {:>9} {:>9}",
            "total", "", "", t.samples, t.lost, t.idle, t.truncated
        )?;
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
                let module = if f.module.is_empty() {
                    String::new()
                } else if f.module.starts_with('[') && f.module.ends_with(']') {
                    // Pseudo-modules are bracketed already: `[kernel.kallsyms]`, `[vdso]`.
                    format!("  {}", printable(&f.module))
                } else {
                    format!("  [{}]", printable(&f.module))
                };
                writeln!(
                    out,
                    "{:>9} {:>5.1}%  {}{module}",
                    f.samples,
                    f.percent,
                    printable(&f.function)
                )?;
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
        Ok(())
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
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
