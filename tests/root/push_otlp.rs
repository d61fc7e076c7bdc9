//! `amprof push --to otlp`, checked by a receiver that is not amprof's code: tests/otlp_receiver.py,
//! built on PyPI's `opentelemetry-proto` (generated from the same v1.10.0 protos) and grpcio,
//! bound to 127.0.0.1. It decodes every request, checks the specification's rules and writes
//! what it resolved; these tests compare that with the capture and with `amprof report`.
//!
//! The receiver runs on the Python environment `.ci/setup` creates (`AMPROF_TEST_PYTHON`
//! overrides it).

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
};

use crate::util::{amprof, assert_ok, hotspot, require_root, scratch};
use amprof::capture::CaptureReader;
use serde_json::Value;

/// The Python that runs the receiver.
fn python() -> PathBuf {
    let python = std::env::var_os("AMPROF_TEST_PYTHON").map_or_else(
        || PathBuf::from("/opt/amprof-ci/venv/bin/python3"),
        PathBuf::from,
    );
    assert!(
        python.exists(),
        "{} is missing: run .ci/setup (it installs the receiver's opentelemetry-proto and grpcio)",
        python.display()
    );
    python
}

fn receiver_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otlp_receiver.py")
}

/// A running receiver; stopped when dropped.
pub(crate) struct Receiver {
    child: Child,
    pub(crate) port: u16,
    dir: PathBuf,
}

impl Receiver {
    /// Starts a receiver speaking `protocol` (`http` or `grpc`) with `extra` arguments (faults).
    pub(crate) fn start(dir: &Path, protocol: &str, extra: &[&str]) -> Self {
        Self::start_in(&dir.join(format!("receiver-{protocol}")), protocol, extra)
    }

    /// As [`Self::start`], writing into `dir` itself (a receiver restarted on its old port
    /// with `--port` keeps adding to the same files).
    pub(crate) fn start_in(dir: &Path, protocol: &str, extra: &[&str]) -> Self {
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir).unwrap();
        let stderr = std::fs::File::create(dir.join("stderr.txt")).unwrap();
        let mut child = Command::new(python())
            .arg(receiver_script())
            .args(["--protocol", protocol, "--out"])
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("the receiver starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.wait();
            panic!(
                "the receiver did not start: {}",
                std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default()
            )
        });
        Self { child, port, dir }
    }

    pub(crate) fn endpoint(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The accepted requests, resolved, in order.
    pub(crate) fn requests(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with("request-") && name.ends_with(".json")
            })
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap())
            .collect()
    }

    /// Every attempt, accepted or not, in order.
    pub(crate) fn attempts(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("attempts.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A system-wide capture of 3 windows of 1 s, with a two-threaded hotspot running.
struct Fixture {
    path: PathBuf,
    bytes: Vec<u8>,
}

fn capture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let _root = require_root();
        let dir = scratch("push-otlp-capture");
        let path = dir.join("capture.data");
        // Two busy processes: every window holds at least two profiles.
        let mut load = Command::new(hotspot()).args(["5", "2"]).spawn().unwrap();
        let mut second = Command::new("sh")
            .args([
                "-c",
                "end=$(($(date +%s)+5)); while [ $(date +%s) -lt $end ]; do :; done",
            ])
            .spawn()
            .unwrap();
        let output = amprof()
            .args([
                "record", "-q", "-F", "199", "-d", "3s", "--window", "1s", "-o",
            ])
            .arg(&path)
            .output()
            .unwrap();
        for child in [&mut load, &mut second] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert_ok(&output);
        Fixture {
            bytes: std::fs::read(&path).unwrap(),
            path,
        }
    })
}

/// Runs `amprof push --to otlp -i CAPTURE` with `args`, with only the `OTEL_*` variables of
/// `env` set.
fn push(args: &[&str], env: &[(&str, &str)]) -> Output {
    let fixture = capture();
    let mut command = amprof();
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    let output = command
        .args(["push", "--to", "otlp", "-q", "--json", "-i"])
        .arg(&fixture.path)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(
        std::fs::read(&fixture.path).unwrap(),
        fixture.bytes,
        "push modified the capture"
    );
    output
}

