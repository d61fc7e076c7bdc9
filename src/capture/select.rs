//! Choosing from a capture: which windows, processes and samples a report or a push covers, and
//! the one way to go through a window's samples.

use std::ops::RangeInclusive;

use anyhow::Error;

use super::format::{Process, Stack, Window};
use crate::error::usage;

/// Which windows and processes a report or a push covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Window indices (as the summary lists them), as ranges; empty: every window.
    pub windows: Vec<RangeInclusive<u64>>,
    pub pids: Vec<u32>,
    /// Process names (`comm` of the main thread), matched exactly.
    pub comms: Vec<String>,
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

    /// Per stack of `window`: kept (selected, with samples).
    pub fn kept_stacks(&self, window: &Window) -> Vec<bool> {
        window
            .stacks
            .iter()
            .map(|stack| stack.count > 0 && self.includes_stack(window, stack))
            .collect()
    }

    /// The samples of `window` the selection keeps, in time order.
    pub fn samples<'w>(&self, window: &'w Window) -> impl Iterator<Item = Sample<'w>> + 'w {
        let kept = self.kept_stacks(window);
        samples(window).filter(move |s| kept[s.stack_index as usize])
    }

    /// The usage error for a capture none of whose windows the selection keeps (only when
    /// windows were asked for: a capture without windows is not an error).
    pub fn no_window_error(&self) -> Option<Error> {
        if self.windows.is_empty() {
            return None;
        }
        let ranges: Vec<String> = self
            .windows
            .iter()
            .map(|r| format!("{}..{}", r.start(), r.end()))
            .collect();
        Some(usage(format!(
            "the capture has no window in {}",
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
}

/// Every sample of `window`, in time order. The reader validated the window (columns of equal
/// length, indices in range); a sample that refers to nothing is skipped, never a panic.
pub fn samples(window: &Window) -> impl Iterator<Item = Sample<'_>> + '_ {
    let mut time = window.start_ns;
    window
        .sample_time_deltas
        .iter()
        .zip(&window.sample_tids)
        .zip(&window.sample_cpus)
        .zip(&window.sample_stacks)
        .filter_map(move |(((&delta, &tid), &cpu), &stack_index)| {
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
            })
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
            elsewhere.no_window_error().unwrap().to_string(),
            "the capture has no window in 0..1,5..5"
        );
        assert!(all.no_window_error().is_none());
    }

    #[test]
    fn a_sample_of_nothing_is_skipped() {
        let mut w = two_processes();
        w.sample_stacks[1] = 99;
        assert_eq!(samples(&w).count(), 2);
    }
}
