//! Kinds of samples, as data: what each kind counts, in what unit, and how every output names
//! it, in one [`KindDescriptor`] per kind; and the one adapter between a kind and the capture's
//! columns for it ([`super::kind_samples`], [`Detail::push`], [`SampleKind::clear`],
//! [`SampleKind::stack_totals`]).
//!
//! Outputs ask a kind's descriptor instead of naming kinds (in the spirit of the OpenTelemetry
//! eBPF profiler's `TypeMetadata`): a new kind is a variant here, its descriptor, its columns
//! in [`super::format`] and its producer in `record`.

use super::format::{OffCpu, OffCpuReason, Stack, Window};

/// What one sample stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SampleKind {
    /// A thread seen running on a CPU by the sampling event (`cpu-clock`): it stands for one
    /// sampling period.
    OnCpu,
    /// A wait of a thread off the CPU (`record --off-cpu`): it stands for the time it carries.
    OffCpu,
}

/// How every output names one kind of sample, and what it is.
#[derive(Debug)]
pub struct KindDescriptor {
    pub kind: SampleKind,
    /// Its name in words and in `--event` (`on-cpu`, `off-cpu`).
    pub name: &'static str,
    /// What a sample of it is, for a sentence.
    pub counts: &'static str,
    /// The unit of a sample's weight (pprof's and OTLP's unit names).
    pub weight_unit: &'static str,
    /// True when a sample is a thread's time (on the CPU or off it): such kinds add up on one
    /// axis of time, wall time.
    pub thread_time: bool,
    /// pprof sample types: `(type, unit)` of the count, then of the weight.
    pub pprof: [(&'static str, &'static str); 2],
    /// The types Datadog's profilers send for it alone, `None` when Datadog shows it only
    /// within wall time (`wall-samples`, `wall-time`, which count every thread-time kind).
    pub datadog: Option<[(&'static str, &'static str); 2]>,
    /// OTLP sample type `(type, unit)`, as the OpenTelemetry eBPF profiler names it; its samples
    /// carry values only when their weights differ (`OnCpu` samples are a period each).
    pub otlp: (&'static str, &'static str),
    /// OTLP period type of a periodic kind (its samples then carry timestamps only).
    pub otlp_period: Option<(&'static str, &'static str)>,
    /// The OTLP attribute its samples' label goes in (`amprof.off_cpu.reason`), if any.
    pub otlp_label: Option<&'static str>,
    /// The perf.data event of its samples; `None`: the capture's own sampling event.
    pub perf_event: Option<&'static str>,
    /// The label its samples carry in pprof and Datadog (`off_cpu_reason`), if any.
    pub label: Option<&'static str>,
    /// True when every sample weighs one sampling period (and outputs with a period give it).
    pub periodic: bool,
    /// What a title calls a profile of it alone (`off-CPU time`).
    pub title: &'static str,
    /// Its name where it qualifies a unit (`µs off-CPU`) or names a category (`Off-CPU`).
    pub short_name: &'static str,
    /// Where a sentence puts a total of its weight (`1.2 s off the CPU`), then the same after
    /// another kind's total in that sentence (`2 s on the CPU, 1.2 s off it`).
    pub place: [&'static str; 2],
    /// The unit of its weight in folded stacks (and the flamegraphs drawn from them), and how
    /// many of [`Self::weight_unit`] make one (µs: 1000 ns). A periodic kind folded alone is
    /// counted in samples instead. Kinds of one weight unit fold in one unit, so that an event
    /// of several kinds adds them up.
    pub folded_unit: (&'static str, u64),
    /// The values of its label ([`Self::label`]), in the order of [`Detail::label_index`]: a
    /// kind with values ends each sample's stack with the synthetic leaf frame of its value
    /// (folded stacks, flamegraphs, Firefox profiles). Empty: no label, no leaf frame.
    pub label_values: &'static [LabelValue],
}

/// One value of a kind's label, and how outputs show the samples that carry it.
#[derive(Debug)]
pub struct LabelValue {
    /// The value (`blocked`), as [`Detail::label`] gives it.
    pub name: &'static str,
    /// The synthetic leaf frame of its samples' stacks (`[off-cpu: blocked]`): under the same
    /// callers, it tells this value's samples from the other values' and the other kinds'.
    pub leaf_frame: &'static str,
    /// A few words that say what the value means, for a sentence about the kind alone
    /// (`waiting for a CPU`), if its name does not say enough.
    pub gloss: Option<&'static str>,
    /// The RGB colour of its leaf frame in a flamegraph.
    pub color: [u8; 3],
}

const ON_CPU: KindDescriptor = KindDescriptor {
    kind: SampleKind::OnCpu,
    name: "on-cpu",
    counts: "samples of threads running on a CPU",
    weight_unit: "nanoseconds",
    thread_time: true,
    pprof: [("cpu-samples", "count"), ("cpu-time", "nanoseconds")],
    datadog: Some([("cpu-samples", "count"), ("cpu-time", "nanoseconds")]),
    otlp: ("samples", "count"),
    otlp_period: Some(("cpu", "nanoseconds")),
    otlp_label: None,
    perf_event: None,
    label: None,
    periodic: true,
    title: "on-CPU samples",
    short_name: "on-CPU",
    place: ["on the CPU", "on it"],
    folded_unit: ("µs", 1_000),
    label_values: &[],
};

const OFF_CPU: KindDescriptor = KindDescriptor {
    kind: SampleKind::OffCpu,
    name: "off-cpu",
    counts: "waits of threads off the CPU, blocked or runnable",
    weight_unit: "nanoseconds",
    thread_time: true,
    pprof: [
        ("off-cpu-samples", "count"),
        ("off-cpu-time", "nanoseconds"),
    ],
    datadog: None,
    otlp: ("off_cpu", "nanoseconds"),
    otlp_period: None,
    otlp_label: Some("amprof.off_cpu.reason"),
    perf_event: Some("offcpu-time"),
    label: Some("off_cpu_reason"),
    periodic: false,
    title: "off-CPU time",
    short_name: "off-CPU",
    place: ["off the CPU", "off it"],
    folded_unit: ("µs", 1_000),
    // FlameGraph's colours for off-CPU time are blues: two shades, so that waits stand out from
    // the hot (red, orange) on-CPU frames and from each other.
    label_values: &[
        LabelValue {
            name: "blocked",
            leaf_frame: "[off-cpu: blocked]",
            gloss: None,
            color: [80, 120, 230],
        },
        LabelValue {
            name: "runnable",
            leaf_frame: "[off-cpu: runnable]",
            gloss: Some("waiting for a CPU"),
            color: [140, 170, 250],
        },
    ],
};

impl SampleKind {
    /// Every kind, in the order outputs list them.
    pub const ALL: [SampleKind; 2] = [SampleKind::OnCpu, SampleKind::OffCpu];

    pub const fn descriptor(self) -> &'static KindDescriptor {
        match self {
            Self::OnCpu => &ON_CPU,
            Self::OffCpu => &OFF_CPU,
        }
    }

    /// The synthetic leaf frame of this kind's samples whose label has value `index` (see
    /// [`KindDescriptor::label_values`]), if it has one.
    pub fn leaf_frame(self, index: usize) -> Option<&'static str> {
        Some(self.descriptor().label_values.get(index)?.leaf_frame)
    }

