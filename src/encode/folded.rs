//! Folded stacks: `process;root;...;leaf weight`, one line per distinct stack, the input of
//! inferno and Brendan Gregg's FlameGraph. Kernel frames carry the `_[k]` suffix of
//! stackcollapse-perf, which flamegraph palettes color apart.
//!
//! The weight depends on `report --event`, and each kind's descriptor
//! ([`KindDescriptor`](crate::capture::KindDescriptor)) says how ([`Unit`]):
//! - a periodic kind alone (`on-cpu`, the default): samples, as perf's stackcollapse counts them;
//! - otherwise the kinds' weight in their folded unit (`folded_unit`), summed per line, then
//!   rounded to the nearest unit: `off-cpu`, microseconds off the CPU (the unit of BCC's
//!   `offcputime -f`); `wall`, microseconds of both, an on-CPU sample standing for one sampling
//!   period ([`Meta::sample_period_ns`](crate::capture::Meta::sample_period_ns)).
//!
//! A kind whose samples carry a label (`label_values`) ends their stacks with the synthetic
//! leaf frame of its value ([`SampleKind::leaf_frame`]). An off-CPU stack ends with
//! `[off-cpu: blocked]` (it waited: a sleep, a lock, I/O) or `[off-cpu: runnable]` (preempted, it
//! waited for a CPU), in both `off-cpu` and `wall`. In `wall` it is what tells the time off the
//! CPU from the time on it under the same caller; in `off-cpu` it tells a lock or I/O wait from
//! CPU saturation, which the stack alone does not (a preempted thread's stack is wherever it was
//! running). A leaf (not a root) keeps the callers' tree the same as on-CPU;
//! `sed 's/;\[off-cpu: [a-z]*\]//'` turns the lines into offcputime's plain stacks. Lines that
//! round to 0 are left out.
use std::io::Write;

use anyhow::Result;
use rustc_hash::FxHashMap;

use super::{Encoder, Ending, frames};
use crate::{
    capture::{
        Event, SampleKind, Selection,
        format::{Stack, Window},
        kind_samples,
    },
    text::printable,
};

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

/// What the lines of a fold weigh (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Samples, counted: a periodic kind alone.
    Samples,
    /// The kinds' weight: `per` of their weight unit make one `name` (1000 ns one µs), each
    /// line's sum rounded to the nearest.
    Weight { name: &'static str, per: u64 },
}

impl Unit {
    /// The unit of folded stacks of `event`.
    pub fn of(event: Event) -> Self {
        if let Some(kind) = event.kind()
            && kind.descriptor().periodic
        {
            return Self::Samples;
        }
        match event.kinds().iter().next() {
            Some(kind) => {
                let (name, per) = kind.descriptor().folded_unit;
                Self::Weight {
                    name,
                    per: per.max(1),
                }
            }
            None => Self::Samples,
        }
    }

    /// `samples`, `µs`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Samples => "samples",
            Self::Weight { name, .. } => name,
        }
    }

    /// What `totals` add to a line, before rounding.
    fn of_totals(self, totals: Totals) -> u64 {
        match self {
            Self::Samples => totals.samples,
            Self::Weight { .. } => totals.weight,
        }
    }

    /// A line's sum in this unit (0: the line is left out).
    fn rounded(self, sum: u64) -> u64 {
        match self {
            Self::Samples => sum,
            Self::Weight { per, .. } => sum.saturating_add(per / 2) / per,
        }
    }
}

/// Samples and what they weigh (in their kind's weight unit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub samples: u64,
    pub weight: u64,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.samples = self.samples.saturating_add(other.samples);
        self.weight = self.weight.saturating_add(other.weight);
    }
}

/// The selected stacks of the windows added, merged by folded line, weighted as the event
/// asks (see the module documentation).
pub struct Fold {
    event: Event,
    unit: Unit,
    /// Nanoseconds one sample of a periodic kind stands for.
    period_ns: u64,
    /// Per line: its sum, in [`Unit`] before rounding.
    weights: FxHashMap<String, u64>,
    /// What was added, by kind and label value (an index into the kind's `label_values`).
    totals: FxHashMap<(SampleKind, Option<usize>), Totals>,
    line: String,
}

/// A fold of on-CPU samples (the default event).
impl Default for Fold {
    fn default() -> Self {
        Self::new(Event::OnCpu, 0)
    }
}

impl Fold {
    /// A fold of `event`'s samples; `period_ns`: what one sample of a periodic kind stands for.
    pub fn new(event: Event, period_ns: u64) -> Self {
        Self {
            event,
            unit: Unit::of(event),
            period_ns,
            weights: FxHashMap::default(),
            totals: FxHashMap::default(),
            line: String::new(),
        }
    }

    pub fn event(&self) -> Event {
        self.event
    }

    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// What was added of `kind`, every label value together (nothing unless the event
    /// includes it).
    pub fn total(&self, kind: SampleKind) -> Totals {
        let mut total = Totals::default();
        for (_, totals) in self.totals.iter().filter(|((k, _), _)| *k == kind) {
            total.add(*totals);
        }
        total
    }

