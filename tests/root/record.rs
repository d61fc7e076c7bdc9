//! `amprof record` against the real kernel: these tests load eBPF and need root.

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use crate::util::*;

/// The designed profile of the hotspot fixture holds: hot_a dominates with 3/4 of the work.
#[test]
fn the_designed_hot_function_dominates_with_the_designed_split() {
    // It counts samples: the workload needs a CPU no other test takes.
    let _alone = require_root_alone();
    let dir = scratch("split");
    let capture = dir.join("split.data");
    record_hotspot(&capture, &["-F", "499"], &["3"]);
    let summary = summary(&capture, &[]);
    let (a, b) = (
        self_samples(&summary, "hot_a"),
        self_samples(&summary, "hot_b"),
    );
    let total = summary["totals"]["samples"].as_u64().unwrap();
    assert!(
        total > 1000,
        "3 s at 499 Hz gives ~1500 samples, got {total}"
    );
    assert!(
        (a + b) as f64 > 0.9 * total as f64,
        "hot_a + hot_b = {} of {total} samples",
        a + b
    );
    let share = a as f64 / (a + b) as f64;
    assert!(
        (0.70..=0.80).contains(&share),
        "hot_a has {:.1}% of the hot samples, designed 75%",
        share * 100.0
    );
    // Frame pointers give the whole chain: every hot sample also counts in run and main.
    let total_of = |name: &str| -> u64 {
        summary["top_total"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["function"] == name)
            .map(|f| f["samples"].as_u64().unwrap())
            .sum()
    };
    assert!(
        total_of("run") >= a + b,
        "run: {} < {}",
        total_of("run"),
        a + b
    );
    assert!(
        total_of("main") >= a + b,
        "main: {} < {}",
        total_of("main"),
        a + b
    );
}

