//! `record --push-to`: each window sent as it closes, while recording goes on.
//!
//! The recording hands every written window to a [`StreamSink`] ([`crate::record::WindowSink`]),
//! which never blocks: windows wait in a bounded queue ([`StreamSettings::queue`]) and, when it
//! is full, the oldest waiting window is dropped and counted. A sender thread of its own takes
//! them in order, encodes them with the destination (the same code as `amprof push`) and sends
//! each request; a retryable failure (a backend down, 429, 5xx) is retried with the backoff of
//! `push` for as long as recording goes on, so a backend that comes back gets the waiting
//! windows, in order, none twice; a failure for good (4xx) moves on to the next window. Once
//! recording has stopped, the windows still waiting get `--retries` retries each, as `push`
//! gives, then are listed as failed (the capture has them: `amprof push ... --windows` resends
//! them). A stop by signal only finishes the request in flight.
//!
//! The latency of each window, from its end to the backend's acknowledgement, is measured.
//!
//! A window handed over by the recording was never read back by the capture reader, which
//! checks every window read from a file: [`check_streamed`] checks it here, once, before any
//! destination encodes it, so that every window an encoder sees has passed one check.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use serde::Serialize;

use super::{Destination, Request, send_with_retries};
use crate::{
    capture::{Meta, SampleKind, Window},
    error::bad_input,
    record::{WindowSink, monotonic_ns},
};

/// How windows are streamed.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    /// Longest wait for one request.
    pub timeout: Duration,
    /// Retries of a request once recording has stopped (while it runs, a retryable failure is
    /// retried until the window is sent, fails for good, or is pushed out of the queue).
    pub retries: u32,
    /// Windows waiting to be sent, at most; beyond, the oldest is dropped.
    pub queue: usize,
}

/// Builds the destination on the sender thread (clients hold runtimes of their own).
pub type MakeDestination = Box<dyn FnOnce() -> Result<Box<dyn Destination>> + Send>;

/// What streaming did, for the summary and `--json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StreamReport {
    pub destination: String,
    /// Windows acknowledged by the backend, in order.
    pub sent: Vec<u64>,
    /// Attempts beyond the first, over all requests.
    pub retried: u64,
    /// Windows dropped from a full queue (never sent).
    pub dropped: Vec<u64>,
    /// Windows that did not go, with why (a failure for good, or retries spent once recording
    /// had stopped, or a stop by signal).
    pub failed: Vec<(u64, String)>,
    /// Windows without samples: nothing to send.
    pub empty: Vec<u64>,
    /// Milliseconds from each sent window's end to its acknowledgement.
    pub latency_ms: Vec<f64>,
    /// What went wrong at the start (the destination could not be set up, or refuses).
    pub warning: Option<String>,
}

impl StreamReport {
    /// The windows to resend from the capture (`push --windows`), if any.
    pub fn resend(&self) -> Option<String> {
        let mut windows: Vec<u64> = self
            .dropped
            .iter()
            .copied()
            .chain(self.failed.iter().map(|(w, _)| *w))
            .collect();
        windows.sort_unstable();
        windows.dedup();
        (!windows.is_empty()).then(|| {
            windows
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    /// `(median, max)` latency in milliseconds, if any window was sent.
    pub fn latency(&self) -> Option<(f64, f64)> {
        let mut sorted = self.latency_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let max = *sorted.last()?;
        Some((sorted[sorted.len() / 2], max))
    }
}

/// What the recording, the sender and [`Stream::finish`] share.
struct Shared {
    state: Mutex<State>,
    ready: Condvar,
    /// Recording has stopped by a signal: finish the request in flight, send nothing more.
    interrupted: AtomicBool,
}

#[derive(Default)]
struct State {
    /// The capture's metadata, from the first window on.
    meta: Option<Meta>,
    waiting: VecDeque<Window>,
    /// No more windows will come.
    closed: bool,
    /// Windows taken by the sender and not yet accounted for, with their ends (monotonic ns).
    in_flight: Vec<(u64, u64)>,
    report: StreamReport,
    /// The sender is done.
    done: bool,
}

/// The recording's end of the stream.
pub struct StreamSink {
    shared: Arc<Shared>,
    queue: usize,
}

impl WindowSink for StreamSink {
    fn window(&mut self, meta: &Meta, window: &Window) {
        let mut state = lock(&self.shared.state);
        if state.meta.is_none() {
            state.meta = Some(meta.clone());
        }
        if state.waiting.len() >= self.queue
            && let Some(oldest) = state.waiting.pop_front()
        {
            state.report.dropped.push(oldest.index);
        }
        state.waiting.push_back(window.clone());
        drop(state);
        self.shared.ready.notify_all();
    }
}

/// The sender's end: [`Stream::finish`] waits for the windows still queued.
pub struct Stream {
    shared: Arc<Shared>,
}

/// Starts a sender thread; the destination is built there by `make`. Returns the sink the
/// recording writes windows into, and the stream to finish.
pub fn start(make: MakeDestination, settings: StreamSettings) -> (StreamSink, Stream) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        ready: Condvar::new(),
        interrupted: AtomicBool::new(false),
    });
    let sink = StreamSink {
        shared: Arc::clone(&shared),
        queue: settings.queue.max(1),
    };
    let sender = Arc::clone(&shared);
    let started = thread::Builder::new()
        .name("amprof-push".into())
        .spawn(move || {
            send(make, &settings, &sender);
            lock(&sender.state).done = true;
            sender.ready.notify_all();
        });
    if let Err(error) = started {
        let mut state = lock(&shared.state);
        state.report.warning = Some(format!("cannot start the push thread: {error}"));
        state.done = true;
    }
    (sink, Stream { shared })
}

