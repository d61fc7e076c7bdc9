//! `amprof push --to datadog`, against Datadog's real APM test agent (`ddapm-test-agent`, started
//! here on 127.0.0.1) and a local HTTP server that fails in every way an Agent or the intake can:
//! what arrives (multipart parts, event.json, tags, window times, the samples of the capture),
//! the per-program services of a system-wide capture, `--check`, unix sockets, retries, errors,
//! resending failed windows, `--dry-run`, and the API key never showing.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex, OnceLock},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use crate::pprof_reader as pprof;
use crate::util::*;
use base64::Engine as _;

/// Every Datadog setting amprof reads from the environment: cleared for each run, so that the
/// machine's own settings do not leak into the tests.
const DD_VARS: [&str; 9] = [
    "DD_API_KEY",
    "DD_SITE",
    "DD_TRACE_AGENT_URL",
    "DD_AGENT_HOST",
    "DD_TRACE_AGENT_PORT",
    "DD_SERVICE",
    "DD_ENV",
    "DD_VERSION",
    "DD_TAGS",
];

/// An API key for the tests: it must never appear in anything amprof prints or writes.
const API_KEY: &str = "0123456789abcdef0123456789abcdef";

/// Runs `amprof push --to datadog ARGS` with a clean Datadog environment plus `env`.
fn push(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = amprof();
    command.args(["push", "--to", "datadog"]).args(args);
    for var in DD_VARS {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command.output().expect("amprof runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json_summary(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).expect("--json prints JSON")
}

/// `status` of each window in a `--json` summary.
fn statuses(summary: &serde_json::Value) -> BTreeMap<u64, String> {
    summary["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["index"].as_u64().unwrap(),
                w["status"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// A capture of the hotspot fixture: 2 threads for 2.5 s, 1 s windows, recorded once.
fn hotspot_capture() -> &'static Path {
    static CAPTURE: OnceLock<PathBuf> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let _root = require_root();
        let capture = scratch("push-datadog-capture").join("hotspot.data");
        record_hotspot(&capture, &["-F", "199", "--window", "1s"], &["2.5", "2"]);
        capture
    })
}

/// A system-wide capture (2 s, 1 s windows) while the hotspot fixture runs, recorded once.
fn system_capture() -> &'static Path {
    static CAPTURE: OnceLock<PathBuf> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let _root = require_root();
        let capture = scratch("push-datadog-system").join("system.data");
        let mut load = Command::new(hotspot()).arg("4").spawn().unwrap();
        let output = amprof()
            .args(["record", "-q", "-d", "2s", "--window", "1s", "-o"])
            .arg(&capture)
            .output()
            .unwrap();
        let _ = load.kill();
        let _ = load.wait();
        assert_ok(&output);
        capture
    })
}

/// `amprof report --format folded --window N` of `capture`.
fn folded_window(capture: &Path, window: u64) -> BTreeMap<String, u64> {
    let output = amprof()
        .args(["report", "--format", "folded", "-i"])
        .arg(capture)
        .args(["--window", &window.to_string()])
        .output()
        .unwrap();
    assert_ok(&output);
    pprof::parse_folded(&String::from_utf8(output.stdout).unwrap())
}

/// Datadog's APM test agent, on free ports of 127.0.0.1, stopped when dropped.
struct TestAgent {
    child: Child,
    port: u16,
    socket: Option<PathBuf>,
}