fn summary(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "push --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A sample as (time, pid, tid, cpu).
type ExpectedSample = (u64, u64, u64, u64);

/// What the capture says, per window: the window's Unix-epoch start and duration, every
/// sample as (time, pid, tid, cpu), thread names, and build-ids of executables.
struct Expected {
    hostname: String,
    frequency_hz: u64,
    windows: BTreeMap<u64, (u64, u64, Vec<ExpectedSample>)>,
    /// (window, tid) → the names the thread had in the window.
    thread_names: BTreeMap<(u64, u64), Vec<String>>,
    build_ids: BTreeMap<String, String>,
}

fn expected() -> Expected {
    let mut reader = CaptureReader::open(&capture().path).unwrap();
    let meta = reader.meta().clone();
    let unix = |ns: u64| (i128::from(ns) + i128::from(meta.realtime_offset_ns)) as u64;
    let mut expected = Expected {
        hostname: meta.hostname.clone(),
        frequency_hz: meta.frequency_hz,
        windows: BTreeMap::new(),
        thread_names: BTreeMap::new(),
        build_ids: BTreeMap::new(),
    };
    while let Some(w) = reader.next_window().unwrap() {
        let mut samples = Vec::new();
        let mut time = w.start_ns;
        for i in 0..w.sample_stacks.len() {
            time += w.sample_time_deltas[i];
            let pid = w.processes[w.stacks[w.sample_stacks[i] as usize].process as usize].pid;
            samples.push((
                unix(time),
                u64::from(pid),
                u64::from(w.sample_tids[i]),
                u64::from(w.sample_cpus[i]),
            ));
        }
        samples.sort();
        expected
            .windows
            .insert(w.index, (unix(w.start_ns), w.end_ns - w.start_ns, samples));
        for t in &w.threads {
            expected
                .thread_names
                .entry((w.index, t.tid.into()))
                .or_default()
                .push(t.name.clone());
        }
        for m in &w.modules {
            if !m.build_id.is_empty() {
                let hex = m.build_id.iter().map(|b| format!("{b:02x}")).collect();
                expected.build_ids.insert(m.path.clone(), hex);
            }
        }
    }
    expected
}

/// `amprof report --format folded` of window `index`, without the process names that begin
/// each line (OTLP says who a process is with resource attributes), merged.
fn report_folded(index: u64) -> BTreeMap<String, u64> {
    let output = amprof()
        .args(["report", "-q", "--format", "folded", "-o", "-", "--window"])
        .arg(index.to_string())
        .arg("-i")
        .arg(&capture().path)
        .output()
        .unwrap();
    assert_ok(&output);
    let mut folded = BTreeMap::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let (stack, count) = line.rsplit_once(' ').unwrap();
        let frames = stack.split_once(';').map_or("", |(_, frames)| frames);
        *folded.entry(frames.to_string()).or_insert(0) += count.parse::<u64>().unwrap();
    }
    folded
}

/// The folded form of a resolved OTLP sample's frames, as `amprof report` writes them.
fn otlp_folded(frames: &Value) -> String {
    let names: Vec<String> = frames
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|f| {
            let name: String = f["name"]
                .as_str()
                .unwrap()
                .chars()
                .map(|c| match c {
                    ';' => ':',
                    '\n' | '\r' => ' ',
                    c => c,
                })
                .collect();
            if f["kernel"] == true {
                format!("{name}_[k]")
            } else {
                name
            }
        })
        .collect();
    names.join(";")
}

fn profiles(requests: &[Value]) -> Vec<Value> {
    requests
        .iter()
        .flat_map(|r| r["profiles"].as_array().unwrap().clone())
        .collect()
}

