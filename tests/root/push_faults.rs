//! Push faults, for `--to datadog` and `--to otlp` over HTTP and gRPC: a receiver that takes the
//! connection and never answers, receivers that answer garbage, Ctrl-C in the middle of a push
//! and the resend it suggests, secrets a failing server echoes back, dry-run files under sudo,
//! and bad flag values.
//! (Retries, refused connections, late answers and 4xx/5xx are in push_datadog.rs and
//! push_otlp.rs.)
//!
//! Everything is real: the amprof binary, a capture recorded here (as root), and servers on
//! 127.0.0.1: raw TCP for the faults no HTTP library would commit, tiny_http for HTTP, and a
//! gRPC server on grpcio from the Python environment `.ci/setup` creates (as for
//! tests/otlp_receiver.py). Every run checks that the capture is left byte for byte as it was.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader, Read, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use crate::util::{amprof, assert_ok, hotspot, require_root, scratch};
use amprof::capture::CaptureReader;
use opentelemetry_proto::tonic::{
    collector::profiles::v1development::{
        ExportProfilesPartialSuccess, ExportProfilesServiceRequest, ExportProfilesServiceResponse,
    },
    common::v1::any_value,
};
use prost::Message as _;
use serde_json::Value;

/// Where a push goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum To {
    Datadog,
    OtlpHttp,
    OtlpGrpc,
}

const ALL: [To; 3] = [To::Datadog, To::OtlpHttp, To::OtlpGrpc];

impl To {
    /// The flags that push to `url` (`http://127.0.0.1:PORT`).
    fn args(self, url: &str) -> Vec<String> {
        let args: &[&str] = match self {
            To::Datadog => &["--to", "datadog", "--agent-url", url],
            To::OtlpHttp => &["--to", "otlp", "--endpoint", url],
            To::OtlpGrpc => &["--to", "otlp", "--protocol", "grpc", "--endpoint", url],
        };
        args.iter().map(|a| a.to_string()).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The capture, and running amprof

/// Two programs busy for 3.5 s, in 1 s windows: every window holds both, so that Datadog sends
/// each window as two profiles (one per program) and OTLP, at `--max-request-size 1KiB`, as two
/// requests (one per process).
struct Capture {
    path: PathBuf,
    bytes: Vec<u8>,
    /// The Unix-epoch start of each window with samples, by index.
    starts: BTreeMap<u64, u64>,
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let _root = require_root();
        let dir = scratch("push-faults-capture");
        // The second program: the same code under another name.
        let second = dir.join("hotspot2");
        std::fs::copy(hotspot(), &second).unwrap();
        let path = dir.join("capture.data");
        let output = amprof()
            .args(["record", "-q", "-F", "199", "--window", "1s", "-o"])
            .arg(&path)
            .args(["--", "sh", "-c", r#""$0" 3.5 & "$1" 3.5; wait"#])
            .arg(hotspot())
            .arg(&second)
            .output()
            .unwrap();
        assert_ok(&output);
        let mut reader = CaptureReader::open(&path).unwrap();
        let offset = i128::from(reader.meta().realtime_offset_ns);
        let mut starts = BTreeMap::new();
        while let Some(w) = reader.next_window().unwrap() {
            if !w.sample_stacks.is_empty() {
                starts.insert(w.index, (i128::from(w.start_ns) + offset) as u64);
            }
        }
        assert!(starts.len() >= 3, "windows with samples: {starts:?}");
        Capture {
            bytes: std::fs::read(&path).unwrap(),
            path,
            starts,
        }
    })
}

/// The window that starts at `unix_ns`.
fn window_at(unix_ns: u64) -> u64 {
    let starts = &capture().starts;
    *starts
        .iter()
        .find(|(_, start)| **start == unix_ns)
        .unwrap_or_else(|| panic!("a profile starts at {unix_ns}, no window does: {starts:?}"))
        .0
}

/// `amprof push -i INPUT ARGS` with no `DD_*` or `OTEL_*` variable but those of `env`.
fn push_from(input: &Path, args: &[String], env: &[(&str, &str)]) -> Command {
    let mut command = amprof();
    for (name, _) in std::env::vars() {
        if name.starts_with("DD_") || name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    command
        .arg("push")
        .arg("-i")
        .arg(input)
        .args(args)
        .envs(env.iter().copied());
    command
}

fn push(args: &[String], env: &[(&str, &str)]) -> Command {
    push_from(&capture().path, args, env)
}

/// `text` split at spaces.
fn words(text: &str) -> Vec<String> {
    text.split(' ').map(String::from).collect()
}

/// A running amprof.
struct Running {
    child: Child,
    started: Instant,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
    /// Its peak memory so far (VmHWM, KiB), sampled every few milliseconds while it runs.
    peak_rss: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    sampler: JoinHandle<()>,
}

/// A finished amprof: what it printed, how long it took, its peak memory (as sampled: a short
/// run may show none).
struct Run {
    output: Output,
    seconds: f64,
    peak_rss_mib: f64,
}

/// The peak resident memory of `pid` (VmHWM, KiB), while it runs.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn start(mut command: Command) -> Running {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).unwrap();
            bytes
        })
    };
    // (Not wait4's ru_maxrss: a child spawned by vfork starts with its parent's, this test's.)
    let (peak_rss, done) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let sampler = {
        let (pid, peak_rss, done) = (child.id(), Arc::clone(&peak_rss), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                match peak_rss_kib(pid) {
                    Some(kib) => peak_rss.fetch_max(kib, Ordering::Relaxed),
                    None => break,
                };
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    Running {
        stdout: drain(Box::new(child.stdout.take().unwrap())),
        stderr: drain(Box::new(child.stderr.take().unwrap())),
        child,
        started: Instant::now(),
        peak_rss,
        done,
        sampler,
    }
}

fn run(command: Command) -> Run {
    start(command).finish()
}

impl Running {
    /// Ctrl-C.
    fn interrupt(&self) {
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) },
            0
        );
    }

    fn finish(mut self) -> Run {
        let status = self.child.wait().unwrap();
        let seconds = self.started.elapsed().as_secs_f64();
        self.done.store(true, Ordering::Relaxed);
        self.sampler.join().unwrap();
        let fixture = capture();
        assert_eq!(
            std::fs::read(&fixture.path).unwrap(),
            fixture.bytes,
            "push modified the capture"
        );
        Run {
            output: Output {
                status,
                stdout: self.stdout.join().unwrap(),
                stderr: self.stderr.join().unwrap(),
            },
            seconds,
            peak_rss_mib: self.peak_rss.load(Ordering::Relaxed) as f64 / 1024.0,
        }
    }
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// The `--json` summary.
    fn json(&self) -> Value {
        serde_json::from_slice(&self.output.stdout)
            .unwrap_or_else(|e| panic!("no JSON summary ({e}): {}", self.stderr()))
    }

    /// Each window's status, from the `--json` summary.
    fn statuses(&self) -> BTreeMap<u64, String> {
        self.json()["windows"]
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

    /// The one line that says what went wrong. amprof's own errors are the whole of standard
    /// error but for the push summary (and its notice of a Ctrl-C); clap's are followed by its
    /// usage hints.
    fn error_line(&self) -> String {
        let stderr = self.stderr();
        assert!(!stderr.contains("panicked"), "{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
        assert_eq!(errors.len(), 1, "one error line: {stderr}");
        if errors[0].starts_with("amprof: error:") {
            assert!(
                stderr.lines().all(|l| l == errors[0]
                    || l.starts_with("amprof: pushed ")
                    || l.starts_with("amprof: interrupted: ")),
                "nothing but the error and the summary: {stderr}"
            );
        } else {
            assert!(errors[0].starts_with("error: "), "{stderr}");
        }
        errors[0].to_string()
    }
}

/// The number of requests a push of `args` makes, from a dry run.
fn requests_of(args: &[String], dir: &Path) -> usize {
    let dry = dir.join("dry-run");
    let _ = std::fs::remove_dir_all(&dry);
    let mut all = args.to_vec();
    all.extend(words("--dry-run -q -o"));
    all.push(dry.to_str().unwrap().into());
    let done = run(push(&all, &[]));
    assert_eq!(done.code(), Some(0), "{}", done.stderr());
    std::fs::read_dir(&dry)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "body")
        .count()
}

