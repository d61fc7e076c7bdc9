//! Off-CPU time (`record --off-cpu`) against what the threads of a workload measured
//! themselves (tests/fixtures/offcpu.c): where they waited, in the right proportions, and for
//! as long in all. Needs root (eBPF).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use amprof::capture::{CaptureReader, format::Window};

use crate::util::*;

/// The functions the fixture's threads block in, each measured by the threads themselves.
const BLOCKING: [&str; 4] = [
    "block_in_sleep",
    "block_in_mutex",
    "block_in_pipe_read",
    "pace_writer",
];

/// What the fixture printed: per blocking function, the seconds its threads spent off the CPU
/// in it, and their off-CPU seconds in all.
struct Measured {
    blocked_in: BTreeMap<String, f64>,
    off_cpu_s: f64,
}

/// Runs the fixture for `seconds` under `record --off-cpu` with `flags`; returns the capture,
/// `record --json` and what the threads measured.
fn record_fixture(
    name: &str,
    flags: &[&str],
    seconds: &str,
) -> (PathBuf, serde_json::Value, Measured) {
    let program = compile_c_as("offcpu", "offcpu", &["-O1", "-pthread"]);
    let dir = scratch(name);
    let capture = dir.join("capture.data");
    let report = dir.join("measured.json");
    // The fixture's own report goes to a file: standard output is amprof's --json.
    let output = amprof()
        .args(["record", "-q", "--json", "--off-cpu", "-F", "499", "-o"])
        .arg(&capture)
        .args(flags)
        .args(["--", "sh", "-c", r#"exec "$0" "$1" > "$2""#])
        .arg(&program)
        .arg(seconds)
        .arg(&report)
        .output()
        .unwrap();
    assert_ok(&output);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("record --json");
    let measured: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).expect("the fixture's JSON");
    let mut blocked_in = BTreeMap::new();
    let mut off_cpu_s = 0.0;
    for thread in measured["threads"].as_array().unwrap() {
        off_cpu_s += thread["off_cpu_s"].as_f64().unwrap();
        for (function, seconds) in thread["blocked_in"].as_object().unwrap() {
            *blocked_in.entry(function.clone()).or_default() += seconds.as_f64().unwrap();
        }
    }
    (
        capture,
        json,
        Measured {
            blocked_in,
            off_cpu_s,
        },
    )
}

/// Off-CPU seconds of the capture's `offcpu` process: per blocking function (the innermost
/// of [`BLOCKING`] on the stack), and in all.
fn off_cpu_by_function(capture: &Path) -> (BTreeMap<String, f64>, f64) {
    let mut reader = CaptureReader::open(capture).unwrap();
    let mut by_function = BTreeMap::new();
    let mut total = 0.0;
    while let Some(window) = reader.next_window().unwrap() {
        for stack in &window.stacks {
            let process = &window.processes[stack.process as usize];
            if process.name != "offcpu" || stack.off_cpu_ns == 0 {
                continue;
            }
            let seconds = stack.off_cpu_ns as f64 / 1e9;
            total += seconds;
            let names = stack_functions(&window, &stack.locations);
            if let Some(function) = names.iter().find(|n| BLOCKING.contains(&n.as_str())) {
                *by_function.entry(function.clone()).or_default() += seconds;
            }
        }
    }
    (by_function, total)
}

/// The function names of `locations`, leaf first (inlined frames innermost first).
fn stack_functions(window: &Window, locations: &[u32]) -> Vec<String> {
    locations
        .iter()
        .flat_map(|&l| &window.locations[l as usize].lines)
        .map(|line| window.functions[line.function as usize].name.clone())
        .collect()
}

/// Shares of `seconds` among the blocking functions, in points.
fn shares(seconds: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let total: f64 = BLOCKING
        .iter()
        .map(|f| seconds.get(*f).unwrap_or(&0.0))
        .sum();
    BLOCKING
        .iter()
        .map(|f| {
            (
                f.to_string(),
                100.0 * seconds.get(*f).unwrap_or(&0.0) / total,
            )
        })
        .collect()
}

/// Sleeps, a contended mutex and pipe reads of a slow writer: each function's share of the
/// off-CPU time is within 2 points of what the threads measured, and the time within 5%.
#[test]
fn blocked_time_is_where_and_as_long_as_the_threads_measured() {
    // It judges times: other tests' load would add waits for a CPU.
    let _alone = require_root_alone();
    let (capture, json, measured) = record_fixture("off-cpu-blocked", &[], "3");
    let (recorded, total) = off_cpu_by_function(&capture);
    let (want, got) = (shares(&measured.blocked_in), shares(&recorded));
    for function in BLOCKING {
        assert!(
            (want[function] - got[function]).abs() <= 2.0,
            "{function}: {:.1}% of the off-CPU time, the threads measured {:.1}%\nrecorded {recorded:?}\nmeasured {:?}",
            got[function],
            want[function],
            measured.blocked_in
        );
    }
    let in_blocking: f64 = BLOCKING
        .iter()
        .map(|f| recorded.get(*f).unwrap_or(&0.0))
        .sum();
    let measured_blocking: f64 = BLOCKING
        .iter()
        .map(|f| measured.blocked_in.get(*f).unwrap_or(&0.0))
        .sum();
    assert!(
        (in_blocking / measured_blocking - 1.0).abs() <= 0.05,
        "{in_blocking:.3} s off the CPU in the blocking functions, the threads measured {measured_blocking:.3} s"
    );
    assert!(
        (total / measured.off_cpu_s - 1.0).abs() <= 0.05,
        "{total:.3} s off the CPU in all, the threads measured {:.3} s",
        measured.off_cpu_s
    );
    // Nothing was lost, and the summary says what the capture holds.
    assert_eq!(json["off_cpu"]["lost"], 0, "{json}");
    let seconds = json["off_cpu"]["seconds"].as_f64().unwrap();
    assert!(seconds >= total, "{json}");
}
