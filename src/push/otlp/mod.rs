//! `amprof push otlp`: OpenTelemetry profiles over OTLP/HTTP (protobuf) or OTLP/gRPC.
//!
//! The profiles signal is still `v1development`, and its field numbers changed between proto
//! releases: amprof speaks exactly opentelemetry-proto **v1.10.0** (as vendored by the
//! `opentelemetry-proto` crate 0.33). A receiver built on another release may misread it.
//!
//! - [`crate::encode::otlp`]: windows into `ExportProfilesServiceRequest`s, batched under a
//!   size limit.
//! - [`transport`]: one attempt to send one request, over HTTP (reqwest) or gRPC (tonic), and
//!   what the answer means for retries (the OTLP specification's rules).
//! - here: the command line and the standard `OTEL_EXPORTER_OTLP_*` settings, resolved once.
//!
//! Precedence, as in every OpenTelemetry exporter: a command-line flag, then the
//! profiles-specific variable (`OTEL_EXPORTER_OTLP_PROFILES_*`), then the generic one
//! (`OTEL_EXPORTER_OTLP_*`), then the default.

pub mod transport;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use prost::Message as _;

use self::transport::Transport;
use super::{Attempt, Destination, Request, http::without_credentials};
use crate::encode::otlp::{EncodeSettings, Encoded, RequestEncoder};
use crate::{
    capture::{Meta, Window},
    error::usage,
};

/// The proto release amprof speaks, for messages and `--help`.
pub const PROTO_VERSION: &str = "opentelemetry-proto v1.10.0 (profiles v1development)";

/// The OTLP/HTTP path of the profiles signal.
pub const HTTP_PATH: &str = "/v1development/profiles";

/// What the user asked of `push otlp` (flags; `cli` fills it). Each setting falls back to the
/// standard OpenTelemetry variables in [`Settings::resolve`].
#[derive(Clone, Debug, Default)]
pub struct OtlpConfig {
    /// OTLP endpoint: a base URL (http/protobuf appends /v1development/profiles) or, for gRPC,
    /// a URL or host:port. Else $OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT (a full URL, used as is),
    /// $OTEL_EXPORTER_OTLP_ENDPOINT, or http://localhost:4318 (grpc: http://localhost:4317).
    pub endpoint: Option<String>,

    /// OTLP transport. Else $OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL, $OTEL_EXPORTER_OTLP_PROTOCOL,
    /// or http/protobuf.
    pub protocol: Option<String>,

    /// gRPC without TLS for an endpoint given as host:port (an http:// or https:// endpoint says
    /// it itself). Else $OTEL_EXPORTER_OTLP_PROFILES_INSECURE or $OTEL_EXPORTER_OTLP_INSECURE.
    pub insecure: bool,

    /// Request compression. Else $OTEL_EXPORTER_OTLP_PROFILES_COMPRESSION,
    /// $OTEL_EXPORTER_OTLP_COMPRESSION, or gzip over HTTP and none over gRPC.
    pub compression: Option<String>,

    /// An extra request header, e.g. for a token (repeatable). Added to
    /// $OTEL_EXPORTER_OTLP_HEADERS and $OTEL_EXPORTER_OTLP_PROFILES_HEADERS (name=value,...),
    /// which keep secrets out of process listings. Header values are never printed.
    pub headers: Vec<String>,

    /// PEM file of the certificate authorities to trust for TLS (besides the system's). Else
    /// $OTEL_EXPORTER_OTLP_PROFILES_CERTIFICATE or $OTEL_EXPORTER_OTLP_CERTIFICATE.
    pub ca_cert: Option<PathBuf>,

    /// Largest request (encoded, before compression), e.g. 4MiB: windows are batched up to it,
    /// and a window larger on its own is split by process. gRPC servers refuse more than 4 MiB
    /// by default.
    pub max_request_size: usize,
}

/// The transport of OTLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    HttpProtobuf,
    Grpc,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::Grpc => "grpc",
        }
    }
}

