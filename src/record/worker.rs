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
//!
//! Callers that hand a worker one job per file and never wait (the sampling thread's unwinder
//! loader and table builder) go through a [`JobQueue`], which holds the one rule of when such a
//! job has overstayed: its budget counts from when the worker *starts* it, so a job is never
//! blamed for its wait behind another. The symbolizer waits for one job at a time within a
//! deadline the writer gives, and uses the [`Worker`] directly.
use std::{
    cell::Cell,
    collections::VecDeque,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex, Once, PoisonError,
        mpsc::{self, Receiver, Sender},
    },
    thread,
    time::{Duration, Instant},
};

/// Builds a worker's state on its own thread (blazesym's symbolizer is not `Send`).
pub type Make<J, D> = Arc<dyn Fn() -> Box<dyn FnMut(J) -> D> + Send + Sync>;

/// The job a worker thread is on: its number among the jobs sent to that thread (0 first), and
/// when the thread started it. Each thread has its own, so an abandoned thread that comes
/// unstuck cannot speak for its replacement.
type OnJob = Arc<Mutex<Option<(u64, Instant)>>>;

pub struct Worker<J, D> {
    name: &'static str,
    make: Make<J, D>,
    jobs: Sender<J>,
    answers: Receiver<Option<D>>,
    on: OnJob,
    /// Jobs sent to the current thread, and answers taken from it: the number of the job
    /// whose answer comes next.
    submitted: u64,
    answered: u64,
    /// The thread could not be started (the system is out of them).
    threadless: bool,
}

impl<J: Send + 'static, D: Send + 'static> Worker<J, D> {
    /// A worker thread named `name`, its state built by `make`.
    pub fn start(name: &'static str, make: Make<J, D>) -> Self {
        let thread = spawn(name, Arc::clone(&make));
        Self {
            name,
            make,
            jobs: thread.jobs,
            answers: thread.answers,
            on: thread.on,
            submitted: 0,
            answered: 0,
            threadless: !thread.started,
        }
    }

    /// Queues `job`. Answers come back in order.
    pub fn submit(&mut self, job: J) {
        if self.threadless && self.submitted == 0 {
            // No thread will ever take it: as stuck as a thread that hangs on its first job,
            // from the moment it is given one.
            *lock(&self.on) = Some((0, Instant::now()));
        }
        self.submitted += 1;
        // A worker whose thread died (it cannot: panics are caught) just never answers.
        let _ = self.jobs.send(job);
    }

    /// The next answer, if one is ready: `Some(None)` for a job that panicked.
    pub fn try_answer(&mut self) -> Option<Option<D>> {
        let answer = self.answers.try_recv().ok();
        self.answered += u64::from(answer.is_some());
        answer
    }

    /// The next answer, waiting at most `timeout`: `None` if there is none in time.
    pub fn answer_within(&mut self, timeout: Duration) -> Option<Option<D>> {
        // Disconnected (a thread that could not start) is as late as a timeout.
        let answer = self.answers.recv_timeout(timeout).ok();
        self.answered += u64::from(answer.is_some());
        answer
    }

    /// When the thread started the job whose answer comes next; `None` if it has not started
    /// it yet, or has no job (or has answered it, the answer not taken yet).
    pub fn started_next(&self) -> Option<Instant> {
        match *lock(&self.on) {
            Some((job, since)) if job == self.answered => Some(since),
            _ => None,
        }
    }

    /// Abandons the current thread (with the jobs queued to it) and starts a fresh one.
    pub fn restart(&mut self) {
        let thread = spawn(self.name, Arc::clone(&self.make));
        (self.jobs, self.answers, self.on) = (thread.jobs, thread.answers, thread.on);
        (self.submitted, self.answered) = (0, 0);
        self.threadless = !thread.started;
    }
}

/// A worker thread's ends, as [`spawn`] starts it.
struct Thread<J, D> {
    jobs: Sender<J>,
    answers: Receiver<Option<D>>,
    on: OnJob,
    started: bool,
}

