//! `amprof push`: send a capture's windows to a profiling backend.
//!
//! What every destination shares lives here, written once: reading the capture window by
//! window (memory does not grow with its length), choosing windows (`--windows`, to resend the
//! ones that failed), bounded retries with exponential backoff (honouring `Retry-After`),
//! `--dry-run` files, progress (told to an [`Observer`]), Ctrl-C between requests, and the per-window summary
//! with its exit code. A destination ([`Destination`]) only turns windows into requests and
//! sends one request once.
//!
//! Ctrl-C (or SIGTERM) stops at the next window: the requests of a window already begun still
//! go (without retries), so that no window is left half-sent and `--windows` can resend what did
//! not go without sending anything twice. A second Ctrl-C stops at once, without a summary.
//!
//! The capture is only ever opened for reading. Secrets (API keys, header values) are never in
//! a [`Request`], and destinations hide them in what servers answer, which may echo them (see
//! [`http::Secrets`]).

pub mod datadog;
pub mod http;
pub mod otlp;
pub mod stream;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::{
    capture::{CaptureReader, Meta, Selection, Window},
    error::{Exit, coded, usage},
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
    /// While streaming: the requests of the windows given so far that should go now. By
    /// default all of them (batching only waits for more windows); a destination that merges
    /// a period of windows into one profile keeps the period in progress.
    fn ready(&mut self, meta: &Meta) -> Result<Vec<Request>> {
        self.flush(meta)
    }
    /// Sends `request` once, waiting at most `timeout`.
    fn send(&mut self, request: &Request, timeout: Duration) -> Attempt;
    /// Why the destination will not take profiles, if it can tell before any is sent (a
    /// Datadog Agent says so at `/info`); streaming warns of it at the start.
    fn refuses(&mut self) -> Option<String> {
        None
    }
}

/// What the person running a push should hear as it runs. `cli` implements it (a progress bar
/// on a terminal, messages on stderr); this module never prints.
pub trait Observer {
    /// Sending starts.
    fn started(&mut self) {}
    /// A sentence to show now (an interruption being handled).
    fn notice(&mut self, message: &str);
    /// `windows` more windows are done (sent, failed or skipped).
    fn windows_done(&mut self, _windows: u64) {}
    /// Sending is over; the summary follows.
    fn finished(&mut self) {}
}

/// Settings shared by every destination.
#[derive(Clone, Debug)]
pub struct PushOptions {
    pub input: PathBuf,
    /// Windows (`--windows`, e.g. to resend those that failed) and processes to push.
    pub selection: Selection,
    /// Write each request to this directory instead of sending it.
    pub dry_run: Option<PathBuf>,
    pub timeout: Duration,
    /// Attempts after the first, for retryable failures.
    pub retries: u32,
}

/// What happened to one window.
#[derive(Debug, Serialize, Clone)]
pub struct WindowOutcome {
    pub index: u64,
    pub status: WindowStatus,
    pub attempts: u32,
    pub bytes: usize,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What became of a window (in `--json` as `sent`, `failed`, `written`, `empty`,
/// `not-attempted`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowStatus {
    Sent,
    Failed,
    /// Written to the dry-run directory instead of sent.
    Written,
    /// Nothing to send: no samples.
    Empty,
    /// Interrupted before its turn.
    NotAttempted,
}

impl WindowStatus {
    /// Its name, as `--json` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Written => "written",
            Self::Empty => "empty",
            Self::NotAttempted => "not-attempted",
        }
    }

    /// It went, or needed not go (written by a dry run, or nothing to send).
    pub fn went(self) -> bool {
        matches!(self, Self::Sent | Self::Written | Self::Empty)
    }
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
            .filter(|w| w.status == WindowStatus::Failed || w.status == WindowStatus::NotAttempted)
            .map(|w| w.index.to_string())
            .collect();
        (!left.is_empty()).then(|| left.join(","))
    }
}

