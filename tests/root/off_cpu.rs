//! Off-CPU time (`record --off-cpu`) against what the threads of a workload measured
//! themselves (tests/fixtures/offcpu.c): where they waited, in the right proportions, and for
//! as long in all. Needs root (eBPF).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use amprof::capture::{
    CaptureReader,
    format::{OffCpuReason, Window},
};

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
pub struct Measured {
    pub blocked_in: BTreeMap<String, f64>,
    pub off_cpu_s: f64,
}

/// Runs the fixture with `arguments` (its seconds, and `preempt` or not) under
/// `record --off-cpu` with `flags`; returns the capture, `record --json` and what the threads
/// measured.
pub fn record_fixture(
    name: &str,
    flags: &[&str],
    arguments: &str,
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
        .args(["--", "sh", "-c", r#"exec "$0" $1 > "$2""#])
        .arg(&program)
        .arg(arguments)
        .arg(&report)
        .output()
        .unwrap();
    assert_ok(&output);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("record --json");
    (capture, json, measured(&report))
}

/// What the fixture wrote to `report`, summed over its threads.
fn measured(report: &Path) -> Measured {
    let measured: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report).unwrap()).expect("the fixture's JSON");
    let mut blocked_in = BTreeMap::new();
    let mut off_cpu_s = 0.0;
    for thread in measured["threads"].as_array().unwrap() {
        off_cpu_s += thread["off_cpu_s"].as_f64().unwrap();
        for (function, seconds) in thread["blocked_in"].as_object().unwrap() {
            *blocked_in.entry(function.clone()).or_default() += seconds.as_f64().unwrap();
        }
    }
    Measured {
        blocked_in,
        off_cpu_s,
    }
}