/// Everything `--to otlp` needs, resolved from the flags and the environment.
#[derive(Debug)]
pub struct Settings {
    pub protocol: Protocol,
    /// HTTP: the URL requests are posted to. gRPC: `http://` or `https://` and the authority.
    pub url: String,
    pub gzip: bool,
    /// Extra headers (or gRPC metadata); values are secret.
    pub headers: Vec<(String, String)>,
    /// PEM certificate authorities to trust.
    pub ca_pem: Option<Vec<u8>>,
    /// Secrets that are not header values (the basic-auth token), hidden in server answers.
    pub passwords: Vec<String>,
    pub encode: EncodeSettings,
}

/// The user of OTLP basic authentication (with [`BASIC_AUTH_TOKEN`]), read from the environment
/// only: a flag would show the token in process listings.
pub const BASIC_AUTH_USER: &str = "AMPROF_OTLP_USER";
/// The token (or password) of OTLP basic authentication.
pub const BASIC_AUTH_TOKEN: &str = "AMPROF_OTLP_TOKEN";

/// `(user, token)` of basic authentication, if the environment gives both; one without the
/// other is an error (it names the variables, never the values).
fn basic_auth(env: &impl Fn(&str) -> Option<String>) -> Result<Option<(String, String)>> {
    let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    match (get(BASIC_AUTH_USER), get(BASIC_AUTH_TOKEN)) {
        (None, None) => Ok(None),
        (Some(user), Some(token)) => {
            if user.contains(':') {
                return Err(usage(format!(
                    "{BASIC_AUTH_USER} holds a `:`, which basic authentication cannot carry"
                )));
            }
            Ok(Some((user.trim().to_string(), token.trim().to_string())))
        }
        _ => Err(usage(format!(
            "basic authentication needs both {BASIC_AUTH_USER} and {BASIC_AUTH_TOKEN}"
        ))),
    }
}

/// The variable of the profiles signal for `name`, else the generic one, as (variable, value);
/// empty means unset.
fn signal_setting(name: &str, env: &impl Fn(&str) -> Option<String>) -> Option<(String, String)> {
    [
        format!("OTEL_EXPORTER_OTLP_PROFILES_{name}"),
        format!("OTEL_EXPORTER_OTLP_{name}"),
    ]
    .into_iter()
    .find_map(|var| env(&var).filter(|v| !v.trim().is_empty()).map(|v| (var, v)))
}

/// The request timeout without `--timeout`: `OTEL_EXPORTER_OTLP_(PROFILES_)TIMEOUT` (in
/// milliseconds), else the specification's default, 10 s.
pub fn timeout_setting() -> Result<Duration> {
    timeout_from(|name| std::env::var(name).ok())
}

fn timeout_from(env: impl Fn(&str) -> Option<String>) -> Result<Duration> {
    let Some((var, value)) = signal_setting("TIMEOUT", &env) else {
        return Ok(Duration::from_secs(10));
    };
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| {
            usage(format!(
                "{var}=`{value}` is not a timeout in milliseconds (e.g. 10000)"
            ))
        })
}

