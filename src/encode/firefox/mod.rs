//! The Firefox Profiler's processed profile (`report --format firefox`), written by
//! `fxprof-processed-profile`, the crate samply writes it with. The file opens as it is in the
//! Firefox Profiler (<https://profiler.firefox.com>, "Load a profile from file") or with
//! `samply load`.
//!
//! What the profile holds, and why so:
//! - **One track per thread, grouped by process** (by pid; a process that exec'd keeps one
//!   track group, named after its latest image). Threads are named by their latest `comm`; a
//!   track starts at its thread's first sample or wait. The busiest 20 threads, by samples
//!   then waits, are shown when the profile opens (a thread that only waits, too).
//! - **Every sample at its own time, with its stack**, root first. Kernel frames are in the
//!   `Kernel` category (orange), user frames in `User` (yellow): the profiler colours the
//!   activity graph and the call tree by category, so time in the kernel stands apart. Every
//!   on-CPU sample stands for one sampling period of CPU time (the thread's CPU delta), which
//!   is what the activity graph draws.
//! - **The CPU a thread ran on**: `CPU n` interval markers, one per run of consecutive
//!   on-CPU samples of the thread on CPU n (a run ends when the thread moves, leaves the CPU,
//!   or goes unsampled for two periods). Samples have no CPU column in this format; markers
//!   are what the marker chart and table show, and what a search finds.
//! - **Windows**: a track of its own (`amprof windows`, pid 0) with one `Window N` interval
//!   marker per window (its samples, and the lost, idle, late and truncated counts), and a
//!   `Lost samples` or `Truncated stacks` marker over every window that has some, so that the
//!   parts of the timeline with missing data are visible at a glance.
//! - **Off-CPU time** (captures recorded with `--off-cpu`): every off-CPU sample is a
//!   `Blocked` or `Runnable` interval marker on its thread's track, over the time it stands
//!   for, with its stack, whatever `--event` says: a timeline should show when a thread was not
//!   running. A wait starts where it began, but no earlier than the thread's sample before it
//!   (the kernel sums short waits into one sample, whose start is then an estimate). With
//!   `--event off-cpu` (only threads that waited have tracks) or `wall` they are samples too,
//!   placed at the start of
//!   the wait with its stack and a leaf frame `[off-cpu: blocked|runnable]` (category
//!   `Off-CPU`, blue), weighted in sampling periods (the remainder carried to the thread's
//!   next one, so that no time is lost to rounding) with no CPU delta: the call tree then
//!   counts waits in the same unit as CPU time, and the activity graph stays a CPU graph.
//!
//! What the profile does with each kind of sample is decided in one place, [`kinds`]; the leaf
//! frames, their category's name and the markers' names come from the kind's descriptor
//! ([`crate::capture::KindDescriptor`]). The marker types are in [`markers`].
//!
//! Names from the capture (functions, processes, threads) are made printable the way every
//! other output makes them ([`printable`]): the profiler shows them in a browser, where bidi
//! and invisible characters mislead as much as on a terminal.

use std::io::Write;

use anyhow::{Context as _, Result};
use flate2::{Compression, write::GzEncoder};
use fxprof_processed_profile::{
    CategoryHandle, Frame, FrameFlags, FrameInfo, MarkerHandle, MarkerTiming, MarkerTypeHandle,
    ProcessHandle, Profile, ReferenceTimestamp, SamplingInterval, StackHandle, StringHandle,
    ThreadHandle, Timestamp,
};
use rustc_hash::FxHashMap;

mod kinds;
mod markers;

use self::{
    kinds::{Categories, shown},
    markers::{AmprofMarker, MarkerTypes},
};
use super::{Encoder, Ending, frames};
use crate::{
    capture::{Event, KindSet, Meta, Sample, SampleKind, Selection, Window},
    text::printable,
};

/// Threads the profile shows when it opens (the heaviest; the others are one click away in the
/// track menu): the profiler is slow to draw hundreds of tracks, and a system-wide capture has
/// them.
const VISIBLE_THREADS: usize = 20;

/// `report --format firefox`.
pub struct Firefox<'o, W: Write> {
    profile: Profile,
    out: &'o mut W,
    /// Gzip the JSON (the output's name ends in `.gz`).
    gzip: bool,
    event: Event,
    /// The capture's clock at the profile's zero (the start of window 0).
    start_ns: u64,
    period_ns: u64,
    categories: Categories,
    marker_types: MarkerTypes,
    /// The track of window markers, and its process.
    windows_track: ThreadHandle,
    windows_process: ProcessHandle,
    /// The start of the first window added: where the windows track starts.
    first_window_ns: Option<u64>,
    processes: FxHashMap<u32, ProcessTrack>,
    threads: Vec<ThreadTrack>,
    /// `(pid, tid)` to an index into `threads`.
    thread_index: FxHashMap<(u32, u32), usize>,
}

