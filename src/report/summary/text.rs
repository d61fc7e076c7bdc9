//! The summary for a terminal, written from the [`Summary`] model: the capture, a table of
//! windows, the on-CPU top lists and the off-CPU section.

use std::io::Write;

use anyhow::Result;

use super::{
    model::{OffCpuSection, Summary},
    ratio,
};
use crate::text::printable;

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

impl OffCpuSection {
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
pub(in crate::report) fn module_label(module: &str) -> String {
    if module.is_empty() {
        String::new()
    } else if module.starts_with('[') && module.ends_with(']') {
        // Pseudo-modules are bracketed already: `[kernel.kallsyms]`, `[vdso]`.
        format!("  {}", printable(module))
    } else {
        format!("  [{}]", printable(module))
    }
}
