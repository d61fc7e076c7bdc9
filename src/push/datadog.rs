//! `amprof push --to datadog`: each window (or `--period` of windows) as the profiles Datadog's
//! own profilers upload.
//!
//! # What is sent
//!
//! Datadog's `libdd-profiling` (the library behind its native profiler) builds the pprof
//! ([`crate::report::pprof`]) and the request: `multipart/form-data` with the `event` part
//! (`event.json`: version "4", family `native`, start and end of the window, `tags_profiler`,
//! `internal`, `info`) and the zstd-compressed `profile.pprof`, and the `DD-EVP-ORIGIN` headers.
//! Requests are built once and kept as bytes, so that a retry or `--dry-run` sends or writes
//! exactly what was built; libdd-common's HTTP client (TCP, TLS, unix sockets) sends them from a
//! runtime of ours, because libdd-profiling's exporter would not let us read response bodies
//! (error messages, `--check`).
//!
//! # Services: finding each program of a system-wide capture
//!
//! Datadog shows profiles by service, and one profile is meant to be one program. So by default
//! each window is split by program: every process's samples go under a service named after its
//! executable (`postgres`, `python3.11`; its `comm` when the executable is unknown), all kernel
//! threads under `kernel`, one profile per service and window, tagged `process_name:` with the
//! names of the processes in it. Every sample also carries the labels `process_id`,
//! `process_name`, `thread id`, `thread name` and `cpu`. With `--service` (or `DD_SERVICE`) a
//! window is one profile under that service instead, processes told apart by those labels.
//!
//! # Where to
//!
//! The Agent (`--agent-url`, `DD_TRACE_AGENT_URL`, `DD_AGENT_HOST` + `DD_TRACE_AGENT_PORT`, the
//! socket `/var/run/datadog/apm.socket` if present, else `http://localhost:8126`), which adds the
//! API key; or, with `DD_API_KEY` and no Agent setting (or `--agentless`), Datadog's intake for
//! `DD_SITE`. The API key is added to a request only as it is sent: it is never in a [`Request`],
//! so neither `--dry-run` files, the summary nor any message can show it, and any text a server
//! echoes back is scrubbed of it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    hash::{DefaultHasher, Hash as _, Hasher as _},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};
use clap::Args;
use http_body_util::BodyExt as _;
use hyper::{Method, StatusCode, Uri, header::HeaderMap};
use libdd_common::{Endpoint, HttpClient, hyper_migration, tag::Tag};
use libdd_profiling::exporter::ProfileExporter;
use serde_json::json;

use super::{Attempt, Destination, Request, without_credentials};
use crate::{
    capture::{Meta, Window, format::Process},
    cli::parse_duration,
    error::{Exit, coded, usage},
    report::{frames::basename, pprof::ProfileBuilder},
    text::printable,
};

/// The Agent's profile intake path.
const AGENT_PROFILES_PATH: &str = "/profiling/v1/input";
/// The Agent socket Datadog's libraries look for.
const AGENT_SOCKET: &str = "/var/run/datadog/apm.socket";
const DEFAULT_AGENT_URL: &str = "http://localhost:8126";
const DEFAULT_SITE: &str = "datadoghq.com";
/// Header of the API key (agentless).
const API_KEY_HEADER: &str = "DD-API-KEY";
/// What requests and dry-run files show in place of the API key.
const API_KEY_PLACEHOLDER: &str = "<DD_API_KEY, added when sent>";
/// The service of kernel threads when each program has its own.
const KERNEL_SERVICE: &str = "kernel";
/// At most this many `process_name:` tags on one profile.
const MAX_PROCESS_NAME_TAGS: usize = 10;
/// Bytes of a response body kept for messages.
const MAX_RESPONSE_BYTES: usize = 64 << 10;

/// Settings of `--to datadog`.
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Datadog")]
pub struct DatadogArgs {
    /// Ask the Datadog Agent (GET /info) whether it accepts profiles, say what is wrong if not,
    /// and exit: nothing is pushed.
    #[arg(long)]
    pub check: bool,

    /// The Datadog Agent: http://HOST:PORT, https://HOST:PORT, unix:///PATH or a socket path.
    /// Default: DD_TRACE_AGENT_URL, else DD_AGENT_HOST and DD_TRACE_AGENT_PORT (8126), else the
    /// socket /var/run/datadog/apm.socket if it exists, else http://localhost:8126.
    #[arg(long, value_name = "URL", conflicts_with = "agentless")]
    pub agent_url: Option<String>,