fn spawn<J: Send + 'static, D: Send + 'static>(
    name: &'static str,
    make: Make<J, D>,
) -> Thread<J, D> {
    quiet_contained_panics();
    let (jobs, job_queue) = mpsc::channel::<J>();
    let (answer_queue, answers) = mpsc::channel::<Option<D>>();
    let on = OnJob::default();
    let thread_on = Arc::clone(&on);
    // Without a thread (the system is out of them), jobs queue up unanswered and callers time
    // out, as for a stalled worker.
    let started = thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            CONTAINED.with(|c| c.set(true));
            let mut handle = make();
            for (number, job) in (0u64..).zip(job_queue) {
                *lock(&thread_on) = Some((number, Instant::now()));
                let answer = std::panic::catch_unwind(AssertUnwindSafe(|| handle(job))).ok();
                if answer.is_none() {
                    // The state may be half-updated: start from scratch.
                    handle = make();
                }
                if answer_queue.send(answer).is_err() {
                    return; // abandoned
                }
            }
        })
        .is_ok();
    Thread {
        jobs,
        answers,
        on,
        started,
    }
}

/// The job marker, whoever panicked while holding it (nobody does: it is only ever assigned).
fn lock(on: &OnJob) -> std::sync::MutexGuard<'_, Option<(u64, Instant)>> {
    on.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Jobs for a [`Worker`], each known by a key and held to one budget of time. A job that
/// overstays its budget is given up and its worker abandoned for a fresh one; the jobs queued
/// behind it are handed back untried, for the caller to submit again if it still wants them.
///
/// **When a job's time starts: when the worker starts it.** Not when it is queued: a job
/// waiting behind a slow one is never blamed for the wait, and only the job the worker is on
/// can overstay. (Its start is the moment the worker thread takes it, so a slow answer not yet
/// collected costs the next job nothing either.) A worker without a thread (the system is out
/// of them) counts as having started its first job when that job was submitted.
///
/// Nothing here blocks: [`JobQueue::next_event`] is polled by a thread that has other work
/// (the sampling thread, for every sample), and answers nothing when nothing happened.
pub struct JobQueue<K, J, D> {
    worker: Worker<J, D>,
    budget: Duration,
    /// Keys of the jobs sent to the current worker, oldest first: answers come in this order.
    queued: VecDeque<K>,
    /// Keys of jobs abandoned untried with an overstaying worker, not reported yet.
    untried: VecDeque<K>,
}

/// What became of a job of a [`JobQueue`].
#[derive(Debug, PartialEq, Eq)]
pub enum Event<K, D> {
    /// The job of `K` finished: its answer, `None` if it panicked.
    Done(K, Option<D>),
    /// The job of `K` overstayed its budget: given up, with its worker.
    Overstayed(K),
    /// The job of `K` was queued behind one that overstayed and never ran.
    Untried(K),
}

impl<K, J: Send + 'static, D: Send + 'static> JobQueue<K, J, D> {
    /// A queue for a worker thread named `name` (state built by `make`), each job allowed
    /// `budget` from its start.
    pub fn new(name: &'static str, budget: Duration, make: Make<J, D>) -> Self {
        Self {
            worker: Worker::start(name, make),
            budget,
            queued: VecDeque::new(),
            untried: VecDeque::new(),
        }
    }

    /// Queues `job`, known as `key` in the events about it.
    pub fn submit(&mut self, key: K, job: J) {
        self.queued.push_back(key);
        self.worker.submit(job);
    }

    /// What happened next to a job, if anything: jobs finish in the order they were submitted;
    /// a job that has overstayed is reported once no earlier job is left to report, followed
    /// by the jobs that were queued behind it. Cheap when nothing happened.
    pub fn next_event(&mut self) -> Option<Event<K, D>> {
        if let Some(key) = self.untried.pop_front() {
            return Some(Event::Untried(key));
        }
        if self.queued.is_empty() {
            return None;
        }
        if let Some(answer) = self.worker.try_answer() {
            let key = self.queued.pop_front()?;
            return Some(Event::Done(key, answer));
        }
        let overstayed = self
            .worker
            .started_next()
            .is_some_and(|since| since.elapsed() > self.budget);
        if !overstayed {
            return None;
        }
        let stuck = self.queued.pop_front()?;
        self.worker.restart();
        self.untried = std::mem::take(&mut self.queued);
        Some(Event::Overstayed(stuck))
    }
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

