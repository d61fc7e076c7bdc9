//! The writer thread of a recording, and the hand-off to it: closed windows go from the
//! sampling thread through a short channel, never blocking sampling; the writer names each
//! window (within a deadline), writes it to the capture whole and synced, hands it to the
//! `--push-to` sink, and at the end writes the end record.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};

use super::{
    WindowSink, monotonic_ns,
    symbolize::{self, WindowSymbolizer},
    window::ClosedWindow,
};
use crate::capture::{
    CaptureWriter,
    format::{End, Meta, Problems, Unwinding},
};

/// Closed windows the sampling thread holds while the writer is busy; beyond, it waits for the
/// writer (while still watching for signals).
const MAX_QUEUED_WINDOWS: usize = 64;

/// Messages the channel to the writer holds: a few, as the sampling thread keeps its own queue.
pub const CHANNEL_CAPACITY: usize = 4;

pub enum WriterMessage {
    /// Boxed: a window is large, and the queue holds many messages.
    Window(Box<ClosedWindow>),
    End(End),
}

/// What the writer thread shares with the sampling thread as it goes.
#[derive(Default)]
pub struct WriterProgress {
    pub windows: AtomicUsize,
    pub failed: AtomicBool,
    /// Monotonic ns after which windows are written without waiting for names (0: not set):
    /// recording is stopping.
    pub hurry_until: AtomicU64,
}

/// What the writer thread reports when it is done.
pub struct Written {
    pub windows: u64,
    pub evicted: u64,
    pub bytes: u64,
    pub problems: Problems,
    pub unwinding: Option<Unwinding>,
}

/// What the writer needs besides its messages.
pub struct WriterSetup {
    pub writer: CaptureWriter,
    pub inline: bool,
    pub meta: Meta,
    pub sink: Option<Box<dyn WindowSink>>,
}