    /// Send straight to Datadog's intake, with the API key in DD_API_KEY (never a flag). This is
    /// the default when DD_API_KEY is set and no Agent is configured.
    #[arg(long)]
    pub agentless: bool,

    /// Datadog site for agentless uploads, e.g. datadoghq.eu. Default: DD_SITE, else
    /// datadoghq.com.
    #[arg(long, value_name = "SITE")]
    pub site: Option<String>,

    /// Intake URL for agentless uploads (e.g. through a proxy). Default:
    /// https://intake.profile.SITE/api/v2/profile.
    #[arg(long, value_name = "URL", conflicts_with = "agent_url")]
    pub intake_url: Option<String>,

    /// One service for every profile. Default: DD_SERVICE; without either, each program gets a
    /// service of its own, named after its executable (kernel threads: `kernel`).
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,

    /// The `env` tag. Default: DD_ENV.
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,

    /// The `version` tag. Default: DD_VERSION.
    #[arg(long = "version", id = "service_version", value_name = "VERSION")]
    pub service_version: Option<String>,

    /// A tag for every profile (repeatable; comma-separated lists too), added to those of
    /// DD_TAGS.
    #[arg(long = "tag", value_name = "KEY:VALUE")]
    pub tags: Vec<String>,

    /// Merge consecutive windows into profiles this long (e.g. 60s). Default: one profile per
    /// window.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub period: Option<Duration>,
}

/// The API key: shown as a placeholder by `Debug` and `Display`.
#[derive(Clone)]
struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where profiles go.
#[derive(Debug, Clone)]
enum Target {
    /// A Datadog Agent: `base` is its root URL (as libdd-common parses it: a unix socket's path
    /// is hex-encoded in the authority), `shown` the URL as the user knows it.
    Agent { base: Uri, shown: String },
    /// Datadog's intake.
    Agentless { url: Uri, api_key: ApiKey },
}

impl Target {
    /// Where profiles go, for messages: a user and password in the URL are not shown.
    fn describe(&self) -> String {
        match self {
            Target::Agent { shown, .. } => {
                format!("the Datadog Agent at {}", without_credentials(shown))
            }
            Target::Agentless { url, .. } => format!(
                "Datadog's intake at {} (agentless)",
                without_credentials(&url.to_string())
            ),
        }
    }

    fn upload_uri(&self) -> Result<Uri> {
        match self {
            Target::Agent { base, .. } => join(base, AGENT_PROFILES_PATH),
            Target::Agentless { url, .. } => Ok(url.clone()),
        }
    }

    fn api_key(&self) -> Option<&str> {
        match self {
            Target::Agentless { api_key, .. } => Some(&api_key.0),
            Target::Agent { .. } => None,
        }
    }
}

/// Everything `args` and the environment say, checked.
#[derive(Debug)]
struct Settings {
    target: Target,
    /// One service for everything, or `None`: one per program.
    service: Option<String>,
    /// Tags of every profile: env, version, DD_TAGS, --tag.
    tags: Vec<Tag>,
    period: Option<Duration>,
}

impl Settings {
    /// Reads `args`, falling back on the environment as `env` reports it.
    fn resolve(args: &DatadogArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let api_key = env("DD_API_KEY");
        let agent_configured = args.agent_url.is_some()
            || env("DD_TRACE_AGENT_URL").is_some()
            || env("DD_AGENT_HOST").is_some();
        let agentless =
            args.agentless || args.intake_url.is_some() || (api_key.is_some() && !agent_configured);
        let target = if agentless {
            let Some(key) = api_key else {
                return Err(usage(
                    "agentless upload needs an API key in the environment variable DD_API_KEY",
                ));
            };
            let key = key.trim().to_string();
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(usage(
                    "DD_API_KEY is not a valid API key (it must be printable ASCII without spaces)",
                ));
            }
            let url = match &args.intake_url {
                Some(url) => url.clone(),
                None => {
                    let site = args
                        .site
                        .clone()
                        .or_else(|| env("DD_SITE"))
                        .unwrap_or_else(|| DEFAULT_SITE.into());
                    let site = site.trim();
                    if site.is_empty() || site.contains(['/', ':', ' ']) {
                        return Err(usage(format!(
                            "`{site}` is not a Datadog site like datadoghq.com or datadoghq.eu"
                        )));
                    }
                    format!("https://intake.profile.{site}/api/v2/profile")
                }
            };
            let url = parse_http_url(&url).map_err(|e| usage(format!("--intake-url: {e}")))?;
            Target::Agentless {
                url,
                api_key: ApiKey(key),
            }
        } else {
            agent_target(args.agent_url.as_deref(), &env)?
        };
        let service = match args.service.clone().or_else(|| env("DD_SERVICE")) {
            Some(s) if s.trim().is_empty() => return Err(usage("the service name is empty")),
            other => other.map(|s| s.trim().to_string()),
        };
        let mut tags = Vec::new();
        for (key, value) in [
            ("env", args.env.clone().or_else(|| env("DD_ENV"))),
            (
                "version",
                args.service_version.clone().or_else(|| env("DD_VERSION")),
            ),
        ] {
            if let Some(value) = value {
                tags.push(Tag::new(key, value.trim()).map_err(|e| usage(format!("--{key}: {e}")))?);
            }
        }
        let mut add_tags = |text: &str, source: &str| -> Result<()> {
            let (parsed, error) = libdd_common::tag::parse_tags(text);
            if let Some(error) = error {
                return Err(usage(format!("{source}: {error}")));
            }
            tags.extend(parsed);
            Ok(())
        };
        if let Some(dd_tags) = env("DD_TAGS") {
            add_tags(&dd_tags, "DD_TAGS")?;
        }
        for tag in &args.tags {
            add_tags(tag, "--tag")?;
        }
        if args.period.is_some_and(|p| p.is_zero()) {
            return Err(usage("--period must be longer than 0"));
        }
        Ok(Self {
            target,
            service,
            tags,
            period: args.period,
        })
    }
}

