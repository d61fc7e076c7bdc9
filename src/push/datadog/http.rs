//! libdd-common's HTTP client (TCP, TLS, unix sockets) driven by a runtime of ours, so that
//! response bodies can be read (error messages, `--check`): libdd-profiling's exporter would not
//! let us. Follows no redirect.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use http_body_util::BodyExt as _;
use hyper::{Method, StatusCode, Uri, header::HeaderMap};
use libdd_common::{HttpClient, hyper_migration};

use crate::text::printable;

/// Bytes of a response body kept for messages.
const MAX_RESPONSE_BYTES: usize = 64 << 10;

/// A response, as much of it as messages need.
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// libdd-common's HTTP client on a runtime of ours.
pub struct Http {
    pub runtime: tokio::runtime::Runtime,
    client: HttpClient,
}

impl Http {
    pub fn new() -> Result<Self> {
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
    pub fn exchange(
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
pub fn transport_error(error: &(dyn std::error::Error + 'static)) -> String {
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

/// The first line or so of a response body, for messages.
pub fn body_snippet(body: &str) -> String {
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