    /// `(samples, weight)` of `stack` for this kind: its sample count and what they stand for
    /// (`period_ns` per sample of a periodic kind).
    pub fn stack_totals(self, stack: &Stack, period_ns: u64) -> (u64, u64) {
        match self {
            Self::OnCpu => (stack.count, stack.count.saturating_mul(period_ns)),
            Self::OffCpu => (stack.off_cpu_count, stack.off_cpu_ns),
        }
    }

    /// This kind's samples the kernel side lost in `window` (no room in the ring buffer).
    pub fn lost(self, window: &Window) -> u64 {
        match self {
            Self::OnCpu => window.lost,
            Self::OffCpu => window.off_cpu_lost,
        }
    }

    /// Sets this kind's totals of `stack` (the weight of a periodic kind is its count's:
    /// only the count is kept).
    pub fn set_stack_totals(self, stack: &mut Stack, samples: u64, weight: u64) {
        match self {
            Self::OnCpu => stack.count = samples,
            Self::OffCpu => {
                stack.off_cpu_count = samples;
                stack.off_cpu_ns = weight;
            }
        }
    }

    /// Zeroes this kind's totals of `stack`.
    pub fn clear_stack(self, stack: &mut Stack) {
        match self {
            Self::OnCpu => stack.count = 0,
            Self::OffCpu => {
                stack.off_cpu_count = 0;
                stack.off_cpu_ns = 0;
            }
        }
    }

