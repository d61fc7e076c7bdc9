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
//! Names from the capture (functions, processes, threads) are made printable the way every
//! other output makes them ([`printable`]): the profiler shows them in a browser, where bidi
//! and invisible characters mislead as much as on a terminal.

use std::io::Write;

use anyhow::{Context as _, Result};
use flate2::{Compression, write::GzEncoder};
use fxprof_processed_profile::{
    CategoryColor, CategoryHandle, CpuDelta, Frame, FrameFlags, FrameInfo, Marker,
    MarkerFieldFlags, MarkerFieldFormat, MarkerHandle, MarkerLocations, MarkerTiming,
    MarkerTypeHandle, ProcessHandle, Profile, ReferenceTimestamp, RuntimeSchemaMarkerField,
    RuntimeSchemaMarkerSchema, SamplingInterval, StackHandle, StringHandle, ThreadHandle,
    Timestamp,
};
use rustc_hash::FxHashMap;

use super::{Encoder, Ending, folded::off_cpu_frame, frames};
use crate::{
    capture::{Event, Meta, Sample, Selection, Window, format::OffCpuReason},
    text::printable,
};

/// Threads the profile shows when it opens (the heaviest; the others are one click away in the
/// track menu): the profiler is slow to draw hundreds of tracks, and a system-wide capture has
/// them.
const VISIBLE_THREADS: usize = 20;

/// A run of samples ends when its thread goes unsampled for this many periods.
const RUN_GAP_PERIODS: u64 = 2;

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

struct Categories {
    user: CategoryHandle,
    kernel: CategoryHandle,
    off_cpu: CategoryHandle,
    capture: CategoryHandle,
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
        let categories = Categories {
            user: profile.add_category("User", CategoryColor::Yellow),
            kernel: profile.add_category("Kernel", CategoryColor::Orange),
            off_cpu: profile.add_category("Off-CPU", CategoryColor::Blue),
            capture: profile.add_category("Capture", CategoryColor::Gray),
        };
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

    /// Writes the thread's CPU run, if any, as a marker.
    fn end_run(&mut self, track: usize) {
        let Some(run) = self.threads[track].run.take() else {
            return;
        };
        // A cpu-clock sample stands for the period before it.
        let span = (run.start_ns.saturating_sub(self.period_ns), run.end_ns);
        let (thread, kind) = (self.threads[track].handle, self.marker_types.cpu);
        let name = format!("CPU {}", run.cpu);
        let category = self.categories.capture;
        self.add_marker(thread, kind, category, &name, span, [f64::from(run.cpu)]);
    }