impl Settings {
    /// Resolves `args` against the environment (`env` reads a variable).
    pub fn resolve(config: &OtlpConfig, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let setting = |name: &str| signal_setting(name, &env);
        let protocol = match config
            .protocol
            .clone()
            .or_else(|| setting("PROTOCOL").map(|s| s.1))
        {
            None => Protocol::HttpProtobuf,
            Some(p) => match p.trim() {
                "http/protobuf" => Protocol::HttpProtobuf,
                "grpc" => Protocol::Grpc,
                other => {
                    return Err(usage(format!(
                        "OTLP protocol `{other}` is not supported: use http/protobuf or grpc"
                    )));
                }
            },
        };
        let insecure = config.insecure
            || setting("INSECURE").is_some_and(|(_, v)| v.trim().eq_ignore_ascii_case("true"));
        let url = match (&config.endpoint, setting("ENDPOINT")) {
            (Some(flag), _) => endpoint_url(protocol, flag, true, insecure, "--endpoint")?,
            (None, Some((var, value))) => {
                let base = !var.contains("_PROFILES_");
                endpoint_url(protocol, &value, base, insecure, &var)?
            }
            (None, None) => match protocol {
                Protocol::HttpProtobuf => format!("http://localhost:4318{HTTP_PATH}"),
                Protocol::Grpc => "http://localhost:4317".into(),
            },
        };
        let gzip = match config
            .compression
            .clone()
            .or_else(|| setting("COMPRESSION").map(|s| s.1))
        {
            None => protocol == Protocol::HttpProtobuf,
            Some(c) => match c.trim() {
                "gzip" => true,
                "none" => false,
                other => {
                    return Err(usage(format!(
                        "OTLP compression `{other}` is not supported: use gzip or none"
                    )));
                }
            },
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut add_header = |name: String, value: String| {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
            headers.push((name, value));
        };
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_PROFILES_HEADERS",
        ] {
            if let Some(list) = env(var) {
                for (name, value) in parse_key_values(&list, var)? {
                    add_header(name, value);
                }
            }
        }
        for header in &config.headers {
            let (name, value) = header.split_once('=').ok_or_else(|| {
                usage("--header wants NAME=VALUE, e.g. --header x-scope-orgid=tenant1")
            })?;
            add_header(
                name.trim().to_string(),
                percent_decode(value.trim(), "--header")?,
            );
        }
        // Basic authentication (Grafana Cloud, Pyroscope) from the environment only, so that the
        // token never shows in process listings.
        let mut passwords = Vec::new();
        if let Some((user, token)) = basic_auth(&env)? {
            if headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            {
                return Err(usage(format!(
                    "{BASIC_AUTH_USER} and an authorization header both say how to authenticate: keep one"
                )));
            }
            let pair = format!("{user}:{token}");
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair.as_bytes());
            headers.push(("authorization".into(), format!("Basic {encoded}")));
            passwords.push(token);
        }
        for (name, value) in &headers {
            transport::check_header(name, value)?;
        }
        let ca_file = config
            .ca_cert
            .clone()
            .or_else(|| setting("CERTIFICATE").map(|(_, v)| PathBuf::from(v.trim())));
        let ca_pem = match ca_file {
            Some(path) => {
                let pem = std::fs::read(&path).map_err(|e| {
                    usage(format!(
                        "cannot read the CA certificate {}: {e}",
                        path.display()
                    ))
                })?;
                // Checked here, for gRPC too (tonic would only fail at the first connection).
                if !matches!(reqwest::Certificate::from_pem_bundle(&pem), Ok(c) if !c.is_empty()) {
                    return Err(usage(format!(
                        "the CA certificate file {} holds no PEM certificate",
                        path.display()
                    )));
                }
                Some(pem)
            }
            None => None,
        };
        let service_name = env("OTEL_SERVICE_NAME").filter(|s| !s.trim().is_empty());
        let mut resource_attributes = match env("OTEL_RESOURCE_ATTRIBUTES") {
            Some(list) => parse_key_values(&list, "OTEL_RESOURCE_ATTRIBUTES")?,
            None => Vec::new(),
        };
        // `OTEL_SERVICE_NAME` wins over a `service.name` in the attributes.
        let service_name = service_name.or_else(|| {
            resource_attributes
                .iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.clone())
        });
        resource_attributes.retain(|(k, _)| k != "service.name");
        if config.max_request_size < 1024 {
            return Err(usage("--max-request-size must be at least 1KiB"));
        }
        Ok(Self {
            protocol,
            url,
            gzip,
            headers,
            ca_pem,
            passwords,
            encode: EncodeSettings {
                service_name,
                resource_attributes,
                max_request_bytes: config.max_request_size,
            },
        })
    }
}