impl TestAgent {
    /// Starts the agent with `env`, and on a unix socket in `dir` if `socket`.
    fn start(dir: &Path, env: &[(&str, &str)], socket: bool) -> Self {
        let port = free_port();
        let socket = socket.then(|| dir.join("apm.socket"));
        let mut command = Command::new("ddapm-test-agent");
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--otlp-http-port", &free_port().to_string()])
            .args(["--otlp-grpc-port", &free_port().to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(socket) = &socket {
            command.arg("--trace-uds-socket").arg(socket);
        }
        let child = command.spawn().expect(
            "the Datadog APM test agent runs (pip install ddapm-test-agent; .ci/setup installs it)",
        );
        let mut agent = Self {
            child,
            port,
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while ureq::get(&format!("{}/info", agent.url())).call().is_err() {
            assert!(Instant::now() < deadline, "the test agent did not start");
            assert!(
                agent.child.try_wait().unwrap().is_none(),
                "the test agent exited"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        agent
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests it received, oldest first.
    fn requests(&self) -> Vec<Received> {
        let text = ureq::get(&format!("{}/test/session/requests", self.url()))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let list: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        let mut requests: Vec<Received> = list
            .iter()
            .map(|r| Received {
                method: r["method"].as_str().unwrap().into(),
                url: r["url"].as_str().unwrap().into(),
                headers: r["headers"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap().into()))
                    .collect(),
                body: base64::engine::general_purpose::STANDARD
                    .decode(r["body"].as_str().unwrap())
                    .unwrap(),
            })
            .collect();
        requests.reverse();
        requests
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// A request a server received.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    url: String,
    /// Lowercase names.
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// One part of a multipart body.
#[derive(Debug)]
struct Part {
    name: String,
    file_name: Option<String>,
    content_type: Option<String>,
    data: Vec<u8>,
}

/// A profile upload, taken apart.
struct Upload {
    parts: Vec<Part>,
    event: serde_json::Value,
    tags: Vec<String>,
    profile: pprof::Profile,
}

impl Upload {
    /// The value of tag `key` (the first one).
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find_map(|t| t.strip_prefix(key)?.strip_prefix(':'))
    }

    /// The windows it covers, from the event's `internal` metadata.
    fn windows(&self) -> Vec<u64> {
        self.event["internal"]["amprof"]["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_u64().unwrap())
            .collect()
    }
}

/// Parses a multipart body (with `content_type` giving the boundary).
fn multipart(content_type: &str, body: &[u8]) -> Vec<Part> {
    let boundary = multer::parse_boundary(content_type).expect("a multipart boundary");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut form = multer::Multipart::with_reader(body, boundary);
        let mut parts = Vec::new();
        while let Some(field) = form
            .next_field()
            .await
            .expect("a well-formed multipart body")
        {
            let name = field.name().unwrap_or_default().to_string();
            let file_name = field.file_name().map(str::to_string);
            let content_type = field.content_type().map(|m| m.to_string());
            let data = field.bytes().await.unwrap().to_vec();
            parts.push(Part {
                name,
                file_name,
                content_type,
                data,
            });
        }
        parts
    })
}

/// Takes a profile upload apart, checking what every upload must be.
fn upload(request: &Received) -> Upload {
    assert_eq!(request.method, "POST");
    assert!(
        request.url.ends_with("/profiling/v1/input") || request.url.ends_with("/api/v2/profile"),
        "{}",
        request.url
    );
    assert_eq!(request.headers["dd-evp-origin"], "amprof");
    assert_eq!(
        request.headers["dd-evp-origin-version"],
        env!("CARGO_PKG_VERSION")
    );
    let content_type = &request.headers["content-type"];
    assert!(content_type.starts_with("multipart/form-data"));
    let parts = multipart(content_type, &request.body);
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["event", "profile.pprof"]);
    let event_part = &parts[0];
    assert_eq!(event_part.file_name.as_deref(), Some("event.json"));
    assert_eq!(event_part.content_type.as_deref(), Some("application/json"));
    assert_eq!(parts[1].file_name.as_deref(), Some("profile.pprof"));
    assert!(
        parts[1].data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
        "the pprof is zstd-compressed"
    );
    let event: serde_json::Value = serde_json::from_slice(&event_part.data).unwrap();
    assert_eq!(event["version"], "4");
    assert_eq!(event["family"], "native");
    assert_eq!(event["attachments"], serde_json::json!(["profile.pprof"]));
    let tags: Vec<String> = event["tags_profiler"]
        .as_str()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let profile = pprof::decode(&parts[1].data);
    Upload {
        parts,
        event,
        tags,
        profile,
    }
}

/// RFC 3339 with nanoseconds, as event.json carries times.
fn rfc3339(unix_ns: i64) -> String {
    humantime::format_rfc3339_nanos(SystemTime::UNIX_EPOCH + Duration::from_nanos(unix_ns as u64))
        .to_string()
}

/// Checks that `uploads` hold, window by window, exactly the samples of `capture`, with each
/// window's true start and end.
fn assert_same_samples(capture: &Path, uploads: &[Upload]) {
    let windows = pprof::windows(capture);
    for &(index, start, end, samples) in &windows {
        let of_window: Vec<&Upload> = uploads.iter().filter(|u| u.windows() == [index]).collect();
        if samples == 0 {
            assert!(
                of_window.is_empty(),
                "window {index} has no samples to upload"
            );
            continue;
        }
        assert!(!of_window.is_empty(), "window {index} was uploaded");
        let mut folded = BTreeMap::new();
        for upload in &of_window {
            assert_eq!(
                upload.event["start"],
                rfc3339(start),
                "window {index} start"
            );
            assert_eq!(upload.event["end"], rfc3339(end), "window {index} end");
            assert_eq!(upload.profile.time_nanos, start);
            assert_eq!(upload.profile.duration_nanos, end - start);
            pprof::merge(&mut folded, pprof::folded(&upload.profile));
        }
        assert_eq!(
            folded,
            folded_window(capture, index),
            "samples of window {index}"
        );
    }
}

#[test]
fn every_window_arrives_as_datadog_profilers_upload_it() {
    let dir = scratch("push-datadog-agent");
    let agent = TestAgent::start(&dir, &[], false);
    let capture = hotspot_capture();
    let before = std::fs::read(capture).unwrap();
    let output = push(
        &[
            "-i",
            capture.to_str().unwrap(),
            "--agent-url",
            &agent.url(),
            "--env",
            "test",
            "--version",
            "1.2.3",
            "--tag",
            "team:perf",
            "--json",
        ],
        &[
            ("DD_TAGS", "region:eu-west,zone:b"),
            ("DD_ENV", "overridden"),
        ],
    );
    assert_ok(&output);
    assert!(!stderr(&output).contains("error"), "{}", stderr(&output));
    let summary = json_summary(&output);
    let windows = pprof::windows(capture);
    assert_eq!(summary["windows"].as_array().unwrap().len(), windows.len());
    assert!(
        statuses(&summary)
            .values()
            .all(|s| s == "sent" || s == "empty"),
        "{summary}"
    );
    assert_eq!(summary["failed"], 0);
    assert_eq!(
        std::fs::read(capture).unwrap(),
        before,
        "the capture is never modified"
    );

    let uploads: Vec<Upload> = agent.requests().iter().map(upload).collect();
    assert!(!uploads.is_empty());
    let hostname = amprof::capture::CaptureReader::open(capture)
        .unwrap()
        .meta()
        .hostname
        .clone();
    for upload in &uploads {
        for tag in [
            "env:test",
            "version:1.2.3",
            "team:perf",
            "region:eu-west",
            "zone:b",
            "language:native",
        ] {
            assert!(
                upload.tags.iter().any(|t| t == tag),
                "no {tag} in {:?}",
                upload.tags
            );
        }
        let names: BTreeSet<&str> = upload
            .profile
            .samples
            .iter()
            .filter_map(|s| pprof::label(&upload.profile, s, "process_name"))
            .collect();
        if names.contains("hotspot") {
            assert_eq!(upload.tag("service"), Some("hotspot"));
            assert_eq!(upload.tag("process_name"), Some("hotspot"));
        }
        assert_eq!(upload.tag("host"), Some(hostname.as_str()));
        assert_eq!(
            upload.tag("profiler_version"),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(upload.tag("runtime-id").map(str::len), Some(36));
        assert_eq!(upload.parts.len(), 2);
        // The profile Datadog's UI shows as a native CPU profile.
        assert_eq!(
            pprof::sample_types(&upload.profile),
            [
                ("cpu-samples".into(), "count".into()),
                ("cpu-time".into(), "nanoseconds".into())
            ]
        );
        assert_eq!(upload.profile.period, 1_000_000_000 / 199);
        for sample in &upload.profile.samples {
            for label in ["process_id", "process_name", "thread id", "cpu"] {
                assert!(
                    pprof::label(&upload.profile, sample, label).is_some(),
                    "{label}"
                );
            }
            assert!(pprof::num_label(&upload.profile, sample, "end_timestamp_ns").is_some());
        }
    }
    // One runtime per program, the same over its windows.
    let mut runtime_ids: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for upload in &uploads {
        runtime_ids
            .entry(upload.tag("service").unwrap())
            .or_default()
            .insert(upload.tag("runtime-id").unwrap());
    }
    assert!(runtime_ids.contains_key("hotspot"), "{runtime_ids:?}");
    assert!(
        runtime_ids.values().all(|ids| ids.len() == 1),
        "{runtime_ids:?}"
    );
    assert_same_samples(capture, &uploads);
}

#[test]
fn each_program_of_a_system_wide_capture_gets_its_own_service() {
    let dir = scratch("push-datadog-services");
    let agent = TestAgent::start(&dir, &[], false);
    let capture = system_capture();
    let output = push(
        &[
            "-i",
            capture.to_str().unwrap(),
            "--agent-url",
            &agent.url(),
            "-q",
        ],
        &[],
    );
    assert_ok(&output);
    let uploads: Vec<Upload> = agent.requests().iter().map(upload).collect();
    let services: BTreeSet<&str> = uploads.iter().filter_map(|u| u.tag("service")).collect();
    assert!(services.contains("hotspot"), "{services:?}");
    assert!(services.len() > 1, "several programs: {services:?}");
    for upload in &uploads {
        let service = upload.tag("service").unwrap();
        assert_eq!(
            upload
                .tags
                .iter()
                .filter(|t| t.starts_with("service:"))
                .count(),
            1
        );
        let names: BTreeSet<&str> = upload
            .profile
            .samples
            .iter()
            .filter_map(|s| pprof::label(&upload.profile, s, "process_name"))
            .collect();
        // The profile's process_name tags name the processes in it (at most 10 tags).
        let tagged: BTreeSet<&str> = upload
            .tags
            .iter()
            .filter_map(|t| t.strip_prefix("process_name:"))
            .collect();
        if tagged.len() < 10 {
            assert_eq!(tagged, names, "service {service}");
        } else {
            assert!(tagged.is_subset(&names), "service {service}");
        }
        if service == "hotspot" {
            assert_eq!(names, BTreeSet::from(["hotspot"]));
        }
        assert!(
            !upload.profile.samples.is_empty(),
            "no empty profile for {service}"
        );
    }
    // Every sample of every window, once.
    assert_same_samples(capture, &uploads);

    // With --service, one profile per window holds every program, told apart by labels.
    let agent = TestAgent::start(&dir, &[], false);
    let output = push(
        &[
            "-i",
            capture.to_str().unwrap(),
            "--agent-url",
            &agent.url(),
            "-q",
        ],
        &[("DD_SERVICE", "my-host")],
    );
    assert_ok(&output);
    let uploads: Vec<Upload> = agent.requests().iter().map(upload).collect();
    let windows = pprof::windows(capture);
    assert_eq!(
        uploads.len(),
        windows.iter().filter(|w| w.3 > 0).count(),
        "one upload per window"
    );
    let mut processes = BTreeSet::new();
    for upload in &uploads {
        assert_eq!(upload.tag("service"), Some("my-host"));
        processes.extend(
            upload
                .profile
                .samples
                .iter()
                .filter_map(|s| pprof::label(&upload.profile, s, "process_name")),
        );
    }
    assert!(
        processes.len() > 1,
        "several programs in one service: {processes:?}"
    );
    assert_same_samples(capture, &uploads);
}

#[test]
fn period_merges_windows_with_their_true_times() {
    let dir = scratch("push-datadog-period");
    let agent = TestAgent::start(&dir, &[], false);
    let capture = hotspot_capture();
    let output = push(
        &[
            "-i",
            capture.to_str().unwrap(),
            "--agent-url",
            &agent.url(),
            "--period",
            "2s",
            "--json",
        ],
        &[],
    );
    assert_ok(&output);
    let windows = pprof::windows(capture);
    let uploads: Vec<Upload> = agent.requests().iter().map(upload).collect();
    let first = uploads
        .iter()
        .find(|u| u.windows() == [0, 1])
        .expect("windows 0 and 1 merged");
    assert_eq!(first.event["start"], rfc3339(windows[0].1));
    assert_eq!(first.event["end"], rfc3339(windows[1].2));
    let mut expected = folded_window(capture, 0);
    pprof::merge(&mut expected, folded_window(capture, 1));
    assert_eq!(pprof::folded(&first.profile), expected);

    let output = push(
        &[
            "-i",
            capture.to_str().unwrap(),
            "--agent-url",
            &agent.url(),
            "--period",
            "500ms",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("shorter than the capture's windows"));
}

#[test]
fn check_says_whether_the_agent_takes_profiles() {
    let dir = scratch("push-datadog-check");
    // The test agent's /info lists no profiling endpoint, like an Agent that takes none.
    let agent = TestAgent::start(&dir, &[], false);
    let output = push(&["--check", "--agent-url", &agent.url()], &[]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("may not take profiles"), "{message}");
    assert!(message.contains("/profiling/v1/input"), "{message}");
    drop(agent);

    let info = r#"{"version": "7.99.0", "endpoints": ["/v0.4/traces", "/profiling/v1/input"]}"#;
    let agent = TestAgent::start(&dir, &[("DD_AGENT_EXTRA_INFO", info)], true);
    let output = push(&["--check"], &[("DD_TRACE_AGENT_URL", &agent.url())]);
    assert_ok(&output);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("accepts profiles"), "{text}");
    assert!(text.contains("7.99.0"), "{text}");
    // The same over the Agent's unix socket.
    let socket = format!("unix://{}", agent.socket.as_ref().unwrap().display());
    let output = push(&["--check", "--json", "--agent-url", &socket], &[]);
    assert_ok(&output);
    assert_eq!(json_summary(&output)["accepts_profiles"], true);

    let port = free_port().to_string();
    let output = push(
        &["--check"],
        &[
            ("DD_AGENT_HOST", "127.0.0.1"),
            ("DD_TRACE_AGENT_PORT", &port),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("connection refused"), "{message}");
    assert!(
        message.contains(&format!("http://127.0.0.1:{port}")),
        "{message}"
    );
}

#[test]
fn pushes_through_the_agent_unix_socket() {
    let dir = scratch("push-datadog-socket");
    let agent = TestAgent::start(&dir, &[], true);
    let capture = hotspot_capture();
    let socket = agent.socket.clone().unwrap();
    let output = push(
        &["-i", capture.to_str().unwrap(), "--windows", "1", "--json"],
        &[(
            "DD_TRACE_AGENT_URL",
            &format!("unix://{}", socket.display()),
        )],
    );
    assert_ok(&output);
    let summary = json_summary(&output);
    assert_eq!(
        statuses(&summary),
        BTreeMap::from([(1, "sent".to_string())])
    );
    let uploads: Vec<Upload> = agent.requests().iter().map(upload).collect();
    assert!(!uploads.is_empty());
    assert!(uploads.iter().all(|u| u.windows() == [1]));
}

/// How the fault server answers the `n`-th request (0-based).
enum Reply {
    Status(u16, Vec<(&'static str, String)>, String),
    /// Answers only after this long.
    Hang(Duration),
}

/// A local HTTP server answering as `respond` says, recording what it received.
struct FaultServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    received: Arc<Mutex<Vec<(Instant, Received)>>>,
    port: u16,
}

impl FaultServer {
    fn start(respond: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let respond = Arc::new(respond);
        let thread = {
            let (server, received) = (Arc::clone(&server), Arc::clone(&received));
            std::thread::spawn(move || {
                for mut request in server.incoming_requests() {
                    let mut body = Vec::new();
                    let _ = request.as_reader().read_to_end(&mut body);
                    let got = Received {
                        method: request.method().to_string(),
                        url: request.url().to_string(),
                        headers: request
                            .headers()
                            .iter()
                            .map(|h| {
                                (
                                    h.field.as_str().as_str().to_ascii_lowercase(),
                                    h.value.as_str().to_string(),
                                )
                            })
                            .collect(),
                        body,
                    };
                    let n = {
                        let mut log = received.lock().unwrap();
                        log.push((Instant::now(), got.clone()));
                        log.len() - 1
                    };
                    let respond = Arc::clone(&respond);
                    // Each answer in its own thread: a hanging one does not hold the others.
                    std::thread::spawn(move || {
                        let (code, headers, text) = match respond(n, &got) {
                            Reply::Status(code, headers, text) => (code, headers, text),
                            Reply::Hang(pause) => {
                                std::thread::sleep(pause);
                                (200, Vec::new(), String::new())
                            }
                        };
                        let mut response =
                            tiny_http::Response::from_string(text).with_status_code(code);
                        for (name, value) in headers {
                            response.add_header(
                                tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
                                    .unwrap(),
                            );
                        }
                        let _ = request.respond(response);
                    });
                }
            })
        };
        Self {
            server,
            thread: Some(thread),
            received,
            port,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn received(&self) -> Vec<(Instant, Received)> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn status(code: u16, text: &str) -> Reply {
    Reply::Status(code, Vec::new(), text.into())
}

#[test]
fn server_errors_are_retried_with_backoff_then_reported() {
    let server = FaultServer::start(|_, _| status(503, "overloaded"));
    let capture = hotspot_capture();
    let output = push(
        &[
            "-i",
            capture.to_str().unwrap(),
            "--agent-url",
            &server.url(),
            "--windows",
            "0",
            "--service",
            "one",
            "--retries",
            "2",
            "--json",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("HTTP 503"), "{message}");
    assert!(message.contains("overloaded"), "{message}");
    assert!(message.contains("--windows 0"), "{message}");
    let summary = json_summary(&output);
    assert_eq!(summary["failed"], 1);
    let window = &summary["windows"][0];
    assert_eq!(window["status"], "failed");
    assert_eq!(window["attempts"], 3);
    // Three attempts, 0.5 s then 1 s apart.
    let times: Vec<Instant> = server.received().iter().map(|r| r.0).collect();
    assert_eq!(times.len(), 3, "3 attempts");
    assert!(times[1] - times[0] >= Duration::from_millis(450));
    assert!(times[2] - times[1] >= Duration::from_millis(950));
}

#[test]
fn too_many_requests_waits_as_told_then_goes() {
    let server = FaultServer::start(|n, _| {
        if n == 0 {
            Reply::Status(429, vec![("Retry-After", "1".into())], "slow down".into())
        } else {
            status(200, "")
        }
    });
    let capture = hotspot_capture();
    let output = push(
        &[
            "-i",
            capture.to_str().unwrap(),
            "--agent-url",
            &server.url(),
            "--windows",
            "0",
            "--service",
            "one",
            "--json",
        ],
        &[],
    );
    assert_ok(&output);
    let summary = json_summary(&output);
    assert_eq!(summary["windows"][0]["status"], "sent");
    assert_eq!(summary["windows"][0]["attempts"], 2);
    let times: Vec<Instant> = server.received().iter().map(|r| r.0).collect();
    assert_eq!(times.len(), 2);
    assert!(
        times[1] - times[0] >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    // The retry carries the very same request.
    let received = server.received();
    assert_eq!(received[0].1.body, received[1].1.body);
}

#[test]
fn client_errors_fail_at_once_with_one_clear_line() {
    let server = FaultServer::start(|_, _| status(400, "bad profile"));
    let output = push(
        &[
            "-i",
            hotspot_capture().to_str().unwrap(),
            "--agent-url",
            &server.url(),
            "--windows",
            "0",
            "--service",
            "one",
            "--json",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(5));
    assert_eq!(server.received().len(), 1, "a 400 is not retried");
    let summary = json_summary(&output);
    assert_eq!(summary["windows"][0]["attempts"], 1);
    let error = summary["windows"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("HTTP 400") && error.contains("bad profile"),
        "{error}"
    );
    let message = stderr(&output);
    assert_eq!(
        message.lines().filter(|l| l.contains("error")).count(),
        1,
        "{message}"
    );

    let server = FaultServer::start(|_, _| status(404, "not found"));
    let output = push(
        &[
            "-i",
            hotspot_capture().to_str().unwrap(),
            "--agent-url",
            &server.url(),
            "--windows",
            "0",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(5));
    assert!(stderr(&output).contains("--check"), "{}", stderr(&output));
}

#[test]
fn a_slow_or_absent_agent_times_out_or_is_refused() {
    let server = FaultServer::start(|_, _| Reply::Hang(Duration::from_secs(4)));
    let capture = hotspot_capture();
    let started = Instant::now();
    let output = push(
        &[
            "-i",
            capture.to_str().unwrap(),
            "--agent-url",
            &server.url(),
            "--windows",
            "0",
            "--service",
            "one",
            "--timeout",
            "1s",
            "--retries",
            "0",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(5));
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "the timeout cut it short"
    );
    assert!(
        stderr(&output).contains("no response within 1s"),
        "{}",
        stderr(&output)
    );

    let port = free_port();
    let output = push(
        &[
            "-i",
            hotspot_capture().to_str().unwrap(),
            "--windows",
            "0",
            "--retries",
            "1",
        ],
        &[
            ("DD_AGENT_HOST", "127.0.0.1"),
            ("DD_TRACE_AGENT_PORT", &port.to_string()),
        ],
    );
    assert_eq!(output.status.code(), Some(5));
    let message = stderr(&output);
    assert!(message.contains("connection refused"), "{message}");
    assert!(message.contains("after 2 attempts"), "{message}");
}

#[test]
fn failed_windows_can_be_resent_alone() {
    let capture = hotspot_capture();
    let windows = pprof::windows(capture);
    assert!(windows.len() >= 2);
    let second_start = format!("\"start\":\"{}\"", rfc3339(windows[1].1));
    // Fails every upload of window 1, takes the others.
    let server = FaultServer::start(move |_, request| {
        let event = String::from_utf8_lossy(&request.body).into_owned();
        if event.contains(&second_start) {
            status(400, "no")
        } else {
            status(200, "")
        }
    });
    let output = push(
        &[
            "-i",
            capture.to_str().unwrap(),
            "--agent-url",
            &server.url(),
            "--json",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(5));
    let summary = json_summary(&output);
    let statuses = statuses(&summary);
    assert_eq!(statuses[&1], "failed");
    assert!(
        statuses.iter().all(|(&i, s)| i == 1 || s != "failed"),
        "{statuses:?}"
    );
    assert!(
        stderr(&output).contains("--windows 1"),
        "{}",
        stderr(&output)
    );

    let dir = scratch("push-datadog-resend");
    let agent = TestAgent::start(&dir, &[], false);
    let output = push(
        &[
            "-i",
            capture.to_str().unwrap(),
            "--agent-url",
            &agent.url(),
            "--windows",
            "1",
        ],
        &[],
    );
    assert_ok(&output);
    let uploads: Vec<Upload> = agent.requests().iter().map(upload).collect();
    assert!(!uploads.is_empty());
    assert!(
        uploads.iter().all(|u| u.windows() == [1]),
        "only window 1 went again"
    );
    let mut folded = BTreeMap::new();
    for upload in &uploads {
        pprof::merge(&mut folded, pprof::folded(&upload.profile));
    }
    assert_eq!(folded, folded_window(capture, 1));
}

#[test]
fn the_api_key_goes_to_the_intake_and_nowhere_else() {
    // The intake refuses the key and echoes it back, as a careless server might.
    let server = FaultServer::start(|_, request| {
        let key = request
            .headers
            .get("dd-api-key")
            .cloned()
            .unwrap_or_default();
        status(403, &format!("invalid API key {key}"))
    });
    let capture = hotspot_capture();
    let intake = format!("{}/api/v2/profile", server.url());
    let output = push(
        &[
            "-i",
            capture.to_str().unwrap(),
            "--intake-url",
            &intake,
            "--windows",
            "0",
            "--service",
            "one",
            "--json",
        ],
        &[("DD_API_KEY", API_KEY)],
    );
    assert_eq!(output.status.code(), Some(5));
    let received = server.received();
    assert_eq!(received.len(), 1, "a 403 is not retried");
    assert_eq!(received[0].1.headers["dd-api-key"], API_KEY);
    assert!(received[0].1.url.ends_with("/api/v2/profile"));
    upload(&received[0].1);
    let everything = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(&output)
    );
    assert!(
        !everything.contains(API_KEY),
        "the key leaked: {everything}"
    );
    assert!(everything.contains("API key was refused"), "{everything}");
    assert!(everything.contains("<redacted>"), "{everything}");

    // Agentless by default when DD_API_KEY is set and no Agent is: the key never in a
    // dry run either.
    let dir = scratch("push-datadog-dry-run");
    let output = push(
        &[
            "-i",
            capture.to_str().unwrap(),
            "--dry-run",
            "-o",
            dir.to_str().unwrap(),
            "--json",
        ],
        &[("DD_API_KEY", API_KEY), ("DD_SITE", "datadoghq.eu")],
    );
    assert_ok(&output);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(&output)
    );
    assert!(!text.contains(API_KEY));
    assert!(text.contains("intake.profile.datadoghq.eu"), "{text}");
    let summary = json_summary(&output);
    assert!(
        statuses(&summary)
            .values()
            .all(|s| s == "written" || s == "empty")
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut uploads = Vec::new();
    for headers_file in files.iter().filter(|f| f.extension().unwrap() == "headers") {
        let headers = std::fs::read_to_string(headers_file).unwrap();
        assert!(
            !headers.contains(API_KEY),
            "the key leaked into {}",
            headers_file.display()
        );
        assert!(
            headers.contains("DD-API-KEY: <DD_API_KEY, added when sent>"),
            "{headers}"
        );
        let body = std::fs::read(headers_file.with_extension("body")).unwrap();
        assert!(!String::from_utf8_lossy(&body).contains(API_KEY));
        let headers: BTreeMap<String, String> = headers
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        uploads.push(upload(&Received {
            method: "POST".into(),
            url: "/api/v2/profile".into(),
            headers,
            body,
        }));
    }
    assert_same_samples(capture, &uploads);
}

#[test]
fn bad_settings_fail_before_anything_is_sent() {
    let capture = hotspot_capture().to_str().unwrap();
    for (args, env, expected) in [
        (vec!["--agentless"], vec![], "DD_API_KEY"),
        (vec!["--agent-url", "ftp://x"], vec![], "not an http"),
        (
            vec![],
            vec![("DD_TRACE_AGENT_PORT", "http"), ("DD_AGENT_HOST", "h")],
            "not a port",
        ),
        (vec!["--tag", ":x"], vec![], "--tag"),
        (vec!["--period", "0s"], vec![], "--period"),
        (
            vec![],
            vec![("DD_API_KEY", "has space")],
            "not a valid API key",
        ),
    ] {
        let mut all = vec!["-i", capture];
        all.extend(args);
        let output = push(&all, &env);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{all:?}: {}",
            stderr(&output)
        );
        let message = stderr(&output);
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(message.contains(expected), "{all:?}: {message}");
        assert!(!message.contains("has space"));
    }
}

#[test]
fn windows_without_samples_are_reported_empty_and_not_sent() {
    let _root = require_root();
    let capture = scratch("push-datadog-empty").join("sleep.data");
    let output = amprof()
        .args(["record", "-q", "--window", "1s", "-o"])
        .arg(&capture)
        .args(["--", "sleep", "2.2"])
        .output()
        .unwrap();
    assert_ok(&output);
    let windows = pprof::windows(&capture);
    let empty: Vec<u64> = windows.iter().filter(|w| w.3 == 0).map(|w| w.0).collect();
    assert!(
        !empty.is_empty(),
        "a sleeping command leaves windows empty: {windows:?}"
    );
    let server = FaultServer::start(|_, _| status(200, ""));
    let output = push(
        &[
            "-i",
            capture.to_str().unwrap(),
            "--agent-url",
            &server.url(),
            "--json",
        ],
        &[],
    );
    assert_ok(&output);
    let summary = json_summary(&output);
    let statuses = statuses(&summary);
    for &(index, _, _, samples) in &windows {
        let expected = if samples == 0 { "empty" } else { "sent" };
        assert_eq!(statuses[&index], expected, "window {index}");
    }
    assert_eq!(summary["empty"], empty.len());
    assert_eq!(
        summary["sent"],
        windows.len(),
        "empty windows need no resend"
    );
    let uploads: Vec<Upload> = server.received().iter().map(|r| upload(&r.1)).collect();
    assert!(uploads.iter().all(|u| !empty.contains(&u.windows()[0])));
}

/// `record --push-to datadog`, to the test agent given by its intake URL (the form of Datadog's
/// docs): one upload per window, in order, as Datadog's profilers upload them.
#[test]
fn record_push_to_datadog_uploads_each_window_as_it_closes() {
    let _root = require_root();
    let dir = scratch("stream-datadog");
    let agent = TestAgent::start(&dir, &[], false);
    let mut load = Command::new(hotspot()).arg("8").spawn().unwrap();
    let capture = dir.join("capture.data");
    let output = amprof()
        .args(["record", "-q", "--json", "-F", "99", "-p"])
        .arg(load.id().to_string())
        .args(["-d", "3s", "--window", "1s", "-o"])
        .arg(&capture)
        .args(["--push-to", "datadog", "--service", "hot", "--agent-url"])
        .arg(format!("{}/profiling/v1/input", agent.url()))
        .env_remove("DD_API_KEY")
        .output()
        .unwrap();
    let _ = load.kill();
    let _ = load.wait();
    assert_ok(&output);
    let summary = json_summary(&output);
    let sent: Vec<u64> = summary["push"]["sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_u64().unwrap())
        .collect();
    assert_eq!(sent, [0, 1, 2], "{summary}");
    // Every request is an upload at the intake path, never `.../input/profiling/v1/input`.
    let uploads: Vec<Upload> = agent.requests().iter().map(upload).collect();
    // One upload per window (the order of arrival is checked with the OTLP receiver, whose
    // log keeps it).
    let mut windows: Vec<Vec<u64>> = uploads.iter().map(Upload::windows).collect();
    windows.sort();
    assert_eq!(windows, [vec![0], vec![1], vec![2]]);
    assert!(uploads.iter().all(|u| u.tag("service") == Some("hot")));
}

/// A "Datadog Agent" that does not take profiles: one clear warning at the start, the recording
/// goes on (and is finalized), and amprof exits 5 naming the windows to resend.
#[test]
fn record_push_to_an_agent_that_refuses_warns_once_and_records_on() {
    let _root = require_root();
    let dir = scratch("stream-datadog-refusing");
    let server = FaultServer::start(|_, _| status(404, "not an agent"));
    let capture = dir.join("capture.data");
    let output = amprof()
        .args(["record", "-q", "-d", "2s", "--window", "1s", "-o"])
        .arg(&capture)
        .args([
            "--push-to",
            "datadog",
            "--retries",
            "0",
            "--agent-url",
            &server.url(),
        ])
        .env_remove("DD_API_KEY")
        .output()
        .unwrap();
    let stderr = stderr(&output);
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    assert_eq!(stderr.matches("warning:").count(), 1, "{stderr}");
    assert!(stderr.contains("has no /info"), "{stderr}");
    assert!(stderr.contains("--windows 0,1"), "{stderr}");
    assert_eq!(summary(&capture, &[])["capture"]["state"], "finalized");
    assert!(!server.received().is_empty());
}

/// Off-CPU samples (a capture built here, as `record --off-cpu` writes them) reach Datadog's test
/// agent as Datadog's profilers send wall time: `wall-samples` and `wall-time` beside the CPU
/// types, where every sample counts its time on the CPU or off it, and `cpu-time` stays on-CPU.
#[test]
fn off_cpu_time_arrives_as_wall_time() {
    use amprof::capture::{
        format::OffCpuReason,
        testing::{WindowBuilder, meta, write_capture},
    };
    let dir = scratch("push-datadog-off-cpu");
    let capture = dir.join("off-cpu.data");
    let mut w = WindowBuilder::new(0);
    let p = w.process(10, "app");
    let [main, run, wait] = ["main", "run", "wait"].map(|f| w.function(f));
    let (l_main, l_run, l_wait) = (
        w.location(0x100, &[main]),
        w.location(0x200, &[run]),
        w.location(0x300, &[wait]),
    );
    let s_run = w.stack(p, &[l_run, l_main], 0);
    let s_wait = w.stack(p, &[l_wait, l_main], 0);
    w.sample(1_000, 10, 0, s_run);
    w.off_cpu_sample(2_000, 10, 1, s_wait, 30_000_000, OffCpuReason::Blocked);
    w.off_cpu_sample(3_000, 10, 1, s_wait, 5_000_000, OffCpuReason::Runnable);
    let meta = amprof::capture::Meta {
        off_cpu_period_ns: 1_000_000,
        ..meta()
    };
    write_capture(&capture, &meta, [w.build()]).unwrap();
    let agent = TestAgent::start(&dir, &[], false);
    let output = push(
        &["-i", capture.to_str().unwrap(), "--agent-url", &agent.url()],
        &[],
    );
    assert_ok(&output);
    let uploads: Vec<Upload> = agent.requests().iter().map(upload).collect();
    assert_eq!(uploads.len(), 1);
    let profile = &uploads[0].profile;
    assert_eq!(
        pprof::sample_types(profile),
        [
            ("cpu-samples".into(), "count".into()),
            ("cpu-time".into(), "nanoseconds".into()),
            ("wall-samples".into(), "count".into()),
            ("wall-time".into(), "nanoseconds".into()),
        ]
    );
    let period = 1_000_000_000 / 99;
    let mut values: Vec<(Option<&str>, Vec<i64>)> = profile
        .samples
        .iter()
        .map(|s| (pprof::label(profile, s, "off_cpu_reason"), s.values.clone()))
        .collect();
    values.sort();
    assert_eq!(
        values,
        [
            (None, vec![1, period, 1, period]),
            (Some("blocked"), vec![0, 0, 1, 30_000_000]),
            (Some("runnable"), vec![0, 0, 1, 5_000_000]),
        ]
    );
    assert_eq!(uploads[0].event["internal"]["amprof"]["off_cpu_samples"], 2);
}
