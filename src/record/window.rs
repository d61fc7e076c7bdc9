//! Aggregating samples into time windows: the hot path of recording.
//!
//! Window `i` covers `[start + i·len, start + (i+1)·len)` on the monotonic clock, and a sample
//! belongs to the window its kernel timestamp falls in. Windows close in order, each one once
//! its end has passed by a grace period (samples from different CPUs reach the ring buffer a
//! little out of order), empty ones included, so that closed windows tile the recording with no
//! gap. A sample for a window already closed is counted as `late` in the next one.
//!
//! Per sample, the work is one process lookup, one hash of the stack, and one push of the sample:
//! stacks are interned per window, and everything else (symbols, mappings) is done per distinct
//! stack when the window closes.

use std::{collections::BTreeMap, hash::BuildHasherDefault, sync::Arc};

use indexmap::IndexMap;
use rustc_hash::{FxHashMap, FxHasher};

use crate::capture::{
    Detail, KindTotals, SampleKind,
    format::{Problems, Unwinding},
};

use super::{
    kernel_tables::KernelTables,
    procs::{ImageId, ProcessImage, ProcessTable},
    sampler::{RingSample, UserUnwind},
    unwind::{DwarfUnwinder, MAX_DWARF_FRAMES, Unwound},
};

const NO_USER_STACK: u64 = 1 << 48;
const TRUNCATED: u64 = 1 << 49;

/// Stack key: `[image | kernel_frames << 32 | NO_USER_STACK | TRUNCATED, frames...]`.
type StackKey = Box<[u64]>;

struct OpenWindow {
    stacks: IndexMap<StackKey, KindTotals, BuildHasherDefault<FxHasher>>,
    images: FxHashMap<ImageId, Arc<ProcessImage>>,
    threads: FxHashMap<u32, (ImageId, [u8; 16])>,
    /// Samples of every kind, in arrival order.
    samples: Vec<ClosedSample>,
    unwinding: Unwinding,
}

impl OpenWindow {
    fn new() -> Self {
        Self {
            stacks: IndexMap::default(),
            images: FxHashMap::default(),
            threads: FxHashMap::default(),
            samples: Vec::new(),
            unwinding: Unwinding::default(),
        }
    }
}

/// A distinct stack of a closed window.
#[derive(Debug)]
pub struct ClosedStack {
    /// Index into [`ClosedWindow::images`].
    pub image: u32,
    /// Kernel frames then user frames, leaf first.
    pub frames: Box<[u64]>,
    pub kernel_frames: u32,
    pub no_user_stack: bool,
    /// DWARF unwinding stopped early.
    pub truncated: bool,
    /// Its samples in the window, by kind.
    pub totals: KindTotals,
}

/// A sample of a closed window, of any kind (an off-CPU sample's time is when the thread ran
/// again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClosedSample {
    pub time_ns: u64,
    pub tid: u32,
    pub cpu: u32,
    /// Index into [`ClosedWindow::stacks`].
    pub stack: u32,
    /// Its kind, and what that kind carries.
    pub detail: Detail,
}

/// A window whose samples are all in, ready to be symbolized and written.
#[derive(Debug)]
pub struct ClosedWindow {
    pub index: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub lost: u64,
    pub idle: u64,
    pub late: u64,
    /// The process images its stacks belong to.
    pub images: Vec<Arc<ProcessImage>>,
    /// `(tid, index into images, thread name)`.
    pub threads: Vec<(u32, u32, String)>,
    pub stacks: Vec<ClosedStack>,
    /// Samples by kind ([`crate::capture::SampleKind`] order), each kind's in time order.
    pub samples: Vec<ClosedSample>,
    /// Off-CPU samples the kernel side could not deliver.
    pub off_cpu_lost: u64,
    /// Problems met while the window was recorded (symbolization adds its own).
    pub problems: Problems,
    /// DWARF mode: how its samples' user stacks were unwound, and the tables' size.
    pub unwinding: Option<Unwinding>,
}

/// Turns the stream of samples into closed windows.
pub struct WindowAggregator {
    start_ns: u64,
    len_ns: u64,
    /// Samples at or after this time are not part of the recording.
    end_ns: u64,
    /// Recording has stopped: every remaining window is due at once.
    stopped: bool,
    next_to_close: u64,
    open: BTreeMap<u64, OpenWindow>,
    late: u64,
    key: Vec<u64>,
    procs: ProcessTable,
    /// The samples aggregated so far, by kind.
    totals: KindTotals,
    /// DWARF mode: unwinds the user stacks the kernel side copied.
    unwinder: Option<DwarfUnwinder>,
    /// DWARF mode with tables: keeps the kernel's unwind tables in step with the processes.
    tables: Option<KernelTables>,
}

