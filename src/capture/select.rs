//! Choosing from a capture: which windows, processes and samples a report or a push covers, and
//! the one way to go through a window's samples.

use std::ops::RangeInclusive;

use anyhow::Error;

pub use super::format::OffCpu;
use super::{
    format::{Process, Stack, Window},
    kind::{Detail, KindSet, SampleKind},
};
use crate::error::usage;

/// Which windows and processes a report or a push covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Window indices (as the summary lists them), as ranges; empty: every window.
    pub windows: Vec<RangeInclusive<u64>>,
    pub pids: Vec<u32>,
    /// Process names (`comm` of the main thread), matched exactly.
    pub comms: Vec<String>,
    /// Which samples: on-CPU, off-CPU or both.
    pub event: Event,
}

/// Which kind of samples a report covers (`report --event`). Off-CPU samples stand for time
/// off the CPU, not for a sampling period: outputs never add one kind to the other silently,
/// and `Wall` puts both on one axis of time (an on-CPU sample stands for one sampling period).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Event {
    /// Samples of threads running on a CPU (the perf event, e.g. `cpu-clock`).
    #[default]
    OnCpu,
    /// Time threads spent off the CPU, blocked or waiting for one (`record --off-cpu`).
    OffCpu,
    /// Both: where the threads' time went, on the CPU or off it.
    Wall,
}

impl Event {
    /// Every event, in the order `--event` lists them.
    pub const ALL: [Event; 3] = [Event::OnCpu, Event::OffCpu, Event::Wall];

    /// What it selects, for `--event`'s help.
    pub fn help(self) -> &'static str {
        match self {
            Self::OnCpu => "Samples of threads running on a CPU",
            Self::OffCpu => {
                "Time threads spent off the CPU: blocked (sleeps, locks, I/O) or waiting for a CPU"
            }
            Self::Wall => "Both, as time: where the threads' wall-clock time went",
        }
    }

    /// The name `--event` takes and outputs show: `on-cpu`, `off-cpu` or `wall`.
    pub fn name(self) -> &'static str {
        match self {
            Self::OnCpu => "on-cpu",
            Self::OffCpu => "off-cpu",
            Self::Wall => "wall",
        }
    }

    /// The event that takes `kinds`: on-CPU samples alone, off-CPU ones alone, or wall time
    /// for more than one kind (or none).
    pub fn of_kinds(kinds: KindSet) -> Self {
        match (
            kinds.contains(SampleKind::OnCpu),
            kinds.contains(SampleKind::OffCpu),
        ) {
            (true, false) => Self::OnCpu,
            (false, true) => Self::OffCpu,
            _ => Self::Wall,
        }
    }

    /// Its kind, if it takes only one.
    pub fn kind(self) -> Option<SampleKind> {
        let kinds = self.kinds();
        if kinds.len() == 1 {
            kinds.iter().next()
        } else {
            None
        }
    }

    /// What a title calls a profile of it (`off-CPU time`): its kind's
    /// [`title`](super::KindDescriptor::title), or wall-clock time.
    pub fn title(self) -> &'static str {
        match self.kind() {
            Some(kind) => kind.descriptor().title,
            None => "wall-clock time (on + off CPU)",
        }
    }

    /// Its name where it qualifies a unit (`µs off-CPU`, `µs wall`): its kind's
    /// [`short_name`](super::KindDescriptor::short_name), or `wall`.
    pub fn short_name(self) -> &'static str {
        match self.kind() {
            Some(kind) => kind.descriptor().short_name,
            None => "wall",
        }
    }

    /// The kinds of samples it takes.
    pub fn kinds(self) -> KindSet {
        match self {
            Self::OnCpu => KindSet::of(&[SampleKind::OnCpu]),
            Self::OffCpu => KindSet::of(&[SampleKind::OffCpu]),
            Self::Wall => KindSet::of(&[SampleKind::OnCpu, SampleKind::OffCpu]),
        }
    }

    pub fn includes_on_cpu(self) -> bool {
        self.kinds().contains(SampleKind::OnCpu)
    }

    pub fn includes_off_cpu(self) -> bool {
        self.kinds().contains(SampleKind::OffCpu)
    }

    /// Samples of this event with `stack`.
    pub fn samples_of(self, stack: &Stack) -> u64 {
        self.kinds()
            .iter()
            .map(|kind| kind.stack_totals(stack, 0).0)
            .fold(0, u64::saturating_add)
    }

    /// Nanoseconds this event's samples of `stack` stand for: `period_ns` per on-CPU sample
    /// ([`super::Meta::sample_period_ns`]), plus the off-CPU time.
    pub fn nanoseconds_of(self, stack: &Stack, period_ns: u64) -> u64 {
        self.kinds()
            .iter()
            .map(|kind| kind.stack_totals(stack, period_ns).1)
            .fold(0, u64::saturating_add)
    }
}

