//! pprof (Google's `profile.proto`): `amprof report --format pprof`, and the profiles that
//! `amprof push datadog` uploads. Both come out of one builder, [`ProfileBuilder`], which
//! hands the work to Datadog's own `libdd-profiling` (the library behind its native profiler), so
//! that what we upload is built the way Datadog's profilers build it.
//!
//! What a profile holds:
//! - the sample types of its [`Values`]: for on-CPU samples `cpu-samples`/`count` and
//!   `cpu-time`/`nanoseconds` (what Datadog's native profiler sends: its UI then shows a CPU
//!   profile), period type `cpu-time`/`nanoseconds` with the sampling period (1 s / frequency);
//!   off-CPU samples (`record --off-cpu`) get types of their own, never added to on-CPU ones;
//! - time and duration: the start of the first window added and the end of the last one, on the
//!   Unix epoch clock;
//! - one sample per captured sample, with the labels [`labels`] (process, thread, CPU, and why
//!   an off-CPU sample was off the CPU) and the numeric label `end_timestamp_ns` (its time; for
//!   an off-CPU sample the moment it ran again, which ends the time it stands for; Datadog's
//!   timeline view reads it);
//! - mappings with the module's path and GNU build-id (hex), locations with their address, and
//!   functions named exactly as every other format names them ([`super::frames`]), with the
//!   source file and line when debug info gave them.
//!
//! libdd-profiling 1.0 gives each location exactly one line, so an address that symbolized to
//! inlined frames becomes one location per frame, all at that address, innermost first (as
//! Datadog's native profiler does). It writes zstd-compressed pprof only: `report` decompresses
//! and writes gzip, which `go tool pprof` and every pprof reader take.

use std::{
    borrow::Cow,
    io::Write,
    num::NonZeroI64,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, anyhow};
use libdd_profiling::{
    api,
    internal::{EncodedProfile, Profile},
};
use rustc_hash::FxHashMap;

use super::{Encoder, Ending, frames};
use crate::{
    capture::{
        Event, KindSet, Meta, SampleKind, Selection,
        format::{Location, Stack, Window},
    },
    error::bad_input,
};

/// Label keys of each sample. Datadog's native profiler (ddprof) uses these names, with ids as
/// strings: they are categories to filter and group by, not quantities (and pprof readers drop
/// a numeric label whose value is 0, such as CPU 0). The thread ones are those Datadog's UI
/// (timeline, thread filters) reads.
pub mod labels {
    /// The process id.
    pub const PROCESS_ID: &str = "process_id";
    /// The process name: the `comm` of its main thread.
    pub const PROCESS_NAME: &str = "process_name";
    /// The thread id.
    pub const THREAD_ID: &str = "thread id";
    /// The thread's `comm`.
    pub const THREAD_NAME: &str = "thread name";
    /// The CPU the sample was taken on (for an off-CPU sample: the one it ran again on).
    pub const CPU: &str = "cpu";
    /// Why an off-CPU sample was off the CPU: `blocked` (it waited: a sleep, a lock, I/O) or
    /// `runnable` (preempted, it waited for a CPU). On-CPU samples have none.
    pub const OFF_CPU_REASON: &str = "off_cpu_reason";
    /// The sample's time in ns since the Unix epoch (numeric; added by libdd-profiling).
    pub const END_TIMESTAMP_NS: &str = "end_timestamp_ns";
}

/// Datadog's names for where a thread's time went, on the CPU or off it: dd-trace-py and
/// dd-trace-rb send `wall-time` with `wall-samples` beside `cpu-time`, and Datadog's UI shows
/// them as the wall time profile. `report --event wall` names its sum `wall-time` too.
const WALL_SAMPLES: (&str, &str) = ("wall-samples", "count");
const WALL_TIME: (&str, &str) = ("wall-time", "nanoseconds");

/// `(type, unit)` of the period, when the profile has periodic samples (on-CPU ones): the
/// weight of the on-CPU kind.
pub const PERIOD_TYPE: (&str, &str) = SampleKind::OnCpu.descriptor().pprof[1];

/// What a profile's samples measure: which kinds of samples it takes, and the values each one
/// carries, from the kinds' descriptors. A value counts one kind of sample only, except the
/// wall ones, which are by definition the sum of every kind that is a thread's time (on the
/// CPU or off it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Values {
    kinds: KindSet,
    columns: Vec<Column>,
}

