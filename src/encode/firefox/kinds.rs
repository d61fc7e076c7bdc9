//! What a Firefox profile makes of each kind of sample: the one place of the encoder that names
//! kinds ([`shown`], [`Firefox::add_sample`]), so that a new kind is decided here, once.
//! On-CPU samples are samples of CPU time, in their thread's CPU runs; off-CPU waits are
//! markers whatever the event and, with the event, samples weighted in periods that end in
//! their leaf frame. The leaf frames, the name of their category and the names of the markers
//! come from the kind's descriptor ([`crate::capture::KindDescriptor`]).

use std::io::Write;

use fxprof_processed_profile::{CategoryColor, CategoryHandle, CpuDelta, Profile, StackHandle};

use super::{CpuRun, Firefox, StackCache};
use crate::capture::{Detail, OffCpu, Sample, SampleKind};

/// A run of samples ends when its thread goes unsampled for this many periods.
const RUN_GAP_PERIODS: u64 = 2;

/// The profile's categories: what colours frames and markers in the call tree and the graphs.
pub(super) struct Categories {
    pub(super) user: CategoryHandle,
    pub(super) kernel: CategoryHandle,
    /// The categories of kinds (their leaf frames and markers), for the kinds [`shown`] gives
    /// one.
    kinds: Vec<(SampleKind, CategoryHandle)>,
    pub(super) capture: CategoryHandle,
}

impl Categories {
    pub(super) fn add(profile: &mut Profile) -> Self {
        let user = profile.add_category("User", CategoryColor::Yellow);
        let kernel = profile.add_category("Kernel", CategoryColor::Orange);
        let kinds = SampleKind::ALL
            .into_iter()
            .filter_map(|kind| {
                let color = shown(kind).category?;
                let name = capitalized(kind.descriptor().short_name);
                Some((kind, profile.add_category(&name, color)))
            })
            .collect();
        let capture = profile.add_category("Capture", CategoryColor::Gray);
        Self {
            user,
            kernel,
            kinds,
            capture,
        }
    }

    /// The category of `kind`'s leaf frames and markers (`capture` for a kind without one).
    fn of_kind(&self, kind: SampleKind) -> CategoryHandle {
        self.kinds
            .iter()
            .find(|&&(k, _)| k == kind)
            .map_or(self.capture, |&(_, category)| category)
    }

    /// The leaf frame of a sample with `detail`, in its kind's category, if its kind has them.
    fn leaf(&self, detail: Detail) -> Option<(&'static str, CategoryHandle)> {
        Some((detail.leaf_frame()?, self.of_kind(detail.kind())))
    }
}

/// What the profile does with one kind of sample, beyond its samples of the event.
pub(super) struct Shown {
    /// Its samples are markers on their thread's track whatever the event (a timeline should
    /// show when a thread was not running).
    pub(super) marked: bool,
    /// The colour of its category (its leaf frames and markers, named after the kind), if it
    /// has one.
    category: Option<CategoryColor>,
}

/// How the profile shows `kind`'s samples: with [`Firefox::add_sample`], the one place here
/// that names kinds (see the module documentation).
pub(super) const fn shown(kind: SampleKind) -> Shown {
    match kind {
        // Samples of CPU time, in the thread's CPU runs.
        SampleKind::OnCpu => Shown {
            marked: false,
            category: None,
        },
        // Waits: markers, and with the event weighted samples ending in their leaf frame.
        SampleKind::OffCpu => Shown {
            marked: true,
            category: Some(CategoryColor::Blue),
        },
    }
}

/// `name` with its first letter upper-case (`off-CPU`: `Off-CPU`).
fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