/// The URL to send to, from an endpoint setting. `base`: a base URL, to which OTLP/HTTP appends
/// the signal's path (unless it is there already).
fn endpoint_url(
    protocol: Protocol,
    endpoint: &str,
    base: bool,
    insecure: bool,
    source: &str,
) -> Result<String> {
    let endpoint = endpoint.trim();
    let bad = |why: &str| {
        usage(format!(
            "{source}: `{}` is not a usable OTLP endpoint: {why}",
            without_credentials(endpoint)
        ))
    };
    let (scheme, rest) = match endpoint.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, endpoint),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    match protocol {
        Protocol::HttpProtobuf => {
            let scheme = match scheme.as_deref() {
                Some(s @ ("http" | "https")) => s.to_string(),
                Some(_) => return Err(bad("OTLP/HTTP needs http:// or https://")),
                None => return Err(bad("OTLP/HTTP needs a URL, e.g. http://localhost:4318")),
            };
            let path = path.trim_end_matches('/');
            let path = if base && !path.ends_with(HTTP_PATH) {
                format!("{path}{HTTP_PATH}")
            } else if path.is_empty() {
                "/".to_string()
            } else {
                path.to_string()
            };
            let url = format!("{scheme}://{authority}{path}");
            reqwest::Url::parse(&url).map_err(|e| bad(&e.to_string()))?;
            Ok(url)
        }
        Protocol::Grpc => {
            let scheme = match scheme.as_deref() {
                Some(s @ ("http" | "https")) => s.to_string(),
                Some(_) => return Err(bad("OTLP/gRPC needs http://, https:// or host:port")),
                // The specification: TLS unless told otherwise.
                None if insecure => "http".into(),
                None => "https".into(),
            };
            let url = format!("{scheme}://{authority}");
            url.parse::<tonic::transport::Uri>()
                .map_err(|e| bad(&e.to_string()))?;
            Ok(url)
        }
    }
}

/// `key=value,key=value` with percent-encoded values, as in `OTEL_EXPORTER_OTLP_HEADERS` and
/// `OTEL_RESOURCE_ATTRIBUTES`.
fn parse_key_values(list: &str, source: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for (n, item) in list.split(',').map(str::trim).enumerate() {
        if item.is_empty() {
            continue;
        }
        let Some((key, value)) = item.split_once('=') else {
            // Not the entry itself: it may be a secret.
            return Err(usage(format!("{source}: entry {} is not key=value", n + 1)));
        };
        let key = percent_decode(key.trim(), source)?;
        if key.is_empty() {
            return Err(usage(format!("{source}: an entry has an empty key")));
        }
        pairs.push((key, percent_decode(value.trim(), source)?));
    }
    Ok(pairs)
}

/// Decodes `%XX` escapes (the W3C Baggage encoding the OTLP variables use); a `%` not followed
/// by two hex digits is an error, not a value sent half-decoded.
fn percent_decode(text: &str, source: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let malformed = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if malformed {
        return Err(usage(format!(
            "{source}: a `%` is not followed by two hex digits"
        )));
    }
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| usage(format!("{source}: a value is not UTF-8 once decoded")))
}

/// The `push otlp` destination.
pub struct Otlp {
    settings: Settings,
    encoder: RequestEncoder,
    transport: Transport,
}

/// The destination `args` (and the environment) describe.
pub fn destination(config: &OtlpConfig) -> Result<Box<dyn Destination>> {
    let settings = Settings::resolve(config, |name| std::env::var(name).ok())?;
    let transport = Transport::new(&settings)?;
    Ok(Box::new(Otlp {
        encoder: RequestEncoder::new(settings.encode.clone()),
        settings,
        transport,
    }))
}

