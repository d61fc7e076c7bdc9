//! `amprof push datadog`: each window (or `--period` of windows) as the profiles Datadog's
//! own profilers upload.
//!
//! # What is sent
//!
//! Datadog's `libdd-profiling` (the library behind its native profiler) builds the pprof
//! ([`crate::encode::pprof`]) and the request: `multipart/form-data` with the `event` part
//! (`event.json`: version "4", family `native`, start and end of the window, `tags_profiler`,
//! `internal`, `info`) and the zstd-compressed `profile.pprof`, and the `DD-EVP-ORIGIN` headers.
//!
//! The profile is a CPU profile (`cpu-samples`, `cpu-time`). A capture recorded with
//! `--off-cpu` adds wall time as Datadog's own profilers send it (dd-trace-py, dd-trace-rb):
//! `wall-samples` and `wall-time`, where each on-CPU sample counts its sampling period and each
//! off-CPU sample the time it was off the CPU, so that Datadog shows where the threads' time
//! went, on the CPU or not ([`Values::datadog`]); `cpu-time` stays on-CPU samples only, and
//! off-CPU samples carry the label `off_cpu_reason`. A capture without is uploaded as before.
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
//!
//! - [`settings`]: where to and with which tags, from the configuration and the environment;
//! - [`services`]: which program goes under which service;
//! - [`http`]: the client, and what its answers mean;
//! - [`mod@check`]: the `--check` of the Agent;
//! - here: the destination, windows in, uploads out.

pub mod check;
pub mod http;
pub mod services;
pub mod settings;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, anyhow};
use http_body_util::BodyExt as _;
use hyper::Method;
use libdd_common::{Endpoint, tag::Tag};
use libdd_profiling::exporter::ProfileExporter;
use serde_json::json;

pub use self::{
    check::{CheckReport, check},
    settings::DatadogConfig,
};
use self::{
    http::{Http, Response, body_snippet},
    services::{process_services, profile_tags},
    settings::{AGENT_PROFILES_PATH, Settings},
};
use super::{
    Attempt, Destination, Request,
    http::{Secrets, retry_after, url_credentials},
};
use crate::{
    capture::{Event, Meta, SampleKind, Selection, Window},
    encode::pprof::{ProfileBuilder, Values},
    error::usage,
};

/// Header of the API key (agentless).
const API_KEY_HEADER: &str = "DD-API-KEY";
/// What requests and dry-run files show in place of the API key.
const API_KEY_PLACEHOLDER: &str = "<DD_API_KEY, added when sent>";

/// The destination `config` (and the environment) describe.
pub fn destination(config: &DatadogConfig) -> Result<Box<dyn Destination>> {
    let settings = Settings::resolve(config, &|name| std::env::var(name).ok())?;
    Ok(Box::new(Datadog::new(settings)?))
}

/// The Datadog destination: windows in, uploads out.
struct Datadog {
    settings: Settings,
    /// Hidden in whatever a server answers.
    secrets: Secrets,
    upload_uri: hyper::Uri,
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
        // What a server may echo back: the API key, and a user and password in the URL.
        let credentials = url_credentials(&upload_uri.to_string());
        let secrets = Secrets::new(
            settings
                .target
                .api_key()
                .into_iter()
                .chain(credentials.iter().map(String::as_str)),
        );
        Ok(Self {
            settings,
            secrets,
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
            // Stacks with samples of either kind (a capture without off-CPU has only on-CPU).
            for stack in window
                .stacks
                .iter()
                .filter(|s| Event::Wall.samples_of(s) > 0)
            {
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
        let values = Values::datadog(meta);
        let mut builder = ProfileBuilder::new(meta, values.clone())?;
        let selection = Selection {
            event: values.event(),
            ..Selection::default()
        };
        for (window, services) in windows.iter().zip(services) {
            builder.add_window(window, &selection, &|stack| {
                services[stack.process as usize].as_str() == service
            })?;
        }
        let samples = builder.samples();
        let off_cpu_samples = builder.off_cpu_samples();
        let encoded = builder.finish()?;
        let tags = profile_tags(meta, service, names)?;
        let indices: Vec<u64> = windows.iter().map(|w| w.index).collect();
        // Free-form metadata the intake keeps with the profile.
        let mut internal = json!({
            "amprof": {
                "windows": indices,
                "samples": samples,
                "lost": windows.iter().map(|w| w.lost).sum::<u64>(),
                "idle": windows.iter().map(|w| w.idle).sum::<u64>(),
            },
        });
        let mut info = json!({
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
        // Only for captures with off-CPU samples: the others upload exactly as before.
        if values.kinds().contains(SampleKind::OffCpu) {
            let amprof = &mut internal["amprof"];
            // `samples` counts both kinds.
            amprof["off_cpu_samples"] = json!(off_cpu_samples);
            amprof["off_cpu_lost"] = json!(windows.iter().map(|w| w.off_cpu_lost).sum::<u64>());
            info["profiler"]["settings"]["off_cpu_period_ns"] = json!(meta.off_cpu_period_ns);
        }
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
        self.secrets.hide(&text)
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
                    .and_then(|v| retry_after(v, SystemTime::now()));
                return Attempt::Retry {
                    reason: self.scrub(what),
                    after,
                };
            }
            401 | 403 if agentless => {
                format!("{what}: the API key was refused (check DD_API_KEY and DD_SITE)")
            }
            404 if !agentless => format!(
                "{what}: it takes no profiles at {AGENT_PROFILES_PATH} (`amprof push datadog --check` tells why)"
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

impl Destination for Datadog {
    fn refuses(&mut self) -> Option<String> {
        // Only an Agent says whether it takes profiles; the intake answers the first upload.
        if !matches!(self.settings.target, settings::Target::Agent { .. }) {
            return None;
        }
        check::check_settings(&self.settings, std::time::Duration::from_secs(5))
            .err()
            .map(|e| format!("{e:#}"))
    }

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

    fn ready(&mut self, meta: &Meta) -> Result<Vec<Request>> {
        // With --period, `encode` sends each period once it is complete; without, each window.
        match self.settings.period {
            Some(_) => Ok(Vec::new()),
            None => self.requests(meta),
        }
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
