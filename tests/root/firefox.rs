//! `report --format firefox` on real recordings: what the profile's tracks, samples and markers
//! hold against the capture they came from and the workload's own measurements, and the file
//! loaded by the Firefox Profiler's own code (`tests/firefox/load.mjs`). Needs root (eBPF).

use std::{collections::BTreeMap, path::Path};

use amprof::capture::CaptureReader;

use crate::{
    firefox_reader::{Profile, load_in_the_firefox_profiler, profiler_functions},
    off_cpu::record_fixture,
    util::*,
};

/// `report --format firefox` of `capture` with `extra` flags, read back.
fn firefox(capture: &Path, name: &str, extra: &[&str]) -> (std::path::PathBuf, Profile) {
    let path = capture.with_file_name(name);
    let output = amprof()
        .args(["report", "-q", "-f", "firefox", "-i"])
        .arg(capture)
        .arg("-o")
        .arg(&path)
        .args(extra)
        .output()
        .unwrap();
    assert_ok(&output);
    let profile = Profile::read(&path);
    (path, profile)
}

/// On-CPU samples per tid of process `pid` in the capture, and its CPU count.
fn capture_samples(capture: &Path, pid: u32) -> (BTreeMap<u32, u64>, u32) {
    let mut reader = CaptureReader::open(capture).unwrap();
    let cpus = reader.meta().cpus;
    let mut per_tid = BTreeMap::new();
    while let Some(window) = reader.next_window().unwrap() {
        for sample in amprof::capture::samples(&window) {
            if sample.process.pid == pid {
                *per_tid.entry(sample.tid).or_default() += 1;
            }
        }
    }
    (per_tid, cpus)
}

/// The hotspot fixture's two threads: a track each in the process's group, every sample of the
/// capture on its thread's track with its stack, `hot_a` three times `hot_b` as designed, kernel
/// frames only at the leaf end, CPU markers on CPUs that exist; the profiler loads it.
#[test]
fn a_track_per_thread_with_every_sample() {
    let _root = require_root();
    let dir = scratch("firefox-hotspot");
    let capture = dir.join("hotspot.data");
    record_hotspot(&capture, &["-F", "499", "--window", "1s"], &["2", "2"]);
    let summary = summary(&capture, &["--comm", "hotspot"]);
    let pid = pids(&summary)[0] as u32;
    let (per_tid, cpus) = capture_samples(&capture, pid);
    let (path, profile) = firefox(&capture, "profile.json.gz", &[]);
    let loaded = load_in_the_firefox_profiler(&path);
    let functions = profiler_functions(&loaded, "hotspot");
    for function in ["main", "run", "hot_a", "hot_b"] {
        assert!(
            functions.iter().any(|f| f == function),
            "the profiler lists {functions:?}"
        );
    }

    let threads = profile.process_threads(pid);
    let tracks: BTreeMap<u32, u64> = threads
        .iter()
        .map(|t| (t.tid.parse().unwrap(), t.samples.len() as u64))
        .collect();
    assert_eq!(tracks, per_tid, "samples per thread track");
    assert_eq!(threads.len(), 2, "two threads");
    assert!(threads.iter().all(|t| t.process_name == "hotspot"));

    let mut leaves: BTreeMap<String, i64> = BTreeMap::new();
    for thread in &threads {
        for (leaf, weight) in thread.leaf_weights() {
            *leaves.entry(leaf).or_default() += weight;
        }
        for sample in &thread.samples {
            // Root first: user frames, then kernel ones (an interrupt or a syscall) at the leaf.
            let first_kernel = sample.stack.iter().position(|f| f.category == "Kernel");
            if let Some(k) = first_kernel {
                assert!(
                    sample.stack[k..].iter().all(|f| f.category == "Kernel"),
                    "{:?}",
                    sample.stack
                );
            }
            let names: Vec<&str> = sample.stack.iter().map(|f| f.name.as_str()).collect();
            if names.contains(&"hot_a") {
                let at = names.iter().position(|n| *n == "hot_a").unwrap();
                assert_eq!(&names[at - 1], &"run", "{names:?}");
            }
        }
        for marker in &thread.markers {
            let cpu = marker.data["cpu"].as_f64().unwrap();
            assert!(
                marker.name.starts_with("CPU ") && cpu < f64::from(cpus),
                "{marker:?}"
            );
        }
    }
    let (a, b) = (leaves["hot_a"] as f64, leaves["hot_b"] as f64);
    let share = 100.0 * a / (a + b);
    eprintln!("hot_a {share:.1}% of hot_a + hot_b in the Firefox profile (designed: 75%)");
    assert!((65.0..=85.0).contains(&share), "{leaves:?}");
    // The same split as the summary's, sample for sample.
    assert_eq!(a as u64, self_samples(&summary, "hot_a"));
    assert_eq!(b as u64, self_samples(&summary, "hot_b"));
}

