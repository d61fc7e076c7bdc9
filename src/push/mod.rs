//! `amprof push`: send a capture's windows to a profiling backend.
//!
//! What every destination shares lives here, written once: reading the capture window by
//! window (memory does not grow with its length), choosing windows (`--windows`, to resend the
//! ones that failed), bounded retries with exponential backoff (honouring `Retry-After`),
//! `--dry-run` files, the progress bar, Ctrl-C between requests, and the per-window summary
//! with its exit code. A destination ([`Destination`]) only turns windows into requests and
//! sends one request once.
//!
//! Ctrl-C (or SIGTERM) stops at the next window: the requests of a window already begun still
//! go (without retries), so that no window is left half-sent and `--windows` can resend what did
//! not go without sending anything twice. A second Ctrl-C stops at once, without a summary.
//!
//! The capture is only ever opened for reading. Secrets (API keys, header values) are never in
//! a [`Request`], and destinations hide them in what servers answer, which may echo them (see
//! [`Secrets`]).

pub mod datadog;
pub mod otlp;

use std::{
    borrow::Cow,
    collections::BTreeSet,
    fmt,
    io::IsTerminal as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::{
    capture::{CaptureReader, Meta, Window},
    error::{Exit, coded, usage},
    report::{Selection, WindowRange},
};

/// One request a destination will send: the windows it carries and its encoded form.
#[derive(Debug, Clone)]
pub struct Request {
    /// Indices of the windows in it.
    pub windows: Vec<u64>,
    /// Short description for errors and the summary (e.g. `window 3`).
    pub label: String,
    /// The body as sent.
    pub body: Vec<u8>,
    /// Headers as sent; values of secret headers (API keys, tokens) are never here (the
    /// destination adds them when sending), so that nothing printed or written by `--dry-run`
    /// can leak them.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// A request with no body and no headers stands for windows with nothing to send: they
    /// are reported as `empty`, not sent.
    pub fn is_empty(&self) -> bool {
        self.body.is_empty() && self.headers.is_empty()
    }
}

/// Secret values (an API key, header values) that must not appear in anything amprof prints or
/// writes. Servers may echo them in their answers: [`Secrets::hide`] replaces them in such text,
/// before it is cut short (a secret cut in two would otherwise show its first part).
#[derive(Clone, Default)]
pub struct Secrets(Vec<String>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} hidden)", self.0.len())
    }
}

impl Secrets {
    /// Shorter values and words are not hidden: they would mangle every message (a header
    /// `x-org=1`), and hide nothing worth hiding.
    const MIN_CHARS: usize = 6;

    /// The secrets in `values`: each value, and each of its words (a token echoed without its
    /// `Bearer`), but for authorization schemes.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        const SCHEMES: [&str; 6] = ["bearer", "basic", "digest", "negotiate", "token", "apikey"];
        let mut hidden = BTreeSet::new();
        for value in values {
            let value = value.trim();
            let words = value.split(|c: char| c.is_whitespace() || c == ',');
            for text in std::iter::once(value).chain(words) {
                if text.chars().count() >= Self::MIN_CHARS
                    && !SCHEMES.contains(&text.to_ascii_lowercase().as_str())
                {
                    hidden.insert(text.to_string());
                }
            }
        }
        let mut hidden: Vec<String> = hidden.into_iter().collect();
        // The longest first: a whole value goes before its words.
        hidden.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self(hidden)
    }

    /// `text` with every secret replaced by `<redacted>`.
    pub fn hide(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.0 {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "<redacted>");
            }
        }
        text
    }
}

/// `url` without its user and password, for anything amprof prints or writes:
/// `scheme://user:password@host/path` becomes `scheme://***@host/path`. The user and password
/// end at the last `@` of the authority; in a URL without a scheme or one that does not parse,
/// where a password may hold a `/`, `?` or `#` (the user mistyped it), everything up to the last
/// `@` is hidden.
pub fn without_credentials(url: &str) -> Cow<'_, str> {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let at = match (rest[..authority_end].rfind('@'), rest.rfind('@')) {
        (Some(at), _) => at,
        (None, Some(at)) if scheme.is_none() || reqwest::Url::parse(url).is_err() => at,
        _ => return Cow::Borrowed(url),
    };
    let host = &rest[at + 1..];
    Cow::Owned(match scheme {
        Some(scheme) => format!("{scheme}://***@{host}"),
        None => format!("***@{host}"),
    })
}