/// One value of every sample: its type, and what of which kinds it adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Column {
    type_unit: (&'static str, &'static str),
    kinds: KindSet,
    measure: Measure,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Measure {
    /// 1 per sample.
    Count,
    /// What the sample stands for (a period on the CPU, the time off it).
    Weight,
}

impl Values {
    /// The values of `report --event EVENT`: each kind's count and weight, as its descriptor
    /// names them, and with more than one kind of thread time, their sum as `wall-time` (last:
    /// the default type of pprof readers, which show the last one).
    pub fn of_event(event: Event) -> Self {
        let kinds = event.kinds();
        let mut columns: Vec<Column> = kinds.iter().flat_map(own_columns).collect();
        let thread_time = thread_time_kinds(kinds);
        if thread_time.len() > 1 {
            columns.push(Column {
                type_unit: WALL_TIME,
                kinds: thread_time,
                measure: Measure::Weight,
            });
        }
        Self { kinds, columns }
    }

    /// The values of Datadog uploads of the capture `meta` describes, as Datadog's profilers
    /// send them: each recorded kind's own Datadog types where it has them (on-CPU:
    /// `cpu-samples`, `cpu-time`), then, if a recorded kind of thread time has none (off-CPU),
    /// `wall-samples` and `wall-time` over every kind of thread time. A capture without off-CPU
    /// samples is exactly the CPU profile.
    pub fn datadog(meta: &Meta) -> Self {
        let mut kinds = KindSet::of(&[SampleKind::OnCpu]);
        if meta.off_cpu_period_ns != 0 {
            kinds = kinds.with(SampleKind::OffCpu);
        }
        let mut columns = Vec::new();
        for kind in kinds.iter() {
            for (type_unit, measure) in kind
                .descriptor()
                .datadog
                .into_iter()
                .flatten()
                .zip([Measure::Count, Measure::Weight])
            {
                columns.push(Column {
                    type_unit,
                    kinds: KindSet::of(&[kind]),
                    measure,
                });
            }
        }
        let thread_time = thread_time_kinds(kinds);
        if thread_time
            .iter()
            .any(|kind| kind.descriptor().datadog.is_none())
        {
            for (type_unit, measure) in
                [(WALL_SAMPLES, Measure::Count), (WALL_TIME, Measure::Weight)]
            {
                columns.push(Column {
                    type_unit,
                    kinds: thread_time,
                    measure,
                });
            }
        }
        Self { kinds, columns }
    }

    /// `(type, unit)` of each value, in order.
    pub fn sample_types(&self) -> Vec<(&'static str, &'static str)> {
        self.columns.iter().map(|c| c.type_unit).collect()
    }

    /// The kinds of samples it takes.
    pub fn kinds(&self) -> KindSet {
        self.kinds
    }

    /// The samples it takes, as a selection's event.
    pub fn event(&self) -> Event {
        Event::of_kinds(self.kinds)
    }

    /// The values of one sample of `kind` that stands for `weight`, into `values` (reused from
    /// sample to sample: the report's hot path allocates nothing per sample).
    fn of_sample(&self, kind: SampleKind, weight: i64, values: &mut Vec<i64>) {
        values.clear();
        values.extend(self.columns.iter().map(|column| {
            match (column.kinds.contains(kind), column.measure) {
                (false, _) => 0,
                (true, Measure::Count) => 1,
                (true, Measure::Weight) => weight,
            }
        }));
    }
}

/// A kind's own count and weight, as its descriptor names them for pprof.
fn own_columns(kind: SampleKind) -> impl Iterator<Item = Column> {
    kind.descriptor()
        .pprof
        .into_iter()
        .zip([Measure::Count, Measure::Weight])
        .map(move |(type_unit, measure)| Column {
            type_unit,
            kinds: KindSet::of(&[kind]),
            measure,
        })
}

/// The kinds of `kinds` that are a thread's time.
fn thread_time_kinds(kinds: KindSet) -> KindSet {
    KindSet::of(
        &kinds
            .iter()
            .filter(|kind| kind.descriptor().thread_time)
            .collect::<Vec<_>>(),
    )
}