    /// Doubles numbers; panics on 0 (hostile input), hangs on 999, takes `n - 1000` ms for
    /// numbers from 1000 up to 10,000.
    fn doubling() -> Make<u64, u64> {
        Arc::new(|| {
            Box::new(|n: u64| {
                match n {
                    0 => panic!("hostile input"),
                    999 => thread::sleep(Duration::from_secs(3600)),
                    1000..10_000 => thread::sleep(Duration::from_millis(n - 1000)),
                    _ => {}
                }
                n * 2
            })
        })
    }

    const PLENTY: Duration = Duration::from_secs(30);

    #[test]
    fn answers_in_order_and_contains_panics() {
        let mut worker = Worker::start("test-worker", doubling());
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
        let mut worker = Worker::start("test-worker", doubling());
        worker.submit(999);
        assert_eq!(worker.answer_within(Duration::from_millis(100)), None);
        worker.restart();
        worker.submit(21);
        assert_eq!(worker.answer_within(Duration::from_secs(5)), Some(Some(42)));
    }

    /// Every event of `queue` until `done` says it has them all (at most [`PLENTY`]).
    fn events_until(
        queue: &mut JobQueue<&'static str, u64, u64>,
        done: impl Fn(&[Event<&'static str, u64>]) -> bool,
    ) -> Vec<Event<&'static str, u64>> {
        let give_up = Instant::now() + PLENTY;
        let mut events = Vec::new();
        while !done(&events) {
            assert!(Instant::now() < give_up, "no end to {events:?}");
            match queue.next_event() {
                Some(event) => events.push(event),
                None => thread::sleep(Duration::from_millis(5)),
            }
        }
        events
    }

    #[test]
    fn queued_jobs_come_back_with_their_keys_in_order() {
        let mut queue = JobQueue::new("test-queue", PLENTY, doubling());
        assert_eq!(
            queue.next_event(),
            None,
            "nothing submitted, nothing to say"
        );
        for (key, n) in [("one", 1), ("hostile", 0), ("three", 3)] {
            queue.submit(key, n);
        }
        let events = events_until(&mut queue, |e| e.len() == 3);
        assert_eq!(
            events,
            [
                Event::Done("one", Some(2)),
                Event::Done("hostile", None),
                Event::Done("three", Some(6)),
            ]
        );
        assert_eq!(queue.next_event(), None);
    }

    #[test]
    fn a_stuck_job_is_given_up_after_its_budget_and_the_next_runs_on_a_fresh_worker() {
        let budget = Duration::from_millis(200);
        let mut queue = JobQueue::new("test-queue", budget, doubling());
        let submitted = Instant::now();
        queue.submit("stuck", 999);
        queue.submit("behind", 4);
        let events = events_until(&mut queue, |e| e.len() == 2);
        assert!(submitted.elapsed() > budget, "not before its budget");
        assert_eq!(
            events,
            [Event::Overstayed("stuck"), Event::Untried("behind")],
            "the job queued behind the stuck one is handed back untried"
        );
        // The stuck thread still sleeps; a fresh one takes the next jobs.
        queue.submit("behind", 4);
        queue.submit("after", 5);
        let events = events_until(&mut queue, |e| e.len() == 2);
        assert_eq!(
            events,
            [
                Event::Done("behind", Some(8)),
                Event::Done("after", Some(10))
            ]
        );
    }

    #[test]
    fn a_job_is_not_timed_out_for_its_wait_behind_a_slow_one() {
        // Each job takes 60% of the budget: the second is answered 120% of the budget after
        // it was queued, well within the budget from its start.
        let budget = Duration::from_millis(1000);
        let mut queue = JobQueue::new("test-queue", budget, doubling());
        let submitted = Instant::now();
        queue.submit("slow", 1600);
        queue.submit("behind the slow one", 1600);
        let events = events_until(&mut queue, |e| e.len() == 2);
        assert_eq!(
            events,
            [
                Event::Done("slow", Some(3200)),
                Event::Done("behind the slow one", Some(3200)),
            ]
        );
        assert!(
            submitted.elapsed() > budget,
            "the second job was answered after the budget from its queueing"
        );
    }
}