    /// What was added of `kind` with the label value of index `value` (see
    /// [`KindDescriptor::label_values`](crate::capture::KindDescriptor::label_values)).
    pub fn label_total(&self, kind: SampleKind, value: usize) -> Totals {
        self.totals
            .get(&(kind, Some(value)))
            .copied()
            .unwrap_or_default()
    }

    /// Adds the stacks of `window` whose process `selection` keeps.
    pub fn add(&mut self, window: &Window, selection: &Selection) {
        let kinds: Vec<KindWeights> = self
            .event
            .kinds()
            .iter()
            .map(|kind| KindWeights::new(window, kind, self.period_ns))
            .collect();
        let unit = self.unit;
        for (index, stack) in window.stacks.iter().enumerate() {
            if !selection.includes_stack(window, stack) {
                continue;
            }
            let weighs = |kind: &KindWeights| {
                (0..kind.values()).any(|value| unit.of_totals(kind.totals(index, stack, value)) > 0)
            };
            if !kinds.iter().any(weighs) {
                continue;
            }
            self.line.clear();
            stack_line(window, stack, &mut self.line);
            let base = self.line.len();
            for kind in &kinds {
                for value in 0..kind.values() {
                    let totals = kind.totals(index, stack, value);
                    let weight = unit.of_totals(totals);
                    if weight == 0 {
                        continue;
                    }
                    let label = kind.labelled().then_some(value);
                    self.totals
                        .entry((kind.kind, label))
                        .or_default()
                        .add(totals);
                    self.line.truncate(base);
                    if let Some(frame) = kind.kind.leaf_frame(value) {
                        self.line.push(';');
                        self.line.push_str(frame);
                    }
                    self.weigh(weight);
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

    /// The lines with their weights (in [`Unit`]: see the module documentation), sorted by
    /// line.
    pub fn lines(self) -> Vec<(String, u64)> {
        let unit = self.unit;
        let mut lines: Vec<(String, u64)> = self
            .weights
            .into_iter()
            .map(|(line, sum)| (line, unit.rounded(sum)))
            .filter(|&(_, weight)| weight > 0)
            .collect();
        lines.sort_unstable();
        lines
    }
}

/// One kind's samples in the stacks of a window, by label value: the stacks' own totals for a
/// kind without a label, the samples summed for a kind with one (a stack's totals do not keep
/// its samples' labels).
struct KindWeights {
    kind: SampleKind,
    /// What one sample of a periodic kind stands for.
    period_ns: u64,
    /// Per stack, per label value (`values` of them): a labelled kind's samples.
    by_label: Option<(usize, Vec<Totals>)>,
}

impl KindWeights {
    fn new(window: &Window, kind: SampleKind, period_ns: u64) -> Self {
        let values = kind.descriptor().label_values.len();
        if values == 0 {
            return Self {
                kind,
                period_ns,
                by_label: None,
            };
        }
        let mut totals = vec![Totals::default(); window.stacks.len() * values];
        for sample in kind_samples(window, kind) {
            let Some(value) = sample.detail.label_index().filter(|&v| v < values) else {
                continue;
            };
            if let Some(slot) = totals.get_mut(sample.stack_index as usize * values + value) {
                slot.add(Totals {
                    samples: 1,
                    weight: sample.detail.weight(period_ns),
                });
            }
        }
        Self {
            kind,
            period_ns,
            by_label: Some((values, totals)),
        }
    }

    fn labelled(&self) -> bool {
        self.by_label.is_some()
    }

    /// How many label values its stacks are split by (1 without a label).
    fn values(&self) -> usize {
        self.by_label.as_ref().map_or(1, |(values, _)| *values)
    }

    /// Its samples with label value `value` in `stack`, of index `index`.
    fn totals(&self, index: usize, stack: &Stack, value: usize) -> Totals {
        match &self.by_label {
            None => {
                let (samples, weight) = self.kind.stack_totals(stack, self.period_ns);
                Totals { samples, weight }
            }
            Some((values, totals)) => totals
                .get(index * values + value)
                .copied()
                .unwrap_or_default(),
        }
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
    use crate::capture::{format::OffCpuReason, testing::WindowBuilder};

    /// Off-CPU nanoseconds `fold` added with `reason`.
    fn off_cpu_ns(fold: &Fold, reason: OffCpuReason) -> u64 {
        fold.label_total(SampleKind::OffCpu, reason as usize).weight
    }

    fn on_cpu_samples(fold: &Fold) -> u64 {
        fold.total(SampleKind::OnCpu).samples
    }

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
                on_cpu_samples(&fold),
                off_cpu_ns(&fold, OffCpuReason::Blocked)
            ),
            (3, 0)
        );
        assert_eq!(fold.lines(), [("app;main;work".to_string(), 3)]);
    }

    #[test]
    fn off_cpu_weighs_microseconds_by_reason() {
        let fold = fold(Event::OffCpu, &Selection::default());
        assert_eq!(on_cpu_samples(&fold), 0);
        assert_eq!(off_cpu_ns(&fold, OffCpuReason::Blocked), 3_999_600 + 400);
        assert_eq!(off_cpu_ns(&fold, OffCpuReason::Runnable), 700_000);
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
        assert_eq!(on_cpu_samples(&fold), 3);
        assert_eq!(off_cpu_ns(&fold, OffCpuReason::Blocked), 3_999_600);
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