/// The Agent `flag` names, or the environment, or the defaults.
fn agent_target(flag: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Result<Target> {
    let (shown, source) = if let Some(url) = flag {
        (url.trim().to_string(), "--agent-url")
    } else if let Some(url) = env("DD_TRACE_AGENT_URL") {
        (url.trim().to_string(), "DD_TRACE_AGENT_URL")
    } else if let Some(host) = env("DD_AGENT_HOST") {
        let port = match env("DD_TRACE_AGENT_PORT") {
            Some(port) => port
                .trim()
                .parse::<u16>()
                .map_err(|_| usage(format!("DD_TRACE_AGENT_PORT=`{port}` is not a port number")))?,
            None => 8126,
        };
        let host = host.trim();
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        (format!("http://{host}:{port}"), "DD_AGENT_HOST")
    } else if Path::new(AGENT_SOCKET).exists() {
        (format!("unix://{AGENT_SOCKET}"), "the Agent socket")
    } else {
        (DEFAULT_AGENT_URL.to_string(), "the default")
    };
    let shown = if shown.starts_with('/') {
        format!("unix://{shown}")
    } else if !shown.contains("://") {
        format!("http://{shown}")
    } else {
        shown
    };
    let base = if let Some(path) = shown.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(usage(format!(
                "{source}: `{}` is not a socket URL like unix:///var/run/datadog/apm.socket",
                without_credentials(&shown)
            )));
        }
        socket_uri(Path::new(path)).map_err(|e| usage(format!("{source}: {e}")))?
    } else {
        parse_http_url(&shown).map_err(|e| usage(format!("{source}: {e}")))?
    };
    Ok(Target::Agent { base, shown })
}

/// The URI libdd-common's connector takes for a unix socket: `unix://HEX/`, the socket's path
/// hex-encoded in the authority. (Built here: libdd-common 1.1's own `parse_uri` panics on it
/// with http 1.5, which rejects the empty path it gives.)
fn socket_uri(path: &Path) -> Result<Uri> {
    use std::os::unix::ffi::OsStrExt as _;
    let hex: String = path
        .as_os_str()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Uri::builder()
        .scheme("unix")
        .authority(hex)
        .path_and_query("/")
        .build()
        .map_err(|e| anyhow!("`{}` cannot be a socket path ({e})", path.display()))
}