/// The largest compressed profile libdd-profiling writes (it fails beyond).
const MAX_PROFILE_MIB: usize = 16;

/// Builds one pprof profile from the samples of one or more windows.
pub struct ProfileBuilder {
    profile: Profile,
    values: Values,
    period_ns: i64,
    realtime_offset_ns: i64,
    /// Monotonic start of the first window added and end of the last one.
    span: Option<(u64, u64)>,
    /// Where the profile starts when no window is added.
    capture_start_ns: u64,
    samples: u64,
    off_cpu_samples: u64,
}

impl ProfileBuilder {
    /// An empty profile of `values` for a capture described by `meta`.
    pub fn new(meta: &Meta, values: Values) -> Result<Self> {
        if meta.frequency_hz == 0 || meta.frequency_hz > 1_000_000_000 {
            return Err(bad_input(format!(
                "the capture's sampling frequency ({} Hz) is not usable",
                meta.frequency_hz
            )));
        }
        let period_ns = (1_000_000_000 / meta.frequency_hz) as i64;
        let sample_types: Vec<api::ValueType> = values
            .sample_types()
            .iter()
            .map(|&(t, u)| api::ValueType::new(t, u))
            .collect();
        // The period is the on-CPU sampling period. Off-CPU samples have none: each stands for
        // the time it carries (the kernel side's `off_cpu_period_ns` only bounds how short
        // blocks are summed), so an off-CPU profile has no period.
        let periodic = values.kinds().iter().any(|k| k.descriptor().periodic);
        let period = periodic.then(|| api::Period {
            r#type: api::ValueType::new(PERIOD_TYPE.0, PERIOD_TYPE.1),
            value: period_ns,
        });
        let profile =
            Profile::try_new(&sample_types, period).context("cannot start a pprof profile")?;
        Ok(Self {
            profile,
            values,
            period_ns,
            realtime_offset_ns: meta.realtime_offset_ns,
            span: None,
            capture_start_ns: meta.start_ns,
            samples: 0,
            off_cpu_samples: 0,
        })
    }

    /// Samples added so far, of both kinds.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Off-CPU samples added so far.
    pub fn off_cpu_samples(&self) -> u64 {
        self.off_cpu_samples
    }

    /// Adds the samples of `window` that `selection` keeps and whose stack `keep` accepts, of
    /// the kinds the profile's [`Values`] take (whatever `selection.event` says: a sample is
    /// never given values meant for the other kind); the profile's time span grows to cover the
    /// window even if none is.
    pub fn add_window(
        &mut self,
        window: &Window,
        selection: &Selection,
        keep: &dyn Fn(&Stack) -> bool,
    ) -> Result<()> {
        let selection = Selection {
            event: self.values.event(),
            ..selection.clone()
        };
        self.span = Some(match self.span {
            None => (window.start_ns, window.end_ns),
            Some((start, end)) => (start.min(window.start_ns), end.max(window.end_ns)),
        });
        let kept: Vec<bool> = window
            .stacks
            .iter()
            .zip(selection.kept_stacks(window))
            .map(|(stack, selected)| selected && keep(stack))
            .collect();
        // Only the locations of kept stacks are named: a window pushed as one profile per
        // program is gone through once per program.
        let mut needed = vec![false; window.locations.len()];
        for (stack, _) in window.stacks.iter().zip(&kept).filter(|(_, k)| **k) {
            for &id in &stack.locations {
                if let Some(needed) = needed.get_mut(id as usize) {
                    *needed = true;
                }
            }
        }
        let names = WindowNames::new(window, &needed);
        let stacks: Vec<Option<Vec<api::Location>>> = window
            .stacks
            .iter()
            .zip(&kept)
            .map(|(stack, &kept)| kept.then(|| names.stack_locations(window, stack)))
            .collect();
        // By tid alone: a process re-read within a window (after an exec, or a new mapping) is
        // two process entries, and its threads are listed under one of them.
        let threads: FxHashMap<u32, &str> = window
            .threads
            .iter()
            .map(|t| (t.tid, t.name.as_str()))
            .collect();
        // Label values, formatted once per window.
        let pids: Vec<String> = window.processes.iter().map(|p| p.pid.to_string()).collect();
        let mut numbers: FxHashMap<u32, String> = FxHashMap::default();
        for &n in window
            .sample_tids
            .iter()
            .chain(&window.sample_cpus)
            .chain(&window.off_cpu_tids)
            .chain(&window.off_cpu_cpus)
        {
            numbers.entry(n).or_insert_with(|| n.to_string());
        }
        let mut values = Vec::with_capacity(self.values.columns.len());
        for sample in selection.samples(window) {
            let Some(Some(locations)) = stacks.get(sample.stack_index as usize) else {
                continue;
            };
            let weight =
                i64::try_from(sample.nanoseconds(self.period_ns as u64)).unwrap_or(i64::MAX);
            self.values.of_sample(sample.kind(), weight, &mut values);
            let mut sample_labels = Vec::with_capacity(6);
            sample_labels.push(label(
                labels::PROCESS_ID,
                &pids[sample.process_index as usize],
            ));
            if !sample.process.name.is_empty() {
                sample_labels.push(label(labels::PROCESS_NAME, &sample.process.name));
            }
            sample_labels.push(label(labels::THREAD_ID, &numbers[&sample.tid]));
            if let Some(name) = threads.get(&sample.tid).filter(|n| !n.is_empty()) {
                sample_labels.push(label(labels::THREAD_NAME, name));
            }
            sample_labels.push(label(labels::CPU, &numbers[&sample.cpu]));
            if let (Some(off), Some(name)) = (sample.off_cpu(), sample.kind().descriptor().label) {
                sample_labels.push(label(name, off.reason.name()));
            }
            let profile_sample = api::Sample {
                locations: locations.clone(),
                values: &values,
                labels: sample_labels,
            };
            let timestamp = NonZeroI64::new(self.unix_ns(sample.time_ns).max(1));
            self.profile
                .try_add_sample(profile_sample, timestamp)
                .with_context(|| format!("cannot add a sample of window {}", window.index))?;
            self.samples += 1;
            self.off_cpu_samples += u64::from(sample.off_cpu().is_some());
        }
        Ok(())
    }