impl WindowAggregator {
    pub fn new(start_ns: u64, len_ns: u64, procs: ProcessTable) -> Self {
        assert!(len_ns > 0, "windows have a length");
        Self {
            start_ns,
            len_ns,
            end_ns: u64::MAX,
            stopped: false,
            next_to_close: 0,
            open: BTreeMap::new(),
            late: 0,
            key: Vec::with_capacity(1 + 2 * amprof_abi::MAX_STACK_DEPTH),
            procs,
            totals: KindTotals::default(),
            unwinder: None,
            tables: None,
        }
    }

    /// Unwinds user stacks with `unwinder` (DWARF mode) instead of taking the kernel's
    /// frame-pointer walk.
    pub fn with_unwinder(mut self, unwinder: DwarfUnwinder) -> Self {
        self.unwinder = Some(unwinder);
        self
    }

    /// Hands the processes sampled to the kernel's unwind tables (DWARF mode with tables).
    pub fn with_kernel_tables(mut self, tables: KernelTables) -> Self {
        self.tables = Some(tables);
        self
    }

    /// On-CPU samples aggregated so far.
    pub fn samples(&self) -> u64 {
        self.totals.samples(SampleKind::OnCpu)
    }

    /// The samples aggregated so far, by kind, and what they weigh.
    pub fn totals(&self) -> &KindTotals {
        &self.totals
    }

    pub fn processes(&self) -> &ProcessTable {
        &self.procs
    }

    /// End of window `index`.
    fn window_end(&self, index: u64) -> u64 {
        self.start_ns
            .saturating_add(index.saturating_add(1).saturating_mul(self.len_ns))
            .min(self.end_ns)
    }

    pub fn add(&mut self, sample: &RingSample<'_>) {
        if sample.time_ns < self.start_ns || sample.time_ns >= self.end_ns {
            return;
        }
        let index = (sample.time_ns - self.start_ns) / self.len_ns;
        if index < self.next_to_close {
            self.late += 1;
            return;
        }
        self.totals.add(sample.detail);
        let image = self
            .procs
            .image(sample.pid, &sample.comm, sample.time_ns, index);
        if let (Some(tables), Some(current)) = (self.tables.as_mut(), self.procs.get(sample.pid)) {
            tables.publish(sample.pid, current);
        }

        self.key.clear();
        self.key.push(0);
        self.key.extend_from_slice(sample.frames);
        let mut flags = if sample.no_user_stack {
            NO_USER_STACK
        } else {
            0
        };
        let truncated = match sample.user_unwind {
            UserUnwind::FramePointers | UserUnwind::Tables => false,
            UserUnwind::TablesTruncated => true,
            UserUnwind::Copy | UserUnwind::TablesThenCopy => {
                !sample.user_stack.is_empty() && self.unwind_into_key(sample) == Unwound::Truncated
            }
        };
        if truncated {
            flags |= TRUNCATED;
        }
        self.key[0] = u64::from(image) | (sample.kernel_frames as u64) << 32 | flags;
        let window = self.open.entry(index).or_insert_with(OpenWindow::new);
        let counts = &mut window.unwinding;
        match sample.user_unwind {
            UserUnwind::FramePointers => {}
            UserUnwind::Copy if !sample.user_stack.is_empty() => counts.copied += 1,
            UserUnwind::Copy => {}
            UserUnwind::Tables => counts.in_kernel += 1,
            UserUnwind::TablesThenCopy => counts.kernel_then_copy += 1,
            UserUnwind::TablesTruncated => counts.kernel_truncated += 1,
        }
        let stack = match window.stacks.get_full_mut(self.key.as_slice()) {
            Some((i, _, _)) => i,
            None => {
                // A new stack is the moment to notice code the mappings do not cover yet.
                let user = &self.key[1 + sample.kernel_frames..];
                self.procs.refresh_if_unmapped(sample.pid, user);
                if let Some(current) = self.procs.get(sample.pid) {
                    window.images.insert(image, Arc::clone(current));
                }
                window
                    .stacks
                    .insert_full(self.key.as_slice().into(), KindTotals::default())
                    .0
            }
        };
        // The latest sample's: a thread that names itself after it starts (pthread_setname_np)
        // goes by that name, not by the one it inherited.
        window.threads.insert(sample.tid, (image, sample.comm));
        window.stacks[stack].add(sample.detail);
        window.samples.push(ClosedSample {
            time_ns: sample.time_ns,
            tid: sample.tid,
            cpu: sample.cpu,
            stack: stack as u32,
            detail: sample.detail,
        });
    }