struct ProcessTrack {
    handle: ProcessHandle,
    /// The name it has in the profile (the latest image's).
    name: String,
    first_ns: u64,
}

struct ThreadTrack {
    handle: ThreadHandle,
    pid: u32,
    /// The name the track shows (the thread's latest `comm`, printable).
    name: String,
    /// Where the track starts: its first sample, or the start of its first wait.
    first_ns: u64,
    /// The latest sample's time, if any (an off-CPU wait starts no earlier: the kernel sums
    /// short waits into one sample, whose start is then an estimate).
    last_ns: Option<u64>,
    /// Consecutive on-CPU samples on one CPU, not yet written as a marker.
    run: Option<CpuRun>,
    /// Off-CPU nanoseconds not yet given as weight (less than a period).
    carry_ns: u64,
    /// Sampling periods of samples and waits: which threads the profile shows first.
    periods: u64,
    /// Off-CPU markers (shown in the track itself; threads that only wait still show).
    markers: u64,
}

#[derive(Clone, Copy)]
struct CpuRun {
    cpu: u32,
    start_ns: u64,
    end_ns: u64,
}

impl<'o, W: Write> Firefox<'o, W> {
    /// A profile of `event`'s samples (off-CPU waits are markers whatever the event: see the
    /// module documentation); `gzip`: compress the JSON.
    pub fn new(meta: &Meta, event: Event, gzip: bool, out: &'o mut W) -> Self {
        let period_ns = meta.sample_period_ns().max(1);
        let unix_ms = (meta.start_ns as i128 + meta.realtime_offset_ns as i128) as f64 / 1e6;
        let mut profile = Profile::new(
            &format!("amprof · {}", printable(&meta.hostname)),
            ReferenceTimestamp::from_millis_since_unix_epoch(unix_ms),
            SamplingInterval::from_nanos(period_ns),
        );
        profile.set_os_name(&format!("Linux {}", printable(&meta.kernel_release)));
        // Frames are names already: nothing for the profiler to look up.
        profile.set_symbolicated(true);
        let categories = Categories::add(&mut profile);
        let marker_types = MarkerTypes::register(&mut profile);
        // A main thread's track is named after its process.
        // (The crate gives a profiled process with pid 0 another pid: no clash.)
        let windows_process = profile.add_process(
            "amprof windows",
            0,
            Timestamp::from_nanos_since_reference(0),
        );
        let windows_track = profile.add_thread(
            windows_process,
            0,
            Timestamp::from_nanos_since_reference(0),
            true,
        );
        profile.set_thread_show_markers_in_timeline(windows_track, true);
        Self {
            profile,
            out,
            gzip,
            event,
            start_ns: meta.start_ns,
            period_ns,
            categories,
            marker_types,
            windows_track,
            windows_process,
            first_window_ns: None,
            processes: FxHashMap::default(),
            threads: Vec::new(),
            thread_index: FxHashMap::default(),
        }
    }

    /// A capture time (monotonic ns) as a profile time.
    fn timestamp(&self, ns: u64) -> Timestamp {
        Timestamp::from_nanos_since_reference(ns.saturating_sub(self.start_ns))
    }

    /// Adds a marker of type `kind` named `name` over `[start_ns, end_ns]` to `thread`.
    fn add_marker<const N: usize>(
        &mut self,
        thread: ThreadHandle,
        kind: MarkerTypeHandle,
        category: CategoryHandle,
        name: &str,
        (start_ns, end_ns): (u64, u64),
        values: [f64; N],
    ) -> MarkerHandle {
        let marker = AmprofMarker {
            kind,
            name: self.profile.intern_string(name),
            category,
            values,
        };
        let timing = MarkerTiming::Interval(self.timestamp(start_ns), self.timestamp(end_ns));
        self.profile.add_marker(thread, timing, marker)
    }

