//! The summary end to end: a tally of a test window, as the model, the JSON and the text.

use super::{Summary, Tally};
use crate::{
    capture::{
        Completeness, Event, Meta, Selection,
        format::{OffCpuReason, Window},
        testing::{WindowBuilder, meta},
    },
    encode::Ending,
};

/// `app` blocks in `read` (user) → `sys_read`, `schedule` (kernel) for 3 ms, and is
/// preempted in `spin` for 1 ms; kernel thread `kworker` (no user frames) sleeps 2 ms.
fn window() -> Window {
    let mut w = WindowBuilder::new(0);
    let app = w.process(1, "app");
    let kworker = w.process(2, "kworker");
    let k = w.kernel_module();
    let [read, spin, sys_read, schedule, worker] =
        ["read", "spin", "sys_read", "schedule", "worker_thread"].map(|f| w.function(f));
    let (l_read, l_spin) = (w.location(0x10, &[read]), w.location(0x20, &[spin]));
    let [k_sys, k_sched, k_worker] = [sys_read, schedule, worker]
        .map(|f| w.kernel_location(k, 0xffff_0000 + u64::from(f), &[f]));
    let blocked = w.stack(app, &[k_sched, k_sys, l_read], 2);
    let preempted = w.stack(app, &[l_spin], 0);
    let kernel = w.stack(kworker, &[k_sched, k_worker], 2);
    w.sample(1, 1, 0, preempted);
    w.off_cpu_sample(2, 1, 0, blocked, 3_000_000, OffCpuReason::Blocked);
    w.off_cpu_sample(3, 1, 0, preempted, 1_000_000, OffCpuReason::Runnable);
    w.off_cpu_sample(4, 3, 1, kernel, 2_000_000, OffCpuReason::Blocked);
    w.build()
}

fn summary(event: Event, period_ns: u64) -> Summary {
    let meta = Meta {
        off_cpu_period_ns: period_ns,
        ..meta()
    };
    let mut tally = Tally::default();
    let selection = Selection {
        event,
        ..Selection::default()
    };
    tally.add(&meta, &window(), &selection);
    let ending = Ending {
        completeness: Completeness::Finalized,
        end: None,
    };
    tally.summary(&meta, &ending, 10)
}

#[test]
fn off_cpu_self_time_goes_to_the_innermost_user_frame() {
    let summary = summary(Event::OnCpu, 1_000_000);
    let off = summary.off_cpu.expect("an off-CPU section");
    assert_eq!(
        (off.blocked_ns, off.runnable_ns, off.total_ns),
        (5_000_000, 1_000_000, 6_000_000)
    );
    let self_times: Vec<(&str, u64)> = off
        .top_self
        .iter()
        .map(|f| (f.function.as_str(), f.ns))
        .collect();
    // A user stack's self is its innermost user frame, not the scheduler's; a stack without
    // user frames (a kernel thread's) keeps its innermost frame.
    assert_eq!(
        self_times,
        [
            ("read", 3_000_000),
            ("schedule", 2_000_000),
            ("spin", 1_000_000)
        ]
    );
    assert_eq!(off.top_total[0].function, "schedule");
    assert_eq!(off.top_total[0].ns, 5_000_000);
    assert!((off.top_total[0].percent - 500.0 / 6.0).abs() < 1e-9);
    // The on-CPU lists count the one on-CPU sample, and only it.
    assert_eq!(summary.totals.samples, 1);
    assert_eq!(summary.top_processes.len(), 1);
    assert_eq!(summary.windows[0].processes, 1);
    assert!(summary.on_cpu_lists);
}

#[test]
fn off_cpu_event_leaves_the_on_cpu_lists_out() {
    let summary = summary(Event::OffCpu, 1_000_000);
    assert!(!summary.on_cpu_lists);
    assert!(summary.top_self.is_empty() && summary.top_processes.is_empty());
    assert_eq!(summary.off_cpu.unwrap().samples, 3);
}

#[test]
fn no_off_cpu_section_without_off_cpu_recording() {
    let summary = summary(Event::OnCpu, 0);
    assert!(summary.off_cpu.is_none());
    assert!(summary.windows[0].off_cpu.is_none());
    let json = serde_json::to_string(&summary).unwrap();
    assert!(!json.contains("off_cpu"), "{json}");
    let mut text = Vec::new();
    summary.write_text(&mut text).unwrap();
    assert!(!String::from_utf8(text).unwrap().contains("off-"));
}