/// The secrets in the user and password of `url`, if it has any: each of them, percent-decoded,
/// and `user:password` as HTTP basic authentication sends it (in base64), for [`Secrets`].
pub fn url_credentials(url: &str) -> Vec<String> {
    let Ok(url) = reqwest::Url::parse(url) else {
        return Vec::new();
    };
    let decode = percent_encoding_decode;
    let (user, password) = (decode(url.username()), url.password().map(decode));
    if user.is_empty() && password.is_none() {
        return Vec::new();
    }
    let pair = format!("{user}:{}", password.as_deref().unwrap_or(""));
    let mut secrets = vec![base64(pair.as_bytes()), pair, user];
    secrets.extend(password);
    secrets
}

/// `%XX` escapes decoded (invalid ones, and bytes that are not UTF-8, kept as they are).
fn percent_encoding_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_string())
}

/// Standard base64, padded (what `Authorization: Basic` carries).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The outcome of one attempt to send a request.
#[derive(Debug)]
pub enum Attempt {
    /// Accepted. `note` says anything worth reporting (e.g. an OTLP partial success).
    Sent { note: Option<String> },
    /// Failed in a way worth retrying (connection refused, 429, 5xx, UNAVAILABLE...), after at
    /// least `after` if the server said so.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Failed for good (4xx, bad response...).
    Failed { reason: String },
}

/// A backend amprof pushes to.
pub trait Destination {
    /// Name for messages, e.g. `Datadog Agent at http://localhost:8126`.
    fn describe(&self) -> String;
    /// Turns the next window into requests, or keeps it to batch with the next ones.
    fn encode(&mut self, meta: &Meta, window: &Window) -> Result<Vec<Request>>;
    /// The requests still batched once every window has been given.
    fn flush(&mut self, meta: &Meta) -> Result<Vec<Request>>;
    /// Sends `request` once, waiting at most `timeout`.
    fn send(&mut self, request: &Request, timeout: Duration) -> Attempt;
}

/// Settings shared by every destination.
#[derive(Clone, Debug)]
pub struct PushOptions {
    pub input: PathBuf,
    pub selection: Selection,
    /// Windows to push (by index); empty: all.
    pub windows: Vec<WindowRange>,
    /// Write each request to this directory instead of sending it.
    pub dry_run: Option<PathBuf>,
    pub timeout: Duration,
    /// Attempts after the first, for retryable failures.
    pub retries: u32,
    pub json: bool,
    pub quiet: bool,
}

