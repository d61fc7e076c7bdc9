//! `record --push-to`: windows sent as they close, while recording goes on, to the real
//! receivers (the OTLP receiver on the official protos; the Datadog test agent in
//! push_datadog.rs). Arrival times are checked against the windows' ends, from the receiver's
//! own log, not inferred from sleeps.

use std::{
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;

use crate::{push_otlp::Receiver, util::*};

/// A workload for `seconds`, so that every window has samples.
struct Load(Child);

impl Load {
    fn start(seconds: u64) -> Self {
        Load(
            Command::new(hotspot())
                .arg(seconds.to_string())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `amprof record --push-to ARGS`, with `-p` on the load, `--json`; returns (output, when it
/// exited, Unix seconds).
fn record(args: &[&str], load: &Load) -> (std::process::Output, f64) {
    let output = amprof()
        .args(["record", "-q", "--json", "-F", "99", "-p"])
        .arg(load.0.id().to_string())
        .args(args)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT")
        .output()
        .unwrap();
    (output, now_unix())
}

fn json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&output.stderr)))
}

fn indices(value: &Value) -> Vec<u64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

/// End (Unix seconds) of the profiles of an accepted request.
fn window_end(request: &Value) -> f64 {
    let profile = &request["profiles"][0];
    (profile["time_unix_nano"].as_u64().unwrap() + profile["duration_nano"].as_u64().unwrap())
        as f64
        / 1e9
}

/// With a healthy backend every window arrives within a second of its end, while the recording
/// is still running.
#[test]
fn windows_arrive_while_the_recording_runs() {
    let _root = require_root();
    let dir = scratch("stream-arrival");
    let receiver = Receiver::start(&dir, "http", &[]);
    let load = Load::start(8);
    let capture = dir.join("capture.data");
    let (output, exited) = record(
        &[
            "-d",
            "4s",
            "--window",
            "1s",
            "-o",
            capture.to_str().unwrap(),
            "--push-to",
            "otlp",
            "--endpoint",
            &receiver.endpoint("http"),
        ],
        &load,
    );
    assert_ok(&output);
    let summary = json(&output);
    assert_eq!(indices(&summary["push"]["sent"]), [0, 1, 2, 3], "{summary}");
    let requests = receiver.requests();
    let attempts = receiver.attempts();
    assert_eq!((requests.len(), attempts.len()), (4, 4));
    for (request, attempt) in requests.iter().zip(&attempts) {
        let arrived = attempt["time"].as_f64().unwrap();
        let late = arrived - window_end(request);
        assert!(
            (0.0..1.0).contains(&late),
            "a window arrived {late:.3} s after its end"
        );
    }
    let first = attempts[0]["time"].as_f64().unwrap();
    assert!(
        exited - first > 2.0,
        "the first window arrived {:.2} s before the recording ended: not while it ran",
        exited - first
    );
    for latency in summary["push"]["latency_ms"].as_array().unwrap() {
        assert!(latency.as_f64().unwrap() < 1000.0, "{summary}");
    }
}

/// A backend down for part of the recording, then back: the waiting windows arrive, in order,
/// none twice, and none is lost.
#[test]
fn a_backend_down_for_a_while_gets_the_waiting_windows_in_order_once() {
    let _root = require_root();
    let dir = scratch("stream-down-up").join("receiver");
    let mut receiver = Receiver::start_in(&dir, "http", &[]);
    let port = receiver.port.to_string();
    let endpoint = receiver.endpoint("http");
    let load = Load::start(10);
    let capture = dir.parent().unwrap().join("capture.data");
    let recording = {
        let capture = capture.clone();
        let pid = load.0.id().to_string();
        thread::spawn(move || {
            amprof()
                .args(["record", "-q", "--json", "-F", "99", "-p", &pid])
                .args(["-d", "6s", "--window", "1s", "-o"])
                .arg(&capture)
                .args(["--push-to", "otlp", "--endpoint", &endpoint])
                .output()
                .unwrap()
        })
    };
    thread::sleep(Duration::from_millis(1500));
    drop(receiver); // down: windows 1, 2 (and maybe 3) wait, retried
    thread::sleep(Duration::from_millis(2500));
    receiver = Receiver::start_in(&dir, "http", &["--port", &port]);
    let output = recording.join().unwrap();
    assert_ok(&output);
    let summary = json(&output);
    let push = &summary["push"];
    assert!(push["retried"].as_u64().unwrap() > 0, "{push}");
    assert!(push["failed"].as_array().unwrap().is_empty(), "{push}");
    assert!(push["dropped"].as_array().unwrap().is_empty(), "{push}");
    let sent = indices(&push["sent"]);
    assert_eq!(sent, (0..6).collect::<Vec<u64>>());
    let ends: Vec<f64> = receiver.requests().iter().map(window_end).collect();
    assert_eq!(ends.len(), 6, "every window arrived once: {ends:?}");
    assert!(
        ends.windows(2).all(|pair| pair[0] < pair[1]),
        "in order, none twice: {ends:?}"
    );
}

/// A backend that never answers: the queue keeps the newest windows, drops the oldest (counted),
/// memory stays flat, every window is accounted for, amprof exits 5 saying how to resend them,
/// and that resend (from the capture) works.
#[test]
fn a_backend_that_never_comes_back_drops_the_oldest_and_the_capture_resends_them() {
    let _root = require_root();
    let dir = scratch("stream-never");
    let closed = free_port();
    let load = Load::start(10);
    let capture = dir.join("capture.data");
    let mut child = amprof()
        .args(["record", "-q", "--json", "-F", "99", "-p"])
        .arg(load.0.id().to_string())
        .args([
            "-d",
            "5s",
            "--window",
            "250ms",
            "--push-queue",
            "2",
            "--timeout",
            "1s",
        ])
        .arg("-o")
        .arg(&capture)
        .args(["--push-to", "otlp", "--endpoint"])
        .arg(format!("http://127.0.0.1:{closed}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peaks = Vec::new();
    while child.try_wait().unwrap().is_none() {
        peaks.push(status_kib(pid, "VmRSS:"));
        thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("resend them with `amprof push otlp -i"),
        "{stderr}"
    );
    let summary = json(&output);
    let push = &summary["push"];
    let dropped = indices(&push["dropped"]);
    assert!(!dropped.is_empty(), "{push}");
    let mut accounted = dropped.clone();
    accounted.extend(
        push["failed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f[0].as_u64().unwrap()),
    );
    accounted.extend(indices(&push["empty"]));
    accounted.sort_unstable();
    accounted.dedup();
    assert_eq!(accounted, (0..20).collect::<Vec<u64>>(), "{push}");
    // Flat: what the queue holds does not grow with the windows dropped.
    let late = peaks[peaks.len() / 2..].iter().max().copied().unwrap_or(0);
    let early = peaks[..peaks.len() / 2].iter().max().copied().unwrap_or(0);
    assert!(
        late < early + 16 * 1024,
        "RSS grew from {early} to {late} KiB"
    );
    // The capture has every window: the ones that did not go are resent from it.
    let receiver = Receiver::start(&dir, "http", &[]);
    let windows = stderr
        .split("--windows ")
        .nth(1)
        .unwrap()
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .to_string();
    let resend = amprof()
        .args(["push", "otlp", "-q", "-i"])
        .arg(&capture)
        .args([
            "--windows",
            &windows,
            "--endpoint",
            &receiver.endpoint("http"),
        ])
        .output()
        .unwrap();
    assert_ok(&resend);
    assert!(!receiver.requests().is_empty());
}

/// `VmRSS:`-like field of `/proc/PID/status`, in KiB (0 once gone).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Ctrl-C while a request hangs: amprof ends within 2 s, with a finalized capture, and lists the
/// windows that did not go.
#[test]
fn ctrl_c_during_a_send_ends_within_2_s() {
    let _root = require_root();
    let dir = scratch("stream-ctrl-c");
    let receiver = Receiver::start(&dir, "http", &["--fault", "hang:60", "--fault", "hang:60"]);
    let load = Load::start(10);
    let capture = dir.join("capture.data");
    let child = amprof()
        .args(["record", "-q", "--json", "-F", "99", "-p"])
        .arg(load.0.id().to_string())
        .args(["--window", "1s", "--timeout", "30s", "-o"])
        .arg(&capture)
        .args([
            "--push-to",
            "otlp",
            "--endpoint",
            &receiver.endpoint("http"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(2500));
    let signalled = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_millis(2000),
        "took {took:?} after Ctrl-C"
    );
    assert_eq!(
        output.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = json(&output);
    assert!(!summary["push"]["failed"].as_array().unwrap().is_empty());
    let report = summary_of(&capture);
    assert_eq!(report["capture"]["state"], "finalized");
}

fn summary_of(capture: &std::path::Path) -> Value {
    crate::util::summary(capture, &[])
}

/// With `-- COMMAND`, amprof exits with the command's status, the windows pushed all the same.
#[test]
fn a_command_exit_status_passes_through() {
    let _root = require_root();
    let dir = scratch("stream-command");
    let receiver = Receiver::start(&dir, "http", &[]);
    let capture = dir.join("capture.data");
    let output = amprof()
        .args(["record", "-q", "--json", "--window", "500ms", "-o"])
        .arg(&capture)
        .args([
            "--push-to",
            "otlp",
            "--endpoint",
            &receiver.endpoint("http"),
        ])
        .args([
            "--",
            "sh",
            "-c",
            "end=$(($(date +%s)+2)); while [ $(date +%s) -lt $end ]; do :; done; exit 7",
        ])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = json(&output);
    assert!(!indices(&summary["push"]["sent"]).is_empty(), "{summary}");
    assert!(!receiver.requests().is_empty());
}

/// Flags of the other destination, or push flags without --push-to, are usage errors.
#[test]
fn push_flags_need_their_destination() {
    let _root = require_root();
    for (args, needle) in [
        (
            &["--push-to", "datadog", "--endpoint", "http://x"][..],
            "--endpoint applies to --push-to otlp only",
        ),
        (
            &["--push-to", "otlp", "--service", "web"][..],
            "--service applies to --push-to datadog only",
        ),
        (
            &["--timeout", "2s"][..],
            "--timeout applies to --push-to only",
        ),
        (
            &["--push-queue", "3"][..],
            "--push-queue applies to --push-to only",
        ),
        (
            &["--push-to", "otlp", "--endpoint", "ftp://x"][..],
            "not a usable OTLP endpoint",
        ),
    ] {
        let output = amprof()
            .args(["record", "-d", "1s", "-o", "/nonexistent-dir/x.data"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