/// Off-CPU seconds of the capture's `offcpu` (or `offcpu-fp`) process: per blocking function (the innermost
/// of [`BLOCKING`] on the stack), and in all.
fn off_cpu_by_function(capture: &Path) -> (BTreeMap<String, f64>, f64) {
    let mut reader = CaptureReader::open(capture).unwrap();
    let mut by_function = BTreeMap::new();
    let mut total = 0.0;
    while let Some(window) = reader.next_window().unwrap() {
        for stack in &window.stacks {
            let process = &window.processes[stack.process as usize];
            if !process.name.starts_with("offcpu") || stack.off_cpu_ns == 0 {
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

/// The heaviest off-CPU stacks of the `offcpu` process, one per line (frames leaf first, each
/// its function names or `module+offset` when unnamed): what a failure shows, so that a run on
/// another machine says whether frames were missing or only their names.
fn heaviest_stacks(capture: &Path, count: usize) -> String {
    let mut reader = CaptureReader::open(capture).unwrap();
    let mut stacks: Vec<(u64, String)> = Vec::new();
    while let Some(window) = reader.next_window().unwrap() {
        for stack in &window.stacks {
            let process = &window.processes[stack.process as usize];
            if !process.name.starts_with("offcpu") || stack.off_cpu_ns == 0 {
                continue;
            }
            let frames: Vec<String> = stack
                .locations
                .iter()
                .map(|&l| {
                    let location = &window.locations[l as usize];
                    if location.lines.is_empty() {
                        let module = match location.mapping {
                            0 => "?".to_string(),
                            m => {
                                let mapping = &window.mappings[m as usize - 1];
                                let name = &window.modules[mapping.module as usize].path;
                                format!(
                                    "{name}+{:#x}",
                                    location.address - mapping.start + mapping.file_offset
                                )
                            }
                        };
                        return module;
                    }
                    location
                        .lines
                        .iter()
                        .map(|line| window.functions[line.function as usize].name.as_str())
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .collect();
            stacks.push((stack.off_cpu_ns, frames.join(" <- ")));
        }
    }
    stacks.sort_by_key(|s| std::cmp::Reverse(s.0));
    stacks
        .iter()
        .take(count)
        .map(|(ns, frames)| format!("  {:.3} s: {frames}", *ns as f64 / 1e9))
        .collect::<Vec<_>>()
        .join("\n")
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
    // A program the kernel refused on the way (off-CPU stacks by frame pointers, say) would
    // leave this fixture's functions unnamed: the refusal is the finding.
    assert_eq!(json["kernel_limits"], serde_json::json!([]), "{json}");
    let (recorded, total) = off_cpu_by_function(&capture);
    let (want, got) = (shares(&measured.blocked_in), shares(&recorded));
    eprintln!("heaviest stacks:\n{}", heaviest_stacks(&capture, 4));
    eprintln!(
        "off-CPU shares recorded {got:.1?}, measured {want:.1?}; total {total:.3} s, measured {:.3} s",
        measured.off_cpu_s
    );
    for function in BLOCKING {
        assert!(
            (want[function] - got[function]).abs() <= 2.0,
            "{function}: {:.1}% of the off-CPU time, the threads measured {:.1}%\nrecorded {recorded:?}\nmeasured {:?}\nrecord --json: {json}",
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
    // Nothing was lost, and the summary counts what the capture holds (the fixture's, and
    // the shell's before it execs; sums of floats in another order).
    assert_eq!(json["off_cpu"]["lost"], 0, "{json}");
    let seconds = json["off_cpu"]["seconds"].as_f64().unwrap();
    assert!(
        seconds >= total - 1e-6 && seconds < total + 0.5,
        "{total} s: {json}"
    );
}

/// Two threads pinned to one CPU, each runnable while the other runs: their time waiting for
/// the CPU is off-CPU time of the runnable kind, as long as they measured it.
#[test]
fn waiting_for_a_cpu_is_runnable_time() {
    let _alone = require_root_alone();
    let (capture, _, _) = record_fixture("off-cpu-preempt", &[], "3 preempt");
    let measured: serde_json::Value =
        serde_json::from_slice(&std::fs::read(capture.with_file_name("measured.json")).unwrap())
            .unwrap();
    let spinners: Vec<(u32, f64)> = measured["threads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"].as_str().unwrap().starts_with("spinner-"))
        .map(|t| {
            (
                t["tid"].as_u64().unwrap() as u32,
                t["off_cpu_s"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(spinners.len(), 2, "{measured}");
    let mut reader = CaptureReader::open(&capture).unwrap();
    let mut runnable = BTreeMap::<u32, f64>::new();
    let mut blocked = 0.0;
    while let Some(window) = reader.next_window().unwrap() {
        for sample in amprof::capture::off_cpu_samples(&window) {
            let Some((tid, _)) = spinners.iter().find(|(tid, _)| *tid == sample.tid) else {
                continue;
            };
            let off = sample.off_cpu().unwrap();
            match off.reason {
                OffCpuReason::Runnable => {
                    *runnable.entry(*tid).or_default() += off.ns as f64 / 1e9;
                }
                OffCpuReason::Blocked => blocked += off.ns as f64 / 1e9,
            }
        }
    }
    for (tid, off_cpu_s) in &spinners {
        let recorded = runnable.get(tid).copied().unwrap_or(0.0);
        assert!(
            off_cpu_s > &0.5 && (recorded / off_cpu_s - 1.0).abs() <= 0.05,
            "spinner {tid}: {recorded:.3} s runnable, it measured {off_cpu_s:.3} s off the CPU"
        );
    }
    assert!(
        blocked < 0.05,
        "the spinners never block: {blocked:.3} s blocked"
    );
}

/// A process that switches hundreds of thousands of times a second: windows still close on
/// time, off-CPU samples stay within the per-CPU budget, and amprof's memory stays bounded.
#[test]
fn a_switch_flood_is_bounded() {
    let _alone = require_root_alone();
    let program = compile_c_as("switch_flood", "switch_flood", &["-O2", "-pthread"]);
    let capture = scratch("off-cpu-flood").join("capture.data");
    let output = amprof()
        .args(["record", "-q", "--json", "--off-cpu", "-w", "1s", "-o"])
        .arg(&capture)
        .args(["--", "sh", "-c", r#"exec "$0" 4 128 > /dev/null"#])
        .arg(&program)
        .output()
        .unwrap();
    assert_ok(&output);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["command_exit_code"], 0, "{json}");
    // 99 Hz and 1 s windows: at most 2,000 off-CPU samples per CPU per window.
    let budget = 2_000 * json["cpus"].as_u64().unwrap();
    let mut reader = CaptureReader::open(&capture).unwrap();
    let mut windows = 0;
    while let Some(window) = reader.next_window().unwrap() {
        windows += 1;
        let samples = window.off_cpu_ns.len() as u64;
        assert!(
            samples <= budget,
            "window {}: {samples} off-CPU samples",
            window.index
        );
    }
    // Every second of the recording closed its window (none was stalled or merged).
    let seconds = json["seconds"].as_f64().unwrap();
    assert!(
        windows as f64 >= seconds.floor(),
        "{windows} windows in {seconds} s: {json}"
    );
    assert!(
        json["off_cpu"]["samples"].as_u64().unwrap() > 1000,
        "{json}"
    );
    let rss_mib = json["peak_rss_kib"].as_u64().unwrap() / 1024;
    assert!(rss_mib < 200, "peak RSS {rss_mib} MiB: {json}");
}

/// System-wide and `-p PID` recordings see the same split as a command's (over the part of
/// the workload they cover), with frame pointers too for the functions a frame-pointer walk
/// can reach (the mutex's chain breaks inside glibc, which has no frame pointers).
#[test]
fn every_target_mode_records_off_cpu_time() {
    let _alone = require_root_alone();
    let program = compile_c_as("offcpu", "offcpu", &["-O1", "-pthread"]);
    let with_fp = compile_c_as(
        "offcpu",
        "offcpu-fp",
        &["-O1", "-fno-omit-frame-pointer", "-pthread"],
    );
    for (mode, call_graph) in [("system", "dwarf"), ("pid", "dwarf"), ("pid", "fp")] {
        let program = if call_graph == "fp" {
            &with_fp
        } else {
            &program
        };
        let dir = scratch(&format!("off-cpu-{mode}-{call_graph}"));
        let report = std::fs::File::create(dir.join("measured.json")).unwrap();
        // Long enough to outlast amprof's start (seconds on a loaded machine) and recording.
        let mut workload = std::process::Command::new(program)
            .arg("8")
            .stdout(report)
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let capture = dir.join("capture.data");
        let pid = workload.id().to_string();
        let mut record = amprof();
        record
            .args([
                "record",
                "-q",
                "--off-cpu",
                "-d",
                "2s",
                "-g",
                call_graph,
                "-o",
            ])
            .arg(&capture);
        if mode == "pid" {
            record.args(["-p", &pid]);
        }
        assert_ok(&record.output().unwrap());
        assert!(workload.wait().unwrap().success());
        let (recorded, _) = off_cpu_by_function(&capture);
        let blocked_in = measured(&dir.join("measured.json")).blocked_in;
        let reachable: &[&str] = if call_graph == "fp" {
            &["block_in_sleep", "block_in_pipe_read", "pace_writer"]
        } else {
            &BLOCKING
        };
        let share = |seconds: &BTreeMap<String, f64>, f: &str| {
            let total: f64 = reachable
                .iter()
                .map(|f| seconds.get(*f).unwrap_or(&0.0))
                .sum();
            100.0 * seconds.get(f).unwrap_or(&0.0) / total
        };
        for function in reachable {
            let (got, want) = (share(&recorded, function), share(&blocked_in, function));
            assert!(
                (got - want).abs() <= 3.0,
                "{mode} -g {call_graph}: {function} {got:.1}% of the off-CPU time, the threads measured {want:.1}%: {recorded:?}"
            );
        }
    }
}

/// The functions of tests/fixtures/mixed_waits.c, each a wait of its own length, site or
/// reason; the last two wait for the CPU (runnable), the others are blocked.
const MIXED: [&str; 9] = [
    "alpha",
    "beta",
    "gamma_wait",
    "slow_query",
    "lock_wait",
    "twin_one",
    "twin_two",
    "crowded_spin",
    "rival_spin",
];
const MIXED_RUNNABLE: [&str; 2] = ["crowded_spin", "rival_spin"];

/// Threads whose waits differ in length (20, 5 and 1 ms on one; 40 ms then twenty 0.2 ms
/// futex waits on another), in site (3 ms in two functions) and in reason (two spinners on
/// one CPU): each function gets its own share of the off-CPU time, within 3 points of what its
/// thread measured, at 99 Hz and at 999 Hz, for a command, `-p` and system-wide; the spinners'
/// time is runnable, the sleepers' blocked. Summing a thread's waits and charging the sum to
/// the wait that reached the period gave the 20 ms sleep 99.8% of its thread's time.
#[test]
fn waits_of_different_lengths_keep_their_own_shares() {
    // It judges times and pins two spinners to CPU 0: other tests' load would move both.
    let _alone = require_root_alone();
    let program = compile_c_as("mixed_waits", "mixed_waits", &["-O1", "-pthread"]);
    for mode in ["command", "pid", "system"] {
        for frequency in ["99", "999"] {
            let dir = scratch(&format!("mixed_waits_{mode}_{frequency}"));
            let capture = dir.join("capture.data");
            let report = dir.join("measured.json");
            let mut record = amprof();
            record
                .args(["record", "-q", "--off-cpu", "-F", frequency, "-o"])
                .arg(&capture);
            let mut workload = None;
            if mode == "command" {
                record
                    .args(["--", "sh", "-c", r#"exec "$0" 5 > "$1""#])
                    .arg(&program)
                    .arg(&report);
            } else {
                // Long enough to outlast amprof's start (seconds on a loaded machine) and
                // recording; its pattern repeats every 50 ms, so any 4 s of it has its split.
                let child = std::process::Command::new(&program)
                    .arg("9")
                    .stdout(std::fs::File::create(&report).unwrap())
                    .spawn()
                    .unwrap();
                std::thread::sleep(std::time::Duration::from_millis(300));
                record.args(["-d", "4s"]);
                if mode == "pid" {
                    record.args(["-p", &child.id().to_string()]);
                }
                workload = Some(child);
            }
            assert_ok(&record.output().unwrap());
            if let Some(mut workload) = workload {
                assert!(workload.wait().unwrap().success());
            }
            let measured: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&report).unwrap())
                    .expect("the fixture's JSON");
            let truth: f64 = MIXED.iter().map(|w| measured[*w].as_f64().unwrap()).sum();
            // Per function: [blocked, runnable] seconds.
            let mut profiled = BTreeMap::<&str, [f64; 2]>::new();
            let mut reader = CaptureReader::open(&capture).unwrap();
            while let Some(window) = reader.next_window().unwrap() {
                for sample in amprof::capture::off_cpu_samples(&window) {
                    if !sample.process.name.starts_with("mixed_waits") {
                        continue;
                    }
                    let names = stack_functions(&window, &sample.stack.locations);
                    let Some(wait) = MIXED.iter().find(|w| names.iter().any(|n| n == *w)) else {
                        continue;
                    };
                    let off = sample.off_cpu().unwrap();
                    let reason = match off.reason {
                        OffCpuReason::Blocked => 0,
                        OffCpuReason::Runnable => 1,
                    };
                    profiled.entry(wait).or_default()[reason] += off.ns as f64 / 1e9;
                }
            }
            let seconds = |w: &str| profiled.get(w).map_or(0.0, |[b, r]| b + r);
            let total: f64 = MIXED.iter().map(|w| seconds(w)).sum();
            let at = format!("{mode} at {frequency} Hz");
            // Command mode records the whole run, the others 4 s of 9.
            let covered = if mode == "command" { 0.8 } else { 0.3 };
            assert!(
                total > covered * truth,
                "{at}: {total:.2} s profiled of {truth:.2} s off the CPU"
            );
            for wait in MIXED {
                let want = 100.0 * measured[wait].as_f64().unwrap() / truth;
                let got = 100.0 * seconds(wait) / total;
                let runnable = profiled.get(wait).map_or(0.0, |[_, r]| *r) / seconds(wait);
                eprintln!(
                    "{at}: {wait} {got:.1}% (measured {want:.1}%), {:.0}% runnable",
                    100.0 * runnable
                );
                assert!(
                    (want - got).abs() <= 3.0,
                    "{at}: {wait} has {got:.1}% of the off-CPU time, its thread measured {want:.1}%"
                );
                let expected_runnable = MIXED_RUNNABLE.contains(&wait);
                assert!(
                    if expected_runnable {
                        runnable >= 0.9
                    } else {
                        runnable <= 0.1
                    },
                    "{at}: {wait} is {:.0}% runnable",
                    100.0 * runnable
                );
            }
        }
    }
}