    /// DWARF mode: appends the user frames unwound from `sample`'s stack copy to the key (after
    /// those the kernel found, if any).
    fn unwind_into_key(&mut self, sample: &RingSample<'_>) -> Unwound {
        let Some(unwinder) = self.unwinder.as_mut() else {
            return Unwound::Truncated;
        };
        // Code loaded since the mappings were read would stop the unwind at once.
        self.procs
            .refresh_if_unmapped(sample.pid, &sample.user_regs[..1]);
        let Some(image) = self.procs.get(sample.pid) else {
            return Unwound::Truncated;
        };
        let found = sample.frames.len() - sample.kernel_frames;
        unwinder.unwind(
            image,
            sample.user_regs,
            sample.user_unwind == UserUnwind::TablesThenCopy,
            sample.user_stack,
            MAX_DWARF_FRAMES.saturating_sub(found),
            &mut self.key,
        )
    }

    /// `pid` exec'd: later samples belong to a new image.
    pub fn exec(&mut self, pid: u32) {
        self.procs.exec(pid);
    }

    /// The index of the next window to close, if it is over by `grace_ns` at `now_ns`.
    pub fn due(&self, now_ns: u64, grace_ns: u64) -> Option<u64> {
        if self.finished() {
            return None;
        }
        let end = self.window_end(self.next_to_close);
        (self.stopped || now_ns >= end.saturating_add(grace_ns)).then_some(self.next_to_close)
    }

    /// Samples at or after `end_ns` are not part of the recording, and the window containing it
    /// is the last (its end is `end_ns`). Known from the start with `--duration`.
    pub fn set_end(&mut self, end_ns: u64) {
        self.end_ns = self.end_ns.min(end_ns.max(self.start_ns + 1));
    }

    /// Recording stopped at `end_ns` and every sample is in: the remaining windows are due.
    pub fn stop(&mut self, end_ns: u64) {
        self.set_end(end_ns);
        self.stopped = true;
    }

    /// True once every window up to the end of the recording has been closed.
    pub fn finished(&self) -> bool {
        self.stopped
            && self.start_ns + self.next_to_close.saturating_mul(self.len_ns) >= self.end_ns
    }