/// Pushes the selected windows of the capture through `destination`.
pub fn push(
    options: &PushOptions,
    destination: &mut dyn Destination,
    observer: &mut dyn Observer,
) -> Result<PushSummary> {
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
    observer.started();
    let mut outcomes: Vec<WindowOutcome> = Vec::new();
    let mut request_number = 0usize;
    // The last window counted by the progress bar (a window may take several requests).
    let mut counted: Option<u64> = None;
    // Windows some request of which was sent (or tried): once interrupted, their other requests
    // still go, so that no window is left half-sent.
    let mut begun: BTreeSet<u64> = BTreeSet::new();
    let mut told_interrupted = false;

    let mut send_all = |destination: &mut dyn Destination,
                        requests: Vec<Request>,
                        outcomes: &mut Vec<WindowOutcome>|
     -> Result<()> {
        for request in requests {
            request_number += 1;
            let finishing = request.windows.iter().any(|w| begun.contains(w));
            if finishing && interrupted.load(Ordering::Relaxed) && !told_interrupted {
                told_interrupted = true;
                observer.notice(
                    "interrupted: finishing the window in progress (Ctrl-C again stops at once, without a summary)",
                );
            }
            let outcome = if request.is_empty() {
                outcome_of(&request, WindowStatus::Empty, 0, 0.0, None, None)
            } else if interrupted.load(Ordering::Relaxed) && !finishing {
                outcome_of(&request, WindowStatus::NotAttempted, 0, 0.0, None, None)
            } else if let Some(dir) = &options.dry_run {
                write_dry_run(dir, request_number, &request)?;
                outcome_of(&request, WindowStatus::Written, 0, 0.0, None, None)
            } else {
                let retries = options.retries;
                send_with_retries(
                    destination,
                    &request,
                    options.timeout,
                    &|attempts| attempts <= retries,
                    &interrupted,
                )
            };
            if outcome.status != WindowStatus::NotAttempted {
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
            observer.windows_done(new as u64);
        }
        Ok(())
    };

    while let Some(window) = reader.next_window()? {
        if !options.selection.includes_window(&window) {
            continue;
        }
        let window = options.selection.filter_window(window);
        let requests = destination.encode(&meta, &window)?;
        send_all(destination, requests, &mut outcomes)?;
    }
    let requests = destination.flush(&meta)?;
    send_all(destination, requests, &mut outcomes)?;
    observer.finished();
    if outcomes.is_empty() && !options.selection.windows.is_empty() {
        return Err(usage("no window of the capture matches --windows"));
    }
    outcomes.sort_by_key(|o| o.index);
    // A window split over several requests went only if every part went.
    outcomes.dedup_by(|later, first| {
        if later.index != first.index {
            return false;
        }
        if later.status != WindowStatus::Sent && later.status != WindowStatus::Written {
            first.status = later.status;
            first.error = later.error.take().or(first.error.take());
        }
        first.bytes += later.bytes;
        first.attempts = first.attempts.max(later.attempts);
        true
    });
    let count = |status: WindowStatus| outcomes.iter().filter(|o| o.status == status).count();
    Ok(PushSummary {
        destination: destination.describe(),
        sent: outcomes.iter().filter(|o| o.status.went()).count(),
        empty: count(WindowStatus::Empty),
        failed: count(WindowStatus::Failed),
        not_attempted: count(WindowStatus::NotAttempted),
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

fn outcome_of(
    request: &Request,
    status: WindowStatus,
    attempts: u32,
    seconds: f64,
    error: Option<String>,
    note: Option<String>,
) -> WindowOutcome {
    WindowOutcome {
        index: request.windows.first().copied().unwrap_or(0),
        status,
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

/// Sends `request` until it goes, fails for good, or `keep_trying(attempts)` says to stop after
/// a retryable failure (or `interrupted` is set), with backoff between attempts.
fn send_with_retries(
    destination: &mut dyn Destination,
    request: &Request,
    timeout: Duration,
    keep_trying: &dyn Fn(u32) -> bool,
    interrupted: &AtomicBool,
) -> WindowOutcome {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let elapsed = || started.elapsed().as_secs_f64();
        match destination.send(request, timeout) {
            Attempt::Sent { note } => {
                return outcome_of(request, WindowStatus::Sent, attempts, elapsed(), None, note);
            }
            Attempt::Failed { reason } => {
                return outcome_of(
                    request,
                    WindowStatus::Failed,
                    attempts,
                    elapsed(),
                    Some(reason),
                    None,
                );
            }
            Attempt::Retry { reason, after } => {
                if !keep_trying(attempts) || interrupted.load(Ordering::Relaxed) {
                    let plural = if attempts == 1 { "" } else { "s" };
                    let reason = format!("{reason} (after {attempts} attempt{plural})");
                    return outcome_of(
                        request,
                        WindowStatus::Failed,
                        attempts,
                        elapsed(),
                        Some(reason),
                        None,
                    );
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
    fn statuses_are_named_in_json_as_in_words() {
        for status in [
            WindowStatus::Sent,
            WindowStatus::Failed,
            WindowStatus::Written,
            WindowStatus::Empty,
            WindowStatus::NotAttempted,
        ] {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.name())
            );
        }
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