impl<W: Write> Firefox<'_, W> {
    /// Writes the thread's CPU run, if any, as a marker.
    pub(super) fn end_run(&mut self, track: usize) {
        let Some(run) = self.threads[track].run.take() else {
            return;
        };
        // A cpu-clock sample stands for the period before it.
        let span = (run.start_ns.saturating_sub(self.period_ns), run.end_ns);
        let (thread, kind) = (self.threads[track].handle, self.marker_types.cpu);
        let name = format!("CPU {}", run.cpu);
        let category = self.categories.capture;
        self.add_marker(thread, kind, category, &name, span, [f64::from(run.cpu)]);
    }

    fn add_on_cpu(&mut self, track: usize, sample: &Sample<'_>, stack: Option<StackHandle>) {
        let time = sample.time_ns;
        let continues = self.threads[track].run.is_some_and(|run| {
            run.cpu == sample.cpu
                && time.saturating_sub(run.end_ns) <= RUN_GAP_PERIODS * self.period_ns
        });
        if continues {
            if let Some(run) = &mut self.threads[track].run {
                run.end_ns = time;
            }
        } else {
            self.end_run(track);
            self.threads[track].run = Some(CpuRun {
                cpu: sample.cpu,
                start_ns: time,
                end_ns: time,
            });
        }
        let thread = &mut self.threads[track];
        thread.last_ns = Some(thread.last_ns.map_or(time, |last| last.max(time)));
        thread.periods += 1;
        let handle = thread.handle;
        let timestamp = self.timestamp(time);
        self.profile.add_sample(
            handle,
            timestamp,
            stack,
            CpuDelta::from_nanos(self.period_ns),
            1,
        );
    }

    /// Adds `sample` to the thread of `track`, as its kind is shown.
    pub(super) fn add_sample<'w>(
        &mut self,
        track: usize,
        sample: &Sample<'w>,
        stacks: &mut StackCache<'w>,
    ) {
        let thread = self.threads[track].handle;
        match sample.detail {
            Detail::OnCpu => {
                let stack = stacks.stack(&mut self.profile, &self.categories, thread, sample, None);
                self.add_on_cpu(track, sample, stack);
            }
            Detail::OffCpu(off) => self.add_off_cpu(track, sample, off, stacks),
        }
    }

    /// An off-CPU wait: a marker over the wait, and with the event a sample at its start,
    /// weighted in sampling periods (see the module documentation).
    fn add_off_cpu<'w>(
        &mut self,
        track: usize,
        sample: &Sample<'w>,
        off: OffCpu,
        stacks: &mut StackCache<'w>,
    ) {
        let thread = self.threads[track].handle;
        self.end_run(track);
        let end = sample.time_ns;
        // The marker is the wait itself; the samples below weigh what it stands for
        // (a short wait kept for the period stands for the period).
        let mut start = end.saturating_sub(off.wait_ns);
        if let Some(last) = self.threads[track].last_ns {
            start = start.max(last.min(end));
        }
        let stack = stacks.stack(&mut self.profile, &self.categories, thread, sample, None);
        let name = capitalized(sample.detail.label().unwrap_or_default());
        let kind = self.marker_types.off_cpu;
        let category = self.categories.of_kind(sample.kind());
        let cpu = [f64::from(sample.cpu)];
        let handle = self.add_marker(thread, kind, category, &name, (start, end), cpu);
        self.profile.set_marker_stack(thread, handle, stack);
        let track_state = &mut self.threads[track];
        track_state.markers += 1;
        track_state.first_ns = track_state.first_ns.min(start);
        track_state.last_ns = Some(track_state.last_ns.map_or(end, |l| l.max(end)));
        let pid = track_state.pid;
        if let Some(process) = self.processes.get_mut(&pid) {
            process.first_ns = process.first_ns.min(start);
        }
        let track_state = &mut self.threads[track];
        if self.event.kinds().contains(sample.kind()) {
            let ns = track_state.carry_ns.saturating_add(off.ns);
            let periods = ns / self.period_ns;
            track_state.carry_ns = ns % self.period_ns;
            track_state.periods = track_state.periods.saturating_add(periods);
            let leaf_frame = self.categories.leaf(sample.detail);
            let leaf = stacks.stack(
                &mut self.profile,
                &self.categories,
                thread,
                sample,
                leaf_frame,
            );
            let timestamp = self.timestamp(start);
            self.profile.add_sample(
                thread,
                timestamp,
                leaf,
                CpuDelta::ZERO,
                // Over 2^31 periods (weeks): the weight says as much as it can.
                i32::try_from(periods).unwrap_or(i32::MAX),
            );
        }
    }
}