    fn add_on_cpu(&mut self, track: usize, sample: &Sample<'_>, stack: Option<StackHandle>) {
        let time = sample.time_ns;
        let continues = self.threads[track].run.is_some_and(|run| {
            run.cpu == sample.cpu
                && time.saturating_sub(run.end_ns) <= RUN_GAP_PERIODS * self.period_ns
        });
        if continues {
            if let Some(run) = &mut self.threads[track].run {
                run.end_ns = time;
            }
        } else {
            self.end_run(track);
            self.threads[track].run = Some(CpuRun {
                cpu: sample.cpu,
                start_ns: time,
                end_ns: time,
            });
        }
        let thread = &mut self.threads[track];
        thread.last_ns = Some(thread.last_ns.map_or(time, |last| last.max(time)));
        thread.periods += 1;
        let handle = thread.handle;
        let timestamp = self.timestamp(time);
        self.profile.add_sample(
            handle,
            timestamp,
            stack,
            CpuDelta::from_nanos(self.period_ns),
            1,
        );
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
        // Off-CPU samples are markers whatever the event: go through both kinds.
        let both = Selection {
            event: Event::Wall,
            ..selection.clone()
        };
        for sample in both.samples(window) {
            if sample.off_cpu().is_none() && !self.event.includes_on_cpu() {
                // No track for a thread only on the CPU in a profile of waits.
                continue;
            }
            let track = *tracks
                .entry((sample.process_index, sample.tid))
                .or_insert_with(|| self.thread_track(&sample, &names));
            let thread = self.threads[track].handle;
            match sample.off_cpu() {
                None => {
                    let stack =
                        stacks.stack(&mut self.profile, &self.categories, thread, &sample, None);
                    self.add_on_cpu(track, &sample, stack);
                }
                Some(off) => {
                    self.end_run(track);
                    let end = sample.time_ns;
                    // The marker is the wait itself; the samples below weigh what it stands for
                    // (a short wait kept for the period stands for the period).
                    let mut start = end.saturating_sub(off.wait_ns);
                    if let Some(last) = self.threads[track].last_ns {
                        start = start.max(last.min(end));
                    }
                    let stack =
                        stacks.stack(&mut self.profile, &self.categories, thread, &sample, None);
                    let name = match off.reason {
                        OffCpuReason::Blocked => "Blocked",
                        OffCpuReason::Runnable => "Runnable",
                    };
                    let (kind, category) = (self.marker_types.off_cpu, self.categories.off_cpu);
                    let cpu = [f64::from(sample.cpu)];
                    let handle = self.add_marker(thread, kind, category, name, (start, end), cpu);
                    self.profile.set_marker_stack(thread, handle, stack);
                    let track_state = &mut self.threads[track];
                    track_state.markers += 1;
                    track_state.first_ns = track_state.first_ns.min(start);
                    track_state.last_ns = Some(track_state.last_ns.map_or(end, |l| l.max(end)));
                    let pid = track_state.pid;
                    if let Some(process) = self.processes.get_mut(&pid) {
                        process.first_ns = process.first_ns.min(start);
                    }
                    let track_state = &mut self.threads[track];
                    if self.event.includes_off_cpu() {
                        let ns = track_state.carry_ns.saturating_add(off.ns);
                        let periods = ns / self.period_ns;
                        track_state.carry_ns = ns % self.period_ns;
                        track_state.periods = track_state.periods.saturating_add(periods);
                        let leaf = stacks.stack(
                            &mut self.profile,
                            &self.categories,
                            thread,
                            &sample,
                            Some(off.reason),
                        );
                        let timestamp = self.timestamp(start);
                        self.profile.add_sample(
                            thread,
                            timestamp,
                            leaf,
                            CpuDelta::ZERO,
                            // Over 2^31 periods (weeks): the weight says as much as it can.
                            i32::try_from(periods).unwrap_or(i32::MAX),
                        );
                    }
                }
            }
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
    stacks: FxHashMap<(ThreadHandle, u32, Option<OffCpuReason>), Option<StackHandle>>,
}

impl<'w> StackCache<'w> {
    fn new(window: &'w Window) -> Self {
        Self {
            window,
            names: vec![None; window.locations.len()],
            stacks: FxHashMap::default(),
        }
    }

    /// The stack of `sample` in `thread`, root first, with an off-CPU leaf frame for `leaf`.
    fn stack(
        &mut self,
        profile: &mut Profile,
        categories: &Categories,
        thread: ThreadHandle,
        sample: &Sample<'w>,
        leaf: Option<OffCpuReason>,
    ) -> Option<StackHandle> {
        let key = (thread, sample.stack_index, leaf);
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
        if let Some(reason) = leaf {
            frames.push(FrameInfo {
                frame: Frame::Label(profile.intern_string(off_cpu_frame(reason))),
                category_pair: categories.off_cpu.into(),
                flags: FrameFlags::empty(),
            });
        }
        let handle = profile.intern_stack_frames(thread, frames.into_iter());
        self.stacks.insert(key, handle);
        handle
    }
}

/// One of the marker types amprof writes: its schema, every field an integer.
struct MarkerType {
    name: &'static str,
    description: &'static str,
    locations: MarkerLocations,
    chart_label: &'static str,
    tooltip_label: &'static str,
    table_label: &'static str,
    /// `(key, label)` of each field, in the order of [`AmprofMarker::values`].
    fields: &'static [(&'static str, &'static str)],
}

/// Marker chart and table, and the track's own timeline.
const IN_TIMELINE: MarkerLocations = MarkerLocations::MARKER_CHART
    .union(MarkerLocations::MARKER_TABLE)
    .union(MarkerLocations::TIMELINE_OVERVIEW);

/// `Window N`: a window's interval and counts.
const WINDOW: MarkerType = MarkerType {
    name: "AmprofWindow",
    description: "A window of the capture: amprof records and writes samples window by window.",
    locations: IN_TIMELINE,
    chart_label: "{marker.name}",
    tooltip_label: "{marker.name}: {marker.data.samples} samples, {marker.data.lost} lost",
    table_label: "{marker.name}: {marker.data.samples} samples, {marker.data.lost} lost, {marker.data.truncated} truncated",
    fields: &[
        ("index", "Window"),
        ("samples", "On-CPU samples (all processes)"),
        ("lost", "Samples lost (ring buffer full)"),
        ("idle", "Samples of an idle CPU"),
        ("late", "Samples that came after the window was written"),
        ("truncated", "Stacks cut short (DWARF unwinding)"),
        ("offCpuSamples", "Off-CPU samples (all processes)"),
        ("offCpuLost", "Off-CPU samples lost"),
    ],
};

/// `Lost samples`, `Truncated stacks`: a count over a window.
const COUNT: MarkerType = MarkerType {
    name: "AmprofCount",
    description: "Samples a window lost, or stacks it cut short.",
    locations: IN_TIMELINE,
    chart_label: "{marker.data.count}",
    tooltip_label: "{marker.name}: {marker.data.count}",
    table_label: "{marker.name}: {marker.data.count}",
    fields: &[("count", "Count")],
};

/// `CPU n`: a thread running on CPU n.
const CPU: MarkerType = MarkerType {
    name: "AmprofCpu",
    description: "The CPU the thread's consecutive on-CPU samples were taken on.",
    locations: MarkerLocations::MARKER_CHART.union(MarkerLocations::MARKER_TABLE),
    chart_label: "{marker.name}",
    tooltip_label: "on {marker.name}",
    table_label: "on {marker.name}",
    fields: &[("cpu", "CPU")],
};

/// `Blocked`, `Runnable`: a thread off the CPU, with the stack it waited in.
const OFF_CPU: MarkerType = MarkerType {
    name: "AmprofOffCpu",
    description: "Time the thread spent off the CPU: blocked (a sleep, a lock, I/O) or runnable (waiting for a CPU).",
    locations: IN_TIMELINE,
    chart_label: "{marker.name}",
    tooltip_label: "Off-CPU: {marker.name}",
    table_label: "off-CPU, {marker.name}",
    fields: &[("cpu", "Ran again on CPU")],
};

/// The profile's handles of [`WINDOW`], [`COUNT`], [`CPU`] and [`OFF_CPU`].
struct MarkerTypes {
    window: MarkerTypeHandle,
    count: MarkerTypeHandle,
    cpu: MarkerTypeHandle,
    off_cpu: MarkerTypeHandle,
}

impl MarkerTypes {
    fn register(profile: &mut Profile) -> Self {
        let mut register = |t: &MarkerType| {
            profile.register_marker_type(RuntimeSchemaMarkerSchema {
                type_name: t.name.into(),
                description: Some(t.description.into()),
                locations: t.locations,
                chart_label: Some(t.chart_label.into()),
                tooltip_label: Some(t.tooltip_label.into()),
                table_label: Some(t.table_label.into()),
                fields: t
                    .fields
                    .iter()
                    .map(|&(key, label)| RuntimeSchemaMarkerField {
                        key: key.into(),
                        label: label.into(),
                        format: MarkerFieldFormat::Integer,
                        flags: MarkerFieldFlags::empty(),
                    })
                    .collect(),
                graphs: Vec::new(),
            })
        };
        Self {
            window: register(&WINDOW),
            count: register(&COUNT),
            cpu: register(&CPU),
            off_cpu: register(&OFF_CPU),
        }
    }
}

/// A marker of one of amprof's types: its name, and a number for each of the type's fields.
struct AmprofMarker<const N: usize> {
    kind: MarkerTypeHandle,
    name: StringHandle,
    category: CategoryHandle,
    values: [f64; N],
}

impl<const N: usize> Marker for AmprofMarker<N> {
    fn marker_type(&self, _: &mut Profile) -> MarkerTypeHandle {
        self.kind
    }

    fn name(&self, _: &mut Profile) -> StringHandle {
        self.name
    }

    fn category(&self, _: &mut Profile) -> CategoryHandle {
        self.category
    }

    /// amprof's types have no string fields: never called.
    fn string_field_value(&self, _: u32) -> StringHandle {
        self.name
    }

    fn number_field_value(&self, field_index: u32) -> f64 {
        self.values
            .get(field_index as usize)
            .copied()
            .unwrap_or_default()
    }
}