    /// Start and end of the profile, in ns since the Unix epoch.
    pub fn time_span_unix_ns(&self) -> (i64, i64) {
        let (start, end) = self
            .span
            .unwrap_or((self.capture_start_ns, self.capture_start_ns));
        (self.unix_ns(start), self.unix_ns(end))
    }

    /// The profile, zstd-compressed pprof, with its start and end.
    pub fn finish(mut self) -> Result<EncodedProfile> {
        let (start, end) = self.time_span_unix_ns();
        let (start, end) = (system_time(start), system_time(end));
        self.profile.set_start_time(start)?;
        let duration = end.duration_since(start).unwrap_or_default();
        self.profile
            .serialize_into_compressed_pprof(Some(end), Some(duration))
            .map_err(|e| {
                anyhow!(
                    "cannot encode the pprof profile ({e}); profiles are limited to {MAX_PROFILE_MIB} MiB compressed: select fewer windows or processes"
                )
            })
    }

    fn unix_ns(&self, monotonic_ns: u64) -> i64 {
        (i128::from(monotonic_ns) + i128::from(self.realtime_offset_ns))
            .clamp(0, i128::from(i64::MAX)) as i64
    }
}

fn system_time(unix_ns: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(unix_ns.max(0) as u64)
}

fn label<'a>(key: &'static str, value: &'a str) -> api::Label<'a> {
    api::Label {
        key,
        str: value,
        ..api::Label::default()
    }
}

/// One source-level frame of a location.
struct Frame<'w> {
    name: Cow<'w, str>,
    file: &'w str,
    line: i64,
}

/// The names of a window's frames and the build-ids of its modules, computed once per window.
struct WindowNames<'w> {
    /// Per location, its frames, innermost first (none for the locations not needed).
    frames: Vec<Vec<Frame<'w>>>,
    /// Per module, its build-id in hex ("" when unknown).
    build_ids: Vec<String>,
}