/// An http or https URL with a host. Errors show it without its user and password.
fn parse_http_url(url: &str) -> Result<Uri> {
    let shown = without_credentials(url);
    let uri: Uri = url
        .parse()
        .map_err(|_| anyhow!("`{shown}` is not a URL like http://localhost:8126"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(uri),
        _ => Err(anyhow!(
            "`{shown}` is not an http://, https:// or unix:// URL with a host"
        )),
    }
}

/// `base` with `path` appended to its path.
fn join(base: &Uri, path: &str) -> Result<Uri> {
    let mut parts = base.clone().into_parts();
    let prefix = parts
        .path_and_query
        .as_ref()
        .map_or("", |p| p.path())
        .trim_end_matches('/');
    parts.path_and_query = Some(
        format!("{prefix}{path}")
            .parse()
            .with_context(|| format!("cannot add {path} to the URL"))?,
    );
    Uri::from_parts(parts).with_context(|| format!("cannot add {path} to the URL"))
}

/// The destination `args` describe.
pub fn destination(args: &DatadogArgs) -> Result<Box<dyn Destination>> {
    let settings = Settings::resolve(args, &|name| std::env::var(name).ok())?;
    Ok(Box::new(Datadog::new(settings)?))
}

/// A response, as much of it as messages need.
struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// libdd-common's HTTP client on a runtime of ours.
struct Http {
    runtime: tokio::runtime::Runtime,
    client: HttpClient,
}

impl Http {
    fn new() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the HTTP client")?;
        Ok(Self {
            runtime,
            client: hyper_migration::new_client_periodic(),
        })
    }

    /// Sends one request and reads the response (its body up to [`MAX_RESPONSE_BYTES`]), all
    /// within `timeout`.
    fn exchange(
        &self,
        method: Method,
        uri: &Uri,
        headers: &[(String, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Response> {
        let mut builder = hyper::Request::builder().method(method).uri(uri.clone());
        for (name, value) in headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder
            .body(hyper_migration::Body::from(body))
            .context("cannot build the request")?;
        self.runtime.block_on(async {
            let exchange = async {
                let response = self
                    .client
                    .request(request)
                    .await
                    .map_err(|e| anyhow!(transport_error(&e)))?;
                let (parts, mut body) = response.into_parts();
                let mut bytes = Vec::new();
                while bytes.len() < MAX_RESPONSE_BYTES {
                    match body.frame().await {
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                bytes.extend_from_slice(&data);
                            }
                        }
                        // A broken body after the status line: the status still says enough.
                        Some(Err(_)) | None => break,
                    }
                }
                Ok(Response {
                    status: parts.status,
                    headers: parts.headers,
                    body: bytes,
                })
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(result) => result,
                Err(_) => Err(anyhow!(
                    "no response within {}",
                    humantime::format_duration(timeout)
                )),
            }
        })
    }
}

/// A short description of a failure to exchange a request: its innermost cause.
fn transport_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut innermost = error.to_string();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::NotFound => "no such socket".into(),
                std::io::ErrorKind::ConnectionReset => "connection reset".into(),
                std::io::ErrorKind::PermissionDenied => "permission denied".into(),
                // It may quote the server (names in its certificate).
                _ => printable(&io.to_string()).into_owned(),
            };
        }
        innermost = e.to_string();
        source = e.source();
    }
    printable(&innermost).into_owned()
}

/// The Datadog destination: windows in, uploads out.
struct Datadog {
    settings: Settings,
    upload_uri: Uri,
    exporter: ProfileExporter,
    http: Http,
    /// Windows of the period being gathered (`--period`).
    pending: Vec<Window>,
}

impl Datadog {
    fn new(settings: Settings) -> Result<Self> {
        let upload_uri = settings.target.upload_uri()?;
        let mut tags = vec![
            Tag::new("language", "native")?,
            Tag::new("profiler_version", env!("CARGO_PKG_VERSION"))?,
        ];
        tags.extend(settings.tags.iter().cloned());
        let exporter = ProfileExporter::new(
            "amprof",
            env!("CARGO_PKG_VERSION"),
            "native",
            Some(tags),
            Endpoint::from_url(upload_uri.clone()),
        )
        .context("cannot set up the Datadog exporter")?;
        Ok(Self {
            settings,
            upload_uri,
            exporter,
            http: Http::new()?,
            pending: Vec::new(),
        })
    }

    /// The requests of the windows in `pending` (consecutive, one period).
    fn requests(&mut self, meta: &Meta) -> Result<Vec<Request>> {
        let windows = std::mem::take(&mut self.pending);
        let (Some(first), Some(last)) = (windows.first(), windows.last()) else {
            return Ok(Vec::new());
        };
        let indices: Vec<u64> = windows.iter().map(|w| w.index).collect();
        let span = if first.index == last.index {
            format!("window {}", first.index)
        } else {
            format!("windows {}..{}", first.index, last.index)
        };
        // The service of each process of each window, and the process names under each service.
        let services: Vec<Vec<String>> = windows
            .iter()
            .map(|w| process_services(w, self.settings.service.as_deref()))
            .collect();
        let mut groups: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (window, services) in windows.iter().zip(&services) {
            for stack in window.stacks.iter().filter(|s| s.count > 0) {
                let process = stack.process as usize;
                groups
                    .entry(&services[process])
                    .or_default()
                    .insert(&window.processes[process].name);
            }
        }
        if groups.is_empty() {
            // Nothing to upload: the push framework reports the window as empty.
            return Ok(vec![Request {
                windows: indices,
                label: format!("{span} (no samples)"),
                body: Vec::new(),
                headers: Vec::new(),
            }]);
        }
        groups
            .into_iter()
            .map(|(service, names)| {
                let label = format!("{span} service {service}");
                self.upload(meta, &windows, &services, service, &names, label)
            })
            .collect()
    }

