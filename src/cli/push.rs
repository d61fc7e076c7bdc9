//! `amprof push datadog|otlp` (or `push --to datadog|otlp`): its flags, the configurations they
//! become, and the summary it prints. Each destination is a subcommand, so that clap refuses a
//! flag given to the wrong one; `--to X` is read as the subcommand `X` ([`super::parse`]).

use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};

use super::{
    progress::{PushProgress, Show},
    values::{WindowRange, parse_duration, parse_size},
};
use crate::{
    capture::{Event, Selection},
    error::usage,
    push::{
        self, PushOptions, PushSummary,
        datadog::{self, DatadogConfig},
        otlp::{self, OtlpConfig},
    },
};

/// Send a capture's windows as profiles to Datadog or an OTLP endpoint.
///
/// One profile per window, with the window's true start and end. Failed windows are retried
/// (bounded, with backoff), listed in the summary, and can be resent with --windows. The capture
/// file is only read. `push --to datadog` and `push --to otlp` are the same as `push datadog`
/// and `push otlp`.
#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  amprof push datadog --check                       does the Datadog Agent take profiles?
  amprof push datadog                               every window to the local Datadog Agent
  amprof push datadog --windows 3,5                 resend windows 3 and 5
  amprof push otlp --endpoint http://collector:4318
  amprof push --to datadog --dry-run -o requests/   write the requests instead of sending

Exit codes: see amprof --help; 5 when any window failed.")]
pub struct PushArgs {
    /// The destination, as the subcommand says it: datadog or otlp (`push --to datadog` is
    /// `push datadog`).
    #[arg(long, value_name = "TO")]
    pub to: Option<Backend>,

    #[command(subcommand)]
    pub destination: PushTo,
}

/// A kind of destination: what `push --to`, `push`'s subcommands and `record --push-to` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Datadog,
    Otlp,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Datadog => "datadog",
            Self::Otlp => "otlp",
        }
    }
}

/// Where to send.
#[derive(Debug, Subcommand)]
pub enum PushTo {
    /// To a Datadog Agent, or Datadog's intake with DD_API_KEY.
    Datadog(DatadogPush),
    /// To an OpenTelemetry (OTLP) profiles endpoint, over HTTP or gRPC.
    Otlp(OtlpPush),
}

/// Send a capture's windows to Datadog, as its own profilers upload them.
#[derive(Debug, Args)]
pub struct DatadogPush {
    #[command(flatten)]
    pub common: PushCommon,

    /// Ask the Datadog Agent (GET /info) whether it accepts profiles, say what is wrong if not,
    /// and exit: nothing is pushed.
    #[arg(long)]
    pub check: bool,

    #[command(flatten)]
    pub datadog: DatadogArgs,
}

/// Send a capture's windows as OpenTelemetry profiles.
#[derive(Debug, Args)]
pub struct OtlpPush {
    #[command(flatten)]
    pub common: PushCommon,

    #[command(flatten)]
    pub otlp: OtlpArgs,
}

/// What every destination takes.
#[derive(Debug, Args)]
pub struct PushCommon {
    /// Capture file to read.
    #[arg(short, long, value_name = "FILE", default_value = "amprof.data")]
    pub input: PathBuf,

    /// Only these windows (indices or ranges, comma-separated: 3,5..7), e.g. those that failed.
    #[arg(long, value_name = "N|A..B", value_delimiter = ',')]
    pub windows: Vec<WindowRange>,

    /// Only these processes (comma-separated or repeated).
    #[arg(short, long, value_name = "PID", value_delimiter = ',')]
    pub pid: Vec<u32>,

    /// Only processes with these names (comma-separated or repeated).
    #[arg(short, long, value_name = "NAME", value_delimiter = ',')]
    pub comm: Vec<String>,

    /// Write each request (headers and body) to files in the -o directory instead of sending.
    #[arg(long, requires = "output")]
    pub dry_run: bool,

    /// Directory for --dry-run.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    pub send: SendArgs,

    /// Print the summary as JSON on standard output.
    #[arg(long)]
    pub json: bool,