/// Checks that `requests` carry exactly the capture: valid dictionaries, the same frames and
/// counts as `amprof report`, every sample's time, thread and CPU, and the resources.
fn check_delivery(requests: &[Value]) {
    let expected = expected();
    assert!(!requests.is_empty());
    for request in requests {
        assert_eq!(
            request["errors"],
            serde_json::json!([]),
            "the receiver found the request invalid"
        );
    }
    let by_start: BTreeMap<u64, u64> = expected
        .windows
        .iter()
        .map(|(&index, (start, _, _))| (*start, index))
        .collect();
    let mut folded: BTreeMap<u64, BTreeMap<String, u64>> = BTreeMap::new();
    let mut samples: BTreeMap<u64, Vec<(u64, u64, u64, u64)>> = BTreeMap::new();
    let mut ids = std::collections::HashSet::new();
    let mut hotspot_seen = false;
    for p in profiles(requests) {
        let start = p["time_unix_nano"].as_u64().unwrap();
        let index = *by_start
            .get(&start)
            .unwrap_or_else(|| panic!("a profile starts at {start}, which no window does"));
        assert_eq!(
            p["duration_nano"].as_u64(),
            Some(expected.windows[&index].1)
        );
        assert_eq!(p["sample_type"], serde_json::json!(["samples", "count"]));
        assert_eq!(p["period_type"], serde_json::json!(["cpu", "nanoseconds"]));
        assert_eq!(
            p["period"].as_u64(),
            Some(1_000_000_000 / expected.frequency_hz)
        );
        assert_eq!(p["scope"]["name"], "amprof");
        let id = p["profile_id"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 32);
        assert!(ids.insert(id), "profile ids are unique");
        let resource = &p["resource"];
        assert_eq!(
            resource["host.name"].as_str(),
            Some(expected.hostname.as_str())
        );
        let pid = resource["process.pid"].as_u64().expect("process.pid");
        let executable = resource["process.executable.name"].as_str().unwrap();
        assert!(!executable.is_empty());
        assert!(
            resource["service.name"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        );
        if resource["process.executable.path"].as_str() == hotspot().to_str() {
            hotspot_seen = true;
            assert_eq!(executable, "hotspot");
            assert_eq!(resource["service.name"], "unknown_service:hotspot");
        }
        for s in p["samples"].as_array().unwrap() {
            let timestamps = s["timestamps"].as_array().unwrap();
            *folded
                .entry(index)
                .or_default()
                .entry(otlp_folded(&s["frames"]))
                .or_insert(0) += timestamps.len() as u64;
            let tid = s["attributes"]["thread.id"].as_u64().unwrap();
            let cpu = s["attributes"]["cpu.logical_number"].as_u64().unwrap();
            let names = &expected.thread_names[&(index, tid)];
            match s["attributes"]["thread.name"].as_str() {
                Some(name) => assert!(names.iter().any(|n| n == name), "{name} not in {names:?}"),
                None => assert!(names.iter().any(String::is_empty)),
            }
            for t in timestamps {
                samples
                    .entry(index)
                    .or_default()
                    .push((t.as_u64().unwrap(), pid, tid, cpu));
            }
            for frame in s["frames"].as_array().unwrap() {
                let mapping = &frame["mapping"];
                if let Some(build_id) = mapping["filename"]
                    .as_str()
                    .and_then(|f| expected.build_ids.get(f))
                {
                    assert_eq!(
                        mapping["attributes"]["process.executable.build_id.gnu"].as_str(),
                        Some(build_id.as_str())
                    );
                }
            }
        }
    }
    assert!(hotspot_seen, "the hotspot process is among the resources");
    for (&index, (_, _, expected_samples)) in &expected.windows {
        let mut got = samples.remove(&index).unwrap_or_default();
        got.sort();
        assert_eq!(
            &got, expected_samples,
            "window {index}: every sample's time, pid, tid and cpu"
        );
        assert_eq!(
            folded.remove(&index).unwrap_or_default(),
            report_folded(index),
            "window {index}: the same stacks and counts as amprof report"
        );
    }
    // The hotspot's own functions came through by name.
    let names: String = requests.iter().map(|r| r.to_string()).collect();
    for function in ["hot_a", "hot_b", "run"] {
        assert!(
            names.contains(&format!("\"{function}\"")),
            "{function} is named"
        );
    }
}

/// Times between consecutive attempts, in seconds.
fn gaps(attempts: &[Value]) -> Vec<f64> {
    attempts
        .windows(2)
        .map(|w| w[1]["time"].as_f64().unwrap() - w[0]["time"].as_f64().unwrap())
        .collect()
}

#[test]
fn http_protobuf_delivers_the_capture() {
    let dir = scratch("push-otlp-http");
    let receiver = Receiver::start(&dir, "http", &[]);
    let output = push(&["--endpoint", &receiver.endpoint("http")], &[]);
    assert_ok(&output);
    let summary = summary(&output);
    assert_eq!(summary["sent"], 3);
    let requests = receiver.requests();
    check_delivery(&requests);
    // Gzip by default, protobuf, and the bytes reported are the bytes sent.
    let wire: u64 = requests
        .iter()
        .map(|r| r["wire_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(summary["bytes"].as_u64(), Some(wire));
    for r in &requests {
        assert_eq!(r["headers"]["content-encoding"], "gzip");
        assert_eq!(r["headers"]["content-type"], "application/x-protobuf");
        assert!(r["wire_bytes"].as_u64() < r["encoded_bytes"].as_u64());
    }
}

#[test]
fn grpc_delivers_the_capture() {
    let dir = scratch("push-otlp-grpc");
    let receiver = Receiver::start(&dir, "grpc", &[]);
    // host:port with --insecure: plaintext gRPC.
    let endpoint = format!("127.0.0.1:{}", receiver.port);
    let output = push(
        &["--protocol", "grpc", "--insecure", "--endpoint", &endpoint],
        &[],
    );
    assert_ok(&output);
    assert_eq!(summary(&output)["sent"], 3);
    check_delivery(&receiver.requests());
    // The same through the standard variables, gzip-compressed.
    let again = Receiver::start(&dir.join("env"), "grpc", &[]);
    let output = push(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &again.endpoint("http")),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ],
    );
    assert_ok(&output);
    check_delivery(&again.requests());
}

#[test]
fn http_retries_429_502_503_504_honouring_retry_after() {
    let dir = scratch("push-otlp-http-retries");
    let faults = [
        "--fault", "502", "--fault", "503", "--fault", "504", "--fault", "429:1",
    ];
    let receiver = Receiver::start(&dir, "http", &faults);
    let output = push(
        &["--endpoint", &receiver.endpoint("http"), "--retries", "4"],
        &[],
    );
    assert_ok(&output);
    let summary = summary(&output);
    for window in summary["windows"].as_array().unwrap() {
        assert_eq!(window["status"], "sent");
        assert_eq!(window["attempts"], 5);
    }
    let attempts = receiver.attempts();
    assert_eq!(attempts.len(), 5);
    let gaps = gaps(&attempts);
    // Backoff 0.5 s, 1 s, 2 s; then Retry-After: 1 instead of 4 s.
    assert!(
        gaps[0] >= 0.45 && gaps[1] >= 0.95 && gaps[2] >= 1.95,
        "{gaps:?}"
    );
    assert!(
        (0.95..3.0).contains(&gaps[3]),
        "Retry-After honoured: {gaps:?}"
    );
    check_delivery(&receiver.requests());
}

#[test]
fn http_client_errors_fail_at_once_and_windows_can_be_resent() {
    let dir = scratch("push-otlp-http-400");
    let receiver = Receiver::start(&dir, "http", &["--fault", "400"]);
    let endpoint = receiver.endpoint("http");
    let output = push(&["--endpoint", &endpoint], &[]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    let error = stderr(&output);
    // The google.rpc.Status the receiver answered is decoded into the message.
    assert!(
        error.contains("HTTP 400") && error.contains("injected HTTP 400"),
        "{error}"
    );
    assert!(error.contains("--windows 0,1,2"), "{error}");
    assert_eq!(
        error.lines().count(),
        2,
        "a summary line and one error line: {error}"
    );
    assert_eq!(receiver.attempts().len(), 1);
    assert!(receiver.requests().is_empty());
    // Resending one window sends that window only.
    let output = push(&["--endpoint", &endpoint, "--windows", "1"], &[]);
    assert_ok(&output);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let window_1 = expected().windows[&1].0;
    for p in profiles(&requests) {
        assert_eq!(p["time_unix_nano"].as_u64(), Some(window_1));
    }
}

#[test]
fn grpc_retries_unavailable_and_resource_exhausted_with_retry_info() {
    let dir = scratch("push-otlp-grpc-retries");
    let faults = ["--fault", "UNAVAILABLE", "--fault", "RESOURCE_EXHAUSTED:2"];
    let receiver = Receiver::start(&dir, "grpc", &faults);
    let output = push(
        &[
            "--protocol",
            "grpc",
            "--endpoint",
            &receiver.endpoint("http"),
        ],
        &[],
    );
    assert_ok(&output);
    let attempts = receiver.attempts();
    assert_eq!(attempts.len(), 3);
    let gaps = gaps(&attempts);
    // Backoff 0.5 s, then the RetryInfo's 2 s rather than the backoff's 1 s.
    assert!(gaps[0] >= 0.45 && gaps[1] >= 1.95, "{gaps:?}");
    check_delivery(&receiver.requests());
}

#[test]
fn grpc_errors_that_are_not_retryable_fail_at_once() {
    for fault in ["RESOURCE_EXHAUSTED", "INVALID_ARGUMENT", "UNAUTHENTICATED"] {
        let dir = scratch(&format!("push-otlp-grpc-{fault}"));
        let receiver = Receiver::start(&dir, "grpc", &["--fault", fault]);
        let output = push(
            &[
                "--protocol",
                "grpc",
                "--endpoint",
                &receiver.endpoint("http"),
            ],
            &[],
        );
        assert_eq!(
            output.status.code(),
            Some(5),
            "{fault}: {}",
            stderr(&output)
        );
        assert!(stderr(&output).contains(&format!("gRPC {fault}: injected {fault}")));
        assert_eq!(receiver.attempts().len(), 1, "{fault} is not retried");
        assert_eq!(summary(&output)["failed"], 3);
    }
}

#[test]
fn unreachable_and_silent_endpoints_are_retried_then_reported() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for protocol in ["http/protobuf", "grpc"] {
        let endpoint = format!("http://127.0.0.1:{port}");
        let output = push(
            &[
                "--protocol",
                protocol,
                "--endpoint",
                &endpoint,
                "--retries",
                "1",
            ],
            &[],
        );
        assert_eq!(output.status.code(), Some(5));
        let error = stderr(&output);
        assert!(
            error.contains("Connection refused") && error.contains("after 2 attempts"),
            "{error}"
        );
        for window in summary(&output)["windows"].as_array().unwrap() {
            assert_eq!(window["status"], "failed");
            assert_eq!(window["attempts"], 2);
        }
    }
    // A receiver that answers too late: --timeout, then OTEL_EXPORTER_OTLP_TIMEOUT.
    let dir = scratch("push-otlp-timeout");
    let receiver = Receiver::start(&dir, "http", &["--fault", "hang:4", "--fault", "hang:4"]);
    let endpoint = receiver.endpoint("http");
    let started = std::time::Instant::now();
    let output = push(
        &["--endpoint", &endpoint, "--timeout", "1s", "--retries", "0"],
        &[],
    );
    assert_eq!(output.status.code(), Some(5));
    assert!(stderr(&output).contains("timed out"), "{}", stderr(&output));
    let output = push(
        &["--endpoint", &endpoint, "--retries", "0"],
        &[("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")],
    );
    assert_eq!(output.status.code(), Some(5));
    assert!(
        started.elapsed().as_secs_f64() < 3.5,
        "both gave up after 1 s"
    );
}

#[test]
fn partial_success_is_reported() {
    for protocol in ["http", "grpc"] {
        let dir = scratch(&format!("push-otlp-partial-{protocol}"));
        let receiver = Receiver::start(&dir, protocol, &["--partial", "2:too old"]);
        let output = push(
            &[
                "--protocol",
                if protocol == "http" {
                    "http/protobuf"
                } else {
                    "grpc"
                },
                "--endpoint",
                &receiver.endpoint("http"),
            ],
            &[],
        );
        assert_ok(&output);
        for window in summary(&output)["windows"].as_array().unwrap() {
            assert_eq!(window["status"], "sent");
            assert_eq!(
                window["note"],
                "partial success: 2 profiles rejected: too old"
            );
        }
    }
}

#[test]
fn headers_and_resource_settings_arrive_and_secrets_are_never_shown() {
    const SECRET: &str = "s3cret-t0ken";
    for protocol in ["http", "grpc"] {
        let dir = scratch(&format!("push-otlp-headers-{protocol}"));
        let fault = if protocol == "http" {
            "401"
        } else {
            "UNAUTHENTICATED"
        };
        let receiver = Receiver::start(&dir, protocol, &["--fault", fault]);
        let args = [
            "--protocol",
            if protocol == "http" {
                "http/protobuf"
            } else {
                "grpc"
            },
            "--endpoint",
            &receiver.endpoint("http"),
            "--header",
            "X-Scope-OrgID=tenant-1",
        ];
        let env = [
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20s3cret-t0ken",
            ),
            ("OTEL_SERVICE_NAME", "checkout"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=ci,host.name=renamed",
            ),
        ];
        // Refused once (not retried), then accepted.
        let failed = push(&args, &env);
        assert_eq!(failed.status.code(), Some(5));
        let output = push(&args, &env);
        assert_ok(&output);
        for out in [&failed, &output] {
            let text = format!("{}{}", stderr(out), String::from_utf8_lossy(&out.stdout));
            assert!(!text.contains(SECRET), "a secret was printed: {text}");
        }
        let requests = receiver.requests();
        let attempt = receiver.attempts().pop().unwrap();
        assert_eq!(attempt["headers"]["authorization"], "Bearer s3cret-t0ken");
        assert_eq!(attempt["headers"]["x-scope-orgid"], "tenant-1");
        assert!(
            attempt["headers"]["user-agent"]
                .as_str()
                .unwrap()
                .starts_with("amprof/")
        );
        for p in profiles(&requests) {
            assert_eq!(p["resource"]["service.name"], "checkout");
            assert_eq!(p["resource"]["deployment.environment"], "ci");
            assert_eq!(p["resource"]["host.name"], "renamed");
        }
        // A dry run writes no secret either.
        let dry = dir.join("dry");
        let mut dry_args = args.to_vec();
        dry_args.extend(["--dry-run", "-o", dry.to_str().unwrap()]);
        assert_ok(&push(&dry_args, &env));
        for file in std::fs::read_dir(&dry).unwrap() {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            assert!(!String::from_utf8_lossy(&bytes).contains(SECRET));
        }
    }
}