    /// The upload of the samples of `windows` whose process goes under `service` (`services`:
    /// the service of each process of each window), with `names`, its processes' names.
    fn upload(
        &self,
        meta: &Meta,
        windows: &[Window],
        services: &[Vec<String>],
        service: &str,
        names: &BTreeSet<&str>,
        label: String,
    ) -> Result<Request> {
        let mut builder = ProfileBuilder::new(meta)?;
        for (window, services) in windows.iter().zip(services) {
            builder.add_window(window, &|stack| {
                services[stack.process as usize].as_str() == service
            })?;
        }
        let samples = builder.samples();
        let encoded = builder.finish()?;
        let tags = profile_tags(meta, service, names)?;
        let indices: Vec<u64> = windows.iter().map(|w| w.index).collect();
        // Free-form metadata the intake keeps with the profile.
        let internal = json!({
            "amprof": {
                "windows": indices,
                "samples": samples,
                "lost": windows.iter().map(|w| w.lost).sum::<u64>(),
                "idle": windows.iter().map(|w| w.idle).sum::<u64>(),
            },
        });
        let info = json!({
            "profiler": {
                "name": "amprof",
                "version": env!("CARGO_PKG_VERSION"),
                "settings": {
                    "event": meta.event,
                    "frequency_hz": meta.frequency_hz,
                    "call_graph": meta.call_graph,
                    "window_ns": meta.window_ns,
                },
            },
            "platform": {
                "hostname": meta.hostname,
                "kernel": meta.kernel_release,
                "arch": meta.arch,
                "cpus": meta.cpus,
            },
        });
        let built = self
            .exporter
            .build(encoded, &[], &[], Some(&tags), Some(internal), Some(info))
            .context("cannot build the Datadog upload")?;
        let mut headers: Vec<(String, String)> = built
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.to_string(), value)
            })
            .collect();
        if self.settings.target.api_key().is_some() {
            headers.push((API_KEY_HEADER.into(), API_KEY_PLACEHOLDER.into()));
        }
        let body = self
            .http
            .runtime
            .block_on(built.body().collect())
            .map_err(|e| anyhow!("cannot build the Datadog upload: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(Request {
            windows: indices,
            label,
            body,
            headers,
        })
    }

    /// Replaces every occurrence of the API key in `text`.
    fn scrub(&self, text: String) -> String {
        match self.settings.target.api_key() {
            Some(key) if !key.is_empty() && text.contains(key) => text.replace(key, "<redacted>"),
            _ => text,
        }
    }

    /// What a response means for the upload.
    fn attempt_of(&self, response: Response) -> Attempt {
        let status = response.status;
        if status.is_success() {
            return Attempt::Sent { note: None };
        }
        let code = status.as_u16();
        // The summary names the destination: the reason says what it answered.
        // Scrubbed whole, before it is cut short: a key cut in two would show its first part.
        let body = self.scrub(String::from_utf8_lossy(&response.body).into_owned());
        let what = format!("HTTP {status}{}", body_snippet(&body));
        let agentless = self.settings.target.api_key().is_some();
        let reason = match code {
            408 | 429 | 500..=599 => {
                let after = response
                    .headers
                    .get(hyper::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                return Attempt::Retry {
                    reason: self.scrub(what),
                    after,
                };
            }
            401 | 403 if agentless => {
                format!("{what}: the API key was refused (check DD_API_KEY and DD_SITE)")
            }
            404 if !agentless => format!(
                "{what}: it takes no profiles at {AGENT_PROFILES_PATH} (`amprof push --to datadog --check` tells why)"
            ),
            413 => format!("{what}: the profile is too large (try a shorter --period)"),
            300..=399 => format!("{what}: redirects are not followed"),
            _ => what,
        };
        Attempt::Failed {
            reason: self.scrub(reason),
        }
    }
}

/// The first line or so of a response body, for messages.
fn body_snippet(body: &str) -> String {
    let text: String = body.chars().take(300).collect();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    // A terminal shows it: control characters made visible.
    let text: String = printable(&text).chars().take(160).collect();
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}

