//! The events a perf.data file carries: one per kind of sample its selection takes, each
//! asked of its kind's descriptor ([`KindDescriptor::perf_event`]) for its name and its attr,
//! so that a kind with a perf event of its own gets one here without a change.
//!
//! What a sample record of one kind carries that another's does not (its period) is the one
//! match on kinds here, [`PerfEvent::period`]; what was lost the kind says
//! ([`SampleKind::lost`]).

use super::{
    abi,
    bytes::{put_u32, put_u64},
};
use crate::capture::{
    Detail, Event, KindDescriptor, SampleKind,
    format::{Meta, Window},
};

/// One event of a file: the samples of one kind, on-CPU samples as the capture's sampling
/// event (`cpu-clock`), off-CPU ones as perf's own `--off-cpu` event (`offcpu-time`, see the
/// [module documentation](super#off-cpu-samples)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PerfEvent {
    pub kind: SampleKind,
    /// Its id in every sample (PERF_SAMPLE_IDENTIFIER) and in the attrs section: its kind's
    /// place in [`SampleKind::ALL`], from 1. Fixed per kind, so that a file of one kind says
    /// the same of it as a file of several: cpu-clock is 1, offcpu-time 2, in every file.
    pub id: u64,
}

impl PerfEvent {
    /// The events of a file of `event`'s samples: one per kind it takes, in
    /// [`Event::kinds`]' order (the first is the tracking event, see [`Self::attr`]).
    pub fn of(event: Event) -> Vec<Self> {
        event.kinds().iter().map(Self::of_kind).collect()
    }

    fn of_kind(kind: SampleKind) -> Self {
        let place = SampleKind::ALL.iter().position(|&k| k == kind);
        Self {
            kind,
            id: place.map_or(0, |place| place as u64 + 1),
        }
    }

    fn descriptor(self) -> &'static KindDescriptor {
        self.kind.descriptor()
    }

    /// Its name as perf shows it: its kind's perf event, or the capture's sampling event
    /// (`cpu-clock` when the capture names none).
    pub fn name(self, meta: &Meta) -> &str {
        match self.descriptor().perf_event {
            Some(name) => name,
            None if meta.event.is_empty() => "cpu-clock",
            None => &meta.event,
        }
    }

    /// Its `perf_event_attr`, times on CLOCK_MONOTONIC. The capture's sampling event is
    /// cpu-clock at the capture's frequency; a kind's event of its own is what perf's
    /// `--off-cpu` writes for its samples, sent by a BPF program: a BPF-output software event
    /// of period 1 (one record per sample, its period what the sample stands for).
    /// `tracking`: the event the process and mapping records belong to (the first), as the
    /// tracking event of `perf record`.
    ///
    /// Every event samples the same fields (the sample_type of cpu-clock, which perf's
    /// off-CPU samples have too, less the cgroup): perf needs the id at the same place in every
    /// record of a file (PERF_SAMPLE_IDENTIFIER, first in a sample, last in other records) to
    /// tell the events apart, and parses the trailing sample_id of non-sample records with one
    /// layout.
    pub fn attr(self, meta: &Meta, tracking: bool) -> Vec<u8> {
        let (config, period, sampling) = match self.descriptor().perf_event {
            None => (
                abi::PERF_COUNT_SW_CPU_CLOCK,
                meta.frequency_hz, // sample_freq (with `freq`)
                abi::ATTR_EXCLUDE_IDLE | abi::ATTR_FREQ,
            ),
            Some(_) => (abi::PERF_COUNT_SW_BPF_OUTPUT, 1, 0),
        };
        let tracks = if tracking {
            abi::ATTR_MMAP | abi::ATTR_COMM | abi::ATTR_MMAP2 | abi::ATTR_COMM_EXEC
        } else {
            0
        };
        let mut a = Vec::with_capacity(abi::ATTR_SIZE as usize);
        put_u32(&mut a, abi::PERF_TYPE_SOFTWARE);
        put_u32(&mut a, abi::ATTR_SIZE);
        put_u64(&mut a, config);
        put_u64(&mut a, period);
        put_u64(&mut a, abi::SAMPLE_TYPE);
        put_u64(&mut a, 0); // read_format
        put_u64(
            &mut a,
            sampling | tracks | abi::ATTR_SAMPLE_ID_ALL | abi::ATTR_USE_CLOCKID,
        );
        put_u32(&mut a, 0); // wakeup_events
        put_u32(&mut a, 0); // bp_type
        put_u64(&mut a, 0); // config1
        put_u64(&mut a, 0); // config2
        put_u64(&mut a, 0); // branch_sample_type
        put_u64(&mut a, 0); // sample_regs_user
        put_u32(&mut a, 0); // sample_stack_user
        put_u32(&mut a, abi::CLOCK_MONOTONIC); // clockid
        put_u64(&mut a, 0); // sample_regs_intr
        put_u32(&mut a, 0); // aux_watermark
        put_u32(&mut a, 0); // sample_max_stack, reserved
        debug_assert_eq!(a.len(), abi::ATTR_SIZE as usize);
        a
    }

    /// The period of a sample with `detail`, what perf sums as its event's count:
    /// `sampling_period` (nanoseconds between samples of the capture's sampling event) for an
    /// on-CPU sample, as cpu-clock counts; the time off the CPU for an off-CPU one, as perf's
    /// `--off-cpu` writes it.
    pub fn period(detail: Detail, sampling_period: u64) -> u64 {
        match detail {
            Detail::OnCpu => sampling_period,
            Detail::OffCpu(off) => off.ns,
        }
    }

    /// The samples of this event that the kernel side lost in `window`.
    pub fn lost(self, window: &Window) -> u64 {
        self.kind.lost(window)
    }
}