    /// The window's markers on the windows track.
    fn add_window_markers(&mut self, window: &Window) {
        self.first_window_ns.get_or_insert(window.start_ns);
        let span = (window.start_ns, window.end_ns);
        let (track, capture) = (self.windows_track, self.categories.capture);
        let counts = [
            window.index,
            window.sample_stacks.len() as u64,
            window.lost,
            window.idle,
            window.late,
            window.truncated,
            window.off_cpu_stacks.len() as u64,
            window.off_cpu_lost,
        ];
        let name = format!("Window {}", window.index);
        let window_type = self.marker_types.window;
        self.add_marker(
            track,
            window_type,
            capture,
            &name,
            span,
            counts.map(|c| c as f64),
        );
        let lost = window.lost.saturating_add(window.off_cpu_lost);
        for (name, count) in [
            ("Lost samples", lost),
            ("Truncated stacks", window.truncated),
        ] {
            if count > 0 {
                let count_type = self.marker_types.count;
                self.add_marker(track, count_type, capture, name, span, [count as f64]);
            }
        }
    }

    /// The track of `sample`'s thread (made at its first sample, in its process's group), its
    /// names brought up to date.
    fn thread_track(&mut self, sample: &Sample<'_>, names: &ThreadNames<'_>) -> usize {
        let pid = sample.process.pid;
        let process_name = printable(&sample.process.name).into_owned();
        let time = sample.time_ns;
        let first = self.timestamp(time);
        let process = match self.processes.get_mut(&pid) {
            Some(process) => {
                if process.name != process_name {
                    // An exec: the group takes the name of the image that runs now.
                    self.profile.set_process_name(process.handle, &process_name);
                    process.name = process_name;
                }
                process.handle
            }
            None => {
                let handle = self.profile.add_process(&process_name, pid, first);
                self.processes.insert(
                    pid,
                    ProcessTrack {
                        handle,
                        name: process_name,
                        first_ns: time,
                    },
                );
                handle
            }
        };
        let name = names.get(sample.tid).unwrap_or(&sample.process.name);
        if let Some(&index) = self.thread_index.get(&(pid, sample.tid)) {
            let thread = &mut self.threads[index];
            if thread.name != printable(name) {
                // Renamed (prctl, or an exec): the track takes the latest name.
                thread.name = printable(name).into_owned();
                self.profile.set_thread_name(thread.handle, &thread.name);
            }
            return index;
        }
        let handle = self
            .profile
            .add_thread(process, sample.tid, first, sample.tid == pid);
        let name = printable(name).into_owned();
        self.profile.set_thread_name(handle, &name);
        self.threads.push(ThreadTrack {
            handle,
            pid,
            name,
            first_ns: time,
            last_ns: None,
            run: None,
            carry_ns: 0,
            periods: 0,
            markers: 0,
        });
        self.thread_index
            .insert((pid, sample.tid), self.threads.len() - 1);
        self.threads.len() - 1
    }
}

impl<W: Write> Encoder for Firefox<'_, W> {
    fn add(&mut self, window: &Window, selection: &Selection) -> Result<()> {
        self.add_window_markers(window);
        let names = ThreadNames::new(window);
        let mut stacks = StackCache::new(window);
        // Names do not change within a window: a thread's track is looked up, and its names
        // checked, once per window and process image, not at every sample.
        let mut tracks: FxHashMap<(u32, u32), usize> = FxHashMap::default();
        // Some kinds' samples are markers whatever the event: go through every kind.
        let every_kind = Selection {
            event: Event::of_kinds(KindSet::of(&SampleKind::ALL)),
            ..selection.clone()
        };
        let kinds = self.event.kinds();
        for sample in every_kind.samples(window) {
            if !kinds.contains(sample.kind()) && !shown(sample.kind()).marked {
                // No track for a thread only on the CPU in a profile of waits.
                continue;
            }
            let track = *tracks
                .entry((sample.process_index, sample.tid))
                .or_insert_with(|| self.thread_track(&sample, &names));
            self.add_sample(track, &sample, &mut stacks);
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, _: &Ending<'_>) -> Result<Vec<String>> {
        for track in 0..self.threads.len() {
            self.end_run(track);
        }
        // Tracks start at their first sample or wait (a wait starts before the sample that
        // reports it); the windows track at the first window selected.
        if let Some(first) = self.first_window_ns {
            let first = self.timestamp(first);
            self.profile
                .set_thread_start_time(self.windows_track, first);
            self.profile
                .set_process_start_time(self.windows_process, first);
        }
        for thread in &self.threads {
            let first = self.timestamp(thread.first_ns);
            self.profile.set_thread_start_time(thread.handle, first);
            if thread.markers > 0 {
                self.profile
                    .set_thread_show_markers_in_timeline(thread.handle, true);
            }
        }
        for process in self.processes.values() {
            let first = self.timestamp(process.first_ns);
            self.profile.set_process_start_time(process.handle, first);
        }
        let mut heaviest: Vec<&ThreadTrack> = self
            .threads
            .iter()
            .filter(|t| t.periods > 0 || t.markers > 0)
            .collect();
        heaviest.sort_by(|a, b| {
            (b.periods, b.markers)
                .cmp(&(a.periods, a.markers))
                .then(a.pid.cmp(&b.pid))
        });
        if let Some(first) = heaviest.first() {
            self.profile.add_initial_selected_thread(first.handle);
            self.profile.add_initial_visible_thread(self.windows_track);
            for thread in heaviest.iter().take(VISIBLE_THREADS) {
                self.profile.add_initial_visible_thread(thread.handle);
            }
        }
        let this = *self;
        if this.gzip {
            let mut gzip = GzEncoder::new(this.out, Compression::default());
            serde_json::to_writer(&mut gzip, &this.profile)
                .context("cannot write the Firefox profile")?;
            gzip.finish().context("cannot write the Firefox profile")?;
        } else {
            serde_json::to_writer(this.out, &this.profile)
                .context("cannot write the Firefox profile")?;
        }
        Ok(Vec::new())
    }
}