    /// This kind's samples in `window`: `(time delta, tid, cpu, stack index, detail)` in order,
    /// the detail `None` for a sample without one or that the columns cannot give (skipped).
    pub(super) fn rows(self, window: &Window) -> KindRows<'_> {
        match self {
            Self::OnCpu => KindRows {
                deltas: &window.sample_time_deltas,
                tids: &window.sample_tids,
                cpus: &window.sample_cpus,
                stacks: &window.sample_stacks,
            },
            Self::OffCpu => KindRows {
                deltas: &window.off_cpu_time_deltas,
                tids: &window.off_cpu_tids,
                cpus: &window.off_cpu_cpus,
                stacks: &window.off_cpu_stacks,
            },
        }
    }

    /// The detail of this kind's sample `index` in `window` (`None` when its columns lack it).
    pub(super) fn detail(self, window: &Window, index: usize) -> Option<Detail> {
        match self {
            Self::OnCpu => Some(Detail::OnCpu),
            Self::OffCpu => {
                let reason = OffCpuReason::try_from(*window.off_cpu_reasons.get(index)?).ok()?;
                Some(Detail::OffCpu(OffCpu {
                    ns: *window.off_cpu_ns.get(index)?,
                    wait_ns: window.off_cpu_wait(index)?,
                    reason,
                }))
            }
        }
    }

    /// Whether this kind's columns of `window` agree: of one length, every sample referring to
    /// a stack and process, with a detail the columns give (an off-CPU reason amprof knows).
    /// The reader checks as much and more for every window it reads (its `validate_window`,
    /// with a message per fault); windows from elsewhere (a recording streaming its windows)
    /// are checked with this before any destination encodes them (`push::stream`).
    pub fn is_consistent(self, window: &Window) -> bool {
        let rows = self.rows(window);
        let n = rows.stacks.len();
        let details_agree = match self {
            Self::OnCpu => true,
            Self::OffCpu => {
                window.off_cpu_ns.len() == n
                    && window.off_cpu_reasons.len() == n
                    && (window.off_cpu_wait_ns.is_empty() || window.off_cpu_wait_ns.len() == n)
            }
        };
        details_agree
            && rows.deltas.len() == n
            && rows.tids.len() == n
            && rows.cpus.len() == n
            && super::select::kind_samples(window, self).count() == n
    }

    /// Empties this kind's sample columns of `window`.
    pub fn clear(self, window: &mut Window) {
        match self {
            Self::OnCpu => {
                window.sample_time_deltas.clear();
                window.sample_tids.clear();
                window.sample_cpus.clear();
                window.sample_stacks.clear();
            }
            Self::OffCpu => {
                window.off_cpu_time_deltas.clear();
                window.off_cpu_tids.clear();
                window.off_cpu_cpus.clear();
                window.off_cpu_stacks.clear();
                window.off_cpu_ns.clear();
                window.off_cpu_reasons.clear();
                window.off_cpu_wait_ns.clear();
            }
        }
    }
}

/// What a sample carries beyond its time, thread, CPU and stack, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Detail {
    OnCpu,
    OffCpu(OffCpu),
}

impl Detail {
    /// The value of its kind's label (`KindDescriptor::label`), if the kind has one: an
    /// off-CPU sample's reason.
    pub fn label(self) -> Option<&'static str> {
        Some(self.label_value()?.name)
    }

    /// The index of its label's value in its kind's [`KindDescriptor::label_values`].
    pub fn label_index(self) -> Option<usize> {
        match self {
            Self::OnCpu => None,
            Self::OffCpu(off) => Some(off.reason as usize),
        }
    }

    /// Its label's value, and how outputs show it.
    pub fn label_value(self) -> Option<&'static LabelValue> {
        self.kind()
            .descriptor()
            .label_values
            .get(self.label_index()?)
    }

    /// The synthetic leaf frame of its stack (an off-CPU sample's `[off-cpu: blocked]`), if
    /// its kind has them.
    pub fn leaf_frame(self) -> Option<&'static str> {
        self.kind().leaf_frame(self.label_index()?)
    }

    /// What the sample weighs, in its kind's weight unit: `period_ns` for an on-CPU sample, the
    /// time off the CPU for an off-CPU one.
    pub fn weight(self, period_ns: u64) -> u64 {
        match self {
            Self::OnCpu => period_ns,
            Self::OffCpu(off) => off.ns,
        }
    }

    pub fn kind(self) -> SampleKind {
        match self {
            Self::OnCpu => SampleKind::OnCpu,
            Self::OffCpu(_) => SampleKind::OffCpu,
        }
    }

    /// Appends a sample with this detail to its kind's columns of `window` (`previous_ns`: the
    /// time of the kind's previous sample there, see [`Window::push_sample`]).
    pub fn push(
        self,
        window: &mut Window,
        previous_ns: &mut u64,
        time_ns: u64,
        tid: u32,
        cpu: u32,
        stack: u32,
    ) {
        match self {
            Self::OnCpu => window.push_sample(previous_ns, time_ns, tid, cpu, stack),
            Self::OffCpu(off) => {
                window.push_off_cpu_sample(previous_ns, time_ns, tid, cpu, stack, off)
            }
        }
    }
}

