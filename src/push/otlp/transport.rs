//! One attempt to send one request, over OTLP/HTTP or OTLP/gRPC, and what the answer means.
//!
//! The push framework is synchronous; this owns a small single-threaded tokio runtime and
//! blocks on it. The client (reqwest, tonic) is built once and keeps its connection between
//! requests. TLS is rustls with the system's certificate authorities, Mozilla's, and those of
//! `--ca-cert`.
//!
//! What is retried follows the OTLP specification: over HTTP, 429, 502, 503 and 504 (honouring
//! `Retry-After`), and failures to connect or to get an answer in time; over gRPC, CANCELLED,
//! DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS, and RESOURCE_EXHAUSTED
//! only when the server says when to retry (a `RetryInfo`). Anything else fails for good. A
//! `partial_success` in an accepted answer is reported as a note. Redirects are not followed
//! (they would take the headers, API keys and tokens, to another host): a 3xx fails, naming
//! the scheme and host it led to.
//!
//! What a server answers is read up to [`MAX_RESPONSE_BYTES`] (an OTLP answer is small; a
//! server that streams without end must not fill memory), and header values it echoes are
//! hidden before the text is cut short for messages.

use std::{io::Write as _, str::FromStr as _, time::Duration};

use anyhow::{Context as _, Result};
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesPartialSuccess, ExportProfilesServiceRequest, ExportProfilesServiceResponse,
    profiles_service_client::ProfilesServiceClient,
};
use prost::Message as _;
use tonic::{
    Code,
    codec::CompressionEncoding,
    metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};
use tonic_types::StatusExt as _;

use super::{Protocol, Settings};
use crate::{
    error::usage,
    push::{
        Attempt, Request,
        http::{Secrets, error_chain, retry_after, server_text, url_credentials},
    },
    text::printable,
};

const USER_AGENT: &str = concat!("amprof/", env!("CARGO_PKG_VERSION"));

/// Bytes of an HTTP answer read, at most.
const MAX_RESPONSE_BYTES: usize = 64 << 10;

/// A connection to the endpoint, ready to send requests.
pub struct Transport {
    runtime: tokio::runtime::Runtime,
    client: Client,
    /// The header values and the URL's user and password, hidden in what the server answers.
    secrets: Secrets,
}

enum Client {
    Http {
        client: reqwest::Client,
        url: String,
        headers: reqwest::header::HeaderMap,
    },
    Grpc {
        channel: Channel,
        metadata: MetadataMap,
        gzip: bool,
    },
}

/// Checks that a header can be sent over HTTP and as gRPC metadata; errors name it, never show
/// its value.
pub fn check_header(name: &str, value: &str) -> Result<()> {
    reqwest::header::HeaderName::from_str(name)
        .map_err(|_| usage(format!("`{name}` is not a valid header name")))?;
    reqwest::header::HeaderValue::from_str(value)
        .ok()
        .and_then(|_| AsciiMetadataValue::try_from(value).ok())
        .ok_or_else(|| {
            usage(format!(
                "the value of header `{name}` is not valid in a header"
            ))
        })?;
    AsciiMetadataKey::from_str(&name.to_ascii_lowercase())
        .map_err(|_| usage(format!("`{name}` is not a valid gRPC metadata key")))?;
    Ok(())
}

/// Gzips `data` (OTLP/HTTP's `Content-Encoding: gzip`).
pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::default(),
    );
    encoder.write_all(data)?;
    encoder.finish()
}

