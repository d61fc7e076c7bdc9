//! Folded stacks: `process;root;...;leaf weight`, one line per distinct stack, the input of
//! inferno and Brendan Gregg's FlameGraph. Kernel frames carry the `_[k]` suffix of
//! stackcollapse-perf, which flamegraph palettes color apart.
//!
//! The weight depends on `report --event`:
//! - `on-cpu` (the default): on-CPU samples, as perf's stackcollapse counts them;
//! - `off-cpu`: microseconds off the CPU (the off-CPU samples' nanoseconds summed per line, then
//!   rounded to the nearest µs), the unit of BCC's `offcputime -f`;
//! - `wall`: microseconds of both, an on-CPU sample standing for one sampling period
//!   ([`Meta::sample_period_ns`](crate::capture::Meta::sample_period_ns)).
//!
//! An off-CPU stack ends with one synthetic leaf frame, `[off-cpu: blocked]` (it waited: a
//! sleep, a lock, I/O) or `[off-cpu: runnable]` (preempted, it waited for a CPU), in both
//! `off-cpu` and `wall`. In `wall` it is what tells the time off the CPU from the time on it
//! under the same caller; in `off-cpu` it tells a lock or I/O wait from CPU saturation, which
//! the stack alone does not (a preempted thread's stack is wherever it was running). A leaf
//! (not a root) keeps the callers' tree the same as on-CPU; `sed 's/;\[off-cpu: [a-z]*\]//'`
//! turns the lines into offcputime's plain stacks. Lines that round to 0 µs are left out.
use std::io::Write;

use anyhow::Result;
use rustc_hash::FxHashMap;

use super::{Encoder, Ending, frames};
use crate::{
    capture::{
        Event, Selection,
        format::{OffCpuReason, Stack, Window},
        off_cpu_samples,
    },
    text::printable,
};

/// The synthetic leaf frame of an off-CPU stack, by reason (see the module documentation).
pub fn off_cpu_frame(reason: OffCpuReason) -> &'static str {
    match reason {
        OffCpuReason::Blocked => "[off-cpu: blocked]",
        OffCpuReason::Runnable => "[off-cpu: runnable]",
    }
}

/// The reasons, in the order of [`Fold`]'s per-reason arrays.
const REASONS: [OffCpuReason; 2] = [OffCpuReason::Blocked, OffCpuReason::Runnable];

/// Appends the folded form of `stack` (without its count) to `line`.
pub fn stack_line(window: &Window, stack: &Stack, line: &mut String) {
    use std::fmt::Write as _;
    let process = window.processes.get(stack.process as usize);
    push_frame(line, process.map_or("[unknown]", |p| p.name.as_str()), "");
    let kernel = stack.kernel_frames as usize;
    let (kernel_frames, user_frames) = stack.locations.split_at(kernel.min(stack.locations.len()));
    let mut names: Vec<String> = Vec::new();
    for (ids, suffix) in [(user_frames, ""), (kernel_frames, "_[k]")] {
        for &id in ids.iter().rev() {
            let Some(location) = window.locations.get(id as usize) else {
                continue;
            };
            names.clear();
            frames::for_each_frame(window, location, |frame| {
                let mut name = String::new();
                let _ = write!(name, "{frame}");
                names.push(name);
            });
            // Innermost first in the location; root first in the line.
            for name in names.iter().rev() {
                line.push(';');
                push_frame(line, name, suffix);
            }
        }
    }
}

/// Appends `name` so that it stays one frame on one line: the frame separator `;` becomes `:`,
/// and control, bidi and invisible characters become visible escapes ([`printable`]), so that
/// the line is safe on a terminal and inside a flamegraph's XML.
fn push_frame(line: &mut String, name: &str, suffix: &str) {
    let name = printable(name);
    if name.contains(';') {
        line.extend(name.chars().map(|c| if c == ';' { ':' } else { c }));
    } else {
        line.push_str(&name);
    }
    line.push_str(suffix);
}

/// The selected stacks of the windows added, merged by folded line, weighted as the event
/// asks (see the module documentation).
pub struct Fold {
    event: Event,
    /// Nanoseconds one on-CPU sample stands for (`wall`).
    period_ns: u64,
    /// Per line: on-CPU samples (`on-cpu`), or nanoseconds (`off-cpu`, `wall`).
    weights: FxHashMap<String, u64>,
    /// On-CPU samples added.
    on_cpu_samples: u64,
    /// Off-CPU nanoseconds added, by reason ([`REASONS`]).
    off_cpu_ns: [u64; 2],
    line: String,
}

/// A fold of on-CPU samples (the default event).
impl Default for Fold {
    fn default() -> Self {
        Self::new(Event::OnCpu, 0)
    }
}