impl Destination for Datadog {
    fn describe(&self) -> String {
        self.settings.target.describe()
    }

    fn encode(&mut self, meta: &Meta, window: &Window) -> Result<Vec<Request>> {
        let Some(period) = self.settings.period else {
            self.pending.push(window.clone());
            return self.requests(meta);
        };
        let period_ns = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        if period_ns < meta.window_ns {
            return Err(usage(format!(
                "--period {} is shorter than the capture's windows ({})",
                humantime::format_duration(period),
                humantime::format_duration(Duration::from_nanos(meta.window_ns))
            )));
        }
        let slot = |w: &Window| w.start_ns.saturating_sub(meta.start_ns) / period_ns;
        let mut requests = Vec::new();
        if let Some(last) = self.pending.last()
            && (slot(last) != slot(window) || last.index + 1 != window.index)
        {
            requests = self.requests(meta)?;
        }
        self.pending.push(window.clone());
        Ok(requests)
    }

    fn flush(&mut self, meta: &Meta) -> Result<Vec<Request>> {
        self.requests(meta)
    }

    fn send(&mut self, request: &Request, timeout: Duration) -> Attempt {
        let mut headers = request.headers.clone();
        if let Some(key) = self.settings.target.api_key() {
            for (name, value) in &mut headers {
                if name.eq_ignore_ascii_case(API_KEY_HEADER) {
                    *value = key.to_string();
                }
            }
        }
        match self.http.exchange(
            Method::POST,
            &self.upload_uri,
            &headers,
            request.body.clone(),
            timeout,
        ) {
            Ok(response) => self.attempt_of(response),
            Err(error) => Attempt::Retry {
                reason: self.scrub(format!("{error:#}")),
                after: None,
            },
        }
    }
}

/// The service of each process of `window` (by index): `fixed`, or one per program.
fn process_services(window: &Window, fixed: Option<&str>) -> Vec<String> {
    if let Some(service) = fixed {
        return vec![service.to_string(); window.processes.len()];
    }
    let mut user_frames = vec![false; window.processes.len()];
    for stack in window.stacks.iter().filter(|s| s.count > 0) {
        if !stack.no_user_stack
            && let Some(u) = user_frames.get_mut(stack.process as usize)
        {
            *u = true;
        }
    }
    window
        .processes
        .iter()
        .zip(&user_frames)
        .map(|(process, &user)| program_service(process, user))
        .collect()
}

/// The service of a program: its executable's name, else its process name; kernel threads (no
/// executable, no user stack) share [`KERNEL_SERVICE`].
fn program_service(process: &Process, has_user_frames: bool) -> String {
    if process.exe.is_empty() && !has_user_frames {
        return KERNEL_SERVICE.into();
    }
    let exe = process.exe.trim_end_matches(" (deleted)");
    let name = if exe.is_empty() {
        process.name.as_str()
    } else {
        basename(exe)
    };
    service_name(name)
}

/// `name` as Datadog wants a service: lowercase letters, digits and `_-./:`, starting with a
/// letter, at most 100 characters.
fn service_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-./:".contains(c) {
                c
            } else {
                '_'
            }
        })
        .skip_while(|c| !c.is_ascii_lowercase())
        .take(100)
        .collect();
    if cleaned.is_empty() {
        "unnamed".into()
    } else {
        cleaned
    }
}

/// Tags of one profile: service, host, runtime-id and the names of its processes.
fn profile_tags(meta: &Meta, service: &str, process_names: &BTreeSet<&str>) -> Result<Vec<Tag>> {
    let mut tags = vec![
        Tag::new("service", service).map_err(|e| usage(format!("service `{service}`: {e}")))?,
        Tag::new("runtime-id", runtime_id(meta, service))?,
    ];
    // A hostname Datadog cannot take as a tag (the capture's, from anywhere) is left out rather
    // than failing every upload.
    if !meta.hostname.is_empty()
        && let Ok(tag) = Tag::new("host", &meta.hostname)
    {
        tags.push(tag);
    }
    for name in process_names
        .iter()
        .filter(|n| !n.is_empty())
        .take(MAX_PROCESS_NAME_TAGS)
    {
        // A name Datadog cannot take as a tag is left out: the samples' labels still carry it.
        if let Ok(tag) = Tag::new("process_name", name) {
            tags.push(tag);
        }
    }
    Ok(tags)
}