/// The writer thread: symbolizes and writes each closed window, then the end record.
pub fn write_windows(
    setup: WriterSetup,
    from_sampler: mpsc::Receiver<WriterMessage>,
    progress: &WriterProgress,
) -> Result<Written> {
    let WriterSetup {
        mut writer,
        inline,
        meta,
        mut sink,
    } = setup;
    let mut symbolizer = WindowSymbolizer::new(inline);
    let mut windows = 0u64;
    let mut problems = Problems::default();
    let mut unwinding: Option<Unwinding> = None;
    for message in from_sampler {
        match message {
            WriterMessage::Window(closed) => {
                let mut deadline = Instant::now() + symbolize::SYMBOLIZE_BUDGET;
                let hurry = progress.hurry_until.load(Ordering::Relaxed);
                if hurry != 0 {
                    let left = hurry.saturating_sub(monotonic_ns());
                    deadline = deadline.min(Instant::now() + Duration::from_nanos(left));
                }
                let mut window = symbolizer.build(*closed, deadline);
                if let Some(window_problems) = &window.problems {
                    problems.add(window_problems);
                }
                if let Some(counts) = &window.unwinding {
                    unwinding.get_or_insert_default().add(counts);
                }
                if let Err(e) = writer.write_window(&mut window) {
                    progress.failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                windows += 1;
                progress.windows.fetch_add(1, Ordering::Relaxed);
                if let Some(sink) = sink.as_mut() {
                    sink.window(&meta, &window);
                }
            }
            WriterMessage::End(mut end) => {
                end.windows_closed = windows;
                end.windows_evicted = writer.windows_evicted();
                let evicted = writer.windows_evicted();
                let path = writer.path().to_path_buf();
                let bytes_before = writer.bytes();
                writer.finish(&end)?;
                let bytes = std::fs::metadata(&path).map_or(bytes_before, |m| m.len());
                return Ok(Written {
                    windows,
                    evicted,
                    bytes,
                    problems,
                    unwinding,
                });
            }
        }
    }
    Err(anyhow!("recording stopped before it finished"))
}

/// Sends the queued messages the writer can take now. When the queue is long (the writer is
/// far behind), waits for the writer, but never past a stop request. False if the writer is
/// gone.
pub fn hand_over<M>(
    queued: &mut VecDeque<M>,
    to_writer: &mpsc::SyncSender<M>,
    stop: &AtomicBool,
) -> bool {
    while let Some(message) = queued.pop_front() {
        match to_writer.try_send(message) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(message)) => {
                queued.push_front(message);
                if queued.len() <= MAX_QUEUED_WINDOWS || stop.load(Ordering::Relaxed) {
                    return true;
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return false,
        }
    }
    true
}

/// Sends every queued message, the end record last, once recording has stopped. Without a
/// `give_up` time, waits for the writer as long as it takes (its windows are the recording);
/// with one (after a signal), stops trying then: a writer still busy (a disk that does not
/// answer) is left behind, every window it wrote readable. True if everything was sent.
pub fn send_remaining<M>(
    queued: &mut VecDeque<M>,
    to_writer: &mpsc::SyncSender<M>,
    give_up: Option<Instant>,
) -> bool {
    while let Some(message) = queued.pop_front() {
        match to_writer.try_send(message) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(message)) => match give_up {
                None => {
                    if to_writer.send(message).is_err() {
                        return false;
                    }
                }
                Some(at) if Instant::now() < at => {
                    queued.push_front(message);
                    thread::sleep(Duration::from_millis(10));
                }
                Some(_) => return false,
            },
            Err(mpsc::TrySendError::Disconnected(_)) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_queue_is_kept_while_the_writer_is_busy_and_sampling_goes_on() {
        let (to_writer, _from_sampler) = mpsc::sync_channel::<u32>(1);
        let mut queued: VecDeque<u32> = (0..10).collect();
        let started = Instant::now();
        assert!(hand_over(&mut queued, &to_writer, &AtomicBool::new(false)));
        assert_eq!(
            queued.len(),
            9,
            "one message fits the channel, the rest wait"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "it did not wait"
        );
    }

    #[test]
    fn a_long_queue_waits_for_the_writer_but_not_past_a_stop() {
        let (to_writer, _from_sampler) = mpsc::sync_channel::<usize>(1);
        let mut queued: VecDeque<usize> = (0..MAX_QUEUED_WINDOWS + 5).collect();
        assert!(hand_over(&mut queued, &to_writer, &AtomicBool::new(true)));
        assert_eq!(queued.len(), MAX_QUEUED_WINDOWS + 4);
    }

    #[test]
    fn a_gone_writer_is_told() {
        let (to_writer, from_sampler) = mpsc::sync_channel::<u32>(1);
        drop(from_sampler);
        let mut queued: VecDeque<u32> = (0..3).collect();
        assert!(!hand_over(&mut queued, &to_writer, &AtomicBool::new(false)));
        assert!(!send_remaining(&mut queued, &to_writer, None));
    }

    #[test]
    fn after_a_signal_a_stuck_writer_is_left_behind_at_the_give_up_time() {
        let (to_writer, _stuck) = mpsc::sync_channel::<u32>(1);
        let mut queued: VecDeque<u32> = (0..3).collect();
        let started = Instant::now();
        let give_up = started + Duration::from_millis(100);
        assert!(!send_remaining(&mut queued, &to_writer, Some(give_up)));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
    }

    #[test]
    fn without_a_give_up_time_every_message_reaches_a_slow_writer() {
        let (to_writer, from_sampler) = mpsc::sync_channel::<u32>(1);
        let reader = thread::spawn(move || {
            let mut got = Vec::new();
            for message in from_sampler {
                thread::sleep(Duration::from_millis(5));
                got.push(message);
            }
            got
        });
        let mut queued: VecDeque<u32> = (0..20).collect();
        assert!(send_remaining(&mut queued, &to_writer, None));
        drop(to_writer);
        assert_eq!(reader.join().expect("reader"), (0..20).collect::<Vec<_>>());
    }
}