impl Stream {
    /// No more windows come: sends what is queued and reports. Unless `interrupted`, waits for
    /// every queued window (each retried `--retries` times at most); if `interrupted`, waits
    /// only up to `within` for the request in flight: what did not go is listed as failed.
    pub fn finish(self, interrupted: bool, within: Duration) -> StreamReport {
        if interrupted {
            self.shared.interrupted.store(true, Ordering::Relaxed);
        }
        let deadline = Instant::now() + within;
        let mut state = lock(&self.shared.state);
        state.closed = true;
        self.shared.ready.notify_all();
        while !state.done {
            let now = Instant::now();
            if interrupted && now >= deadline {
                break;
            }
            let wait = if interrupted {
                deadline - now
            } else {
                Duration::from_millis(200)
            };
            state = self
                .shared
                .ready
                .wait_timeout(state, wait)
                .map_or_else(|e| e.into_inner().0, |(s, _)| s);
        }
        // What is still queued or in flight did not go.
        let mut unsent: Vec<u64> = state.in_flight.drain(..).map(|(index, _)| index).collect();
        unsent.extend(state.waiting.drain(..).map(|w| w.index));
        let mut report = std::mem::take(&mut state.report);
        for index in unsent {
            report
                .failed
                .push((index, "not sent: recording was interrupted".into()));
        }
        report.failed.sort_by_key(|(w, _)| *w);
        report.failed.dedup_by_key(|(w, _)| *w);
        report
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sender thread: windows in order, until closed (or interrupted) and empty.
fn send(make: MakeDestination, settings: &StreamSettings, shared: &Shared) {
    let mut destination = match make() {
        Ok(destination) => destination,
        Err(error) => {
            // Nothing can be sent: every window goes to the failed list as it comes.
            let why = format!("{error:#}");
            lock(&shared.state).report.warning = Some(why.clone());
            fail_everything(shared, &why);
            return;
        }
    };
    let describe = destination.describe();
    let refusal = destination.refuses();
    {
        let mut state = lock(&shared.state);
        state.report.destination = describe;
        state.report.warning = refusal;
    }
    loop {
        let next = {
            let mut state = lock(&shared.state);
            loop {
                if shared.interrupted.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(window) = state.waiting.pop_front() {
                    state.in_flight.push((window.index, window.end_ns));
                    let meta = state.meta.clone().unwrap_or_default();
                    break Some((meta, window));
                }
                if state.closed {
                    break None;
                }
                state = shared
                    .ready
                    .wait_timeout(state, Duration::from_millis(200))
                    .map_or_else(|e| e.into_inner().0, |(s, _)| s);
            }
        };
        let last = next.is_none();
        let requests = match &next {
            Some((meta, window)) => check_streamed(window)
                .and_then(|()| destination.encode(meta, window))
                .and_then(|mut requests| {
                    requests.extend(destination.ready(meta)?);
                    Ok(requests)
                }),
            // Closed and empty: what the destination still batches (`--period`).
            None => match lock(&shared.state).meta.clone() {
                Some(meta) => destination.flush(&meta),
                None => return,
            },
        };
        match requests {
            Ok(requests) => {
                for request in requests {
                    send_one(&mut *destination, &request, settings, shared);
                }
            }
            Err(error) => {
                let mut state = lock(&shared.state);
                let windows: Vec<u64> = state.in_flight.drain(..).map(|(i, _)| i).collect();
                for index in windows {
                    state
                        .report
                        .failed
                        .push((index, format!("cannot encode: {error:#}")));
                }
            }
        }
        if last {
            return;
        }
    }
}

/// Checks what the encoders index in a window the recording handed over (the capture reader
/// checks it of every window it reads): every kind's sample columns agree
/// ([`SampleKind::is_consistent`]) and every stack's locations exist. A corrupt window fails
/// (`cannot encode: window N is corrupt: ...`) instead of being encoded without some of its
/// samples or frames.
fn check_streamed(window: &Window) -> Result<()> {
    if let Some(kind) = SampleKind::ALL
        .into_iter()
        .find(|kind| !kind.is_consistent(window))
    {
        return Err(bad_input(format!(
            "window {} is corrupt: {} samples that refer to no stack or process, or columns \
             that disagree",
            window.index,
            kind.descriptor().name
        )));
    }
    let locations = window.locations.len();
    if let Some(&index) = window
        .stacks
        .iter()
        .flat_map(|stack| &stack.locations)
        .find(|&&index| index as usize >= locations)
    {
        return Err(bad_input(format!(
            "window {} is corrupt: a stack refers to location {index}, which does not exist",
            window.index
        )));
    }
    Ok(())
}

/// Sends one request and records what happened to its windows.
fn send_one(
    destination: &mut dyn Destination,
    request: &Request,
    settings: &StreamSettings,
    shared: &Shared,
) {
    let retries = settings.retries;
    let outcome = if request.is_empty() {
        None
    } else {
        // While recording goes on, a retryable failure is retried until the window goes (or
        // its queue overflows behind it); once recording has stopped, `--retries` times.
        let keep_trying = |attempts: u32| !lock(&shared.state).closed || attempts <= retries;
        Some(send_with_retries(
            destination,
            request,
            settings.timeout,
            &keep_trying,
            &shared.interrupted,
        ))
    };
    let acknowledged = monotonic_ns();
    let mut state = lock(&shared.state);
    let ends: Vec<(u64, u64)> = {
        let (done, rest): (Vec<_>, Vec<_>) = state
            .in_flight
            .drain(..)
            .partition(|(index, _)| request.windows.contains(index));
        state.in_flight = rest;
        done
    };
    let report = &mut state.report;
    let Some(outcome) = outcome else {
        report.empty.extend(request.windows.iter().copied());
        return;
    };
    report.retried += u64::from(outcome.attempts.saturating_sub(1));
    for &index in &request.windows {
        if outcome.status == super::WindowStatus::Sent {
            if !report.sent.contains(&index) {
                report.sent.push(index);
            }
            if let Some((_, end)) = ends.iter().find(|(i, _)| *i == index) {
                report
                    .latency_ms
                    .push(acknowledged.saturating_sub(*end) as f64 / 1e6);
            }
        } else {
            let why = outcome
                .error
                .clone()
                .unwrap_or_else(|| outcome.status.name().to_string());
            report.failed.push((index, why));
        }
    }
}

/// The destination could not be set up: every window offered is failed with `why`.
fn fail_everything(shared: &Shared, why: &str) {
    let mut state = lock(&shared.state);
    loop {
        while let Some(window) = state.waiting.pop_front() {
            state.report.failed.push((window.index, why.to_string()));
        }
        if state.closed || shared.interrupted.load(Ordering::Relaxed) {
            return;
        }
        state = shared
            .ready
            .wait_timeout(state, Duration::from_millis(200))
            .map_or_else(|e| e.into_inner().0, |(s, _)| s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        capture::{
            format::OffCpuReason,
            testing::{WindowBuilder, meta},
        },
        push::Attempt,
    };

    /// A destination that answers from a script: each send takes the next answer.
    struct Scripted {
        answers: Arc<Mutex<VecDeque<Attempt>>>,
        sent: Arc<Mutex<Vec<u64>>>,
    }

    impl Destination for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }
        fn encode(&mut self, _: &Meta, window: &Window) -> Result<Vec<Request>> {
            Ok(vec![Request {
                windows: vec![window.index],
                label: format!("window {}", window.index),
                body: vec![1],
                headers: vec![],
            }])
        }
        fn flush(&mut self, _: &Meta) -> Result<Vec<Request>> {
            Ok(vec![])
        }
        fn send(&mut self, request: &Request, _: Duration) -> Attempt {
            let answer = lock(&self.answers)
                .pop_front()
                .unwrap_or(Attempt::Sent { note: None });
            if matches!(answer, Attempt::Sent { .. }) {
                lock(&self.sent).extend(&request.windows);
            }
            answer
        }
    }

    fn window(index: u64) -> Window {
        let mut w = WindowBuilder::new(index);
        let p = w.process(1, "app");
        let l = w.location(0x10, &[]);
        let s = w.stack(p, &[l], 0);
        w.sample(1, 1, 0, s);
        w.build()
    }

    /// `window(index)` with an off-CPU sample on its stack too.
    fn window_with_off_cpu(index: u64) -> Window {
        let on_cpu = window(index);
        let mut w = WindowBuilder::at(index, on_cpu.start_ns, on_cpu.end_ns);
        *w.window_mut() = on_cpu;
        w.off_cpu_sample(2, 1, 0, 0, 1_000_000, OffCpuReason::Blocked);
        w.build()
    }

    type Answers = Arc<Mutex<VecDeque<Attempt>>>;

    fn stream(
        answers: Vec<Attempt>,
        queue: usize,
    ) -> (StreamSink, Stream, Arc<Mutex<Vec<u64>>>, Answers) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let answers: Answers = Arc::new(Mutex::new(answers.into()));
        let destination = Scripted {
            answers: Arc::clone(&answers),
            sent: Arc::clone(&sent),
        };
        let (sink, stream) = start(
            Box::new(move || Ok(Box::new(destination) as Box<dyn Destination>)),
            StreamSettings {
                timeout: Duration::from_secs(1),
                retries: 1,
                queue,
            },
        );
        (sink, stream, sent, answers)
    }