#[test]
fn dry_run_writes_the_encoded_requests() {
    for (protocol, encoding) in [("http/protobuf", "gzip"), ("grpc", "")] {
        let dir = scratch(&format!("push-otlp-dry-{}", protocol.replace('/', "-")));
        let out = dir.join("requests");
        let output = push(
            &[
                "--protocol",
                protocol,
                "--dry-run",
                "-o",
                out.to_str().unwrap(),
            ],
            &[],
        );
        assert_ok(&output);
        assert_eq!(summary(&output)["sent"], 3);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let mut requests = Vec::new();
        for file in files.iter().filter(|f| f.extension().unwrap() == "body") {
            let decoded = Command::new(python())
                .arg(receiver_script())
                .arg("--decode")
                .arg(file)
                .output()
                .unwrap();
            assert!(
                decoded.status.success(),
                "{}",
                String::from_utf8_lossy(&decoded.stderr)
            );
            requests.push(serde_json::from_slice(&decoded.stdout).unwrap());
            let headers = std::fs::read_to_string(file.with_extension("headers")).unwrap();
            assert_eq!(headers.contains("gzip"), !encoding.is_empty(), "{headers}");
        }
        check_delivery(&requests);
    }
    // Without -q, the summary line says where the requests went, and that nothing was pushed.
    let out = scratch("push-otlp-dry-said").join("requests");
    let output = amprof()
        .args(["push", "--to", "otlp", "--dry-run", "-o"])
        .arg(&out)
        .arg("-i")
        .arg(&capture().path)
        .output()
        .unwrap();
    assert_ok(&output);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("wrote the requests of 3 of 3 windows to ")
            && said.contains(out.to_str().unwrap())
            && !said.contains("pushed"),
        "{said}"
    );
}