/// Samples and the weight they stand for, kind by kind: of a stack in a window being recorded,
/// or of a whole recording. A sample adds its [`Detail::weight`] (a periodic kind's weight is
/// its count: it adds 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindTotals([(u64, u64); SampleKind::ALL.len()]);

impl KindTotals {
    pub fn add(&mut self, detail: Detail) {
        let (samples, weight) = &mut self.0[detail.kind() as usize];
        *samples += 1;
        *weight = weight.saturating_add(detail.weight(1));
    }

    /// Samples of `kind`.
    pub fn samples(&self, kind: SampleKind) -> u64 {
        self.0[kind as usize].0
    }

    /// The weight of `kind`'s samples (a periodic kind's: its count).
    pub fn weight(&self, kind: SampleKind) -> u64 {
        self.0[kind as usize].1
    }

    /// Samples of every kind.
    pub fn all_samples(&self) -> u64 {
        self.0.iter().map(|(samples, _)| samples).sum()
    }

    /// Writes these totals into `stack`'s columns.
    pub fn write_to(&self, stack: &mut Stack) {
        for kind in SampleKind::ALL {
            kind.set_stack_totals(stack, self.samples(kind), self.weight(kind));
        }
    }
}

/// The common columns of one kind's samples.
pub(super) struct KindRows<'w> {
    pub deltas: &'w [u64],
    pub tids: &'w [u32],
    pub cpus: &'w [u32],
    pub stacks: &'w [u32],
}

/// A set of kinds of samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KindSet(u8);

impl KindSet {
    pub const EMPTY: KindSet = KindSet(0);

    pub fn of(kinds: &[SampleKind]) -> Self {
        kinds.iter().fold(Self::EMPTY, |set, &k| set.with(k))
    }

    pub fn with(self, kind: SampleKind) -> Self {
        Self(self.0 | 1 << kind as u8)
    }

    pub fn contains(self, kind: SampleKind) -> bool {
        self.0 & (1 << kind as u8) != 0
    }

    /// The kinds in the set, in [`SampleKind::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = SampleKind> {
        SampleKind::ALL
            .into_iter()
            .filter(move |&k| self.contains(k))
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_list_their_kinds_in_order() {
        let both = KindSet::of(&[SampleKind::OffCpu, SampleKind::OnCpu]);
        assert_eq!(
            both.iter().collect::<Vec<_>>(),
            [SampleKind::OnCpu, SampleKind::OffCpu]
        );
        assert_eq!(both.len(), 2);
        assert!(!KindSet::of(&[SampleKind::OnCpu]).contains(SampleKind::OffCpu));
        assert!(KindSet::EMPTY.is_empty());
    }

    #[test]
    fn every_kind_describes_itself() {
        for kind in SampleKind::ALL {
            let descriptor = kind.descriptor();
            assert_eq!(descriptor.kind, kind);
            assert!(!descriptor.name.is_empty() && !descriptor.counts.is_empty());
            assert_eq!(
                descriptor.label.is_some(),
                !descriptor.label_values.is_empty()
            );
            // Kinds of one weight unit fold in one unit (an event adds them up).
            for other in SampleKind::ALL {
                if other.descriptor().weight_unit == descriptor.weight_unit {
                    assert_eq!(other.descriptor().folded_unit, descriptor.folded_unit);
                }
            }
        }
    }

    #[test]
    fn off_cpu_reasons_are_the_label_values() {
        for reason in [OffCpuReason::Blocked, OffCpuReason::Runnable] {
            let detail = Detail::OffCpu(OffCpu {
                ns: 5,
                wait_ns: 7,
                reason,
            });
            assert_eq!(detail.label(), Some(reason.name()));
            assert_eq!(
                detail.leaf_frame(),
                Some(format!("[off-cpu: {}]", reason.name()).as_str())
            );
            assert_eq!(detail.weight(10), 5);
        }
        assert_eq!(Detail::OnCpu.leaf_frame(), None);
        assert_eq!(Detail::OnCpu.weight(10), 10);
    }

    #[test]
    fn clearing_a_kind_leaves_the_others() {
        let mut stack = Stack {
            count: 3,
            off_cpu_count: 2,
            off_cpu_ns: 70,
            ..Stack::default()
        };
        assert_eq!(SampleKind::OnCpu.stack_totals(&stack, 10), (3, 30));
        SampleKind::OffCpu.clear_stack(&mut stack);
        assert_eq!(SampleKind::OffCpu.stack_totals(&stack, 10), (0, 0));
        assert_eq!(stack.count, 3);
    }
}