    /// No progress bar: only the final summary line.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Flags of `push datadog` (but `--check`, a command of its own).
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Datadog")]
pub struct DatadogArgs {
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
    // A bare URL in --help and the man page, as users copy it.
    #[allow(rustdoc::bare_urls)]
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

/// Flags of `push otlp`. Each falls back to the standard OpenTelemetry variables.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "OTLP (opentelemetry-proto v1.10.0, profiles v1development)")]
pub struct OtlpArgs {
    /// OTLP endpoint: a base URL (http/protobuf appends /v1development/profiles) or, for gRPC,
    /// a URL or host:port. Else $OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT (a full URL, used as is),
    /// $OTEL_EXPORTER_OTLP_ENDPOINT, or http://localhost:4318 (grpc: http://localhost:4317).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// OTLP transport. Else $OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL, $OTEL_EXPORTER_OTLP_PROTOCOL,
    /// or http/protobuf.
    #[arg(long, value_name = "PROTOCOL", value_parser = ["http/protobuf", "grpc"])]
    pub protocol: Option<String>,

    /// gRPC without TLS for an endpoint given as host:port (an http:// or https:// endpoint says
    /// it itself). Else $OTEL_EXPORTER_OTLP_PROFILES_INSECURE or $OTEL_EXPORTER_OTLP_INSECURE.
    #[arg(long)]
    pub insecure: bool,

    /// Request compression. Else $OTEL_EXPORTER_OTLP_PROFILES_COMPRESSION,
    /// $OTEL_EXPORTER_OTLP_COMPRESSION, or gzip over HTTP and none over gRPC.
    #[arg(long, value_name = "ALGORITHM", value_parser = ["gzip", "none"])]
    pub compression: Option<String>,

    /// An extra request header, e.g. for a token (repeatable). Added to
    /// $OTEL_EXPORTER_OTLP_HEADERS and $OTEL_EXPORTER_OTLP_PROFILES_HEADERS (name=value,...),
    /// which keep secrets out of process listings. Header values are never printed.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,

    /// PEM file of the certificate authorities to trust for TLS (besides the system's). Else
    /// $OTEL_EXPORTER_OTLP_PROFILES_CERTIFICATE or $OTEL_EXPORTER_OTLP_CERTIFICATE.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Largest request (encoded, before compression), e.g. 4MiB: windows are batched up to it,
    /// and a window larger on its own is split by process. gRPC servers refuse more than 4 MiB
    /// by default.
    #[arg(long, value_name = "BYTES", default_value = "4MiB", value_parser = parse_size)]
    pub max_request_size: usize,
}

/// How requests are sent: shared by `push` and `record --push-to`.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Sending")]
pub struct SendArgs {
    /// Longest wait for one request. Default: 10s; for otlp,
    /// $OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT or $OTEL_EXPORTER_OTLP_TIMEOUT (milliseconds) if set.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Retries of a request after a retryable failure (connection refused, 429, 5xx), 0 to 10.
    /// Default: 3.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: Option<u32>,
}

impl SendArgs {
    /// The flag given, if any (for `record`, where these need `--push-to`).
    pub fn given(&self) -> Option<&'static str> {
        [
            ("--timeout", self.timeout.is_some()),
            ("--retries", self.retries.is_some()),
        ]
        .into_iter()
        .find_map(|(flag, given)| given.then_some(flag))
    }

    pub fn retries(&self) -> u32 {
        self.retries.unwrap_or(3)
    }