impl Selection {
    pub fn includes_window(&self, window: &Window) -> bool {
        self.windows.is_empty() || self.windows.iter().any(|r| r.contains(&window.index))
    }

    /// True if the selection keeps `stack`'s process (whatever its count).
    pub fn includes_stack(&self, window: &Window, stack: &Stack) -> bool {
        if self.pids.is_empty() && self.comms.is_empty() {
            return true;
        }
        let Some(process) = window.processes.get(stack.process as usize) else {
            return false;
        };
        (self.pids.is_empty() || self.pids.contains(&process.pid))
            && (self.comms.is_empty() || self.comms.contains(&process.name))
    }

    /// Per stack of `window`: kept (selected, with samples of the selected event).
    pub fn kept_stacks(&self, window: &Window) -> Vec<bool> {
        window
            .stacks
            .iter()
            .map(|stack| self.event.samples_of(stack) > 0 && self.includes_stack(window, stack))
            .collect()
    }

    /// The samples of `window` the selection keeps (of the selected event's kinds), in time
    /// order: one stream per kind, merged.
    pub fn samples<'w>(&self, window: &'w Window) -> impl Iterator<Item = Sample<'w>> + 'w {
        let kept = self.kept_stacks(window);
        MergeByTime::new(
            self.event
                .kinds()
                .iter()
                .map(|kind| kind_samples(window, kind))
                .collect(),
        )
        .filter(move |s| kept[s.stack_index as usize])
    }

    /// `window` with only what the selection keeps: the stacks (and their samples, of every
    /// kind) of the processes it excludes are emptied, so that an encoder given the result
    /// encodes every sample in it. Windows and kinds are not filtered here.
    pub fn filter_window(&self, mut window: Window) -> Window {
        if self.pids.is_empty() && self.comms.is_empty() {
            return window;
        }
        let kept = self.kept_processes(&window);
        for kind in SampleKind::ALL {
            let samples: Vec<(Detail, u64, u32, u32, u32)> = kind_samples(&window, kind)
                .filter(|s| kept[s.stack_index as usize])
                .map(|s| (s.detail, s.time_ns, s.tid, s.cpu, s.stack_index))
                .collect();
            kind.clear(&mut window);
            let mut previous = window.start_ns;
            for (detail, time_ns, tid, cpu, stack) in samples {
                detail.push(&mut window, &mut previous, time_ns, tid, cpu, stack);
            }
        }
        for (stack, kept) in window.stacks.iter_mut().zip(kept) {
            if !kept {
                SampleKind::ALL.iter().for_each(|k| k.clear_stack(stack));
            }
        }
        window
    }

    /// Per stack of `window`: whether the selection keeps its process (whatever its samples).
    fn kept_processes(&self, window: &Window) -> Vec<bool> {
        window
            .stacks
            .iter()
            .map(|stack| self.includes_stack(window, stack))
            .collect()
    }

    /// The usage error for a capture none of whose windows the selection keeps (only when
    /// windows were asked for: a capture without windows is not an error). `capture` names it
    /// in the message (`the capture`, `the base capture`).
    pub fn no_window_error(&self, capture: &str) -> Option<Error> {
        if self.windows.is_empty() {
            return None;
        }
        let ranges: Vec<String> = self
            .windows
            .iter()
            .map(|r| format!("{}..{}", r.start(), r.end()))
            .collect();
        Some(usage(format!(
            "{capture} has no window in {}",
            ranges.join(",")
        )))
    }
}