/// What happened to one window.
#[derive(Debug, Serialize, Clone)]
pub struct WindowOutcome {
    pub index: u64,
    /// `sent`, `failed`, `written` (dry run), `empty` (nothing to send: no samples) or
    /// `not-attempted` (interrupted).
    pub status: String,
    pub attempts: u32,
    pub bytes: usize,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PushSummary {
    pub destination: String,
    pub windows: Vec<WindowOutcome>,
    /// Windows that went (or were written, or had nothing to send).
    pub sent: usize,
    /// Of those, windows with nothing to send.
    pub empty: usize,
    pub failed: usize,
    pub not_attempted: usize,
    pub bytes: usize,
    pub seconds: f64,
    pub interrupted: bool,
}

impl PushSummary {
    /// The `--windows` argument that pushes what did not go.
    pub fn resend_hint(&self) -> Option<String> {
        let left: Vec<String> = self
            .windows
            .iter()
            .filter(|w| w.status == "failed" || w.status == "not-attempted")
            .map(|w| w.index.to_string())
            .collect();
        (!left.is_empty()).then(|| left.join(","))
    }
}

/// Pushes the selected windows of the capture through `destination`.
pub fn push(options: &PushOptions, destination: &mut dyn Destination) -> Result<PushSummary> {
    check_timeout(options.timeout)?;
    if let Some(dir) = &options.dry_run {
        prepare_dry_run_dir(dir)?;
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The second signal stops at once (registered first: the first signal only arms it).
        signal_hook::flag::register_conditional_shutdown(
            signal,
            i32::from(Exit::PushFailed.code()),
            Arc::clone(&interrupted),
        )
        .context("cannot install signal handlers")?;
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .context("cannot install signal handlers")?;
    }
    // A damaged capture is refused before anything is sent: failing half-way would leave windows
    // sent that no summary lists. (A torn end, from a killed recording, is not damage.)
    let mut check = CaptureReader::open(&options.input)?;
    while check.next_window()?.is_some() {}
    let mut reader = CaptureReader::open(&options.input)?;
    let meta = reader.meta().clone();
    let started = Instant::now();
    let progress = progress_bar(options);
    let mut outcomes: Vec<WindowOutcome> = Vec::new();
    let mut request_number = 0usize;
    // The last window counted by the progress bar (a window may take several requests).
    let mut counted: Option<u64> = None;
    // Windows some request of which was sent (or tried): once interrupted, their other requests
    // still go, so that no window is left half-sent.
    let mut begun: BTreeSet<u64> = BTreeSet::new();
    let mut told_interrupted = options.quiet;

    let mut send_all = |destination: &mut dyn Destination,
                        requests: Vec<Request>,
                        outcomes: &mut Vec<WindowOutcome>|
     -> Result<()> {
        for request in requests {
            request_number += 1;
            let finishing = request.windows.iter().any(|w| begun.contains(w));
            if finishing && interrupted.load(Ordering::Relaxed) && !told_interrupted {
                told_interrupted = true;
                let message = "amprof: interrupted: finishing the window in progress (Ctrl-C again stops at once, without a summary)";
                match &progress {
                    Some(bar) => bar.suspend(|| eprintln!("{message}")),
                    None => eprintln!("{message}"),
                }
            }
            let outcome = if request.is_empty() {
                outcome_of(&request, "empty", 0, 0.0, None, None)
            } else if interrupted.load(Ordering::Relaxed) && !finishing {
                outcome_of(&request, "not-attempted", 0, 0.0, None, None)
            } else if let Some(dir) = &options.dry_run {
                write_dry_run(dir, request_number, &request)?;
                outcome_of(&request, "written", 0, 0.0, None, None)
            } else {
                send_with_retries(destination, &request, options, &interrupted)
            };
            if outcome.status != "not-attempted" {
                begun.extend(&request.windows);
            }
            // A request of several windows (OTLP batches them) shares its bytes among them, so
            // that the totals add up.
            let (count, total) = (request.windows.len().max(1), request.body.len());
            for (i, &index) in request.windows.iter().enumerate() {
                let mut o = outcome.clone();
                o.index = index;
                o.bytes = total / count + usize::from(i < total % count);
                outcomes.push(o);
            }
            let new = request
                .windows
                .iter()
                .filter(|&&w| counted.is_none_or(|c| w > c))
                .count();
            counted = request.windows.iter().copied().max().max(counted);
            if let Some(bar) = &progress {
                bar.inc(new as u64);
            }
        }
        Ok(())
    };

    while let Some(window) = reader.next_window()? {
        if !wanted(options, &window) {
            continue;
        }
        let window = filter_window(window, &options.selection);
        let requests = destination.encode(&meta, &window)?;
        send_all(destination, requests, &mut outcomes)?;
    }
    let requests = destination.flush(&meta)?;
    send_all(destination, requests, &mut outcomes)?;
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    if outcomes.is_empty() && !options.windows.is_empty() {
        return Err(usage("no window of the capture matches --windows"));
    }
    outcomes.sort_by_key(|o| o.index);
    // A window split over several requests went only if every part went.
    outcomes.dedup_by(|later, first| {
        if later.index != first.index {
            return false;
        }
        if later.status != "sent" && later.status != "written" {
            first.status = later.status.clone();
            first.error = later.error.take().or(first.error.take());
        }
        first.bytes += later.bytes;
        first.attempts = first.attempts.max(later.attempts);
        true
    });
    let count = |status: &str| outcomes.iter().filter(|o| o.status == status).count();
    Ok(PushSummary {
        destination: destination.describe(),
        sent: count("sent") + count("written") + count("empty"),
        empty: count("empty"),
        failed: count("failed"),
        not_attempted: count("not-attempted"),
        bytes: outcomes.iter().map(|o| o.bytes).sum(),
        seconds: started.elapsed().as_secs_f64(),
        interrupted: interrupted.load(Ordering::Relaxed),
        windows: outcomes,
    })
}

/// Refuses a zero timeout, with which no request could ever succeed.
pub fn check_timeout(timeout: Duration) -> Result<()> {
    if timeout.is_zero() {
        return Err(usage("--timeout must be longer than 0"));
    }
    Ok(())
}

/// The exit-code error for a summary with failures, if any.
pub fn check_summary(summary: &PushSummary) -> Result<()> {
    if summary.failed == 0 && summary.not_attempted == 0 {
        return Ok(());
    }
    let first_error = summary
        .windows
        .iter()
        .find_map(|w| w.error.clone())
        .unwrap_or_else(|| "interrupted".into());
    Err(coded(
        Exit::PushFailed,
        format!(
            "{} of {} windows did not reach {} ({first_error}); resend them with --windows {}",
            summary.failed + summary.not_attempted,
            summary.windows.len(),
            summary.destination,
            summary.resend_hint().unwrap_or_default()
        ),
    ))
}

fn wanted(options: &PushOptions, window: &Window) -> bool {
    options.selection.includes_window(window)
        && (options.windows.is_empty()
            || options.windows.iter().any(|r| r.0.contains(&window.index)))
}

/// Drops the stacks (and their samples) that the process selection excludes.
fn filter_window(mut window: Window, selection: &Selection) -> Window {
    if selection.pids.is_empty() && selection.comms.is_empty() {
        return window;
    }
    let keep: Vec<bool> = window
        .stacks
        .iter()
        .map(|s| selection.includes_stack(&window, s))
        .collect();
    for (stack, &kept) in window.stacks.iter_mut().zip(&keep) {
        if !kept {
            stack.count = 0;
        }
    }
    let mut time = window.start_ns;
    let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut previous = window.start_ns;
    for i in 0..window.sample_stacks.len() {
        time += window.sample_time_deltas[i];
        if keep[window.sample_stacks[i] as usize] {
            columns.0.push(time - previous);
            previous = time;
            columns.1.push(window.sample_tids[i]);
            columns.2.push(window.sample_cpus[i]);
            columns.3.push(window.sample_stacks[i]);
        }
    }
    (
        window.sample_time_deltas,
        window.sample_tids,
        window.sample_cpus,
        window.sample_stacks,
    ) = columns;
    window
}

fn outcome_of(
    request: &Request,
    status: &str,
    attempts: u32,
    seconds: f64,
    error: Option<String>,
    note: Option<String>,
) -> WindowOutcome {
    WindowOutcome {
        index: request.windows.first().copied().unwrap_or(0),
        status: status.into(),
        attempts,
        bytes: request.body.len(),
        seconds,
        error,
        note,
    }
}

/// Backoff before retry `n` (1-based): 0.5 s, 1 s, 2 s... capped at 10 s; a server's
/// `Retry-After` is honoured up to 30 s.
fn backoff(n: u32, after: Option<Duration>) -> Duration {
    let exponential = Duration::from_millis(500u64.saturating_mul(1 << (n - 1).min(5)));
    match after {
        Some(after) => after.min(Duration::from_secs(30)),
        None => exponential.min(Duration::from_secs(10)),
    }
}

fn send_with_retries(
    destination: &mut dyn Destination,
    request: &Request,
    options: &PushOptions,
    interrupted: &AtomicBool,
) -> WindowOutcome {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let elapsed = || started.elapsed().as_secs_f64();
        match destination.send(request, options.timeout) {
            Attempt::Sent { note } => {
                return outcome_of(request, "sent", attempts, elapsed(), None, note);
            }
            Attempt::Failed { reason } => {
                return outcome_of(request, "failed", attempts, elapsed(), Some(reason), None);
            }
            Attempt::Retry { reason, after } => {
                if attempts > options.retries || interrupted.load(Ordering::Relaxed) {
                    let plural = if attempts == 1 { "" } else { "s" };
                    let reason = format!("{reason} (after {attempts} attempt{plural})");
                    return outcome_of(request, "failed", attempts, elapsed(), Some(reason), None);
                }
                // Sleep in slices so that Ctrl-C is not kept waiting.
                let until = Instant::now() + backoff(attempts, after);
                while Instant::now() < until && !interrupted.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

fn progress_bar(options: &PushOptions) -> Option<ProgressBar> {
    if options.quiet || options.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::no_length().with_style(
        ProgressStyle::with_template("{spinner} pushing: {pos} windows {elapsed_precise}")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

fn prepare_dry_run_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(usage(format!(
            "-o {}: not a directory (--dry-run writes its files into one)",
            dir.display()
        )));
    }
    // Under sudo, the directories made here belong to the user, as the files written in them.
    crate::output::create_dirs(dir)
        .with_context(|| format!("cannot create the dry-run directory {}", dir.display()))?;
    Ok(())
}

/// Writes `NNNN-window-I.body` and `NNNN-window-I.headers` (secret values never included).
fn write_dry_run(dir: &Path, number: usize, request: &Request) -> Result<()> {
    let stem = format!(
        "{number:04}-{}",
        request
            .label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
    );
    let mut headers = String::new();
    for (name, value) in &request.headers {
        headers.push_str(&format!("{name}: {value}\n"));
    }
    for (suffix, data) in [
        ("headers", headers.as_bytes()),
        ("body", request.body.as_slice()),
    ] {
        let path = dir.join(format!("{stem}.{suffix}"));
        let mut out = crate::output::AtomicOutput::create(&path, 0o600)?;
        std::io::Write::write_all(&mut out, data)
            .with_context(|| format!("cannot write {}", path.display()))?;
        out.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hidden_whole_and_word_by_word() {
        let secrets = Secrets::new(["Bearer s3cret-t0ken", "0123456789abcdef", "1", "tenant"]);
        assert_eq!(
            secrets.hide("got Bearer s3cret-t0ken, then s3cret-t0ken, key 0123456789abcdef"),
            "got <redacted>, then <redacted>, key <redacted>"
        );
        // Too short to hide: it would mangle messages.
        assert_eq!(secrets.hide("HTTP 401"), "HTTP 401");
        assert_eq!(secrets.hide("Bearer tokens"), "Bearer tokens");
        assert_eq!(secrets.hide("tenant-2"), "<redacted>-2");
        assert!(!format!("{secrets:?}").contains("s3cret"));
    }

    #[test]
    fn credentials_in_urls_are_never_shown() {
        for (url, shown) in [
            (
                "https://u:secret@h:1/v1development/profiles",
                "https://***@h:1/v1development/profiles",
            ),
            ("http://h:1/a@b", "http://h:1/a@b"),
            ("http://h:1/?q=a@b", "http://h:1/?q=a@b"),
            ("http://localhost:8126", "http://localhost:8126"),
            (
                "unix:///var/run/datadog/apm.socket",
                "unix:///var/run/datadog/apm.socket",
            ),
            ("http://user@h:1", "http://***@h:1"),
            ("http://u:p@ss@h:1/x", "http://***@h:1/x"),
            // Mistyped passwords: the URL does not parse, or has no scheme.
            ("http://user:pa/ss@h:1/x", "http://***@h:1/x"),
            ("http://user:pa?ss@h:1", "http://***@h:1"),
            ("user:pa/ss@h:4317", "***@h:4317"),
            ("user:pass@h:4317", "***@h:4317"),
        ] {
            assert_eq!(without_credentials(url), shown, "{url}");
        }
    }

    #[test]
    fn url_credentials_are_secrets_as_sent() {
        let secrets = url_credentials("https://alice:s3cr%40t-pw@h:1/p");
        assert!(secrets.contains(&"s3cr@t-pw".to_string()), "{secrets:?}");
        assert!(secrets.contains(&"alice".to_string()));
        // What `Authorization: Basic` carries for alice:s3cr@t-pw.
        assert!(
            secrets.contains(&"YWxpY2U6czNjckB0LXB3".to_string()),
            "{secrets:?}"
        );
        assert!(url_credentials("https://h:1/p").is_empty());
        assert!(url_credentials("not a url").is_empty());
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn backs_off_exponentially_with_caps() {
        assert_eq!(backoff(1, None), Duration::from_millis(500));
        assert_eq!(backoff(2, None), Duration::from_secs(1));
        assert_eq!(backoff(3, None), Duration::from_secs(2));
        assert_eq!(backoff(10, None), Duration::from_secs(10));
        assert_eq!(
            backoff(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            backoff(1, Some(Duration::from_secs(300))),
            Duration::from_secs(30)
        );
    }
}