    /// The request timeout for `to` (`datadog` or `otlp`): the flag, else (OTLP) the standard
    /// setting, else 10 s.
    pub fn timeout(&self, to: Backend) -> Result<Duration> {
        match self.timeout {
            Some(timeout) => Ok(timeout),
            None if to == Backend::Otlp => otlp::timeout_setting(),
            None => Ok(Duration::from_secs(10)),
        }
    }
}

impl From<DatadogArgs> for DatadogConfig {
    fn from(args: DatadogArgs) -> Self {
        Self {
            agent_url: args.agent_url,
            agentless: args.agentless,
            site: args.site,
            intake_url: args.intake_url,
            service: args.service,
            env: args.env,
            service_version: args.service_version,
            tags: args.tags,
            period: args.period,
        }
    }
}

impl From<OtlpArgs> for OtlpConfig {
    fn from(args: OtlpArgs) -> Self {
        Self {
            endpoint: args.endpoint,
            protocol: args.protocol,
            insecure: args.insecure,
            compression: args.compression,
            headers: args.headers,
            ca_cert: args.ca_cert,
            max_request_size: args.max_request_size,
        }
    }
}

impl PushCommon {
    /// The options of the push, with the request `timeout` resolved.
    /// Also what may be shown as it runs.
    fn options(self, timeout: Duration) -> Result<(PushOptions, Show)> {
        let show = Show {
            quiet: self.quiet,
            json: self.json,
        };
        if self.output.is_some() && !self.dry_run {
            return Err(usage(
                "-o/--output is the directory of --dry-run: add --dry-run",
            ));
        }
        let options = PushOptions {
            input: self.input,
            selection: Selection {
                windows: self.windows.into_iter().map(|w| w.0).collect(),
                pids: self.pid,
                comms: self.comm,
                // A push sends every kind of sample the capture has, each as its own type.
                event: Event::Wall,
            },
            dry_run: if self.dry_run { self.output } else { None },
            timeout,
            retries: self.send.retries(),
        };
        Ok((options, show))
    }
}

/// Runs the push (or `datadog --check`) and prints its summary.
pub fn run(args: PushArgs) -> Result<()> {
    let (options, show, mut destination) = match args.destination {
        PushTo::Datadog(push) => {
            let config = DatadogConfig::from(push.datadog);
            let timeout = push.common.send.timeout(Backend::Datadog)?;
            let (options, show) = push.common.options(timeout)?;
            if push.check {
                let report = datadog::check(&config, options.timeout)?;
                if show.json {
                    crate::text::write_json(&mut std::io::stdout().lock(), &report)?;
                    println!();
                } else {
                    println!("{}", report.line());
                }
                return Ok(());
            }
            (options, show, datadog::destination(&config)?)
        }
        PushTo::Otlp(push) => {
            let timeout = push.common.send.timeout(Backend::Otlp)?;
            let (options, show) = push.common.options(timeout)?;
            let destination = otlp::destination(&OtlpConfig::from(push.otlp))?;
            (options, show, destination)
        }
    };
    let mut progress = PushProgress::new(show);
    let summary = push::push(&options, destination.as_mut(), &mut progress)?;
    if show.json {
        crate::text::write_json(&mut std::io::stdout().lock(), &summary)?;
        println!();
    }
    if !show.quiet || summary.failed > 0 {
        eprintln!("amprof: {}", summary_line(&options, &summary));
    }
    push::check_summary(&summary)
}

/// `pushed 3 of 3 windows to ... (12 KiB in 0.1 s)`.
fn summary_line(options: &PushOptions, summary: &PushSummary) -> String {
    let (verb, to) = match &options.dry_run {
        // Nothing went anywhere: say where the requests are, not where they would have gone.
        Some(dir) => (
            "wrote the requests of",
            format!("{} for {}", dir.display(), summary.destination),
        ),
        None => ("pushed", summary.destination.clone()),
    };
    let total = summary.windows.len() as u64;
    format!(
        "{verb} {} of {total} {} to {to} ({} KiB in {:.1} s)",
        summary.sent,
        super::plural(total, "window", "windows"),
        summary.bytes.div_ceil(1024),
        summary.seconds
    )
}

impl DatadogArgs {
    /// The first flag given, if any (for `record`, where these need `--push-to datadog`).
    pub fn given(&self) -> Option<&'static str> {
        [
            ("--agent-url", self.agent_url.is_some()),
            ("--agentless", self.agentless),
            ("--site", self.site.is_some()),
            ("--intake-url", self.intake_url.is_some()),
            ("--service", self.service.is_some()),
            ("--env", self.env.is_some()),
            ("--version", self.service_version.is_some()),
            ("--tag", !self.tags.is_empty()),
            ("--period", self.period.is_some()),
        ]
        .into_iter()
        .find_map(|(flag, given)| given.then_some(flag))
    }
}

impl OtlpArgs {
    /// The first flag given, if any (for `record`, where these need `--push-to otlp`).
    pub fn given(&self) -> Option<&'static str> {
        [
            ("--endpoint", self.endpoint.is_some()),
            ("--protocol", self.protocol.is_some()),
            ("--insecure", self.insecure),
            ("--compression", self.compression.is_some()),
            ("--header", !self.headers.is_empty()),
            ("--ca-cert", self.ca_cert.is_some()),
            (
                "--max-request-size",
                self.max_request_size != DEFAULT_MAX_REQUEST_SIZE,
            ),
        ]
        .into_iter()
        .find_map(|(flag, given)| given.then_some(flag))
    }
}

/// `--max-request-size` without the flag: 4 MiB, what gRPC servers take by default.
const DEFAULT_MAX_REQUEST_SIZE: usize = 4 << 20;