/// One sample of a window, with the stack and process it refers to.
#[derive(Clone, Copy, Debug)]
pub struct Sample<'w> {
    /// Monotonic ns (the capture's clock).
    pub time_ns: u64,
    pub tid: u32,
    pub cpu: u32,
    /// Index into `Window::stacks`.
    pub stack_index: u32,
    pub stack: &'w Stack,
    /// Index into `Window::processes`.
    pub process_index: u32,
    pub process: &'w Process,
    /// Its kind, and what a sample of that kind carries.
    pub detail: Detail,
}

impl Sample<'_> {
    pub fn kind(&self) -> SampleKind {
        self.detail.kind()
    }

    /// For an off-CPU sample, the time off the CPU it stands for, its wait and why.
    pub fn off_cpu(&self) -> Option<OffCpu> {
        match self.detail {
            Detail::OffCpu(off) => Some(off),
            Detail::OnCpu => None,
        }
    }

    /// Nanoseconds the sample stands for: its off-CPU time, or `period_ns` on the CPU.
    pub fn nanoseconds(&self, period_ns: u64) -> u64 {
        self.off_cpu().map_or(period_ns, |off| off.ns)
    }
}

/// Time-ordered sample streams (one per kind) as one; of samples at the same time, the one of
/// the stream listed first comes first.
struct MergeByTime<'w> {
    streams: Vec<std::iter::Peekable<KindSamples<'w>>>,
}

type KindSamples<'w> = Box<dyn Iterator<Item = Sample<'w>> + 'w>;

impl<'w> MergeByTime<'w> {
    fn new(streams: Vec<KindSamples<'w>>) -> Self {
        Self {
            streams: streams.into_iter().map(Iterator::peekable).collect(),
        }
    }
}

impl<'w> Iterator for MergeByTime<'w> {
    type Item = Sample<'w>;

    fn next(&mut self) -> Option<Sample<'w>> {
        let mut earliest: Option<(usize, u64)> = None;
        for (index, stream) in self.streams.iter_mut().enumerate() {
            if let Some(sample) = stream.peek()
                && earliest.is_none_or(|(_, time)| sample.time_ns < time)
            {
                earliest = Some((index, sample.time_ns));
            }
        }
        self.streams[earliest?.0].next()
    }
}

/// Every on-CPU sample of `window`, in time order. The reader validated the window (columns of
/// equal length, indices in range); a sample that refers to nothing is skipped, never a panic.
pub fn samples(window: &Window) -> impl Iterator<Item = Sample<'_>> + '_ {
    kind_samples(window, SampleKind::OnCpu)
}

/// Every off-CPU sample of `window`, in time order (validated like [`samples`]).
pub fn off_cpu_samples(window: &Window) -> impl Iterator<Item = Sample<'_>> + '_ {
    kind_samples(window, SampleKind::OffCpu)
}

