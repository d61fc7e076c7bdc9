//! A thread for work on sampled processes' files, which nothing waits on for longer than it
//! chooses.
//!
//! Reading a process's binaries and debug files is the one part of recording whose time a
//! sampled process can influence (a huge debug file, a file system that answers slowly). So it
//! happens on a [`Worker`]: the caller submits jobs and collects answers with a deadline of its
//! own. A worker that overstays is abandoned ([`Worker::restart`]): its thread is left to
//! finish its call and exit (its answers go nowhere), and a fresh thread takes the next jobs.
//! A job that panics (a parser meeting hostile bytes) is answered `None` and the worker's state
//! is rebuilt; the panic is contained, not printed.

use std::{
    cell::Cell,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Once,
        mpsc::{self, Receiver, Sender},
    },
    thread,
    time::Duration,
};

/// Builds a worker's state on its own thread (blazesym's symbolizer is not `Send`).
pub type Make<J, D> = Arc<dyn Fn() -> Box<dyn FnMut(J) -> D> + Send + Sync>;

pub struct Worker<J, D> {
    name: &'static str,
    make: Make<J, D>,
    jobs: Sender<J>,
    answers: Receiver<Option<D>>,
}

impl<J: Send + 'static, D: Send + 'static> Worker<J, D> {
    /// A worker thread named `name`, its state built by `make`.
    pub fn start(name: &'static str, make: Make<J, D>) -> Self {
        let (jobs, answers) = spawn(name, Arc::clone(&make));
        Self {
            name,
            make,
            jobs,
            answers,
        }
    }

    /// Queues `job`. Answers come back in order.
    pub fn submit(&self, job: J) {
        // A worker whose thread died (it cannot: panics are caught) just never answers.
        let _ = self.jobs.send(job);
    }

    /// The next answer, if one is ready: `Some(None)` for a job that panicked.
    pub fn try_answer(&self) -> Option<Option<D>> {
        self.answers.try_recv().ok()
    }

    /// The next answer, waiting at most `timeout`: `None` if there is none in time.
    pub fn answer_within(&self, timeout: Duration) -> Option<Option<D>> {
        // Disconnected (a thread that could not start) is as late as a timeout.
        self.answers.recv_timeout(timeout).ok()
    }

    /// Abandons the current thread (with the jobs queued to it) and starts a fresh one.
    pub fn restart(&mut self) {
        (self.jobs, self.answers) = spawn(self.name, Arc::clone(&self.make));
    }
}

fn spawn<J: Send + 'static, D: Send + 'static>(
    name: &'static str,
    make: Make<J, D>,
) -> (Sender<J>, Receiver<Option<D>>) {
    quiet_contained_panics();
    let (jobs, job_queue) = mpsc::channel::<J>();
    let (answer_queue, answers) = mpsc::channel::<Option<D>>();
    // Without a thread (the system is out of them), jobs queue up unanswered and callers time
    // out, as for a stalled worker.
    let _ = thread::Builder::new().name(name.into()).spawn(move || {
        CONTAINED.with(|c| c.set(true));
        let mut handle = make();
        for job in job_queue {
            let answer = std::panic::catch_unwind(AssertUnwindSafe(|| handle(job))).ok();
            if answer.is_none() {
                // The state may be half-updated: start from scratch.
                handle = make();
            }
            if answer_queue.send(answer).is_err() {
                return; // abandoned
            }
        }
    });
    (jobs, answers)
}

thread_local! {
    /// This thread's panics are contained by a worker: not printed.
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, containing a panic in it (`None`), quietly: for parsers of hostile bytes called
/// outside a worker, such as the unwinder on the sampling thread.
pub fn contained<R>(f: impl FnOnce() -> R) -> Option<R> {
    quiet_contained_panics();
    let outer = CONTAINED.with(|c| c.replace(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f)).ok();
    CONTAINED.with(|c| c.set(outer));
    result
}

/// Keeps the panic message of a contained panic off the terminal (it is counted as a problem
/// of the window instead); every other panic prints as usual.
fn quiet_contained_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINED.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doubler() -> Worker<u64, u64> {
        Worker::start(
            "test-worker",
            Arc::new(|| {
                Box::new(|n: u64| {
                    if n == 0 {
                        panic!("hostile input");
                    }
                    if n == 999 {
                        thread::sleep(Duration::from_secs(3600));
                    }
                    n * 2
                })
            }),
        )
    }

    #[test]
    fn answers_in_order_and_contains_panics() {
        let worker = doubler();
        for n in [1, 0, 3] {
            worker.submit(n);
        }
        let second = Duration::from_secs(5);
        assert_eq!(worker.answer_within(second), Some(Some(2)));
        assert_eq!(worker.answer_within(second), Some(None));
        assert_eq!(worker.answer_within(second), Some(Some(6)));
    }

    #[test]
    fn a_stalled_worker_is_replaced() {
        let mut worker = doubler();
        worker.submit(999);
        assert_eq!(worker.answer_within(Duration::from_millis(100)), None);
        worker.restart();
        worker.submit(21);
        assert_eq!(worker.answer_within(Duration::from_secs(5)), Some(Some(42)));
    }
}
