//! The events a perf.data file carries, and each one's `perf_event_attr`: what perf reads in
//! the attrs section and the EVENT_DESC feature to tell samples of one event from another's.

use super::{
    abi,
    bytes::{put_u32, put_u64},
};
use crate::capture::{Event, format::Meta};

/// The events a file carries: on-CPU samples as `cpu-clock`, off-CPU samples as perf's own
/// `--off-cpu` event (see the module documentation). A file has the ones its selection covers,
/// in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PerfEvent {
    OnCpu,
    OffCpu,
}

impl PerfEvent {
    /// The events of a selection of `event`.
    pub(super) fn of(event: Event) -> Vec<Self> {
        let mut events = Vec::with_capacity(2);
        if event.includes_on_cpu() {
            events.push(Self::OnCpu);
        }
        if event.includes_off_cpu() {
            events.push(Self::OffCpu);
        }
        events
    }

    /// The event's id in every sample (PERF_SAMPLE_IDENTIFIER) and in the attrs section: fixed
    /// per event, so that a file of one event says the same as a file of both.
    pub(super) fn id(self) -> u64 {
        match self {
            Self::OnCpu => EVENT_ID,
            Self::OffCpu => OFF_CPU_EVENT_ID,
        }
    }
}

/// The id of on-CPU samples (`cpu-clock`), the one event of a file of on-CPU samples.
pub(super) const EVENT_ID: u64 = 1;
/// The id of off-CPU samples (`offcpu-time`).
pub(super) const OFF_CPU_EVENT_ID: u64 = 2;
/// The name perf's `--off-cpu` gives its event (`OFFCPU_EVENT` in perf's `util/off_cpu.h`).
const OFF_CPU_EVENT_NAME: &str = "offcpu-time";

/// The event's name as perf shows it.
pub(super) fn event_name(meta: &Meta, event: PerfEvent) -> &str {
    match event {
        PerfEvent::OnCpu if meta.event.is_empty() => "cpu-clock",
        PerfEvent::OnCpu => &meta.event,
        PerfEvent::OffCpu => OFF_CPU_EVENT_NAME,
    }
}

/// The `perf_event_attr` of `event`, times on CLOCK_MONOTONIC: amprof's sampling is cpu-clock
/// at the capture's frequency; off-CPU samples are perf's `--off-cpu` event, a BPF-output
/// software event of period 1 (one record per sample, its period the time off the CPU).
/// `tracking`: the event the process and mapping records belong to (the first), as the
/// tracking event of `perf record`.
///
/// Both events sample the same fields (the sample_type of cpu-clock, which perf's off-CPU
/// samples have too, less the cgroup): perf needs the id at the same place in every record of
/// a file (PERF_SAMPLE_IDENTIFIER, first in a sample, last in other records) to tell the events
/// apart, and parses the trailing sample_id of non-sample records with one layout.
pub(super) fn attr(meta: &Meta, event: PerfEvent, tracking: bool) -> Vec<u8> {
    let (config, period, sampling) = match event {
        PerfEvent::OnCpu => (
            abi::PERF_COUNT_SW_CPU_CLOCK,
            meta.frequency_hz, // sample_freq (with `freq`)
            abi::ATTR_EXCLUDE_IDLE | abi::ATTR_FREQ,
        ),
        PerfEvent::OffCpu => (abi::PERF_COUNT_SW_BPF_OUTPUT, 1, 0),
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