impl Otlp {
    /// The `Request` of an encoded message: the body as it goes on the wire.
    fn request(&self, encoded: Encoded) -> Result<Request> {
        let label = match encoded.windows.as_slice() {
            [] => "no window".to_string(),
            [one] => format!("window {one}"),
            [first, .., last] => format!("windows {first}-{last}"),
        };
        let mut headers = Vec::new();
        // Nothing to send when the windows had no samples (an empty request is refused by some
        // receivers, Pyroscope's, and says nothing): no body and no headers mark it empty.
        let body = if encoded.message.resource_profiles.is_empty() {
            Vec::new()
        } else {
            let protobuf = encoded.message.encode_to_vec();
            match self.settings.protocol {
                Protocol::HttpProtobuf => {
                    headers.push(("content-type".into(), "application/x-protobuf".into()));
                    if self.settings.gzip {
                        headers.push(("content-encoding".into(), "gzip".into()));
                        transport::gzip(&protobuf).context("cannot compress a request")?
                    } else {
                        protobuf
                    }
                }
                Protocol::Grpc => {
                    headers.push(("content-type".into(), "application/grpc".into()));
                    if self.settings.gzip {
                        headers.push(("grpc-encoding".into(), "gzip".into()));
                    }
                    protobuf
                }
            }
        };
        Ok(Request {
            windows: encoded.windows,
            label,
            body,
            headers,
        })
    }
}

impl Destination for Otlp {
    fn describe(&self) -> String {
        format!(
            "the OTLP endpoint {} ({})",
            without_credentials(&self.settings.url),
            self.settings.protocol.name()
        )
    }

    fn encode(&mut self, meta: &Meta, window: &Window) -> Result<Vec<Request>> {
        self.encoder
            .push(meta, window)
            .into_iter()
            .map(|encoded| self.request(encoded))
            .collect()
    }

    fn flush(&mut self, _meta: &Meta) -> Result<Vec<Request>> {
        self.encoder
            .finish()
            .into_iter()
            .map(|encoded| self.request(encoded))
            .collect()
    }