/// A UUID-shaped id for one service of one capture: the same on every push of that capture, so
/// that Datadog sees the windows of a program as one runtime over time.
fn runtime_id(meta: &Meta, service: &str) -> String {
    let half = |salt: u8| {
        let mut hasher = DefaultHasher::new();
        (
            salt,
            &meta.hostname,
            meta.start_ns,
            meta.realtime_offset_ns,
            service,
        )
            .hash(&mut hasher);
        hasher.finish()
    };
    let id = (u128::from(half(1)) << 64) | u128::from(half(2));
    let hex = format!("{id:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// What `/info` says.
#[derive(Debug, serde::Serialize)]
pub struct CheckReport {
    pub destination: String,
    pub agent_version: Option<String>,
    pub accepts_profiles: bool,
}

/// `amprof push --to datadog --check`: asks the Agent's `/info` whether it takes profiles.
pub fn check(args: &DatadogArgs, timeout: Duration, json: bool) -> Result<()> {
    super::check_timeout(timeout)?;
    let settings = Settings::resolve(args, &|name| std::env::var(name).ok())?;
    let Target::Agent { base, .. } = &settings.target else {
        return Err(usage(
            "--check asks a Datadog Agent, but amprof is set to upload agentless (DD_API_KEY is set and no Agent is configured); give --agent-url to check an Agent",
        ));
    };
    let agent = settings.target.describe();
    let failed = |problem: String| coded(Exit::Failure, problem);
    let http = Http::new()?;
    let response = http
        .exchange(Method::GET, &join(base, "/info")?, &[], Vec::new(), timeout)
        .map_err(|e| {
            failed(format!(
                "cannot reach {agent}: {e:#}. Is the Agent running with APM enabled (apm_config.enabled, DD_APM_ENABLED)? Point amprof at it with --agent-url or DD_TRACE_AGENT_URL"
            ))
        })?;
    if response.status == StatusCode::NOT_FOUND {
        return Err(failed(format!(
            "{agent} has no /info (HTTP 404): it is not a Datadog Agent, or one too old to take profiles"
        )));
    }
    if !response.status.is_success() {
        return Err(failed(format!(
            "{agent} answered HTTP {} to /info{}",
            response.status,
            body_snippet(&String::from_utf8_lossy(&response.body))
        )));
    }
    let info: serde_json::Value = serde_json::from_slice(&response.body).map_err(|_| {
        failed(format!(
            "{agent} answered /info with something that is not JSON: is it a Datadog Agent?"
        ))
    })?;
    let version = info["version"].as_str().map(str::to_string);
    let endpoints: Vec<&str> = info["endpoints"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e.as_str()).collect())
        .unwrap_or_default();
    let version_text = version
        .as_deref()
        .map_or(String::new(), |v| format!(" (version {})", printable(v)));
    if !endpoints.contains(&AGENT_PROFILES_PATH) {
        return Err(failed(format!(
            "{agent}{version_text} does not take profiles: its /info lists no {AGENT_PROFILES_PATH} endpoint (an Agent older than 7.x, or one that is not a Datadog Agent)"
        )));
    }
    let report = CheckReport {
        destination: agent.clone(),
        agent_version: version,
        accepts_profiles: true,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{agent}{version_text} accepts profiles at {AGENT_PROFILES_PATH}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &DatadogArgs, vars: &[(&str, &str)]) -> Result<Settings> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(args, &move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn shown(settings: &Settings) -> String {
        match &settings.target {
            Target::Agent { shown, .. } => shown.clone(),
            Target::Agentless { url, .. } => format!("agentless {url}"),
        }
    }

    #[test]
    fn finds_the_agent_the_conventional_way() {
        let args = DatadogArgs::default();
        let default = resolve(&args, &[]).unwrap();
        if !Path::new(AGENT_SOCKET).exists() {
            assert_eq!(shown(&default), "http://localhost:8126");
        }
        let s = resolve(
            &args,
            &[("DD_AGENT_HOST", "agent"), ("DD_TRACE_AGENT_PORT", "9126")],
        );
        assert_eq!(shown(&s.unwrap()), "http://agent:9126");
        let s = resolve(&args, &[("DD_AGENT_HOST", "::1")]).unwrap();
        assert_eq!(shown(&s), "http://[::1]:8126");
        let s = resolve(
            &args,
            &[
                ("DD_TRACE_AGENT_URL", "unix:///run/apm.sock"),
                ("DD_AGENT_HOST", "x"),
            ],
        )
        .unwrap();
        assert_eq!(shown(&s), "unix:///run/apm.sock");
        let flag = DatadogArgs {
            agent_url: Some("/tmp/apm.sock".into()),
            ..DatadogArgs::default()
        };
        let s = resolve(&flag, &[("DD_TRACE_AGENT_URL", "http://other:1")]).unwrap();
        assert_eq!(shown(&s), "unix:///tmp/apm.sock");
        assert!(
            resolve(
                &args,
                &[("DD_AGENT_HOST", "a"), ("DD_TRACE_AGENT_PORT", "x")]
            )
            .is_err()
        );
        let bad = DatadogArgs {
            agent_url: Some("ftp://x".into()),
            ..DatadogArgs::default()
        };
        assert!(resolve(&bad, &[]).is_err());
    }

    #[test]
    fn goes_agentless_with_an_api_key_and_no_agent() {
        let args = DatadogArgs::default();
        let s = resolve(&args, &[("DD_API_KEY", "abc"), ("DD_SITE", "datadoghq.eu")]).unwrap();
        assert_eq!(
            shown(&s),
            "agentless https://intake.profile.datadoghq.eu/api/v2/profile"
        );
        assert!(!format!("{s:?}").contains("abc"), "Debug shows no key");
        let s = resolve(&args, &[("DD_API_KEY", "abc"), ("DD_AGENT_HOST", "agent")]).unwrap();
        assert_eq!(shown(&s), "http://agent:8126");
        let forced = DatadogArgs {
            agentless: true,
            ..DatadogArgs::default()
        };
        assert!(resolve(&forced, &[]).is_err(), "agentless needs a key");
        assert!(resolve(&args, &[("DD_API_KEY", "a b")]).is_err());
    }

    #[test]
    fn gathers_tags() {
        let args = DatadogArgs {
            env: Some("prod".into()),
            tags: vec!["team:perf".into(), "a:b,c:d".into()],
            ..DatadogArgs::default()
        };
        let s = resolve(
            &args,
            &[
                ("DD_ENV", "ignored"),
                ("DD_VERSION", "1.2"),
                ("DD_TAGS", "x:y z:w"),
            ],
        )
        .unwrap();
        let tags: Vec<String> = s.tags.iter().map(|t| t.to_string()).collect();
        assert_eq!(
            tags,
            [
                "env:prod",
                "version:1.2",
                "x:y",
                "z:w",
                "team:perf",
                "a:b",
                "c:d"
            ]
        );
        let bad = DatadogArgs {
            tags: vec![":oops".into()],
            ..DatadogArgs::default()
        };
        assert!(resolve(&bad, &[]).is_err());
    }

    #[test]
    fn names_services_after_programs() {
        let process = |exe: &str, name: &str| Process {
            pid: 1,
            name: name.into(),
            exe: exe.into(),
            first_seen_ns: 0,
            maps_unavailable: false,
        };
        assert_eq!(
            program_service(&process("/usr/bin/python3.11", "python3"), true),
            "python3.11"
        );
        assert_eq!(
            program_service(&process("", "kworker/0:1-events"), false),
            "kernel"
        );
        assert_eq!(program_service(&process("", "My App"), true), "my_app");
        assert_eq!(
            program_service(&process("/memfd:x (deleted)", "x"), true),
            "memfd:x"
        );
        assert_eq!(service_name("0day"), "day");
        assert_eq!(service_name("123"), "unnamed");
    }

    #[test]
    fn joins_paths() {
        let base: Uri = "http://h:1".parse().unwrap();
        assert_eq!(join(&base, "/info").unwrap().to_string(), "http://h:1/info");
        let base: Uri = "http://h:1/prefix/".parse().unwrap();
        assert_eq!(
            join(&base, AGENT_PROFILES_PATH).unwrap().to_string(),
            "http://h:1/prefix/profiling/v1/input"
        );
        let socket = socket_uri(Path::new("/run/a.sock")).unwrap();
        let joined = join(&socket, "/info").unwrap();
        assert_eq!(joined.scheme_str(), Some("unix"));
        assert_eq!(joined.path(), "/info");
        let path = libdd_common::connector::uds::socket_path_from_uri(&joined).unwrap();
        assert_eq!(
            path,
            Path::new("/run/a.sock"),
            "the connector finds the socket"
        );
    }

    #[test]
    fn runtime_ids_are_stable_uuids() {
        let meta = Meta {
            hostname: "h".into(),
            ..Meta::default()
        };
        let id = runtime_id(&meta, "svc");
        assert_eq!(id, runtime_id(&meta, "svc"));
        assert_ne!(id, runtime_id(&meta, "other"));
        assert_eq!(id.len(), 36);
    }
}