/// `-- COMMAND` profiles the command and its children, nothing else, and exits with its status.
#[test]
fn a_command_is_profiled_with_its_children_and_nothing_else() {
    let _root = require_root();
    let dir = scratch("command");
    let capture = dir.join("command.data");
    // A busy process that is not part of the command.
    let mut outsider = Command::new(hotspot()).arg("6").spawn().unwrap();
    let script = format!("{hot} 2 & {hot} 2; wait; exit 7", hot = hotspot().display());
    let output = amprof()
        .args(["record", "-q", "-o"])
        .arg(&capture)
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    outsider.kill().unwrap();
    outsider.wait().unwrap();
    assert_eq!(
        output.status.code(),
        Some(7),
        "amprof exits with the command's status: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = summary(&capture, &[]);
    let processes = summary["top_processes"].as_array().unwrap();
    let hotspots = processes.iter().filter(|p| p["name"] == "hotspot").count();
    assert!(hotspots >= 2, "both children are profiled: {processes:?}");
    assert!(
        !pids(&summary).contains(&u64::from(outsider.id())),
        "the outsider is not profiled: {processes:?}"
    );
    for process in processes {
        assert!(
            process["name"] == "hotspot" || process["name"] == "sh",
            "only the command's tree is profiled: {process}"
        );
    }
}

/// `-p` profiles exactly the given processes.
#[test]
fn pid_mode_sees_only_its_targets() {
    let _root = require_root();
    let dir = scratch("pid");
    let capture = dir.join("pid.data");
    let mut target = Command::new(hotspot()).args(["4", "2"]).spawn().unwrap();
    let mut other = Command::new(hotspot()).arg("4").spawn().unwrap();
    thread::sleep(Duration::from_millis(200));
    let output = amprof()
        .args([
            "record",
            "-q",
            "-d",
            "2s",
            "-p",
            &target.id().to_string(),
            "-o",
        ])
        .arg(&capture)
        .output()
        .unwrap();
    for child in [&mut target, &mut other] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert_ok(&output);
    let summary = summary(&capture, &[]);
    assert_eq!(pids(&summary), vec![u64::from(target.id())]);
    let samples = summary["totals"]["samples"].as_u64().unwrap();
    // Two threads, 2 s at 99 Hz: up to ~400 samples, fewer when the CPUs are shared with the
    // other process and the other tests.
    assert!(samples > 50, "got {samples} samples");
}

/// Windows tile the recording: contiguous, the last one cut at the end of the duration.
#[test]
fn windows_cover_the_duration_with_no_gap() {
    let _root = require_root();
    let dir = scratch("windows");
    let capture = dir.join("windows.data");
    let output = amprof()
        .args(["record", "-q", "-d", "2.5s", "--window", "1s", "-o"])
        .arg(&capture)
        .output()
        .unwrap();
    assert_ok(&output);
    let summary = summary(&capture, &[]);
    let windows = summary["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 3, "{windows:?}");
    let mut expected_start = 0.0;
    for (i, window) in windows.iter().enumerate() {
        assert_eq!(window["index"].as_u64(), Some(i as u64));
        let start = window["start_offset_seconds"].as_f64().unwrap();
        assert!(
            (start - expected_start).abs() < 1e-6,
            "window {i} starts at {start}"
        );
        expected_start = start + window["seconds"].as_f64().unwrap();
    }
    assert!(
        (expected_start - 2.5).abs() < 1e-6,
        "windows end at {expected_start}"
    );
    assert_eq!(summary["capture"]["state"], "finalized");
    assert_eq!(summary["capture"]["stopped_by"], "duration");
}

/// kill -9 in the middle of a recording leaves a capture with every window closed before it.
#[test]
fn a_killed_recording_leaves_a_readable_capture() {
    let _root = require_root();
    let dir = scratch("killed");
    let capture = dir.join("killed.data");
    let mut load = Command::new(hotspot()).arg("5").spawn().unwrap();
    let mut record = amprof()
        .args(["record", "-q", "-d", "60s", "--window", "1s", "-o"])
        .arg(&capture)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once two windows are on disk (a fixed sleep raced the start-up of a loaded
    // machine): what is checked is that they survive the kill, not how fast they came.
    let started = std::time::Instant::now();
    while windows_on_disk(&capture) < 2 && started.elapsed() < Duration::from_secs(30) {
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(Duration::from_millis(300)); // in the middle of the third window
    record.kill().unwrap();
    record.wait().unwrap();
    load.kill().unwrap();
    load.wait().unwrap();
    let summary = summary(&capture, &[]);
    let windows = summary["windows"].as_array().unwrap();
    assert!(
        windows.len() >= 2,
        "windows closed before the kill survive: {windows:?}"
    );
    assert_eq!(summary["capture"]["state"], "not-finalized");
    assert!(summary["totals"]["samples"].as_u64().unwrap() > 100);
}

/// Windows a capture being written holds so far (0 while it cannot be read yet).
fn windows_on_disk(capture: &std::path::Path) -> usize {
    let Ok(output) = amprof()
        .args(["report", "--json", "-i"])
        .arg(capture)
        .stderr(Stdio::null())
        .output()
    else {
        return 0;
    };
    serde_json::from_slice::<serde_json::Value>(&output.stdout)
        .ok()
        .and_then(|summary| Some(summary["windows"].as_array()?.len()))
        .unwrap_or(0)
}

/// Without --duration, a ring keeps the last N windows and Ctrl-C (SIGINT) finalizes it.
#[test]
fn a_flight_recorder_keeps_the_last_windows_and_finalizes_on_sigint() {
    let _root = require_root();
    let dir = scratch("ring");
    let capture = dir.join("ring.data");
    let record = amprof()
        .args(["record", "-q", "--window", "500ms", "--keep", "2", "-o"])
        .arg(&capture)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(2800));
    unsafe { libc::kill(record.id() as i32, libc::SIGINT) };
    let output = record.wait_with_output().unwrap();
    assert_ok(&output);
    let summary = summary(&capture, &[]);
    let windows = summary["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2, "{windows:?}");
    assert!(summary["capture"]["windows_evicted"].as_u64().unwrap() >= 3);
    assert_eq!(summary["capture"]["stopped_by"], "signal");
    assert_eq!(
        windows[1]["index"].as_u64().unwrap(),
        windows[0]["index"].as_u64().unwrap() + 1
    );
}

/// Without the privileges to load eBPF: one clear line, exit code 4.
#[test]
fn an_unprivileged_user_is_told_what_is_needed() {
    let _root = require_root();
    use std::os::unix::fs::PermissionsExt as _;
    // The build tree may sit in a directory only root can enter (CI clones into a 0700
    // temporary directory): give the unprivileged user a copy of the binary it can run.
    let dir = std::env::temp_dir().join(format!("amprof-unprivileged-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let binary = dir.join("amprof");
    std::fs::copy(env!("CARGO_BIN_EXE_amprof"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = std::os::unix::process::CommandExt::uid(
        Command::new(&binary)
            .args(["record", "-d", "1s", "-o"])
            .arg(dir.join("x.data")),
        65534,
    )
    .output()
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(output.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("CAP_BPF") && stderr.contains("sudo"),
        "{stderr}"
    );
}

/// Bad values: a clear one-line error and the documented exit code, before anything starts.
#[test]
fn bad_values_are_refused_with_documented_exit_codes() {
    let _root = require_root();
    let dir = scratch("bad-values");
    let out = dir.join("x.data");
    let out = out.to_str().unwrap();
    for (args, code, needle) in [
        (vec!["-d", "1s", "-F", "0"], 2, "at least 1 Hz"),
        (
            vec!["-d", "1s", "-F", "1000000"],
            2,
            "perf_event_max_sample_rate",
        ),
        (vec!["-d", "soon"], 2, "not a duration"),
        (vec!["-d", "1s", "--window", "1ms"], 2, "at least 100ms"),
        (vec!["-d", "1s", "--keep", "0"], 2, "at least 1"),
        (
            vec!["-d", "1s", "-p", "999999999"],
            6,
            "no process with pid 999999999",
        ),
        (
            vec!["-d", "1s", "-o", "/nonexistent/dir/x.data"],
            2,
            "does not exist",
        ),
        (
            vec!["-d", "1s", "--", "/no/such/command"],
            6,
            "command not found",
        ),
    ] {
        let mut command = amprof();
        command.arg("record");
        if !args.contains(&"-o") {
            command.args(["-o", out]);
        }
        let output = command.args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// A capture belongs to the invoking user under sudo, and only they can read it.
#[test]
fn captures_are_private_and_owned_by_the_sudo_user() {
    let _root = require_root();
    use std::os::unix::fs::MetadataExt as _;
    let dir = scratch("owner");
    let capture = dir.join("owned.data");
    let output = amprof()
        .args(["record", "-q", "-d", "500ms", "-o"])
        .arg(&capture)
        .env("SUDO_UID", "4242")
        .env("SUDO_GID", "4343")
        .output()
        .unwrap();
    assert_ok(&output);
    let meta = std::fs::metadata(&capture).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
}