    fn retry() -> Attempt {
        Attempt::Retry {
            reason: "down".into(),
            after: Some(Duration::from_millis(10)),
        }
    }

    #[test]
    fn a_backend_down_for_a_while_gets_every_window_in_order_once() {
        let (mut sink, stream, sent, answers) = stream((0..5).map(|_| retry()).collect(), 10);
        for index in 0..4 {
            sink.window(&meta(), &window(index));
        }
        // Recording goes on while the backend is down: the first window is retried until it
        // comes back (its answers used up).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lock(&answers).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let report = stream.finish(false, Duration::ZERO);
        assert_eq!(*lock(&sent), [0, 1, 2, 3]);
        assert_eq!(report.sent, [0, 1, 2, 3]);
        assert_eq!(report.retried, 5);
        assert!(report.failed.is_empty() && report.dropped.is_empty());
        assert_eq!(report.latency_ms.len(), 4);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_a_dead_backend_fails_the_rest() {
        // Never answers well: the first window is retried while the others queue.
        let (mut sink, stream, sent, _) = stream((0..1000).map(|_| retry()).collect(), 2);
        for index in 0..6 {
            sink.window(&meta(), &window(index));
        }
        std::thread::sleep(Duration::from_millis(50));
        let report = stream.finish(false, Duration::ZERO);
        assert!(lock(&sent).is_empty());
        assert!(!report.dropped.is_empty(), "{report:?}");
        let mut accounted: Vec<u64> = report
            .dropped
            .iter()
            .copied()
            .chain(report.failed.iter().map(|(w, _)| *w))
            .collect();
        accounted.sort_unstable();
        assert_eq!(
            accounted,
            [0, 1, 2, 3, 4, 5],
            "every window is accounted for"
        );
        assert_eq!(report.resend().as_deref(), Some("0,1,2,3,4,5"));
    }

    #[test]
    fn a_failure_for_good_moves_on() {
        let answers = vec![Attempt::Failed {
            reason: "HTTP 400".into(),
        }];
        let (mut sink, stream, _, _) = stream(answers, 10);
        sink.window(&meta(), &window(0));
        sink.window(&meta(), &window(1));
        let report = stream.finish(false, Duration::ZERO);
        assert_eq!(report.sent, [1]);
        assert_eq!(report.failed, [(0, "HTTP 400".to_string())]);
    }

    #[test]
    fn a_corrupt_window_is_failed_not_encoded() {
        // What no encoder checks again: samples of no stack, columns of different lengths, a
        // stack of a location that does not exist, an off-CPU reason amprof does not know.
        let corruptions: [fn(&mut Window); 6] = [
            |w| w.sample_stacks[0] = 9,
            |w| w.sample_cpus.clear(),
            |w| w.stacks[0].locations.push(99),
            |w| w.off_cpu_stacks[0] = 9,
            |w| w.off_cpu_ns.clear(),
            |w| w.off_cpu_reasons[0] = 7,
        ];
        let (mut sink, stream, sent, _) = stream(vec![], 10);
        for (index, corrupt) in corruptions.iter().enumerate() {
            let mut w = window_with_off_cpu(index as u64);
            assert!(check_streamed(&w).is_ok());
            corrupt(&mut w);
            sink.window(&meta(), &w);
        }
        sink.window(&meta(), &window_with_off_cpu(6));
        let report = stream.finish(false, Duration::ZERO);
        assert_eq!(*lock(&sent), [6]);
        assert_eq!(report.sent, [6]);
        let failed: Vec<u64> = report.failed.iter().map(|(index, _)| *index).collect();
        assert_eq!(failed, [0, 1, 2, 3, 4, 5]);
        for (index, why) in &report.failed {
            let corrupt = format!("cannot encode: window {index} is corrupt: ");
            assert!(why.starts_with(&corrupt), "{why}");
        }
    }
}