    /// Closes the next window (the one [`Self::due`] returned), with the lost and idle counts
    /// the kernel side kept for it.
    pub fn close_next(&mut self, lost: u64, idle: u64, off_cpu_lost: u64) -> ClosedWindow {
        let index = self.next_to_close;
        self.next_to_close += 1;
        let start_ns = self.start_ns + index * self.len_ns;
        let end_ns = self.window_end(index);
        let window = self.open.remove(&index).unwrap_or_else(OpenWindow::new);
        // Processes not seen in this window or the one before are forgotten.
        self.procs.prune(index.saturating_sub(1));
        let mut problems = Problems {
            mappings_dropped: self.procs.take_maps_dropped(),
            ..Problems::default()
        };
        if let Some(unwinder) = self.unwinder.as_mut() {
            let procs = &self.procs;
            unwinder.retain(|id| procs.contains_image(id));
            problems.unwind_info_unusable = unwinder.take_unusable();
        }
        let mut unwinding = self.unwinder.is_some().then(|| window.unwinding.clone());
        if let (Some(tables), Some(unwinding)) = (self.tables.as_mut(), unwinding.as_mut()) {
            let procs = &self.procs;
            tables.retain(|pid, _| procs.get(pid).is_some());
            let stats = tables.take_stats();
            problems.unwind_info_unusable += stats.unusable;
            problems.unwind_tables_no_room = stats.no_room;
            unwinding.tables = stats.tables;
            unwinding.table_rows = stats.rows;
            unwinding.table_row_capacity = stats.row_capacity;
            unwinding.processes_with_tables = stats.processes;
        }

        let mut images: Vec<Arc<ProcessImage>> = window.images.into_values().collect();
        images.sort_by_key(|i| i.id);
        let position = |id: ImageId| {
            images
                .binary_search_by_key(&id, |i| i.id)
                .map_or(u32::MAX, |p| p as u32)
        };
        let stacks = window
            .stacks
            .into_iter()
            .map(|(key, totals)| ClosedStack {
                image: position(key[0] as u32),
                kernel_frames: (key[0] >> 32) as u32 & 0xffff,
                no_user_stack: key[0] & NO_USER_STACK != 0,
                truncated: key[0] & TRUNCATED != 0,
                frames: key[1..].into(),
                totals,
            })
            .collect();
        let mut threads: Vec<(u32, u32, String)> = window
            .threads
            .into_iter()
            .map(|(tid, (image, comm))| (tid, position(image), super::procs::comm_to_string(&comm)))
            .collect();
        threads.sort_unstable();
        let mut samples = window.samples;
        samples.sort_unstable_by_key(|s| {
            (s.detail.kind(), s.time_ns, s.tid, s.cpu, s.stack, s.detail)
        });
        ClosedWindow {
            index,
            start_ns,
            end_ns,
            lost,
            idle,
            late: std::mem::take(&mut self.late),
            images,
            threads,
            stacks,
            samples,
            off_cpu_lost,
            problems,
            unwinding,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(time_ns: u64, pid: u32, frames: &[u64]) -> RingSample<'_> {
        RingSample {
            time_ns,
            pid,
            tid: pid,
            cpu: 0,
            comm: *b"app\0\0\0\0\0\0\0\0\0\0\0\0\0",
            frames,
            kernel_frames: 0,
            no_user_stack: false,
            user_unwind: UserUnwind::FramePointers,
            user_regs: [0; 3],
            user_stack: &[],
            detail: Detail::OnCpu,
        }
    }

    /// A table that reads no process (none exists there): images without mappings.
    fn aggregator(start_ns: u64, len_ns: u64) -> WindowAggregator {
        WindowAggregator::new(start_ns, len_ns, ProcessTable::new("/nonexistent-proc"))
    }

    #[test]
    fn windows_tile_time_and_intern_stacks() {
        let mut a = aggregator(1_000, 100);
        let (hot, cold) = ([0x10, 0x20], [0x30]);
        for time in [1_000, 1_010, 1_050] {
            a.add(&sample(time, 7, &hot));
        }
        a.add(&sample(1_060, 8, &cold));
        a.add(&sample(1_150, 7, &hot)); // window 1
        a.add(&sample(999, 7, &hot)); // before the recording: dropped
        assert_eq!(a.samples(), 5);
        assert_eq!(
            a.due(1_105, 10),
            None,
            "window 0 ends at 1100, closes 10 later"
        );
        assert_eq!(a.due(1_110, 10), Some(0));
        let first = a.close_next(2, 5, 0);
        assert_eq!(
            (first.index, first.start_ns, first.end_ns),
            (0, 1_000, 1_100)
        );
        assert_eq!((first.lost, first.idle), (2, 5));
        let counts: Vec<(usize, u64)> = first
            .stacks
            .iter()
            .map(|s| (s.frames.len(), s.totals.samples(SampleKind::OnCpu)))
            .collect();
        assert_eq!(counts, [(2, 3), (1, 1)]);
        assert_eq!(first.samples.len(), 4);
        assert_eq!(first.images.len(), 2);
        // A sample for a window already closed is late, counted in the next one.
        a.add(&sample(1_020, 7, &hot));
        a.stop(1_200);
        let second = a.close_next(0, 0, 0);
        assert_eq!((second.index, second.late, second.samples.len()), (1, 1, 1));
        assert!(a.finished());
    }

    /// A thread that names itself after it starts goes by its latest name in the window.
    #[test]
    fn a_thread_goes_by_its_latest_name() {
        let mut a = aggregator(1_000, 100);
        a.add(&sample(1_000, 7, &[0x10]));
        let renamed = RingSample {
            comm: *b"worker\0\0\0\0\0\0\0\0\0\0",
            ..sample(1_010, 7, &[0x10])
        };
        a.add(&renamed);
        a.stop(1_100);
        let window = a.close_next(0, 0, 0);
        let names: Vec<&str> = window.threads.iter().map(|(_, _, n)| n.as_str()).collect();
        assert_eq!(names, ["worker"]);
    }

    #[test]
    fn an_end_inside_a_window_shortens_it() {
        let mut a = aggregator(0, 1_000);
        a.set_end(1_500);
        a.add(&sample(1_600, 1, &[0x1])); // after the end: dropped
        a.stop(1_500);
        let first = a.close_next(0, 0, 0);
        let second = a.close_next(0, 0, 0);
        assert_eq!((second.start_ns, second.end_ns), (1_000, 1_500));
        assert!(first.samples.is_empty() && second.samples.is_empty());
        assert!(a.finished());
    }
}