/// Off-CPU waits of the offcpu fixture's named threads: one marker per off-CPU sample of the
/// capture, with the stack the thread waited in; with `--event wall`, sample weights that add
/// up to the capture's off-CPU time, and to what the threads measured.
#[test]
fn off_cpu_waits_are_markers_and_wall_samples() {
    let _alone = require_root_alone();
    let (capture, _, measured) = record_fixture("firefox-off-cpu", &[], "2");
    let mut reader = CaptureReader::open(&capture).unwrap();
    let period_ns = reader.meta().sample_period_ns();
    let (mut waits, mut off_ns) = (BTreeMap::<u32, u64>::new(), BTreeMap::<u32, u64>::new());
    let mut pid = 0;
    // By pid: the shell the fixture is exec'd from is the same pid (an image of its own in
    // the capture, a thread of the same process in the profile), and its waits are markers too.
    let mut by_pid = BTreeMap::<u32, Vec<(u32, u64)>>::new();
    while let Some(window) = reader.next_window().unwrap() {
        for sample in amprof::capture::off_cpu_samples(&window) {
            if sample.process.name == "offcpu" {
                pid = sample.process.pid;
            }
            by_pid
                .entry(sample.process.pid)
                .or_default()
                .push((sample.tid, sample.off_cpu().unwrap().ns));
        }
    }
    for &(tid, ns) in by_pid.get(&pid).into_iter().flatten() {
        *waits.entry(tid).or_default() += 1;
        *off_ns.entry(tid).or_default() += ns;
    }
    assert!(!waits.is_empty(), "the capture has off-CPU samples");
    let (path, profile) = firefox(&capture, "wall.json.gz", &["--event", "wall"]);
    let loaded = load_in_the_firefox_profiler(&path);
    let functions = profiler_functions(&loaded, "pipe-reader-1");
    assert!(
        functions.iter().any(|f| f == "[off-cpu: blocked]"),
        "the profiler lists {functions:?}"
    );

    let mut names = Vec::new();
    let mut weighed_s = 0.0;
    let (mut spans_total_ms, mut off_total_ms) = (0.0, 0.0);
    for thread in profile.process_threads(pid) {
        let tid: u32 = thread.tid.parse().unwrap();
        names.push(thread.name.clone());
        let markers: Vec<_> = thread
            .markers
            .iter()
            .filter(|m| m.name == "Blocked" || m.name == "Runnable")
            .collect();
        assert_eq!(
            markers.len() as u64,
            waits.get(&tid).copied().unwrap_or(0),
            "a marker per off-CPU sample of {}",
            thread.name
        );
        if thread.name.starts_with("pipe-reader") {
            assert!(
                markers.iter().any(|m| m.name == "Blocked"
                    && m.stack.iter().any(|f| f.name == "block_in_pipe_read")),
                "{} waits in block_in_pipe_read",
                thread.name
            );
        }
        // Each wait over the time it stands for, ending when the thread ran again.
        let spans_ms: f64 = markers.iter().map(|m| m.end.unwrap() - m.start).sum();
        let off_ms = off_ns.get(&tid).copied().unwrap_or(0) as f64 / 1e6;
        eprintln!(
            "{}: waits span {spans_ms:.3} ms, off the CPU {off_ms:.3} ms",
            thread.name
        );
        // A wait starts no earlier than the thread's sample before it (the kernel's sums of
        // short waits have no start of their own): spans can only be shorter.
        assert!(spans_ms <= off_ms + 0.001, "{}", thread.name);
        spans_total_ms += spans_ms;
        off_total_ms += off_ms;
        let weight: i64 = thread
            .samples
            .iter()
            .filter(|s| s.stack.last().is_some_and(|f| f.category == "Off-CPU"))
            .map(|s| s.weight)
            .sum();
        // Whole periods: the carry leaves less than one per thread.
        let want = off_ns.get(&tid).copied().unwrap_or(0) / period_ns;
        assert_eq!(weight as u64, want, "{}", thread.name);
        weighed_s += weight as f64 * period_ns as f64 / 1e9;
    }
    // The main thread's track is named after its process, as the profiler expects.
    // A short wait is kept with probability wait / period and then stands for a whole period,
    // which the sample before it can clip: the spans cover most of the time, not all of it.
    assert!(
        spans_total_ms >= 0.85 * off_total_ms,
        "the waits span {spans_total_ms:.3} ms of {off_total_ms:.3} ms off the CPU"
    );
    for name in ["offcpu", "mutex-holder", "pipe-writer", "pipe-reader-1"] {
        assert!(
            names.iter().any(|n| n == name),
            "no track {name}: {names:?}"
        );
    }
    eprintln!(
        "off-CPU samples weigh {weighed_s:.3} s in the profile; the threads measured {:.3} s",
        measured.off_cpu_s
    );
    assert!(
        (weighed_s / measured.off_cpu_s - 1.0).abs() <= 0.05,
        "{weighed_s:.3} s against {:.3} s",
        measured.off_cpu_s
    );
}