impl Fold {
    /// A fold of `event`'s samples; `period_ns`: what one on-CPU sample stands for.
    pub fn new(event: Event, period_ns: u64) -> Self {
        Self {
            event,
            period_ns,
            weights: FxHashMap::default(),
            on_cpu_samples: 0,
            off_cpu_ns: [0; 2],
            line: String::new(),
        }
    }

    pub fn event(&self) -> Event {
        self.event
    }

    /// On-CPU samples added (0 unless the event includes them).
    pub fn on_cpu_samples(&self) -> u64 {
        self.on_cpu_samples
    }

    /// Off-CPU nanoseconds added with `reason` (0 unless the event includes them).
    pub fn off_cpu_ns(&self, reason: OffCpuReason) -> u64 {
        self.off_cpu_ns[reason as usize]
    }

    /// Adds the stacks of `window` whose process `selection` keeps.
    pub fn add(&mut self, window: &Window, selection: &Selection) {
        // A stack's own off-CPU total has no reason: the samples have.
        let mut off_cpu = Vec::new();
        if self.event.includes_off_cpu() {
            off_cpu = vec![[0u64; 2]; window.stacks.len()];
            for sample in off_cpu_samples(window) {
                if let (Some(off), Some(ns)) = (
                    sample.off_cpu(),
                    off_cpu.get_mut(sample.stack_index as usize),
                ) {
                    let ns = &mut ns[off.reason as usize];
                    *ns = ns.saturating_add(off.ns);
                }
            }
        }
        for (index, stack) in window.stacks.iter().enumerate() {
            if !selection.includes_stack(window, stack) {
                continue;
            }
            let on_cpu = match self.event {
                Event::OnCpu => stack.count,
                Event::Wall => stack.count.saturating_mul(self.period_ns),
                Event::OffCpu => 0,
            };
            let off_cpu = off_cpu.get(index).copied().unwrap_or_default();
            if on_cpu == 0 && off_cpu == [0; 2] {
                continue;
            }
            self.line.clear();
            stack_line(window, stack, &mut self.line);
            let base = self.line.len();
            if on_cpu > 0 {
                self.on_cpu_samples = self.on_cpu_samples.saturating_add(stack.count);
                self.weigh(on_cpu);
            }
            for (reason, ns) in REASONS.into_iter().zip(off_cpu) {
                if ns > 0 {
                    let total = &mut self.off_cpu_ns[reason as usize];
                    *total = total.saturating_add(ns);
                    self.line.truncate(base);
                    self.line.push(';');
                    self.line.push_str(off_cpu_frame(reason));
                    self.weigh(ns);
                }
            }
        }
    }

    /// Adds `weight` to the line being built.
    fn weigh(&mut self, weight: u64) {
        match self.weights.get_mut(self.line.as_str()) {
            Some(total) => *total = total.saturating_add(weight),
            None => {
                self.weights.insert(self.line.clone(), weight);
            }
        }
    }

    /// The lines with their weights (samples, or µs: see the module documentation), sorted by
    /// line.
    pub fn lines(self) -> Vec<(String, u64)> {
        let mut lines: Vec<(String, u64)> = if self.event == Event::OnCpu {
            self.weights.into_iter().collect()
        } else {
            self.weights
                .into_iter()
                .map(|(line, ns)| (line, ns.saturating_add(500) / 1000))
                .filter(|&(_, us)| us > 0)
                .collect()
        };
        lines.sort_unstable();
        lines
    }
}

/// `report --format folded`.
pub struct Folded<'o, W: Write> {
    fold: Fold,
    out: &'o mut W,
}

impl<'o, W: Write> Folded<'o, W> {
    /// Folded stacks of `event`; `period_ns`: what one on-CPU sample stands for.
    pub fn new(event: Event, period_ns: u64, out: &'o mut W) -> Self {
        Self {
            fold: Fold::new(event, period_ns),
            out,
        }
    }
}

