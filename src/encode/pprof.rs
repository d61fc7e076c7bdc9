//! pprof (Google's `profile.proto`): `amprof report --format pprof`, and the profiles that
//! `amprof push datadog` uploads. Both come out of one builder, [`ProfileBuilder`], which
//! hands the work to Datadog's own `libdd-profiling` (the library behind its native profiler), so
//! that what we upload is built the way Datadog's profilers build it.
//!
//! What a profile holds:
//! - sample types `cpu-samples`/`count` and `cpu-time`/`nanoseconds` (what Datadog's native
//!   profiler sends: its UI then shows a CPU profile), period type `cpu-time`/`nanoseconds` with
//!   the sampling period (1 s / frequency);
//! - time and duration: the start of the first window added and the end of the last one, on the
//!   Unix epoch clock;
//! - one sample per captured sample, with the labels [`labels`] (process, thread, CPU) and the
//!   numeric label `end_timestamp_ns` (its time; Datadog's timeline view reads it);
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
        Meta, Selection,
        format::{Location, Stack, Window},
    },
    error::{bad_input, usage},
    output::Output,
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
    /// The CPU the sample was taken on.
    pub const CPU: &str = "cpu";
    /// The sample's time in ns since the Unix epoch (numeric; added by libdd-profiling).
    pub const END_TIMESTAMP_NS: &str = "end_timestamp_ns";
}

/// `(type, unit)` of each sample value, in order.
pub const SAMPLE_TYPES: [(&str, &str); 2] = [("cpu-samples", "count"), ("cpu-time", "nanoseconds")];
/// `(type, unit)` of the period.
pub const PERIOD_TYPE: (&str, &str) = ("cpu-time", "nanoseconds");

/// The largest compressed profile libdd-profiling writes (it fails beyond).
const MAX_PROFILE_MIB: usize = 16;

/// Builds one pprof profile from the samples of one or more windows.
pub struct ProfileBuilder {
    profile: Profile,
    period_ns: i64,
    realtime_offset_ns: i64,
    /// Monotonic start of the first window added and end of the last one.
    span: Option<(u64, u64)>,
    /// Where the profile starts when no window is added.
    capture_start_ns: u64,
    samples: u64,
}

impl ProfileBuilder {
    /// An empty profile for a capture described by `meta`.
    pub fn new(meta: &Meta) -> Result<Self> {
        if meta.frequency_hz == 0 || meta.frequency_hz > 1_000_000_000 {
            return Err(bad_input(format!(
                "the capture's sampling frequency ({} Hz) is not usable",
                meta.frequency_hz
            )));
        }
        let period_ns = (1_000_000_000 / meta.frequency_hz) as i64;
        let sample_types = SAMPLE_TYPES.map(|(t, u)| api::ValueType::new(t, u));
        let period = api::Period {
            r#type: api::ValueType::new(PERIOD_TYPE.0, PERIOD_TYPE.1),
            value: period_ns,
        };
        let profile = Profile::try_new(&sample_types, Some(period))
            .context("cannot start a pprof profile")?;
        Ok(Self {
            profile,
            period_ns,
            realtime_offset_ns: meta.realtime_offset_ns,
            span: None,
            capture_start_ns: meta.start_ns,
            samples: 0,
        })
    }

    /// Samples added so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Adds the samples of `window` that `selection` keeps and whose stack `keep` accepts; the
    /// profile's time span grows to cover the window even if none is.
    pub fn add_window(
        &mut self,
        window: &Window,
        selection: &Selection,
        keep: &dyn Fn(&Stack) -> bool,
    ) -> Result<()> {
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
        for &n in window.sample_tids.iter().chain(&window.sample_cpus) {
            numbers.entry(n).or_insert_with(|| n.to_string());
        }
        let values = [1, self.period_ns];
        for sample in crate::capture::samples(window) {
            let Some(Some(locations)) = stacks.get(sample.stack_index as usize) else {
                continue;
            };
            let mut sample_labels = Vec::with_capacity(5);
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

/// `report --format pprof`: the selected windows and processes as one gzipped profile.
pub struct PprofFile<'o> {
    builder: ProfileBuilder,
    out: &'o mut Output,
}

impl<'o> PprofFile<'o> {
    pub fn new(meta: &Meta, out: &'o mut Output) -> Result<Self> {
        if out.is_terminal() {
            return Err(usage(
                "pprof is binary: give -o FILE or redirect standard output",
            ));
        }
        Ok(Self {
            builder: ProfileBuilder::new(meta)?,
            out,
        })
    }
}

impl Encoder for PprofFile<'_> {
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
            .and_then(|out| out.flush())
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