// ---------------------------------------------------------------------------------------------
// Servers

/// A TCP server that gives every connection to `handle`, each in a thread of its own.
struct TcpServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    fn start(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = Arc::new(handle);
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            let handle = Arc::clone(&handle);
                            std::thread::spawn(move || handle(stream));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads what the client sends until it hangs up; answers nothing.
fn never_answer(mut stream: TcpStream) {
    let mut buffer = [0; 1 << 16];
    while matches!(stream.read(&mut buffer), Ok(n) if n > 0) {}
}

/// Answers `reply` once the request begins, then reads until the client hangs up.
fn answer(reply: Vec<u8>) -> impl Fn(TcpStream) + Send + Sync + 'static {
    move |mut stream| {
        let _ = stream.read(&mut [0; 1 << 16]);
        let _ = stream.write_all(&reply);
        never_answer(stream);
    }
}

/// Answers `head`, then a body that never ends, until the client hangs up.
fn answer_without_end(head: &'static str) -> impl Fn(TcpStream) + Send + Sync + 'static {
    move |mut stream| {
        let _ = stream.read(&mut [0; 1 << 16]);
        let chunk = [head.as_bytes(), &b"garbage ".repeat(8 << 10)].concat();
        let _ = stream.write_all(&chunk);
        while stream.write_all(&chunk[head.len()..]).is_ok() {}
    }
}

/// Bytes that mean nothing (xorshift: the same on every run).
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A request a server received.
#[derive(Clone, Debug)]
struct Received {
    /// Lowercase names.
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// An HTTP server that records each request, then answers it as `respond` says (status, content
/// type, body) after `delay`.
struct HttpServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    received: Arc<Mutex<Vec<Received>>>,
}

type Respond = dyn Fn(usize, &Received) -> (u16, &'static str, Vec<u8>) + Send + Sync;

impl HttpServer {
    fn start(
        delay: Duration,
        respond: impl Fn(usize, &Received) -> (u16, &'static str, Vec<u8>) + Send + Sync + 'static,
    ) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let respond: Arc<Respond> = Arc::new(respond);
        let thread = {
            let (server, received) = (Arc::clone(&server), Arc::clone(&received));
            std::thread::spawn(move || {
                for mut request in server.incoming_requests() {
                    let mut body = Vec::new();
                    let _ = request.as_reader().read_to_end(&mut body);
                    let got = Received {
                        headers: request
                            .headers()
                            .iter()
                            .map(|h| {
                                let name = h.field.as_str().as_str().to_ascii_lowercase();
                                (name, h.value.as_str().to_string())
                            })
                            .collect(),
                        body,
                    };
                    let n = {
                        let mut received = received.lock().unwrap();
                        received.push(got.clone());
                        received.len() - 1
                    };
                    std::thread::sleep(delay);
                    let (code, content_type, body) = respond(n, &got);
                    let header =
                        tiny_http::Header::from_bytes("Content-Type", content_type).unwrap();
                    let response = tiny_http::Response::from_data(body)
                        .with_status_code(code)
                        .with_header(header);
                    let _ = request.respond(response);
                }
            })
        };
        Self {
            server,
            thread: Some(thread),
            received,
        }
    }

    fn url(&self) -> String {
        let port = self.server.server_addr().to_ip().unwrap().port();
        format!("http://127.0.0.1:{port}")
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An OTLP/gRPC profiles server on grpcio, that does not decode what it gets: it writes each
/// request to OUT/request-NNNN.bin as it arrives, then, with MODE a number of seconds, answers
/// an empty (successful) response after that long; with MODE `echo`, refuses with
/// UNAUTHENTICATED and every metadata value it got, over and over, in the message.
const GRPC_SERVER: &str = r#"
import concurrent.futures, os, sys, threading, time
import grpc

mode, out = sys.argv[1], sys.argv[2]
lock = threading.Lock()
count = [0]

def export(request, context):
    with lock:
        count[0] += 1
        path = os.path.join(out, "request-%04d.bin" % count[0])
    with open(path + ".tmp", "wb") as f:
        f.write(request)
    os.rename(path + ".tmp", path)
    if mode == "echo":
        values = " ".join(v for _, v in context.invocation_metadata() if isinstance(v, str))
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown: " + " ".join([values] * 20))
    time.sleep(float(mode))
    return b""

service = "opentelemetry.proto.collector.profiles.v1development.ProfilesService"
handler = grpc.method_handlers_generic_handler(
    service, {"Export": grpc.unary_unary_rpc_method_handler(export)})
server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
server.wait_for_termination()
"#;

struct GrpcServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl GrpcServer {
    fn start(dir: &Path, mode: &str) -> Self {
        let python = std::env::var_os("AMPROF_TEST_PYTHON").map_or_else(
            || PathBuf::from("/opt/amprof-ci/venv/bin/python3"),
            PathBuf::from,
        );
        assert!(
            python.exists(),
            "{} is missing: run .ci/setup",
            python.display()
        );
        let dir = dir.join("grpc-server");
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new(python)
            .args(["-c", GRPC_SERVER, mode])
            .arg(&dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the gRPC server starts");
        Self { child, port, dir }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn received(&self) -> Vec<Received> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "bin"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| Received {
                headers: BTreeMap::new(),
                body: std::fs::read(f).unwrap(),
            })
            .collect()
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server a destination talks to, answering every request after `delay`.
enum SlowServer {
    Http(HttpServer),
    Grpc(GrpcServer),
}

impl SlowServer {
    fn start(to: To, dir: &Path, delay: Duration) -> Self {
        match to {
            To::OtlpGrpc => Self::Grpc(GrpcServer::start(dir, &delay.as_secs_f64().to_string())),
            _ => Self::Http(HttpServer::start(delay, |_, _| {
                (200, "text/plain", Vec::new())
            })),
        }
    }

    fn url(&self) -> String {
        match self {
            Self::Http(server) => server.url(),
            Self::Grpc(server) => server.url(),
        }
    }

    /// What each request received so far carried, in order.
    fn parts(&self, to: To) -> Vec<(u64, String)> {
        let received = match self {
            Self::Http(server) => server.received(),
            Self::Grpc(server) => server.received(),
        };
        received.iter().flat_map(|r| parts(to, r)).collect()
    }
}

/// The profiles a request carried, as (window, part), windows known by their start time: for
/// Datadog the upload's window and service, for OTLP each profile's window and process (pid and executable).
fn parts(to: To, request: &Received) -> Vec<(u64, String)> {
    if to == To::Datadog {
        let event = datadog_event(request);
        let start = event["start"].as_str().unwrap();
        let window = capture()
            .starts
            .iter()
            .find(|(_, ns)| rfc3339(**ns) == start)
            .unwrap_or_else(|| panic!("an upload starts at {start}, no window does"))
            .0;
        let tags = event["tags_profiler"].as_str().unwrap();
        let service = tags.split(',').find_map(|t| t.strip_prefix("service:"));
        return vec![(*window, service.unwrap().to_string())];
    }
    let mut body = request.body.clone();
    if request.headers.get("content-encoding").map(String::as_str) == Some("gzip") {
        body.clear();
        flate2::read::GzDecoder::new(request.body.as_slice())
            .read_to_end(&mut body)
            .unwrap();
    }
    let message = ExportProfilesServiceRequest::decode(body.as_slice()).unwrap();
    let mut parts = Vec::new();
    for resource in &message.resource_profiles {
        let attributes = &resource.resource.as_ref().unwrap().attributes;
        let pid = attributes.iter().find(|a| a.key == "process.pid").unwrap();
        let pid = match pid.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::IntValue(pid)) => pid,
            other => panic!("process.pid is {other:?}"),
        };
        // A pid is not a process: the shell's fork runs as `sh`, then execs the program, so
        // one window can hold two process images under one pid (and both can name the
        // program, when amprof read /proc/PID/exe after the exec): each image's profile has
        // its own id.
        let name = attributes
            .iter()
            .find(|a| a.key == "process.executable.name")
            .and_then(|a| a.value.as_ref()?.value.as_ref());
        let name = match name {
            Some(any_value::Value::StringValue(name)) => name,
            other => panic!("process.executable.name is {other:?}"),
        };
        for profile in resource.scope_profiles.iter().flat_map(|s| &s.profiles) {
            let id: String = profile
                .profile_id
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            parts.push((
                window_at(profile.time_unix_nano),
                format!("pid {pid} {name} {id}"),
            ));
        }
    }
    parts
}

/// RFC 3339 with nanoseconds, as Datadog's event.json gives times.
fn rfc3339(unix_ns: u64) -> String {
    humantime::format_rfc3339_nanos(SystemTime::UNIX_EPOCH + Duration::from_nanos(unix_ns))
        .to_string()
}

/// The `event.json` part of a Datadog upload.
fn datadog_event(request: &Received) -> Value {
    let boundary = multer::parse_boundary(&request.headers["content-type"]).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut form = multer::Multipart::with_reader(request.body.as_slice(), boundary);
        while let Some(field) = form.next_field().await.unwrap() {
            if field.name() == Some("event") {
                return serde_json::from_slice(&field.bytes().await.unwrap()).unwrap();
            }
        }
        panic!("an upload without event.json")
    })
}

// ---------------------------------------------------------------------------------------------
// 1. A receiver that takes the connection and never answers

#[test]
fn a_receiver_that_never_answers_is_given_up_on_in_bounded_time() {
    let dir = scratch("push-faults-silent");
    let server = TcpServer::start(never_answer);
    let (timeout, retries) = (0.5, 1);
    for to in ALL {
        let mut args = to.args(&server.url());
        args.extend(words("--timeout 500ms --retries 1 --json"));
        if to == To::Datadog {
            // One upload per window rather than one per program: a shorter test.
            args.extend(words("--service one"));
        }
        let requests = requests_of(&args, &dir) as f64;
        let done = run(push(&args, &[]));
        assert_eq!(done.code(), Some(5), "{to:?}: {}", done.stderr());
        // Each request: every attempt waits out the timeout, with a backoff of 0.5 s between.
        let attempts = f64::from(retries + 1);
        let least = requests * attempts * timeout;
        let most = requests * (attempts * timeout + 0.5) + 2.0;
        assert!(
            (least..most).contains(&done.seconds),
            "{to:?}: {} s for {requests} requests, not in {least}..{most}",
            done.seconds
        );
        let error = done.error_line();
        assert!(error.contains("within 500ms"), "{to:?}: {error}");
        assert!(error.contains("--windows "), "{to:?}: {error}");
        let summary = done.json();
        let windows = summary["windows"].as_array().unwrap();
        assert_eq!(windows.len(), capture().starts.len(), "{to:?}");
        for window in windows {
            assert_eq!(window["status"], "failed", "{to:?}: {window}");
            assert_eq!(window["attempts"], 2, "{to:?}: {window}");
            let reason = window["error"].as_str().unwrap();
            assert!(reason.contains("within 500ms"), "{to:?}: {reason}");
        }
        assert_eq!(summary["failed"].as_u64(), Some(windows.len() as u64));
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Receivers that answer garbage

/// What a push to a garbage-speaking server must end with.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Every window failed, with this in its error.
    Fails(&'static str),
    /// Every window went (the answer's status says so), with this note if any.
    Sent(Option<&'static str>),
}

const INVALID_HTTP: Expect = Expect::Fails("invalid HTTP");
const NOT_GRPC: Expect = Expect::Fails("no gRPC answer: is it an OTLP/gRPC endpoint");
const NOT_OTLP: Expect = Expect::Sent(Some("with an answer that is not OTLP"));

#[test]
fn receivers_that_answer_garbage_get_a_clear_error_or_count_as_sent() {
    let http_400 = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\
                    Connection: close\r\n\r\nBad Request";
    let html = "<html><body><h1>Welcome to nginx!</h1></body></html>";
    let html_200 = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{html}",
        html.len()
    );
    let ok_200 = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n\r\n";
    let bad_400 = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n";
    type Handler = Box<dyn Fn(TcpStream) + Send + Sync>;
    // What the server does, and what a push to it ends with for Datadog, OTLP/HTTP and
    // OTLP/gRPC. A 2xx is success for Datadog whatever its body; OTLP/HTTP takes it too, with a
    // note; for a gRPC client, none of it is HTTP/2.
    let cases: [(&str, Handler, [Expect; 3]); 6] = [
        (
            "random bytes",
            Box::new(answer(noise(4096))),
            [INVALID_HTTP, INVALID_HTTP, NOT_GRPC],
        ),
        (
            "an SSH greeting",
            Box::new(answer(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n".to_vec())),
            [INVALID_HTTP, INVALID_HTTP, NOT_GRPC],
        ),
        (
            "an HTTP/1 400",
            Box::new(answer(http_400.as_bytes().to_vec())),
            [
                Expect::Fails("HTTP 400 Bad Request (Bad Request)"),
                Expect::Fails("HTTP 400 Bad Request: Bad Request"),
                NOT_GRPC,
            ],
        ),
        (
            "an HTTP 200 with an HTML page",
            Box::new(answer(html_200.into_bytes())),
            [Expect::Sent(None), NOT_OTLP, NOT_GRPC],
        ),
        (
            "an HTTP 200 with a body without end",
            Box::new(answer_without_end(ok_200)),
            [Expect::Sent(None), NOT_OTLP, NOT_GRPC],
        ),
        (
            "an HTTP 400 with a body without end",
            Box::new(answer_without_end(bad_400)),
            [
                Expect::Fails("HTTP 400 Bad Request (garbage garbage"),
                Expect::Fails("HTTP 400 Bad Request: garbage garbage"),
                NOT_GRPC,
            ],
        ),
    ];
    for (what, handler, expected) in cases {
        let server = TcpServer::start(handler);
        for (to, expect) in ALL.into_iter().zip(expected) {
            let mut args = to.args(&server.url());
            args.extend(words("--timeout 3s --retries 0 --json"));
            let done = run(push(&args, &[]));
            let context = format!("{what}, {to:?}");
            // No answer is waited for until the timeout, and none is read without bound.
            assert!(done.seconds < 3.0, "{context}: {} s", done.seconds);
            assert!(
                done.peak_rss_mib < 100.0,
                "{context}: {} MiB",
                done.peak_rss_mib
            );
            let windows = done.json()["windows"].as_array().unwrap().clone();
            assert_eq!(windows.len(), capture().starts.len(), "{context}");
            match expect {
                Expect::Fails(needle) => {
                    assert_eq!(done.code(), Some(5), "{context}: {}", done.stderr());
                    let error = done.error_line();
                    assert!(error.contains(needle), "{context}: {error}");
                    for window in &windows {
                        assert_eq!(window["status"], "failed", "{context}: {window}");
                        let reason = window["error"].as_str().unwrap();
                        assert!(reason.contains(needle), "{context}: {reason}");
                    }
                }
                Expect::Sent(note) => {
                    assert_eq!(done.code(), Some(0), "{context}: {}", done.stderr());
                    assert!(!done.stderr().contains("panicked"), "{context}");
                    for window in &windows {
                        assert_eq!(window["status"], "sent", "{context}: {window}");
                        match note {
                            Some(note) => assert!(
                                window["note"].as_str().unwrap().contains(note),
                                "{context}: {window}"
                            ),
                            None => assert!(window.get("note").is_none(), "{context}: {window}"),
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Ctrl-C, then the resend the summary suggests

/// How long the slow server takes to answer each request.
const DELAY: Duration = Duration::from_secs(1);

/// Pushes every window to a server that answers each request after [`DELAY`], Ctrl-C while the
/// first request of the second window is in flight, then resends what the summary says did not
/// go. Each window is two requests: the one in flight at Ctrl-C is finished, so that no window
/// goes half, and none is sent twice.
fn interrupt_and_resume(to: To) {
    let dir = scratch(&format!("push-faults-interrupt-{to:?}"));
    let server = SlowServer::start(to, &dir, DELAY);
    let mut args = to.args(&server.url());
    args.push("--json".into());
    if to != To::Datadog {
        // One request per process: two per window.
        args.extend(words("--max-request-size 1KiB"));
    }
    let windows: Vec<u64> = capture().starts.keys().copied().collect();
    let running = start(push(&args, &[]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.parts(to).iter().any(|(w, _)| *w == windows[1]) {
        assert!(
            Instant::now() < deadline,
            "{to:?}: window {} never came",
            windows[1]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let interrupted = Instant::now();
    running.interrupt();
    let first = running.finish();
    let waited = interrupted.elapsed();

    // It stops once the window in progress went: one more request at most.
    assert_eq!(first.code(), Some(5), "{to:?}: {}", first.stderr());
    assert!(
        waited < DELAY * 2 + Duration::from_millis(1500),
        "{to:?}: {waited:?}"
    );
    let summary = first.json();
    assert_eq!(summary["interrupted"], true);
    let statuses = first.statuses();
    let with = |status: &str| -> BTreeSet<u64> {
        statuses
            .iter()
            .filter(|(w, s)| *s == status && capture().starts.contains_key(w))
            .map(|(w, _)| *w)
            .collect()
    };
    let (went, left) = (with("sent"), with("not-attempted"));
    assert_eq!(
        went.union(&left).count(),
        windows.len(),
        "{to:?}: {statuses:?}"
    );
    assert!(went.contains(&windows[1]), "{to:?}: {statuses:?}");
    assert!(!left.is_empty(), "{to:?}: {statuses:?}");
    // Standard error says it too, and how to resend.
    let stderr = first.stderr();
    let pushed = format!("pushed {} of {} windows", summary["sent"], statuses.len());
    assert!(stderr.contains(&pushed), "{to:?}: {stderr}");
    let hint = first
        .error_line()
        .split("--windows ")
        .nth(1)
        .expect("a --windows to resend with")
        .trim()
        .to_string();
    let listed: Vec<String> = left.iter().map(u64::to_string).collect();
    assert_eq!(hint, listed.join(","), "{to:?}");
    // The server got exactly the windows the summary says went.
    let first_parts = server.parts(to);
    let first_windows: BTreeSet<u64> = first_parts.iter().map(|p| p.0).collect();
    assert_eq!(first_windows, went, "{to:?}: {first_parts:?}");

    args.extend(["--windows".into(), hint]);
    let second = run(push(&args, &[]));
    assert_eq!(second.code(), Some(0), "{to:?}: {}", second.stderr());
    assert!(second.statuses().values().all(|s| s == "sent"));
    let all_parts = server.parts(to);
    let second_windows: BTreeSet<u64> =
        all_parts[first_parts.len()..].iter().map(|p| p.0).collect();
    assert_eq!(second_windows, left, "{to:?}: {all_parts:?}");

    // Every window went once, whole: each of its parts exactly once, in one of the two runs.
    let unique: BTreeSet<&(u64, String)> = all_parts.iter().collect();
    assert_eq!(
        unique.len(),
        all_parts.len(),
        "{to:?}: twice: {all_parts:?}"
    );
    for window in &windows {
        let parts = all_parts.iter().filter(|p| p.0 == *window).count();
        assert!(parts >= 2, "{to:?}: window {window} in {parts} parts");
    }
}

#[test]
fn ctrl_c_then_resend_datadog() {
    interrupt_and_resume(To::Datadog);
}

#[test]
fn ctrl_c_then_resend_otlp_http() {
    interrupt_and_resume(To::OtlpHttp);
}

#[test]
fn ctrl_c_then_resend_otlp_grpc() {
    interrupt_and_resume(To::OtlpGrpc);
}

// ---------------------------------------------------------------------------------------------
// 4. Secrets

const DD_API_KEY: &str = "Zk9QddApiKeyS3cretXw7Lp2Rt5Vb8Nm";
/// `--header authorization=Bearer TOKEN`.
const TOKEN: &str = "tok3nFromFlagQ8vX2mZp9L";
/// `OTEL_EXPORTER_OTLP_HEADERS=x-api-key=ENV_KEY`.
const ENV_KEY: &str = "envK3yW4tch0utR7uY1";

/// Fails if `text` shows any of `secrets`, even in part (6 characters of one in a row).
fn assert_no_secret(text: &str, secrets: &[&str], what: &str) {
    for secret in secrets {
        for i in 0..=secret.len() - 6 {
            let piece = &secret[i..i + 6];
            assert!(!text.contains(piece), "{what} shows `{piece}`: {text}");
        }
    }
}

/// `values`, echoed over and over (so that wherever a message is cut, it cuts one).
fn echo<'a>(values: impl IntoIterator<Item = &'a String>) -> Vec<u8> {
    let values: Vec<&str> = values.into_iter().map(String::as_str).collect();
    let once = values.join(" ");
    format!("unknown credentials: {}", vec![once; 30].join(" ")).into_bytes()
}

/// Checks that no secret shows in what `done` (a push of `args` to a server that echoes them)
/// printed, standard output (the `--json` summary) and standard error, nor in what a dry run of
/// the same push prints and writes: its files' names and contents.
fn assert_secrets_kept(
    what: &str,
    done: &Run,
    args: &[String],
    env: &[(&str, &str)],
    secrets: &[&str],
) {
    let dir = scratch(&format!("push-faults-secrets-{what}"));
    assert!(!done.stderr().contains("panicked"), "{what}");
    assert_no_secret(&done.stdout(), secrets, &format!("{what}: stdout"));
    assert_no_secret(&done.stderr(), secrets, &format!("{what}: stderr"));
    let dry = dir.join("requests");
    let mut dry_args = args.to_vec();
    dry_args.extend(words("--dry-run -o"));
    dry_args.push(dry.to_str().unwrap().into());
    let done = run(push(&dry_args, env));
    assert_eq!(done.code(), Some(0), "{what}: {}", done.stderr());
    assert_no_secret(&done.stdout(), secrets, &format!("{what}: dry-run stdout"));
    assert_no_secret(&done.stderr(), secrets, &format!("{what}: dry-run stderr"));
    let files: Vec<PathBuf> = std::fs::read_dir(&dry)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty(), "{what}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert_no_secret(&name, secrets, &format!("{what}: a dry-run file name"));
        let contents = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        assert_no_secret(&contents, secrets, &format!("{what}: {name}"));
    }
}

#[test]
fn secrets_echoed_by_a_failing_server_are_never_shown() {
    // Datadog, agentless: the intake refuses the key (403, or 503 and no retry) and echoes it.
    let intake = HttpServer::start(Duration::ZERO, |n, request| {
        let code = if n % 2 == 0 { 403 } else { 503 };
        (code, "text/plain", echo(request.headers.get("dd-api-key")))
    });
    let mut args = words("--to datadog --retries 0 --json --intake-url");
    args.push(format!("{}/api/v2/profile", intake.url()));
    let env = [("DD_API_KEY", DD_API_KEY)];
    let done = run(push(&args, &env));
    assert_eq!(done.code(), Some(5), "{}", done.stderr());
    assert!(done.error_line().contains("<redacted>"));
    let received = intake.received();
    assert!(!received.is_empty());
    for request in received {
        assert_eq!(request.headers["dd-api-key"], DD_API_KEY, "the key went");
    }
    assert_secrets_kept("datadog", &done, &args, &env, &[DD_API_KEY]);

    // OTLP/HTTP: a 401 echoing the headers, then a 200 whose partial success echoes them.
    let header = format!("authorization=Bearer {TOKEN}");
    let env_headers = format!("x-api-key={ENV_KEY}");
    let env = [("OTEL_EXPORTER_OTLP_HEADERS", env_headers.as_str())];
    for refused in [true, false] {
        let server = HttpServer::start(Duration::ZERO, move |_, request| {
            let echoed = echo(
                ["authorization", "x-api-key"]
                    .iter()
                    .filter_map(|name| request.headers.get(*name)),
            );
            if refused {
                return (401, "text/plain", echoed);
            }
            let answer = ExportProfilesServiceResponse {
                partial_success: Some(ExportProfilesPartialSuccess {
                    rejected_profiles: 1,
                    error_message: String::from_utf8(echoed).unwrap(),
                }),
            };
            (200, "application/x-protobuf", answer.encode_to_vec())
        });
        let mut args = To::OtlpHttp.args(&server.url());
        args.extend(words("--retries 0 --json --header"));
        args.push(header.clone());
        let done = run(push(&args, &env));
        let attempt = &server.received()[0];
        assert_eq!(attempt.headers["authorization"], format!("Bearer {TOKEN}"));
        assert_eq!(attempt.headers["x-api-key"], ENV_KEY, "both headers went");
        if refused {
            assert_eq!(done.code(), Some(5), "{}", done.stderr());
            assert!(
                done.error_line()
                    .contains("HTTP 401 Unauthorized: unknown credentials")
            );
        } else {
            assert_eq!(done.code(), Some(0), "{}", done.stderr());
            let note = done.json()["windows"][0]["note"].to_string();
            assert!(
                note.contains("partial success: 1 profiles rejected"),
                "{note}"
            );
        }
        assert_secrets_kept("otlp-http", &done, &args, &env, &[TOKEN, ENV_KEY]);
    }

    // OTLP/gRPC: UNAUTHENTICATED, with the metadata in the message.
    let dir = scratch("push-faults-secrets-grpc-server");
    let server = GrpcServer::start(&dir, "echo");
    let mut args = To::OtlpGrpc.args(&server.url());
    args.extend(words("--retries 0 --json --header"));
    args.push(header);
    let done = run(push(&args, &env));
    assert_eq!(done.code(), Some(5), "{}", done.stderr());
    let error = done.error_line();
    assert!(error.contains("gRPC UNAUTHENTICATED: unknown: "), "{error}");
    assert!(error.contains("<redacted>"), "{error}");
    assert_secrets_kept("otlp-grpc", &done, &args, &env, &[TOKEN, ENV_KEY]);
}

/// A user and password in the URL of the Agent, the intake or the OTLP endpoint, from a flag or
/// the environment, never show: not in the summary line, `--json`, errors, `--check` or dry-run
/// files, whether the server refuses the push (echoing the basic authentication it got) or
/// cannot be reached.
#[test]
fn passwords_in_urls_are_never_shown() {
    use base64::Engine as _;
    const USER: &str = "urlUs3rNameKq7";
    const PASSWORD: &str = "urlPassw0rdZx81";
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let secrets = [USER, PASSWORD, basic.as_str()];
    let server = HttpServer::start(Duration::ZERO, |_, request| {
        let echoed: Vec<String> = request.headers.values().cloned().collect();
        (401, "text/plain", echo(&echoed))
    });
    let port = server.url().rsplit(':').next().unwrap().to_string();
    let refusing = crate::util::free_port();
    let url = |port: &str| format!("http://{USER}:{PASSWORD}@127.0.0.1:{port}");
    let (answering, unreachable) = (url(&port), url(&refusing.to_string()));
    let intake = format!("{answering}/api/v2/profile");
    type Case<'a> = (&'a str, Vec<String>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            "dd-flag",
            words(&format!("--to datadog --agent-url {answering}")),
            vec![],
        ),
        (
            "dd-env",
            words("--to datadog"),
            vec![("DD_TRACE_AGENT_URL", &unreachable)],
        ),
        (
            "dd-intake",
            words(&format!("--to datadog --intake-url {intake}")),
            vec![("DD_API_KEY", DD_API_KEY)],
        ),
        ("otlp-flag", To::OtlpHttp.args(&answering), vec![]),
        (
            "otlp-env",
            words("--to otlp"),
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", &unreachable)],
        ),
        (
            "otlp-grpc",
            words(&format!(
                "--to otlp --protocol grpc --endpoint {unreachable}"
            )),
            vec![],
        ),
    ];
    for (what, mut args, env) in cases {
        args.extend(words("--retries 0 --json"));
        let done = run(push(&args, &env));
        assert_eq!(done.code(), Some(5), "{what}: {}", done.stderr());
        assert!(
            done.error_line().contains("***@127.0.0.1"),
            "{what}: {}",
            done.stderr()
        );
        assert_secrets_kept(what, &done, &args, &env, &secrets);
    }
    assert!(!server.received().is_empty());
    // --check, of an Agent that refuses and of one that cannot be reached.
    for agent in [&answering, &unreachable] {
        for json in ["", " --json"] {
            let args = words(&format!("--to datadog --check --agent-url {agent}{json}"));
            let done = run(push(&args, &[]));
            assert_eq!(done.code(), Some(1), "{}", done.stderr());
            assert!(
                done.error_line().contains("***@127.0.0.1"),
                "{}",
                done.stderr()
            );
            assert_no_secret(&(done.stdout() + &done.stderr()), &secrets, "--check");
        }
    }
    // Mistyped URLs: a password with a `/` in it (refused, or taken for a host that does not
    // exist), a scheme OTLP does not take.
    for args in [
        format!("--to datadog --agent-url http://{USER}:{PASSWORD}/x@127.0.0.1:{port}"),
        format!("--to otlp --endpoint http://{USER}:{PASSWORD}/x@127.0.0.1:{port}"),
        format!("--to otlp --endpoint ftp://{USER}:{PASSWORD}@127.0.0.1:{port}"),
    ] {
        let args = format!("{args} --retries 0 --timeout 2s");
        let done = run(push(&words(&args), &[]));
        assert!(
            matches!(done.code(), Some(2 | 5)),
            "{args}: {}",
            done.stderr()
        );
        done.error_line();
        assert_no_secret(&(done.stdout() + &done.stderr()), &secrets, &args);
    }
}

/// Receivers that redirect (301, 302, 307, 308) to another server, through a URL with
/// credentials and a query: nothing goes there (the API key and header values least of all),
/// each window fails at once (exit code 5), and the error says redirects are not followed and
/// where it led, without the credentials or the query.
#[test]
fn redirects_are_not_followed() {
    let elsewhere = HttpServer::start(Duration::ZERO, |_, _| (200, "text/plain", Vec::new()));
    let port = elsewhere.url().rsplit(':').next().unwrap().to_string();
    let (user_password, query) = ("user:Passw0rdInUrl", "token=Qu3ryS3cret");
    let location =
        format!("http://{user_password}@127.0.0.1:{port}/v1development/profiles?{query}");
    for code in [301, 302, 307, 308] {
        let reply = format!(
            "HTTP/1.1 {code} Elsewhere\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let redirector = TcpServer::start(answer(reply.into_bytes()));
        let header = format!("authorization=Bearer {TOKEN}");
        let mut datadog = words("--to datadog --retries 2 --json --intake-url");
        datadog.push(format!("{}/api/v2/profile", redirector.url()));
        let mut otlp = To::OtlpHttp.args(&redirector.url());
        otlp.extend(words("--retries 2 --json --header"));
        otlp.push(header);
        for (to, args) in [(To::Datadog, datadog), (To::OtlpHttp, otlp)] {
            let done = run(push(&args, &[("DD_API_KEY", DD_API_KEY)]));
            assert_eq!(done.code(), Some(5), "{code} {to:?}: {}", done.stderr());
            let error = done.error_line();
            assert!(
                error.contains(&format!("HTTP {code} "))
                    && error.contains("redirects are not followed"),
                "{code} {to:?}: {error}"
            );
            if to == To::OtlpHttp {
                assert!(
                    error.contains(&format!("(to http://127.0.0.1:{port})")),
                    "{code}: {error}"
                );
            }
            for window in done.json()["windows"].as_array().unwrap() {
                assert_eq!(window["status"], "failed", "{code} {to:?}");
                assert_eq!(window["attempts"], 1, "{code} {to:?}: not retried");
            }
            assert_no_secret(
                &format!("{}{}", done.stdout(), done.stderr()),
                &[DD_API_KEY, TOKEN, user_password, query],
                &format!("{code} {to:?}"),
            );
            assert!(
                elsewhere.received().is_empty(),
                "{code} {to:?} was followed"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Files under sudo

/// Under sudo, what `--dry-run -o DIR` creates, the directory and its missing parents included,
/// belongs to the user who ran sudo, and only they can read it.
#[test]
fn dry_run_files_and_directories_belong_to_the_sudo_user() {
    use std::os::unix::fs::MetadataExt as _;
    let _root = require_root();
    let dir = scratch("push-faults-dry-run-owner");
    for to in [To::Datadog, To::OtlpHttp] {
        let out = dir.join(format!("{to:?}/requests"));
        let mut args = to.args("http://127.0.0.1:9");
        args.extend(words("--dry-run -q -o"));
        args.push(out.to_str().unwrap().into());
        let done = run(push(&args, &[("SUDO_UID", "65534"), ("SUDO_GID", "65534")]));
        assert_eq!(done.code(), Some(0), "{to:?}: {}", done.stderr());
        let mut paths = vec![out.parent().unwrap().to_path_buf(), out.clone()];
        for entry in std::fs::read_dir(&out).unwrap() {
            paths.push(entry.unwrap().path());
        }
        assert!(paths.len() > 2, "{to:?}: no request written");
        for path in paths {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid()),
                (65534, 65534),
                "{}",
                path.display()
            );
            let mode = if meta.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(meta.mode() & 0o777, mode, "{}", path.display());
        }
    }
    // The scratch directory was there: it stays root's.
    assert_eq!(std::fs::metadata(&dir).unwrap().uid(), 0);
}

// ---------------------------------------------------------------------------------------------
// 6. Bad input

#[test]
fn bad_flag_values_are_one_line_errors_with_documented_codes() {
    let dir = scratch("push-faults-bad-flags");
    let a_file = dir.join("a-file");
    std::fs::write(&a_file, "not a directory\n").unwrap();
    let not_pem = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    // Flags (split at spaces) and what the error says; every one exits with 2.
    let both = [
        ("--timeout soon", "`soon` is not a duration"),
        ("--timeout 0s", "--timeout must be longer than 0"),
        ("--retries -1", "'-1'"),
        ("--retries many", "'many' for '--retries <N>'"),
        ("--windows 5..2", "window range 5..2 is empty"),
        ("--windows 99", "no window of the capture matches --windows"),
        ("--dry-run", "required arguments were not provided"),
        ("--dry-run -o A_FILE", "not a directory"),
    ];
    let datadog = [
        ("--period soon", "`soon` is not a duration"),
        ("--check --timeout 0s", "--timeout must be longer than 0"),
        (
            "--agent-url gopher://x",
            "--agent-url: `gopher://x` is not an http://",
        ),
        (
            "--agentless --intake-url not-a-url",
            "--intake-url: `not-a-url` is not",
        ),
    ];
    let otlp = [
        (
            "--max-request-size 0",
            "--max-request-size must be at least 1KiB",
        ),
        (
            "--endpoint http://",
            "`http://` is not a usable OTLP endpoint: no host",
        ),
        (
            "--endpoint http://[::1",
            "`http://[::1` is not a usable OTLP endpoint",
        ),
        (
            "--protocol grpc --endpoint [::1:4317",
            "is not a usable OTLP endpoint",
        ),
        ("--protocol smoke", "'smoke' for '--protocol <PROTOCOL>'"),
        (
            "--compression zstd",
            "'zstd' for '--compression <ALGORITHM>'",
        ),
        ("--header no-equals", "--header wants NAME=VALUE"),
        (
            "--header a=%zz",
            "--header: a `%` is not followed by two hex digits",
        ),
        ("--ca-cert NOT_PEM", "Cargo.toml holds no PEM certificate"),
    ];
    let mut cases = vec![
        ("--to nowhere".to_string(), "'nowhere' for '--to <TO>'"),
        (
            "--to datadog --retries 11".to_string(),
            "11 is not in 0..=10",
        ),
        // A flag of the other destination is refused, not silently ignored.
        (
            "--to datadog --header a=b".to_string(),
            "--header applies to --to otlp only",
        ),
        (
            "--to otlp --service web".to_string(),
            "--service applies to --to datadog only",
        ),
        ("--to otlp -o A_FILE".to_string(), "add --dry-run"),
    ];
    for (to, own) in [("datadog", &datadog[..]), ("otlp", &otlp[..])] {
        for (flags, needle) in both.iter().chain(own) {
            let flags = flags
                .replace("A_FILE", a_file.to_str().unwrap())
                .replace("NOT_PEM", not_pem);
            cases.push((format!("--to {to} {flags}"), needle));
        }
    }
    for (flags, needle) in cases {
        let args = words(&flags);
        // The key is set (agentless) and never shown, even in errors.
        let done = run(push(&args, &[("DD_API_KEY", DD_API_KEY)]));
        assert_eq!(done.code(), Some(2), "{flags}: {}", done.stderr());
        done.error_line();
        assert!(done.stderr().contains(needle), "{flags}: {}", done.stderr());
        assert_no_secret(&done.stderr(), &[DD_API_KEY], &flags);
    }

    // Bad input files: exit code 3.
    for (input, needle) in [
        (dir.join("missing.data"), "no such file"),
        (dir.clone(), "is a directory"),
        (PathBuf::from(not_pem), "not an amprof capture"),
    ] {
        for to in ["datadog", "otlp"] {
            let done = run(push_from(&input, &words(&format!("--to {to}")), &[]));
            assert_eq!(done.code(), Some(3), "{input:?}: {}", done.stderr());
            assert!(done.error_line().contains(needle), "{}", done.stderr());
        }
    }
}

/// Flips a byte in the middle of the last window record of `capture`, into `damaged`.
fn damage_last_window(capture: &Path, damaged: &Path) {
    let mut bytes = std::fs::read(capture).unwrap();
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    // The header (magic, version, reserved), then records: length, kind, crc32, payload.
    let (mut at, mut last_window) = (16, None);
    while at + 12 <= bytes.len() {
        let (length, kind) = (word(at), word(at + 4));
        if kind == 2 {
            last_window = Some((at + 12, length));
        }
        at += 12 + length;
    }
    let (payload, length) = last_window.expect("a window record");
    bytes[payload + length / 2] ^= 0xff;
    std::fs::write(damaged, bytes).unwrap();
}

#[test]
fn a_damaged_capture_is_refused_before_anything_is_sent() {
    let dir = scratch("push-faults-damaged");
    let damaged = dir.join("damaged.data");
    damage_last_window(&capture().path, &damaged);
    let server = HttpServer::start(Duration::ZERO, |_, _| (200, "text/plain", Vec::new()));
    for to in [To::Datadog, To::OtlpHttp] {
        let done = run(push_from(&damaged, &to.args(&server.url()), &[]));
        assert_eq!(done.code(), Some(3), "{to:?}: {}", done.stderr());
        assert!(done.error_line().contains("corrupt"), "{}", done.stderr());
        // Not the windows before the damage either: no summary would say they went.
        assert_eq!(server.received().len(), 0, "{to:?}");
    }
}