/// Thread names of a window (`comm`, by tid; unnamed threads left out).
struct ThreadNames<'w>(FxHashMap<u32, &'w str>);

impl<'w> ThreadNames<'w> {
    fn new(window: &'w Window) -> Self {
        Self(
            window
                .threads
                .iter()
                .filter(|thread| !thread.name.is_empty())
                .map(|thread| (thread.tid, thread.name.as_str()))
                .collect(),
        )
    }

    fn get(&self, tid: u32) -> Option<&'w str> {
        self.0.get(&tid).copied()
    }
}

/// A window's stacks as profile stacks, made once per thread and leaf (the profile keeps
/// stacks per thread), and its locations' frame names, made once.
struct StackCache<'w> {
    window: &'w Window,
    /// Per location: its frames' names, innermost first.
    names: Vec<Option<Vec<StringHandle>>>,
    /// By thread, stack and leaf frame.
    stacks: FxHashMap<(ThreadHandle, u32, Option<&'static str>), Option<StackHandle>>,
}

impl<'w> StackCache<'w> {
    fn new(window: &'w Window) -> Self {
        Self {
            window,
            names: vec![None; window.locations.len()],
            stacks: FxHashMap::default(),
        }
    }

    /// The stack of `sample` in `thread`, root first, ending with the synthetic `leaf` frame
    /// (its name and category) if any.
    fn stack(
        &mut self,
        profile: &mut Profile,
        categories: &Categories,
        thread: ThreadHandle,
        sample: &Sample<'w>,
        leaf: Option<(&'static str, CategoryHandle)>,
    ) -> Option<StackHandle> {
        let key = (thread, sample.stack_index, leaf.map(|(name, _)| name));
        if let Some(&stack) = self.stacks.get(&key) {
            return stack;
        }
        let window = self.window;
        let stack = sample.stack;
        let kernel = stack.kernel_frames as usize;
        let mut frames = Vec::new();
        // Locations are leaf first, the kernel's before the user's: walk them backwards.
        for (depth, &id) in stack.locations.iter().enumerate().rev() {
            let Some(location) = window.locations.get(id as usize) else {
                continue;
            };
            let category = if depth < kernel {
                categories.kernel
            } else {
                categories.user
            };
            let names = self.names[id as usize].get_or_insert_with(|| {
                let mut names = Vec::new();
                frames::for_each_frame(window, location, |frame| {
                    names.push(profile.intern_string(&printable(&frame.to_string())));
                });
                names
            });
            // Innermost (most inlined) first in the location; callers first in the stack.
            for &name in names.iter().rev() {
                frames.push(FrameInfo {
                    frame: Frame::Label(name),
                    category_pair: category.into(),
                    flags: FrameFlags::empty(),
                });
            }
        }
        if let Some((name, category)) = leaf {
            frames.push(FrameInfo {
                frame: Frame::Label(profile.intern_string(name)),
                category_pair: category.into(),
                flags: FrameFlags::empty(),
            });
        }
        let handle = profile.intern_stack_frames(thread, frames.into_iter());
        self.stacks.insert(key, handle);
        handle
    }
}