impl<W: Write> Encoder for Folded<'_, W> {
    fn add(&mut self, window: &Window, selection: &Selection) -> Result<()> {
        self.fold.add(window, selection);
        Ok(())
    }

    fn finish(self: Box<Self>, _: &Ending<'_>) -> Result<Vec<String>> {
        for (line, count) in self.fold.lines() {
            writeln!(self.out, "{line} {count}")?;
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::testing::WindowBuilder;

    #[test]
    fn frames_stay_one_frame_on_one_line() {
        let mut line = String::new();
        push_frame(&mut line, "a;b\nc\r\x1b[2J\u{202e}", "_[k]");
        assert_eq!(line, r"a:b\x0ac\x0d\x1b[2J\u{202e}_[k]");
        line.clear();
        push_frame(&mut line, "std::vec::Vec<T>::push", "");
        assert_eq!(line, "std::vec::Vec<T>::push");
    }

    #[test]
    fn stacks_fold_root_first_and_merge_across_windows() {
        let window = |index| {
            let mut w = WindowBuilder::new(index);
            let p = w.process(1, "app");
            let k = w.kernel_module();
            let (main, hot, sys) = (w.function("main"), w.function("hot"), w.function("sys"));
            let (lm, lh) = (w.location(0x10, &[main]), w.location(0x20, &[hot]));
            let lk = w.kernel_location(k, 0xffff_0000, &[sys]);
            let s = w.stack(p, &[lk, lh, lm], 1);
            w.sample(1, 1, 0, s);
            w.build()
        };
        let mut fold = Fold::new(Event::OnCpu, 1);
        fold.add(&window(0), &Selection::default());
        fold.add(&window(1), &Selection::default());
        assert_eq!(fold.lines(), [("app;main;hot;sys_[k]".to_string(), 2)]);
    }

    /// One window of `app`: `main;wait` blocked 1.5 ms then 2.4996 ms, preempted 0.7 ms, and
    /// 3 on-CPU samples of `main;work`; `idle` off the CPU 400 ns (rounds to nothing).
    fn off_cpu_window() -> Window {
        let mut w = WindowBuilder::new(0);
        let p = w.process(1, "app");
        let q = w.process(2, "idle");
        let k = w.kernel_module();
        let (main, work, wait) = (w.function("main"), w.function("work"), w.function("wait"));
        let sched = w.function("schedule");
        let (lm, lw) = (w.location(0x10, &[main]), w.location(0x20, &[work]));
        let lb = w.location(0x30, &[wait]);
        let ls = w.kernel_location(k, 0xffff_0000, &[sched]);
        let on = w.stack(p, &[lw, lm], 0);
        let off = w.stack(p, &[ls, lb, lm], 1);
        let idle = w.stack(q, &[ls, lm], 1);
        for t in 0..3 {
            w.sample(10 + t, 1, 0, on);
        }
        w.off_cpu_sample(20, 1, 0, off, 1_500_000, OffCpuReason::Blocked);
        w.off_cpu_sample(21, 1, 1, off, 700_000, OffCpuReason::Runnable);
        w.off_cpu_sample(22, 1, 0, off, 2_499_600, OffCpuReason::Blocked);
        w.off_cpu_sample(23, 2, 0, idle, 400, OffCpuReason::Blocked);
        w.build()
    }

    fn fold(event: Event, selection: &Selection) -> Fold {
        let mut fold = Fold::new(event, 10_000_000);
        fold.add(&off_cpu_window(), selection);
        fold
    }

    #[test]
    fn on_cpu_counts_samples_and_ignores_off_cpu_ones() {
        let fold = fold(Event::OnCpu, &Selection::default());
        assert_eq!(
            (
                fold.on_cpu_samples(),
                fold.off_cpu_ns(OffCpuReason::Blocked)
            ),
            (3, 0)
        );
        assert_eq!(fold.lines(), [("app;main;work".to_string(), 3)]);
    }

    #[test]
    fn off_cpu_weighs_microseconds_by_reason() {
        let fold = fold(Event::OffCpu, &Selection::default());
        assert_eq!(fold.on_cpu_samples(), 0);
        assert_eq!(fold.off_cpu_ns(OffCpuReason::Blocked), 3_999_600 + 400);
        assert_eq!(fold.off_cpu_ns(OffCpuReason::Runnable), 700_000);
        // 3.9996 ms rounds to 4000 µs; idle's 400 ns to nothing, left out.
        assert_eq!(
            fold.lines(),
            [
                (
                    "app;main;wait;schedule_[k];[off-cpu: blocked]".to_string(),
                    4000
                ),
                (
                    "app;main;wait;schedule_[k];[off-cpu: runnable]".to_string(),
                    700
                ),
            ]
        );
    }

    #[test]
    fn wall_puts_both_on_one_axis_of_time() {
        let only_app = Selection {
            pids: vec![1],
            ..Selection::default()
        };
        let fold = fold(Event::Wall, &only_app);
        assert_eq!(fold.on_cpu_samples(), 3);
        assert_eq!(fold.off_cpu_ns(OffCpuReason::Blocked), 3_999_600);
        assert_eq!(
            fold.lines(),
            [
                (
                    "app;main;wait;schedule_[k];[off-cpu: blocked]".to_string(),
                    4000
                ),
                (
                    "app;main;wait;schedule_[k];[off-cpu: runnable]".to_string(),
                    700
                ),
                // 3 samples of 10 ms.
                ("app;main;work".to_string(), 30_000),
            ]
        );
    }
}