impl Transport {
    pub fn new(settings: &Settings) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the I/O runtime")?;
        let client = match settings.protocol {
            Protocol::HttpProtobuf => {
                // No redirects: reqwest would send the headers (API keys, tokens) to wherever
                // the server says, even from https to http.
                let mut builder = reqwest::Client::builder()
                    .user_agent(USER_AGENT)
                    .redirect(reqwest::redirect::Policy::none())
                    .use_rustls_tls();
                if let Some(pem) = &settings.ca_pem {
                    for certificate in reqwest::Certificate::from_pem_bundle(pem)
                        .map_err(|e| usage(format!("the CA certificate file is not PEM: {e}")))?
                    {
                        builder = builder.add_root_certificate(certificate);
                    }
                }
                let mut headers = reqwest::header::HeaderMap::new();
                for (name, value) in &settings.headers {
                    let mut value = reqwest::header::HeaderValue::from_str(value)
                        .map_err(|_| usage(format!("the value of header `{name}` is not valid")))?;
                    value.set_sensitive(true);
                    let name = reqwest::header::HeaderName::from_str(name)
                        .map_err(|_| usage(format!("`{name}` is not a valid header name")))?;
                    headers.insert(name, value);
                }
                Client::Http {
                    client: builder.build().context("cannot set up the HTTP client")?,
                    url: settings.url.clone(),
                    headers,
                }
            }
            Protocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(settings.url.clone())
                    .map_err(|e| usage(format!("`{}` is not a gRPC endpoint: {e}", settings.url)))?
                    .user_agent(USER_AGENT)
                    .context("cannot set the user agent")?;
                if settings.url.starts_with("https://") {
                    let mut tls = ClientTlsConfig::new().with_enabled_roots();
                    if let Some(pem) = &settings.ca_pem {
                        tls = tls.ca_certificate(Certificate::from_pem(pem));
                    }
                    endpoint = endpoint
                        .tls_config(tls)
                        .context("cannot set up TLS for gRPC")?;
                }
                let mut metadata = MetadataMap::new();
                for (name, value) in &settings.headers {
                    let key = AsciiMetadataKey::from_str(&name.to_ascii_lowercase())
                        .map_err(|_| usage(format!("`{name}` is not a valid gRPC metadata key")))?;
                    let value = AsciiMetadataValue::try_from(value.as_str())
                        .map_err(|_| usage(format!("the value of header `{name}` is not valid")))?;
                    metadata.insert(key, value);
                }
                // The channel's background task lives on our runtime; it connects on first use.
                let _context = runtime.enter();
                Client::Grpc {
                    channel: endpoint.connect_lazy(),
                    metadata,
                    gzip: settings.gzip,
                }
            }
        };
        // The header values, and the user and password of the URL (sent as basic
        // authentication over HTTP, in the authority over gRPC).
        let credentials = url_credentials(&settings.url);
        let secrets = Secrets::new(
            settings
                .headers
                .iter()
                .map(|(_, value)| value.as_str())
                .chain(settings.passwords.iter().map(String::as_str))
                .chain(credentials.iter().map(String::as_str)),
        );
        Ok(Self {
            runtime,
            client,
            secrets,
        })
    }

    /// Sends `request` once, waiting at most `timeout` for the answer.
    pub fn send(&mut self, request: &Request, timeout: Duration) -> Attempt {
        match &self.client {
            Client::Http {
                client,
                url,
                headers,
            } => self.runtime.block_on(send_http(
                client,
                url,
                headers,
                request,
                timeout,
                &self.secrets,
            )),
            Client::Grpc {
                channel,
                metadata,
                gzip,
            } => self.runtime.block_on(send_grpc(
                channel.clone(),
                metadata,
                *gzip,
                request,
                timeout,
                &self.secrets,
            )),
        }
    }
}

async fn send_http(
    client: &reqwest::Client,
    url: &str,
    extra: &reqwest::header::HeaderMap,
    request: &Request,
    timeout: Duration,
    secrets: &Secrets,
) -> Attempt {
    let mut builder = client
        .post(url)
        .timeout(timeout)
        .headers(extra.clone())
        .body(request.body.clone());
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let mut response = match builder.send().await {
        Ok(response) => response,
        Err(e) if e.is_timeout() => return no_answer(timeout),
        // Without the URL: the destination's description says it, credentials hidden.
        Err(e) => return connection_failure(error_chain(&e.without_url())),
    };
    let status = response.status();
    if status.is_redirection() {
        let target = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|location| redirect_target(url, location))
            .map(|target| format!(" (to {target})"))
            .unwrap_or_default();
        return Attempt::Failed {
            reason: format!("HTTP {status}: redirects are not followed{target}"),
        };
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, std::time::SystemTime::now()));
    let protobuf = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("protobuf"));
    // At most MAX_RESPONSE_BYTES of the answer: the rest is not read.
    let mut body = Vec::new();
    while body.len() < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk[..chunk.len().min(MAX_RESPONSE_BYTES - body.len())]);
            }
            Ok(None) => break,
            Err(e) if status.is_success() => {
                let why = if e.is_timeout() {
                    format!("no more within {}", humantime::format_duration(timeout))
                } else {
                    error_chain(&e.without_url())
                };
                return Attempt::Sent {
                    note: Some(format!("accepted, but the answer was cut: {why}")),
                };
            }
            Err(_) => break,
        }
    }
    if status.is_success() {
        // An empty body is an empty (fully successful) response.
        return match ExportProfilesServiceResponse::decode(body.as_slice()) {
            Ok(answer) => Attempt::Sent {
                note: answer
                    .partial_success
                    .as_ref()
                    .and_then(|partial| partial_success_note(partial, secrets)),
            },
            Err(_) => Attempt::Sent {
                note: Some(format!(
                    "accepted (HTTP {status}), with an answer that is not OTLP"
                )),
            },
        };
    }
    let reason = format!(
        "HTTP {status}{}",
        http_error_message(&body, protobuf, secrets)
    );
    match status.as_u16() {
        429 | 502 | 503 | 504 => Attempt::Retry {
            reason,
            after: retry_after,
        },
        _ => Attempt::Failed { reason },
    }
}