    fn send(&mut self, request: &Request, timeout: Duration) -> Attempt {
        self.transport.send(request, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(config: &OtlpConfig, vars: &[(&str, &str)]) -> Result<Settings> {
        Settings::resolve(config, |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    fn args() -> OtlpConfig {
        OtlpConfig {
            max_request_size: 4 << 20,
            ..OtlpConfig::default()
        }
    }

    #[test]
    fn defaults_follow_the_specification() {
        let s = resolve(&args(), &[]).unwrap();
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.url, "http://localhost:4318/v1development/profiles");
        assert!(s.gzip);
        let s = resolve(&args(), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap();
        assert_eq!(s.url, "http://localhost:4317");
        assert!(!s.gzip);
    }

    #[test]
    fn endpoints_resolve_flag_then_profiles_then_generic() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://gw.example/otlp/"),
            (
                "OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT",
                "http://p.example:9/custom",
            ),
        ];
        assert_eq!(
            resolve(&args(), &vars).unwrap().url,
            "http://p.example:9/custom"
        );
        assert_eq!(
            resolve(&args(), &vars[..1]).unwrap().url,
            "https://gw.example/otlp/v1development/profiles"
        );
        let flag = OtlpConfig {
            endpoint: Some("http://c:4318/v1development/profiles".into()),
            ..args()
        };
        assert_eq!(
            resolve(&flag, &vars).unwrap().url,
            "http://c:4318/v1development/profiles"
        );
        let grpc = OtlpConfig {
            endpoint: Some("collector:4317".into()),
            protocol: Some("grpc".into()),
            ..args()
        };
        assert_eq!(resolve(&grpc, &[]).unwrap().url, "https://collector:4317");
        let insecure = OtlpConfig {
            insecure: true,
            ..grpc
        };
        assert_eq!(
            resolve(&insecure, &[]).unwrap().url,
            "http://collector:4317"
        );
        let no_scheme = OtlpConfig {
            endpoint: Some("collector:4318".into()),
            ..args()
        };
        assert!(resolve(&no_scheme, &[]).is_err());
    }

    /// A signal-specific endpoint (the profiles variable) is used as given; a base endpoint
    /// (the flag, the generic variable) gets the path, unless it already ends with it.
    #[test]
    fn endpoints_get_the_signal_path_once() {
        for (flag, url) in [
            ("http://h:4318", "http://h:4318/v1development/profiles"),
            ("http://h:4318/", "http://h:4318/v1development/profiles"),
            (
                "http://h:4318/v1development/profiles",
                "http://h:4318/v1development/profiles",
            ),
            (
                "http://h:4318/v1development/profiles/",
                "http://h:4318/v1development/profiles",
            ),
            (
                "http://h:4318/prefix",
                "http://h:4318/prefix/v1development/profiles",
            ),
        ] {
            let config = OtlpConfig {
                endpoint: Some(flag.into()),
                ..args()
            };
            assert_eq!(resolve(&config, &[]).unwrap().url, url, "{flag}");
        }
        let signal = [("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", "http://h:1/exact")];
        assert_eq!(resolve(&args(), &signal).unwrap().url, "http://h:1/exact");
    }

    #[test]
    fn headers_and_attributes_are_percent_decoded_and_merged() {
        let vars = [
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20a,x-org=1",
            ),
            ("OTEL_EXPORTER_OTLP_PROFILES_HEADERS", "X-Org=2"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,service.name=web",
            ),
        ];
        let flags = OtlpConfig {
            headers: vec!["x-extra=%3D".into()],
            ..args()
        };
        let s = resolve(&flags, &vars).unwrap();
        assert_eq!(
            s.headers,
            vec![
                ("authorization".to_string(), "Bearer a".to_string()),
                ("X-Org".to_string(), "2".to_string()),
                ("x-extra".to_string(), "=".to_string()),
            ]
        );
        assert_eq!(s.encode.service_name.as_deref(), Some("web"));
        assert_eq!(
            s.encode.resource_attributes,
            vec![("deployment.environment".to_string(), "prod".to_string())]
        );
        let s = resolve(&args(), &[("OTEL_SERVICE_NAME", "api"), vars[2]]).unwrap();
        assert_eq!(s.encode.service_name.as_deref(), Some("api"));
    }

    #[test]
    fn bad_settings_are_usage_errors_that_do_not_show_secrets() {
        for vars in [
            [("OTEL_EXPORTER_OTLP_HEADERS", "authorization")],
            [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
            [("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")],
            [("OTEL_RESOURCE_ATTRIBUTES", "a=%zz")],
        ] {
            let error = resolve(&args(), &vars).unwrap_err();
            assert_eq!(crate::error::exit_of(&error), crate::error::Exit::Usage);
        }
        let error = resolve(
            &args(),
            &[("OTEL_EXPORTER_OTLP_HEADERS", "secret-token-value")],
        )
        .unwrap_err();
        assert!(!error.to_string().contains("token-value"), "{error}");
        let bad_value = OtlpConfig {
            headers: vec!["authorization=line\nbreak".into()],
            ..args()
        };
        let error = resolve(&bad_value, &[]).unwrap_err();
        assert!(!error.to_string().contains("break"), "{error}");
    }

    #[test]
    fn basic_auth_comes_from_the_environment() {
        let vars = [
            ("AMPROF_OTLP_USER", "123456"),
            ("AMPROF_OTLP_TOKEN", "glc_s3cret"),
        ];
        let s = resolve(&args(), &vars).unwrap();
        assert_eq!(
            s.headers,
            [(
                "authorization".to_string(),
                "Basic MTIzNDU2OmdsY19zM2NyZXQ=".to_string()
            )]
        );
        assert_eq!(s.passwords, ["glc_s3cret"]);
        let error = resolve(&args(), &vars[..1]).unwrap_err().to_string();
        assert!(error.contains("needs both"), "{error}");
        let both = OtlpConfig {
            headers: vec!["Authorization=Bearer x".into()],
            ..args()
        };
        assert!(resolve(&both, &vars).is_err());
    }

    #[test]
    fn timeouts_are_milliseconds() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(timeout_from(env(&[])).unwrap(), Duration::from_secs(10));
        assert_eq!(
            timeout_from(env(&[
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT", "")
            ]))
            .unwrap(),
            Duration::from_millis(2500)
        );
        assert!(timeout_from(env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")])).is_err());
    }
}
