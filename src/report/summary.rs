//! The terminal summary (and its `--json` form): what was recorded, each window's counts, and
//! where the CPU went.

use std::io::Write;

use anyhow::Result;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use super::{Loaded, Selection, frames};
use crate::{
    capture::{
        Completeness,
        format::{TargetKind, Window},
    },
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
}

#[derive(Debug, Serialize)]
pub struct Totals {
    /// Selected samples.
    pub samples: u64,
    pub lost: u64,
    pub idle: u64,
    /// Samples whose user stack unwinding stopped early (dwarf mode).
    pub truncated: u64,
    /// Share of selected samples whose every frame has a symbol.
    pub fully_symbolized: f64,
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

impl Summary {
    pub fn build(loaded: &Loaded, selection: &Selection, top: usize) -> Self {
        let meta = loaded.reader.meta();
        let mut self_counts: FxHashMap<(String, String), u64> = FxHashMap::default();
        let mut total_counts: FxHashMap<(String, String), u64> = FxHashMap::default();
        let mut process_counts: FxHashMap<(u32, String), u64> = FxHashMap::default();
        let mut totals = Totals {
            samples: 0,
            lost: 0,
            idle: 0,
            truncated: 0,
            fully_symbolized: 0.0,
        };
        let mut symbolized = 0u64;
        let mut windows = Vec::new();
        let mut seen: FxHashSet<(String, String)> = FxHashSet::default();
        for window in &loaded.windows {
            let mut samples = 0;
            let mut processes = FxHashSet::default();
            for stack in &window.stacks {
                if !selection.includes_stack(window, stack) {
                    continue;
                }
                samples += stack.count;
                if let Some(process) = window.processes.get(stack.process as usize) {
                    processes.insert(process.pid);
                    *process_counts
                        .entry((process.pid, process.name.clone()))
                        .or_default() += stack.count;
                }
                let mut all_named = true;
                seen.clear();
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
                            *self_counts.entry(key.clone()).or_default() += stack.count;
                        }
                        innermost = false;
                        if seen.insert(key.clone()) {
                            *total_counts.entry(key).or_default() += stack.count;
                        }
                    });
                }
                if all_named {
                    symbolized += stack.count;
                }
            }
            totals.samples += samples;
            totals.lost += window.lost;
            totals.idle += window.idle;
            totals.truncated += window.truncated;
            windows.push(WindowInfo {
                index: window.index,
                start_offset_seconds: window.start_ns.saturating_sub(meta.start_ns) as f64 / 1e9,
                seconds: (window.end_ns - window.start_ns) as f64 / 1e9,
                samples,
                lost: window.lost,
                idle: window.idle,
                late: window.late,
                truncated: window.truncated,
                processes: processes.len(),
            });
        }
        totals.fully_symbolized = ratio(symbolized, totals.samples);
        let total_samples = totals.samples;

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
        let mut top_processes: Vec<_> = process_counts.into_iter().collect();
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
        let end = loaded.reader.end();
        let last_end = loaded
            .windows
            .last()
            .map(|w| w.end_ns)
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
                state: match loaded.reader.completeness() {
                    Some(Completeness::Finalized) => "finalized",
                    Some(Completeness::Truncated { .. }) => "truncated",
                    _ => "not-finalized",
                }
                .into(),
                stopped_by: end.map(|e| e.reason.clone()),
                windows_evicted: end.map_or_else(
                    || loaded.windows.last().map_or(0, |w| w.evicted_before),
                    |e| e.windows_evicted,
                ),
            },
            windows,
            totals,
            top_self: ranked(self_counts),
            top_total: ranked(total_counts),
            top_processes,
        }
    }

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
