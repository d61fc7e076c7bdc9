//! Choosing from a capture: which windows, processes and samples a report or a push covers, and
//! the one way to go through a window's samples.

use std::ops::RangeInclusive;

use anyhow::Error;

pub use super::format::OffCpu;
use super::format::{OffCpuReason, Process, Stack, Window};
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
    /// The name `--event` takes and outputs show: `on-cpu`, `off-cpu` or `wall`.
    pub fn name(self) -> &'static str {
        match self {
            Self::OnCpu => "on-cpu",
            Self::OffCpu => "off-cpu",
            Self::Wall => "wall",
        }
    }

    pub fn includes_on_cpu(self) -> bool {
        self != Self::OffCpu
    }

    pub fn includes_off_cpu(self) -> bool {
        self != Self::OnCpu
    }

    /// Samples of this event with `stack`.
    pub fn samples_of(self, stack: &Stack) -> u64 {
        let on = if self.includes_on_cpu() {
            stack.count
        } else {
            0
        };
        let off = if self.includes_off_cpu() {
            stack.off_cpu_count
        } else {
            0
        };
        on + off
    }

    /// Nanoseconds this event's samples of `stack` stand for: `period_ns` per on-CPU sample
    /// ([`super::Meta::sample_period_ns`]), plus the off-CPU time.
    pub fn nanoseconds_of(self, stack: &Stack, period_ns: u64) -> u64 {
        let on = if self.includes_on_cpu() {
            stack.count.saturating_mul(period_ns)
        } else {
            0
        };
        let off = if self.includes_off_cpu() {
            stack.off_cpu_ns
        } else {
            0
        };
        on.saturating_add(off)
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

    /// The samples of `window` the selection keeps (of the selected event), in time order.
    pub fn samples<'w>(&self, window: &'w Window) -> impl Iterator<Item = Sample<'w>> + 'w {
        let kept = self.kept_stacks(window);
        let on = self
            .event
            .includes_on_cpu()
            .then(|| samples(window))
            .into_iter()
            .flatten();
        let off = self
            .event
            .includes_off_cpu()
            .then(|| off_cpu_samples(window))
            .into_iter()
            .flatten();
        MergeByTime {
            a: on.peekable(),
            b: off.peekable(),
        }
        .filter(move |s| kept[s.stack_index as usize])
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
    /// `None` for an on-CPU sample; for an off-CPU one, the time off the CPU it stands for.
    pub off_cpu: Option<OffCpu>,
}

impl Sample<'_> {
    /// Nanoseconds the sample stands for: its off-CPU time, or `period_ns` on the CPU.
    pub fn nanoseconds(&self, period_ns: u64) -> u64 {
        self.off_cpu.map_or(period_ns, |off| off.ns)
    }
}

/// Two time-ordered sample streams as one.
struct MergeByTime<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<'w, A, B> Iterator for MergeByTime<A, B>
where
    A: Iterator<Item = Sample<'w>>,
    B: Iterator<Item = Sample<'w>>,
{
    type Item = Sample<'w>;

    fn next(&mut self) -> Option<Sample<'w>> {
        match (self.a.peek(), self.b.peek()) {
            (Some(a), Some(b)) if b.time_ns < a.time_ns => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

/// Every sample of `window`, in time order. The reader validated the window (columns of equal
/// length, indices in range); a sample that refers to nothing is skipped, never a panic.
pub fn samples(window: &Window) -> impl Iterator<Item = Sample<'_>> + '_ {
    let columns: Columns<'_> = (
        &window.sample_time_deltas,
        &window.sample_tids,
        &window.sample_cpus,
        &window.sample_stacks,
    );
    column_samples(window, columns).map(|(_, sample)| sample)
}

/// Every off-CPU sample of `window`, in time order (validated like [`samples`]).
pub fn off_cpu_samples(window: &Window) -> impl Iterator<Item = Sample<'_>> + '_ {
    let columns: Columns<'_> = (
        &window.off_cpu_time_deltas,
        &window.off_cpu_tids,
        &window.off_cpu_cpus,
        &window.off_cpu_stacks,
    );
    column_samples(window, columns).filter_map(|(index, mut sample)| {
        let reason = OffCpuReason::try_from(*window.off_cpu_reasons.get(index)?).ok()?;
        let ns = *window.off_cpu_ns.get(index)?;
        let wait_ns = window.off_cpu_wait(index)?;
        sample.off_cpu = Some(OffCpu {
            ns,
            wait_ns,
            reason,
        });
        Some(sample)
    })
}

/// The columns of one kind of sample: time deltas, tids, CPUs, stack indices.
type Columns<'w> = (&'w [u64], &'w [u32], &'w [u32], &'w [u32]);

/// The samples of `columns` (as on-CPU samples), with their index in the columns.
fn column_samples<'w>(
    window: &'w Window,
    (deltas, tids, cpus, stacks): Columns<'w>,
) -> impl Iterator<Item = (usize, Sample<'w>)> + 'w {
    let mut time = window.start_ns;
    deltas
        .iter()
        .zip(tids)
        .zip(cpus)
        .zip(stacks)
        .enumerate()
        .filter_map(move |(index, (((&delta, &tid), &cpu), &stack_index))| {
            time = time.saturating_add(delta);
            let stack = window.stacks.get(stack_index as usize)?;
            let process = window.processes.get(stack.process as usize)?;
            let sample = Sample {
                time_ns: time,
                tid,
                cpu,
                stack_index,
                stack,
                process_index: stack.process,
                process,
                off_cpu: None,
            };
            Some((index, sample))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::testing::WindowBuilder;

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

    #[test]
    fn a_sample_of_nothing_is_skipped() {
        let mut w = two_processes();
        w.sample_stacks[1] = 99;
        assert_eq!(samples(&w).count(), 2);
    }
}