impl<'w> WindowNames<'w> {
    /// The names of the locations `needed` says (by index); the others get none.
    fn new(window: &'w Window, needed: &[bool]) -> Self {
        let frames = window
            .locations
            .iter()
            .zip(needed)
            .map(|(location, &needed)| {
                if !needed {
                    return Vec::new();
                }
                let mut frames = Vec::with_capacity(location.lines.len().max(1));
                let mut lines = location.lines.iter();
                frames::for_each_frame(window, location, |frame| {
                    // One frame per line, in order (or one for an unsymbolized location).
                    let line = lines.next();
                    let function = line.and_then(|l| window.functions.get(l.function as usize));
                    frames.push(Frame {
                        name: match frame {
                            frames::FrameName::Function(name) => Cow::Borrowed(name),
                            other => Cow::Owned(other.to_string()),
                        },
                        file: function.map_or("", |f| f.file.as_str()),
                        line: line.map_or(0, |l| l.line.into()),
                    });
                });
                frames
            })
            .collect();
        let build_ids = window
            .modules
            .iter()
            .map(|m| m.build_id.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        Self { frames, build_ids }
    }

    /// The pprof locations of `stack`, leaf first.
    fn stack_locations(&self, window: &'w Window, stack: &Stack) -> Vec<api::Location<'_>> {
        let mut locations = Vec::with_capacity(stack.locations.len());
        for &id in &stack.locations {
            let Some(location) = window.locations.get(id as usize) else {
                continue;
            };
            let mapping = self.mapping(window, location);
            for frame in &self.frames[id as usize] {
                locations.push(api::Location {
                    mapping,
                    function: api::Function {
                        name: &frame.name,
                        system_name: "",
                        filename: frame.file,
                    },
                    address: location.address,
                    line: frame.line,
                });
            }
        }
        locations
    }

    fn mapping(&self, window: &'w Window, location: &Location) -> api::Mapping<'_> {
        if let Some(index) = (location.kernel_module as usize).checked_sub(1) {
            let Some(module) = window.modules.get(index) else {
                return api::Mapping::default();
            };
            // Kernel addresses are kernel virtual addresses; the kernel's extent is not recorded.
            return api::Mapping {
                memory_start: 0,
                memory_limit: u64::MAX,
                file_offset: 0,
                filename: &module.path,
                build_id: &self.build_ids[index],
            };
        }
        let Some((mapping, module)) = (location.mapping as usize)
            .checked_sub(1)
            .and_then(|m| window.mappings.get(m))
            .and_then(|m| Some((m, window.modules.get(m.module as usize)?)))
        else {
            return api::Mapping::default();
        };
        api::Mapping {
            memory_start: mapping.start,
            memory_limit: mapping.end,
            file_offset: mapping.file_offset,
            filename: &module.path,
            build_id: &self.build_ids[mapping.module as usize],
        }
    }
}

/// `report --format pprof`: the selected windows and processes as one gzipped profile, into `W`.
pub struct PprofFile<W: Write> {
    builder: ProfileBuilder,
    out: W,
}

impl<W: Write> PprofFile<W> {
    /// A profile of the samples of `event` (`report --event`).
    pub fn new(meta: &Meta, event: Event, out: W) -> Result<Self> {
        Ok(Self {
            builder: ProfileBuilder::new(meta, Values::of_event(event))?,
            out,
        })
    }
}

impl<W: Write> Encoder for PprofFile<W> {
    fn add(&mut self, window: &Window, selection: &Selection) -> Result<()> {
        self.builder.add_window(window, selection, &|_| true)
    }

    fn finish(self: Box<Self>, _: &Ending<'_>) -> Result<Vec<String>> {
        let encoded = self.builder.finish()?;
        let pprof = zstd::decode_all(encoded.buffer.as_slice())
            .context("cannot decompress the pprof profile")?;
        let pprof = mark_symbolized(&pprof)?;
        let mut gzip = flate2::write::GzEncoder::new(self.out, flate2::Compression::default());
        gzip.write_all(&pprof)
            .and_then(|()| gzip.finish())
            .and_then(|mut out| out.flush())
            .context("cannot write the pprof profile")?;
        Ok(Vec::new())
    }
}

/// Sets the `has_functions`, `has_filenames` and `has_line_numbers` flags of the mappings of an
/// encoded pprof, which libdd-profiling 1.0 does not write. Without them pprof tools take the
/// locations for unsymbolized and re-symbolize them with whatever binaries the reading machine
/// has at those paths (other builds, other names): with them, frames keep amprof's names.
pub fn mark_symbolized(pprof: &[u8]) -> Result<Vec<u8>> {
    use libdd_profiling_protobuf::prost_impls::{Message as _, Profile};
    let mut profile = Profile::decode(pprof).context("cannot re-read the pprof profile")?;
    let functions: FxHashMap<u64, (bool, bool)> = profile
        .functions
        .iter()
        .map(|f| (f.id, (f.filename != 0, false)))
        .collect();
    let mut flags: FxHashMap<u64, (bool, bool)> = FxHashMap::default();
    for location in &profile.locations {
        let entry = flags.entry(location.mapping_id).or_default();
        for line in &location.lines {
            entry.0 |= functions.get(&line.function_id).is_some_and(|f| f.0);
            entry.1 |= line.line != 0;
        }
    }
    for mapping in &mut profile.mappings {
        let (files, lines) = flags.get(&mapping.id).copied().unwrap_or_default();
        mapping.has_functions = true;
        mapping.has_filenames = files;
        mapping.has_line_numbers = lines;
    }
    Ok(profile.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use libdd_profiling_protobuf::prost_impls::{Message as _, Profile as Pprof, Sample};

    use super::*;
    use crate::capture::{
        format::OffCpuReason,
        testing::{START_NS, WindowBuilder, meta},
    };

    /// The period of [`meta`]'s 99 Hz.
    const PERIOD: i64 = 1_000_000_000 / 99;

    fn off_cpu_meta() -> Meta {
        Meta {
            off_cpu_period_ns: 1_000_000,
            ..meta()
        }
    }

    /// Window 0 of process 10 (threads 10 and 11): stack `run` (leaf) on the CPU twice, stack
    /// `wait` off it twice (blocked 3 ms on thread 11, then runnable 2 ms on thread 10), and
    /// stack `sleep`, off the CPU only (40 ms blocked, thread 11).
    fn window() -> Window {
        let mut w = WindowBuilder::new(0);
        let p = w.process(10, "app");
        w.thread(11, p, "worker");
        let [main, run, wait, sleep] = ["main", "run", "wait", "sleep"].map(|f| w.function(f));
        let l_main = w.location(0x100, &[main]);
        let l_run = w.location(0x200, &[run]);
        let l_wait = w.location(0x300, &[wait]);
        let l_sleep = w.location(0x400, &[sleep]);
        let s_run = w.stack(p, &[l_run, l_main], 0);
        let s_wait = w.stack(p, &[l_wait, l_main], 0);
        let s_sleep = w.stack(p, &[l_sleep, l_main], 0);
        w.sample(1_000, 10, 0, s_run);
        w.off_cpu_sample(2_000, 11, 1, s_wait, 3_000_000, OffCpuReason::Blocked);
        w.sample(3_000, 11, 1, s_run);
        w.off_cpu_sample(4_000, 10, 0, s_wait, 2_000_000, OffCpuReason::Runnable);
        w.off_cpu_sample(5_000, 11, 0, s_sleep, 40_000_000, OffCpuReason::Blocked);
        w.build()
    }

    fn profile(meta: &Meta, values: Values, window: &Window) -> Pprof {
        let mut builder = ProfileBuilder::new(meta, values).unwrap();
        builder
            .add_window(window, &Selection::default(), &|_| true)
            .unwrap();
        let encoded = builder.finish().unwrap();
        let raw = zstd::decode_all(encoded.buffer.as_slice()).unwrap();
        Pprof::decode(raw.as_slice()).unwrap()
    }

    fn s(p: &Pprof, i: i64) -> &str {
        &p.string_table[i as usize]
    }

    fn types(p: &Pprof) -> Vec<(&str, &str)> {
        p.sample_types
            .iter()
            .map(|t| (s(p, t.r#type), s(p, t.unit)))
            .collect()
    }

    /// What a sample says: its frames (function names, leaf first), values, string labels
    /// and time (ns since the window's start).
    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
    struct Seen {
        offset_ns: i64,
        frames: Vec<String>,
        values: Vec<i64>,
        labels: Vec<String>,
    }

    fn seen(p: &Pprof) -> Vec<Seen> {
        let unix_start = START_NS as i64 + meta().realtime_offset_ns;
        let function = |id: u64| {
            let f = p.functions.iter().find(|f| f.id == id).unwrap();
            s(p, f.name).to_string()
        };
        let mut all: Vec<Seen> = p
            .samples
            .iter()
            .map(|sample: &Sample| {
                let frames = sample
                    .location_ids
                    .iter()
                    .map(|id| {
                        let l = p.locations.iter().find(|l| l.id == *id).unwrap();
                        function(l.lines[0].function_id)
                    })
                    .collect();
                let time = sample
                    .labels
                    .iter()
                    .find(|l| s(p, l.key) == labels::END_TIMESTAMP_NS)
                    .map(|l| l.num)
                    .unwrap();
                let labels = sample
                    .labels
                    .iter()
                    .filter(|l| l.str != 0)
                    .map(|l| format!("{}={}", s(p, l.key), s(p, l.str)))
                    .collect();
                Seen {
                    offset_ns: time - unix_start,
                    frames,
                    values: sample.values.clone(),
                    labels,
                }
            })
            .collect();
        all.sort();
        all
    }

    fn sample(offset_ns: i64, leaf: &str, values: &[i64], labels: &[&str]) -> Seen {
        Seen {
            offset_ns,
            frames: vec![leaf.into(), "main".into()],
            values: values.to_vec(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
        }
    }

    const T10: [&str; 5] = [
        "process_id=10",
        "process_name=app",
        "thread id=10",
        "thread name=app",
        "cpu=0",
    ];

    fn labels_of(thread: u32, cpu: u32, reason: Option<&str>) -> Vec<String> {
        let name = if thread == 10 { "app" } else { "worker" };
        let mut labels = vec![
            "process_id=10".to_string(),
            "process_name=app".into(),
            format!("thread id={thread}"),
            format!("thread name={name}"),
            format!("cpu={cpu}"),
        ];
        labels.extend(reason.map(|r| format!("off_cpu_reason={r}")));
        labels
    }

    fn with_labels(mut seen: Seen, thread: u32, cpu: u32, reason: Option<&str>) -> Seen {
        seen.labels = labels_of(thread, cpu, reason);
        seen
    }

    #[test]
    fn on_cpu_profiles_leave_off_cpu_samples_out() {
        let p = profile(&off_cpu_meta(), Values::of_event(Event::OnCpu), &window());
        assert_eq!(
            types(&p),
            [("cpu-samples", "count"), ("cpu-time", "nanoseconds")]
        );
        let period = p.period_type.as_ref().unwrap();
        assert_eq!(
            (s(&p, period.r#type), s(&p, period.unit), p.period),
            ("cpu-time", "nanoseconds", PERIOD)
        );
        assert_eq!(
            seen(&p),
            [
                sample(1_000, "run", &[1, PERIOD], &T10),
                with_labels(sample(3_000, "run", &[1, PERIOD], &[]), 11, 1, None),
            ]
        );
        // Functions only on off-CPU stacks are not in the profile.
        assert!(
            !p.functions
                .iter()
                .any(|f| ["wait", "sleep"].contains(&s(&p, f.name)))
        );
    }

    #[test]
    fn off_cpu_profiles_hold_off_cpu_time_and_why() {
        let p = profile(&off_cpu_meta(), Values::of_event(Event::OffCpu), &window());
        assert_eq!(
            types(&p),
            [
                ("off-cpu-samples", "count"),
                ("off-cpu-time", "nanoseconds")
            ]
        );
        // No sampling period: each sample carries its own time.
        assert_eq!((p.period_type, p.period), (None, 0));
        assert_eq!(
            seen(&p),
            [
                with_labels(
                    sample(2_000, "wait", &[1, 3_000_000], &[]),
                    11,
                    1,
                    Some("blocked")
                ),
                with_labels(
                    sample(4_000, "wait", &[1, 2_000_000], &[]),
                    10,
                    0,
                    Some("runnable")
                ),
                with_labels(
                    sample(5_000, "sleep", &[1, 40_000_000], &[]),
                    11,
                    0,
                    Some("blocked")
                ),
            ]
        );
        assert!(!p.functions.iter().any(|f| s(&p, f.name) == "run"));
    }

    #[test]
    fn wall_profiles_keep_each_kind_apart_and_sum_them() {
        let p = profile(&off_cpu_meta(), Values::of_event(Event::Wall), &window());
        assert_eq!(
            types(&p),
            [
                ("cpu-samples", "count"),
                ("cpu-time", "nanoseconds"),
                ("off-cpu-samples", "count"),
                ("off-cpu-time", "nanoseconds"),
                ("wall-time", "nanoseconds"),
            ]
        );
        assert_eq!(p.period, PERIOD);
        let on = |at, thread, cpu| {
            with_labels(
                sample(at, "run", &[1, PERIOD, 0, 0, PERIOD], &[]),
                thread,
                cpu,
                None,
            )
        };
        let off = |at, leaf, ns, thread, cpu, reason| {
            with_labels(
                sample(at, leaf, &[0, 0, 1, ns, ns], &[]),
                thread,
                cpu,
                Some(reason),
            )
        };
        assert_eq!(
            seen(&p),
            [
                on(1_000, 10, 0),
                off(2_000, "wait", 3_000_000, 11, 1, "blocked"),
                on(3_000, 11, 1),
                off(4_000, "wait", 2_000_000, 10, 0, "runnable"),
                off(5_000, "sleep", 40_000_000, 11, 0, "blocked"),
            ]
        );
    }

    #[test]
    fn datadog_wall_time_is_cpu_and_off_cpu_time() {
        assert_eq!(Values::datadog(&meta()), Values::of_event(Event::OnCpu));
        let p = profile(&off_cpu_meta(), Values::datadog(&off_cpu_meta()), &window());
        assert_eq!(
            types(&p),
            [
                ("cpu-samples", "count"),
                ("cpu-time", "nanoseconds"),
                ("wall-samples", "count"),
                ("wall-time", "nanoseconds"),
            ]
        );
        let period = p.period_type.as_ref().unwrap();
        assert_eq!((s(&p, period.r#type), p.period), ("cpu-time", PERIOD));
        let seen = seen(&p);
        assert_eq!(
            seen.iter().map(|s| s.values.clone()).collect::<Vec<_>>(),
            [
                vec![1, PERIOD, 1, PERIOD],
                vec![0, 0, 1, 3_000_000],
                vec![1, PERIOD, 1, PERIOD],
                vec![0, 0, 1, 2_000_000],
                vec![0, 0, 1, 40_000_000],
            ]
        );
        assert_eq!(seen[1].labels, labels_of(11, 1, Some("blocked")));
        assert_eq!(seen[2].labels, labels_of(11, 1, None));
        // Per thread, wall time is its CPU time plus its time off the CPU.
        let total = |i: usize| seen.iter().map(|s| s.values[i]).sum::<i64>();
        assert_eq!(total(1), 2 * PERIOD);
        assert_eq!(total(3), 2 * PERIOD + 45_000_000);
    }

    #[test]
    fn report_event_picks_the_values() {
        for (event, types) in [
            (Event::OnCpu, &["cpu-samples", "cpu-time"][..]),
            (Event::OffCpu, &["off-cpu-samples", "off-cpu-time"]),
            (
                Event::Wall,
                &[
                    "cpu-samples",
                    "cpu-time",
                    "off-cpu-samples",
                    "off-cpu-time",
                    "wall-time",
                ],
            ),
        ] {
            let values = Values::of_event(event);
            let names: Vec<&str> = values.sample_types().iter().map(|t| t.0).collect();
            assert_eq!(names, types);
            assert_eq!(values.event(), event);
        }
        let datadog = Values::datadog(&off_cpu_meta());
        let names: Vec<&str> = datadog.sample_types().iter().map(|t| t.0).collect();
        assert_eq!(
            names,
            ["cpu-samples", "cpu-time", "wall-samples", "wall-time"]
        );
        assert_eq!(datadog.event(), Event::Wall);
    }

    #[test]
    fn a_capture_without_off_cpu_gives_the_same_profile_whatever_the_selection_event() {
        let mut w = WindowBuilder::new(0);
        let p = w.process(10, "app");
        let f = w.function("f");
        let l = w.location(0x10, &[f]);
        let st = w.stack(p, &[l], 0);
        w.sample(5, 10, 0, st);
        let window = w.build();
        let mut builder = ProfileBuilder::new(&meta(), Values::of_event(Event::OnCpu)).unwrap();
        let wall = Selection {
            event: Event::Wall,
            ..Selection::default()
        };
        builder.add_window(&window, &wall, &|_| true).unwrap();
        assert_eq!((builder.samples(), builder.off_cpu_samples()), (1, 0));
    }
}