/// Where a redirect from `url` to `location` (maybe relative) leads, as `scheme://host:port`:
/// neither the user and password, the path nor the query, which may hold secrets.
fn redirect_target(url: &str, location: &str) -> Option<String> {
    let target = reqwest::Url::parse(url).ok()?.join(location.trim()).ok()?;
    let host = target.host_str()?;
    let port = target.port().map(|p| format!(":{p}")).unwrap_or_default();
    Some(printable(&format!("{}://{host}{port}", target.scheme())).into_owned())
}

/// `: message` from an OTLP/HTTP error body (a `google.rpc.Status`, or text), if any.
fn http_error_message(body: &[u8], protobuf: bool, secrets: &Secrets) -> String {
    let message = if protobuf {
        tonic_types::Status::decode(body)
            .map(|status| status.message)
            .unwrap_or_default()
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    let message = server_text(&message, secrets);
    if message.is_empty() {
        return String::new();
    }
    format!(": {message}")
}

/// The failure of a request that got no answer in time (retried).
fn no_answer(timeout: Duration) -> Attempt {
    Attempt::Retry {
        reason: format!(
            "timed out: no answer within {}",
            humantime::format_duration(timeout)
        ),
        after: None,
    }
}

async fn send_grpc(
    channel: Channel,
    metadata: &MetadataMap,
    gzip: bool,
    request: &Request,
    timeout: Duration,
    secrets: &Secrets,
) -> Attempt {
    let message = match ExportProfilesServiceRequest::decode(request.body.as_slice()) {
        Ok(message) => message,
        Err(e) => {
            return Attempt::Failed {
                reason: format!("the request cannot be decoded: {e}"),
            };
        }
    };
    let mut client = ProfilesServiceClient::new(channel)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_encoding_message_size(usize::MAX);
    if gzip {
        client = client.send_compressed(CompressionEncoding::Gzip);
    }
    let mut grpc_request = tonic::Request::new(message);
    grpc_request.set_timeout(timeout);
    for entry in metadata.iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(key, value) = entry {
            grpc_request
                .metadata_mut()
                .insert(key.clone(), value.clone());
        }
    }
    match tokio::time::timeout(timeout, client.export(grpc_request)).await {
        Err(_) => no_answer(timeout),
        // tonic's own deadline (the request's grpc-timeout) ran out first.
        Ok(Err(status))
            if status.code() == Code::Cancelled
                && status.message() == tonic::TimeoutExpired(()).to_string() =>
        {
            no_answer(timeout)
        }
        Ok(Ok(answer)) => Attempt::Sent {
            note: answer
                .get_ref()
                .partial_success
                .as_ref()
                .and_then(|partial| partial_success_note(partial, secrets)),
        },
        Ok(Err(status)) => grpc_outcome(&status, secrets),
    }
}

/// A failure to connect or to get an answer: retried, unless the server's certificate was
/// refused (rustls says "invalid peer certificate"), which no retry will change.
fn connection_failure(reason: String) -> Attempt {
    if reason.contains("invalid peer certificate") {
        Attempt::Failed { reason }
    } else {
        Attempt::Retry {
            reason,
            after: None,
        }
    }
}

/// What a gRPC error status means for retries.
fn grpc_outcome(status: &tonic::Status, secrets: &Secrets) -> Attempt {
    let delay = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay);
    let mut reason = format!("gRPC {}", code_name(status.code()));
    let message = server_text(status.message(), secrets);
    if !message.is_empty() {
        reason.push_str(&format!(": {message}"));
    }
    let mut source = std::error::Error::source(status);
    // A status of our own (with a cause), not one the server sent.
    let local = source.is_some();
    while let Some(cause) = source {
        let cause_text = server_text(&cause.to_string(), secrets);
        if !reason.contains(&cause_text) {
            reason.push_str(&format!(": {cause_text}"));
        }
        source = cause.source();
    }
    if local && status.code() == Code::Unknown {
        // The connection broke before any gRPC answer: HTTP/1 or TLS where HTTP/2 was expected,
        // or the other way round.
        reason.push_str(
            " (no gRPC answer: is it an OTLP/gRPC endpoint, plaintext for http:// and TLS for https://?)",
        );
    }
    let retryable = match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => delay.is_some(),
        _ => false,
    };
    match (retryable, delay) {
        (false, _) => Attempt::Failed { reason },
        // Without RetryInfo, an UNAVAILABLE may still be a refused certificate.
        (true, None) => connection_failure(reason),
        (true, after) => Attempt::Retry { reason, after },
    }
}