#[test]
fn requests_stay_under_the_size_limit() {
    let dir = scratch("push-otlp-size");
    let receiver = Receiver::start(&dir, "http", &[]);
    // Each window alone is larger: windows are split by process too.
    let limit = 2 * 1024;
    let output = push(
        &[
            "--endpoint",
            &receiver.endpoint("http"),
            "--max-request-size",
            "2KiB",
        ],
        &[],
    );
    assert_ok(&output);
    let requests = receiver.requests();
    assert!(requests.len() > 3, "split into {} requests", requests.len());
    for r in &requests {
        // Only a single process's profile that is larger on its own may exceed the limit.
        let size = r["encoded_bytes"].as_u64().unwrap();
        assert!(
            size <= limit || r["profiles"].as_array().unwrap().len() == 1,
            "{size}"
        );
    }
    check_delivery(&requests);
    let summary = summary(&output);
    let wire: u64 = requests
        .iter()
        .map(|r| r["wire_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(summary["bytes"].as_u64(), Some(wire));
}

#[test]
fn tls_for_https_endpoints_with_a_custom_authority() {
    let dir = scratch("push-otlp-tls");
    // A certificate authority, and a certificate for localhost it signed.
    let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let (cert, key, csr) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("cert.csr"),
    );
    let extensions = dir.join("cert.ext");
    std::fs::write(&extensions, "subjectAltName=DNS:localhost\n").unwrap();
    let p = |path: &PathBuf| path.to_str().unwrap().to_string();
    for args in [
        vec![
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ]
        .into_iter()
        .map(String::from)
        .chain(["-subj".into(), "/CN=amprof test CA".into()])
        .chain(["-keyout".into(), p(&ca_key), "-out".into(), p(&ca)])
        .collect::<Vec<_>>(),
        [
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ]
        .into_iter()
        .map(String::from)
        .chain(["-keyout".into(), p(&key), "-out".into(), p(&csr)])
        .collect(),
        ["x509", "-req", "-days", "1", "-CAcreateserial"]
            .into_iter()
            .map(String::from)
            .chain([
                "-in".into(),
                p(&csr),
                "-CA".into(),
                p(&ca),
                "-CAkey".into(),
                p(&ca_key),
            ])
            .chain(["-extfile".into(), p(&extensions), "-out".into(), p(&cert)])
            .collect(),
    ] {
        let status = Command::new("openssl")
            .args(&args)
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?}");
    }
    let tls = ["--tls", cert.to_str().unwrap(), key.to_str().unwrap()];
    for (protocol, name) in [("http", "http/protobuf"), ("grpc", "grpc")] {
        let receiver = Receiver::start(&dir, protocol, &tls);
        let endpoint = format!("https://localhost:{}", receiver.port);
        // Without the authority, the certificate is refused, for good (not retried).
        let refused = push(&["--protocol", name, "--endpoint", &endpoint], &[]);
        assert_eq!(refused.status.code(), Some(5));
        let error = stderr(&refused);
        assert!(error.contains("certificate"), "{error}");
        assert_eq!(summary(&refused)["windows"][0]["attempts"], 1, "{error}");
        // With it, by flag or by the standard variable.
        let ca = ca.to_str().unwrap();
        let flag = ["--protocol", name, "--endpoint", &endpoint, "--ca-cert", ca];
        assert_ok(&push(&flag, &[]));
        let output = push(
            &["--protocol", name, "--endpoint", &endpoint],
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", ca)],
        );
        assert_ok(&output);
        assert_eq!(receiver.requests().len(), 2);
        check_delivery(&receiver.requests()[..1]);
    }
}

#[test]
fn bad_settings_are_one_line_usage_errors() {
    for (args, env) in [
        (vec!["--endpoint", "localhost:4318"], vec![]),
        (vec!["--endpoint", "ftp://x"], vec![]),
        (vec![], vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
        (vec![], vec![("OTEL_EXPORTER_OTLP_TIMEOUT", "ten")]),
        (
            vec![],
            vec![("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign")],
        ),
        (vec!["--ca-cert", "/nonexistent.pem"], vec![]),
    ] {
        let output = push(&args, &env);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?} {env:?}: {}",
            stderr(&output)
        );
        assert_eq!(
            stderr(&output).trim().lines().count(),
            1,
            "{}",
            stderr(&output)
        );
    }
    assert_eq!(
        push(&["--max-request-size", "lots"], &[]).status.code(),
        Some(2)
    );
    let output = amprof()
        .args(["push", "--to", "otlp", "-i", "/nonexistent.data"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
}