/// Every sample of `kind` in `window`, in time order (validated like [`samples`]).
pub fn kind_samples(window: &Window, kind: SampleKind) -> KindSamples<'_> {
    let rows = kind.rows(window);
    let mut time = window.start_ns;
    Box::new(
        rows.deltas
            .iter()
            .zip(rows.tids)
            .zip(rows.cpus)
            .zip(rows.stacks)
            .enumerate()
            .filter_map(move |(index, (((&delta, &tid), &cpu), &stack_index))| {
                time = time.saturating_add(delta);
                let stack = window.stacks.get(stack_index as usize)?;
                let process = window.processes.get(stack.process as usize)?;
                Some(Sample {
                    time_ns: time,
                    tid,
                    cpu,
                    stack_index,
                    stack,
                    process_index: stack.process,
                    process,
                    detail: kind.detail(window, index)?,
                })
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{format::OffCpuReason, testing::WindowBuilder};

    fn two_processes() -> Window {
        let mut w = WindowBuilder::new(3);
        let a = w.process(10, "alpha");
        let b = w.process(20, "beta");
        let f = w.function("f");
        let l = w.location(0x10, &[f]);
        let sa = w.stack(a, &[l], 0);
        let sb = w.stack(b, &[l], 0);
        w.sample(5, 10, 0, sa);
        w.sample(7, 20, 1, sb);
        w.sample(9, 10, 1, sa);
        w.build()
    }

    #[test]
    fn selects_windows_and_processes() {
        let w = two_processes();
        let all = Selection::default();
        assert!(all.includes_window(&w));
        assert_eq!(all.samples(&w).count(), 3);
        let times: Vec<u64> = all.samples(&w).map(|s| s.time_ns - w.start_ns).collect();
        assert_eq!(times, [5, 7, 9]);
        let beta = Selection {
            comms: vec!["beta".into()],
            ..Selection::default()
        };
        assert_eq!(beta.samples(&w).map(|s| s.tid).collect::<Vec<_>>(), [20]);
        let by_pid = Selection {
            pids: vec![10],
            windows: vec![2..=4],
            ..Selection::default()
        };
        assert!(by_pid.includes_window(&w));
        assert_eq!(by_pid.samples(&w).count(), 2);
        let elsewhere = Selection {
            windows: vec![0..=1, 5..=5],
            ..Selection::default()
        };
        assert!(!elsewhere.includes_window(&w));
        assert_eq!(
            elsewhere
                .no_window_error("the capture")
                .unwrap()
                .to_string(),
            "the capture has no window in 0..1,5..5"
        );
        assert!(all.no_window_error("the capture").is_none());
    }

    /// A process selection keeps both kinds of samples of the processes it keeps, each in its
    /// own columns, and the stacks of the others have no samples of either kind left.
    #[test]
    fn filtering_processes_keeps_off_cpu_samples_apart() {
        let mut w = WindowBuilder::new(0);
        let (a, b) = (w.process(10, "a"), w.process(20, "b"));
        let f = w.function("f");
        let l = w.location(0x10, &[f]);
        let (sa, sb) = (w.stack(a, &[l], 0), w.stack(b, &[l], 0));
        w.sample(5, 10, 0, sa);
        w.sample(6, 20, 0, sb);
        w.off_cpu_sample(7, 10, 1, sa, 3_000, OffCpuReason::Blocked);
        w.off_cpu_sample(8, 20, 1, sb, 4_000, OffCpuReason::Runnable);
        let window = w.build();
        let only_a = Selection {
            pids: vec![10],
            event: Event::Wall,
            ..Selection::default()
        };
        let kept = only_a.filter_window(window);
        assert_eq!(kept.sample_stacks, [sa]);
        assert_eq!(kept.sample_time_deltas, [5]);
        assert_eq!(kept.off_cpu_stacks, [sa]);
        assert_eq!(kept.off_cpu_time_deltas, [7]);
        assert_eq!(kept.off_cpu_ns, [3_000]);
        assert_eq!(kept.off_cpu_reasons, [OffCpuReason::Blocked as i32]);
        let b = &kept.stacks[sb as usize];
        assert_eq!((b.count, b.off_cpu_count, b.off_cpu_ns), (0, 0, 0));
        let a = &kept.stacks[sa as usize];
        assert_eq!((a.count, a.off_cpu_count, a.off_cpu_ns), (1, 1, 3_000));
    }

    #[test]
    fn events_name_their_kinds() {
        assert_eq!(Event::OffCpu.kind(), Some(SampleKind::OffCpu));
        assert_eq!(Event::Wall.kind(), None);
        let names = [Event::OnCpu, Event::OffCpu, Event::Wall].map(|e| (e.title(), e.short_name()));
        assert_eq!(
            names,
            [
                ("on-CPU samples", "on-CPU"),
                ("off-CPU time", "off-CPU"),
                ("wall-clock time (on + off CPU)", "wall")
            ]
        );
    }

    #[test]
    fn a_sample_of_nothing_is_skipped() {
        let mut w = two_processes();
        w.sample_stacks[1] = 99;
        assert_eq!(samples(&w).count(), 2);
    }
}