/// The status code as the gRPC specification spells it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The note for an accepted request with a `partial_success`.
fn partial_success_note(
    partial: &ExportProfilesPartialSuccess,
    secrets: &Secrets,
) -> Option<String> {
    let message = server_text(&partial.error_message, secrets);
    match (partial.rejected_profiles, message.is_empty()) {
        (0, true) => None,
        (0, false) => Some(format!("accepted with a warning: {message}")),
        (n, true) => Some(format!("partial success: {n} profiles rejected")),
        (n, false) => Some(format!("partial success: {n} profiles rejected: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_retry_as_the_specification_says() {
        let none = Secrets::default();
        assert!(matches!(
            grpc_outcome(&tonic::Status::unavailable("down"), &none),
            Attempt::Retry { after: None, .. }
        ));
        assert!(matches!(
            grpc_outcome(&tonic::Status::resource_exhausted("full"), &none),
            Attempt::Failed { .. }
        ));
        let with_delay = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "full",
            tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(2))),
        );
        assert!(matches!(
            grpc_outcome(&with_delay, &none),
            Attempt::Retry { after: Some(d), .. } if d == Duration::from_secs(2)
        ));
        assert!(matches!(
            grpc_outcome(&tonic::Status::invalid_argument("bad"), &none),
            Attempt::Failed { .. }
        ));
    }

    #[test]
    fn partial_success_is_noted() {
        let partial = ExportProfilesPartialSuccess {
            rejected_profiles: 2,
            error_message: "too old".into(),
        };
        assert_eq!(
            partial_success_note(&partial, &Secrets::default()).as_deref(),
            Some("partial success: 2 profiles rejected: too old")
        );
        assert_eq!(
            partial_success_note(
                &ExportProfilesPartialSuccess::default(),
                &Secrets::default()
            ),
            None
        );
    }

    #[test]
    fn echoed_secrets_are_hidden_before_messages_are_cut() {
        use crate::push::http::MAX_MESSAGE_CHARS;
        let secrets = Secrets::new(["Bearer s3cret-t0ken"]);
        // The token straddles the cut: hidden first, it cannot show in part.
        let body = format!("{} s3cret-t0ken", "x".repeat(MAX_MESSAGE_CHARS - 5));
        let message = http_error_message(body.as_bytes(), false, &secrets);
        assert!(message.ends_with("x <red..."), "{message}");
        let status = tonic::Status::unauthenticated("no such token: Bearer s3cret-t0ken");
        let Attempt::Failed { reason } = grpc_outcome(&status, &secrets) else {
            panic!("UNAUTHENTICATED is not retried");
        };
        assert_eq!(reason, "gRPC UNAUTHENTICATED: no such token: <redacted>");
    }

    #[test]
    fn redirect_targets_show_no_credentials_path_or_query() {
        let from = "https://gw.example:4318/v1development/profiles";
        for (location, shown) in [
            (
                "http://user:pw@evil.example:8080/x?token=abc",
                "http://evil.example:8080",
            ),
            ("/elsewhere?key=1", "https://gw.example:4318"),
            ("https://[::1]/p", "https://[::1]"),
        ] {
            assert_eq!(redirect_target(from, location).as_deref(), Some(shown));
        }
        assert_eq!(redirect_target(from, "http://"), None);
    }

    #[test]
    fn server_text_cannot_drive_the_terminal() {
        let text = server_text(
            "bad\x1b]52;c;ZXZpbA==\x07 \u{202e}gnp.exe\r\n",
            &Secrets::default(),
        );
        assert_eq!(text, r"bad\x1b]52;c;ZXZpbA==\x07 \u{202e}gnp.exe");
        let partial = ExportProfilesPartialSuccess {
            rejected_profiles: 0,
            error_message: "\x1b[2Jcleared".into(),
        };
        assert_eq!(
            partial_success_note(&partial, &Secrets::default()).as_deref(),
            Some(r"accepted with a warning: \x1b[2Jcleared")
        );
    }

    #[test]
    fn headers_are_checked_without_showing_values() {
        assert!(check_header("authorization", "Bearer abc").is_ok());
        let error = check_header("authorization", "Bearer\nsecret").unwrap_err();
        assert!(!error.to_string().contains("secret"));
        assert!(check_header("bad name", "x").is_err());
    }
}
