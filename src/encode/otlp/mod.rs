//! Capture windows as OTLP `ExportProfilesServiceRequest`s (opentelemetry-proto v1.10.0).
//!
//! # Shape
//!
//! One `Profile` per window and process, under one `ResourceProfiles` per process (its
//! resource attributes say which process it is), all of a request sharing one
//! `ProfilesDictionary`. The conventions are those of the OpenTelemetry eBPF profiler, which is
//! what backends (Pyroscope, Elastic, the Collector's pprof and debug exporters) are tested with:
//!
//! - sample type `samples`/`count`, period type `cpu`/`nanoseconds`, period 1e9 / frequency;
//! - one `Sample` per distinct (stack, thread, CPU), carrying the time of every sample it stands
//!   for in `timestamps_unix_nano` and no `values` (each timestamp counts one);
//! - off-CPU samples (`record --off-cpu`) in a profile of their own beside it (never values of
//!   the same profile: a count of samples and nanoseconds off the CPU do not add up), as the eBPF
//!   profiler sends its off-CPU profiles and as the proto's own comment names them: sample type
//!   `off_cpu`/`nanoseconds`, no period type, one `Sample` per distinct (stack, thread, CPU,
//!   reason) with one value per event (the nanoseconds that thread spent off the CPU) beside its
//!   timestamp (when the thread ran again). Why it was off the CPU is the sample attribute
//!   `amprof.off_cpu.reason`, `blocked` (it waited: a sleep, a lock, I/O) or `runnable`
//!   (preempted, waiting for a CPU): no semantic convention names this yet, hence amprof's own
//!   namespace rather than a name a future convention could mean otherwise;
//! - sample attributes `thread.id`, `thread.name`, `cpu.logical_number`; location attribute
//!   `profile.frame.type` (`kernel` or `native`); mapping attribute
//!   `process.executable.build_id.gnu` (hex); resource attributes `service.name`, `host.name`,
//!   `process.pid`, `process.executable.name` and `process.executable.path`.
//!
//! Frames are named as `amprof report` names them ([`frames`]): a frame without a symbol still
//! gets a `Line` whose function is called `libfoo.so+0x1234`, so that every backend shows the
//! same stacks as the flamegraph.
//!
//! # Size
//!
//! Requests hold as many consecutive windows as fit under a size limit. [`Batch`] keeps an upper
//! bound of its encoded size as it grows, and can roll back the last window (or process) it
//! took when that one does not fit; a window too large on its own is split by process.

use std::hash::Hash;

use anyhow::Result;
use indexmap::{IndexMap, IndexSet};
use opentelemetry_proto::tonic::{
    collector::profiles::v1development::ExportProfilesServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    profiles::v1development as otlp,
    resource::v1::Resource,
};
use prost::Message as _;
use rustc_hash::FxHashMap;

use super::frames;
use crate::{
    capture::{Meta, SampleKind, Window, format::ModuleKind, kind_samples},
    error::bad_input,
};

/// Settings that shape every request.
#[derive(Clone, Debug, Default)]
pub struct EncodeSettings {
    /// `OTEL_SERVICE_NAME`; `None`: `unknown_service:<executable>` per process.
    pub service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, added to (and overriding the host attributes of) every resource.
    pub resource_attributes: Vec<(String, String)>,
    /// Upper bound for a request's encoded (uncompressed) size, when a window allows it.
    pub max_request_bytes: usize,
}

/// One finished request: the windows it carries (a window split by process appears in several)
/// and its encoded protobuf.
#[derive(Debug)]
pub struct Encoded {
    pub windows: Vec<u64>,
    pub message: ExportProfilesServiceRequest,
}

/// Batches windows into requests under the size limit.
pub struct Encoder {
    settings: EncodeSettings,
    batch: Batch,
}

impl Encoder {
    pub fn new(settings: EncodeSettings) -> Self {
        Self {
            settings,
            batch: Batch::new(),
        }
    }

    /// Adds `window`; returns the requests that are full.
    pub fn push(&mut self, meta: &Meta, window: &Window) -> Result<Vec<Encoded>> {
        let groups = group_samples(meta, window)?;
        let mut full = Vec::new();
        let everything: Vec<usize> = (0..groups.len()).collect();
        // The whole window, in the current request or else in a new one.
        if self.try_add(meta, window, &groups, &everything)? {
            self.batch.note_window(window.index);
            return Ok(full);
        }
        if !self.batch.is_empty() {
            full.push(self.take());
            if self.try_add(meta, window, &groups, &everything)? {
                self.batch.note_window(window.index);
                return Ok(full);
            }
        }
        // Too large on its own: one process at a time (a process too large alone goes alone).
        for group in 0..groups.len() {
            if !self.try_add(meta, window, &groups, &[group])? {
                if self.batch.profiles > 0 {
                    self.batch.note_window(window.index);
                    full.push(self.take());
                }
                self.batch
                    .add(&self.settings, meta, window, &groups, &[group])?;
            }
        }
        self.batch.note_window(window.index);
        Ok(full)
    }

    /// Adds `groups[which]` of `window` if the request stays under the limit.
    fn try_add(
        &mut self,
        meta: &Meta,
        window: &Window,
        groups: &[ProcessSamples],
        which: &[usize],
    ) -> Result<bool> {
        let checkpoint = self.batch.checkpoint();
        self.batch
            .add(&self.settings, meta, window, groups, which)?;
        if self.batch.bytes <= self.settings.max_request_bytes {
            return Ok(true);
        }
        self.batch.rollback(checkpoint);
        Ok(false)
    }

    /// The request still being filled, if any.
    pub fn finish(&mut self) -> Option<Encoded> {
        (!self.batch.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Encoded {
        std::mem::replace(&mut self.batch, Batch::new()).into_request()
    }
}

/// Samples of one kind grouped by (stack index, tid, cpu, label value): their Unix-epoch
/// times, in order, and for a kind whose samples differ in weight (not periodic), the weight
/// of each at the same positions.
type SampleGroups = IndexMap<(u32, u32, u32, Option<&'static str>), (Vec<u64>, Vec<i64>)>;

/// The samples of one process in a window, by kind ([`SampleKind::ALL`]'s order).
#[derive(Default)]
struct ProcessSamples {
    process: usize,
    by_kind: [SampleGroups; SampleKind::ALL.len()],
}

/// Groups the samples of `window` by process. A window the reader did not validate (one a
/// recording streams) is checked here: a sample of nothing is an error, not a sample dropped
/// from a request.
fn group_samples(meta: &Meta, window: &Window) -> Result<Vec<ProcessSamples>> {
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
    let mut by_process: IndexMap<usize, ProcessSamples> = IndexMap::new();
    for (k, kind) in SampleKind::ALL.into_iter().enumerate() {
        let periodic = kind.descriptor().periodic;
        for sample in kind_samples(window, kind) {
            let (times, weights) = by_process
                .entry(sample.process_index as usize)
                .or_default()
                .by_kind[k]
                .entry((
                    sample.stack_index,
                    sample.tid,
                    sample.cpu,
                    sample.detail.label(),
                ))
                .or_default();
            times.push(unix_ns(meta, sample.time_ns));
            if !periodic {
                weights.push(i64::try_from(sample.nanoseconds(0)).unwrap_or(i64::MAX));
            }
        }
    }
    let mut groups: Vec<ProcessSamples> = by_process
        .into_iter()
        .map(|(process, samples)| ProcessSamples { process, ..samples })
        .collect();
    groups.sort_by_key(|g| g.process);
    Ok(groups)
}

/// A monotonic capture time as nanoseconds since the Unix epoch.
fn unix_ns(meta: &Meta, monotonic_ns: u64) -> u64 {
    let unix = i128::from(monotonic_ns) + i128::from(meta.realtime_offset_ns);
    unix.clamp(0, i128::from(u64::MAX)) as u64
}

/// What a dictionary attribute holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Value {
    Str(String),
    Int(i64),
}

impl Value {
    fn any(&self) -> AnyValue {
        AnyValue {
            value: Some(match self {
                Value::Str(s) => any_value::Value::StringValue(s.clone()),
                Value::Int(i) => any_value::Value::IntValue(*i),
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct MappingKey {
    start: u64,
    limit: u64,
    file_offset: u64,
    filename: i32,
    attributes: Vec<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LocationKey {
    mapping: i32,
    address: u64,
    /// (function index, line) innermost first.
    lines: Vec<(i32, i64)>,
    attributes: Vec<i32>,
}

/// A table of the dictionary: distinct values in insertion order, entry 0 the zero value.
struct Table<K> {
    set: IndexSet<K>,
}

impl<K: Hash + Eq> Table<K> {
    fn new(zero: K) -> Self {
        let mut set = IndexSet::new();
        set.insert(zero);
        Self { set }
    }
}

/// Bytes a length-delimited field of `len` bytes takes, tag included (tags here are < 16).
fn field_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Length prefixes of nested messages are counted at their largest, so that growing contents
/// never make the estimate too small.
const MAX_PREFIX: usize = 5;

/// The request being filled: dictionary tables, profiles by resource, and an upper bound of its
/// encoded size.
struct Batch {
    strings: Table<String>,
    functions: Table<(i32, i32)>,
    mappings: Table<MappingKey>,
    locations: Table<LocationKey>,
    stacks: Table<Vec<i32>>,
    attributes: Table<(i32, Value)>,
    /// Per resource (identified by its attributes): its profiles.
    resources: IndexMap<Vec<(String, Value)>, Vec<otlp::Profile>>,
    /// Resources that received a profile since the last checkpoint, for rollback.
    pushed: Vec<usize>,
    windows: Vec<u64>,
    profiles: usize,
    bytes: usize,
}

/// What the samples of one window share while [`Batch::add`] encodes them.
struct SampleContext<'w, 'c> {
    window: &'w Window,
    location_cache: &'c mut FxHashMap<(u32, bool), i32>,
    stack_cache: &'c mut FxHashMap<u32, i32>,
    thread_names: &'c FxHashMap<(u32, Option<u32>), &'w str>,
}

/// Where a [`Batch`] was, to roll back to.
struct Checkpoint {
    lens: [usize; 6],
    resources: usize,
    profiles: usize,
    bytes: usize,
}

impl Batch {
    fn new() -> Self {
        let mut batch = Self {
            strings: Table::new(String::new()),
            functions: Table::new((0, 0)),
            mappings: Table::new(MappingKey {
                start: 0,
                limit: 0,
                file_offset: 0,
                filename: 0,
                attributes: vec![],
            }),
            locations: Table::new(LocationKey {
                mapping: 0,
                address: 0,
                lines: vec![],
                attributes: vec![],
            }),
            stacks: Table::new(vec![]),
            attributes: Table::new((0, Value::Str(String::new()))),
            resources: IndexMap::new(),
            pushed: Vec::new(),
            windows: Vec::new(),
            profiles: 0,
            bytes: 0,
        };
        // The dictionary field and its zero entries (the empty link table's included).
        batch.bytes = 1 + MAX_PREFIX + 7 * field_len(0);
        batch
    }

    fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.profiles == 0
    }

    fn note_window(&mut self, index: u64) {
        if self.windows.last() != Some(&index) {
            self.windows.push(index);
        }
    }

    fn checkpoint(&mut self) -> Checkpoint {
        self.pushed.clear();
        Checkpoint {
            lens: [
                self.strings.set.len(),
                self.functions.set.len(),
                self.mappings.set.len(),
                self.locations.set.len(),
                self.stacks.set.len(),
                self.attributes.set.len(),
            ],
            resources: self.resources.len(),
            profiles: self.profiles,
            bytes: self.bytes,
        }
    }

    fn rollback(&mut self, to: Checkpoint) {
        self.strings.set.truncate(to.lens[0]);
        self.functions.set.truncate(to.lens[1]);
        self.mappings.set.truncate(to.lens[2]);
        self.locations.set.truncate(to.lens[3]);
        self.stacks.set.truncate(to.lens[4]);
        self.attributes.set.truncate(to.lens[5]);
        for resource in self.pushed.drain(..).rev() {
            if let Some((_, profiles)) = self.resources.get_index_mut(resource) {
                profiles.pop();
            }
        }
        self.resources.truncate(to.resources);
        self.profiles = to.profiles;
        self.bytes = to.bytes;
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(index) = self.strings.set.get_index_of(s) {
            return index as i32;
        }
        self.bytes += field_len(s.len());
        self.strings.set.insert_full(s.to_owned()).0 as i32
    }

    /// Interns `key`, counting `len` (its encoded message length) when it is new.
    fn intern<K: Hash + Eq>(
        table: &mut Table<K>,
        bytes: &mut usize,
        key: K,
        len: impl FnOnce(&K) -> usize,
    ) -> i32 {
        if let Some(index) = table.set.get_index_of(&key) {
            return index as i32;
        }
        *bytes += field_len(len(&key));
        table.set.insert_full(key).0 as i32
    }

    fn attribute(&mut self, key: &str, value: Value) -> i32 {
        let key = self.string(key);
        Self::intern(
            &mut self.attributes,
            &mut self.bytes,
            (key, value),
            |(k, v)| attribute_message(*k, v).encoded_len(),
        )
    }

    /// Adds the profiles of `groups[which]` of `window`: per process, a profile of its on-CPU
    /// samples and one of its off-CPU samples, each if it has any.
    fn add(
        &mut self,
        settings: &EncodeSettings,
        meta: &Meta,
        window: &Window,
        groups: &[ProcessSamples],
        which: &[usize],
    ) -> Result<()> {
        let mut location_cache: FxHashMap<(u32, bool), i32> = FxHashMap::default();
        let mut stack_cache: FxHashMap<u32, i32> = FxHashMap::default();
        // By (tid, process) first: a thread that execs is in two process images, named twice.
        let mut thread_names: FxHashMap<(u32, Option<u32>), &str> = FxHashMap::default();
        for t in &window.threads {
            thread_names.insert((t.tid, Some(t.process)), &t.name);
            thread_names.entry((t.tid, None)).or_insert(&t.name);
        }
        let mut sample_context = SampleContext {
            window,
            location_cache: &mut location_cache,
            stack_cache: &mut stack_cache,
            thread_names: &thread_names,
        };
        let period = 1_000_000_000u64
            .checked_div(meta.frequency_hz)
            .map_or(0, |p| p as i64);
        for &g in which {
            let group = &groups[g];
            let process = &window.processes[group.process];
            let id = profile_id(meta, window, process.pid, process.first_seen_ns);
            for (kind, kind_groups) in SampleKind::ALL.into_iter().zip(&group.by_kind) {
                if kind_groups.is_empty() {
                    continue;
                }
                let descriptor = kind.descriptor();
                let mut samples = Vec::with_capacity(kind_groups.len());
                for (&(stack, tid, cpu, label), (times, weights)) in kind_groups {
                    let (stack_index, mut attribute_indices) =
                        self.sample_key(&mut sample_context, group.process, stack, tid, cpu)?;
                    if let (Some(key), Some(label)) = (descriptor.otlp_label, label) {
                        attribute_indices.push(self.attribute(key, Value::Str(label.into())));
                    }
                    samples.push(otlp::Sample {
                        stack_index,
                        attribute_indices,
                        link_index: 0,
                        values: weights.clone(),
                        timestamps_unix_nano: times.clone(),
                    });
                }
                let sample_type = otlp::ValueType {
                    type_strindex: self.string(descriptor.otlp.0),
                    unit_strindex: self.string(descriptor.otlp.1),
                };
                // A kind without a period (off-CPU: a sample stands for its own duration) gets
                // none, as the eBPF profiler sends none.
                let period_type = descriptor.otlp_period.map(|(t, u)| otlp::ValueType {
                    type_strindex: self.string(t),
                    unit_strindex: self.string(u),
                });
                let profile = otlp::Profile {
                    sample_type: Some(sample_type),
                    samples,
                    time_unix_nano: unix_ns(meta, window.start_ns),
                    duration_nano: window.end_ns.saturating_sub(window.start_ns),
                    period: if period_type.is_some() { period } else { 0 },
                    period_type,
                    profile_id: kind_profile_id(&id, kind),
                    ..Default::default()
                };
                self.add_profile(settings, meta, process, profile);
            }
        }
        Ok(())
    }

    /// The stack and the thread and CPU attributes of a sample of `process` (an index into
    /// `window.processes`).
    fn sample_key(
        &mut self,
        context: &mut SampleContext<'_, '_>,
        process: usize,
        stack: u32,
        tid: u32,
        cpu: u32,
    ) -> Result<(i32, Vec<i32>)> {
        let stack_index = match context.stack_cache.get(&stack) {
            Some(&index) => index,
            None => {
                let index = self.stack(context.window, stack, context.location_cache)?;
                context.stack_cache.insert(stack, index);
                index
            }
        };
        let mut attribute_indices = vec![self.attribute("thread.id", Value::Int(tid.into()))];
        let name = context
            .thread_names
            .get(&(tid, Some(process as u32)))
            .or_else(|| context.thread_names.get(&(tid, None)));
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            attribute_indices.push(self.attribute("thread.name", Value::Str((*name).into())));
        }
        attribute_indices.push(self.attribute("cpu.logical_number", Value::Int(cpu.into())));
        Ok((stack_index, attribute_indices))
    }

    /// Adds `profile` under the resource of `process`, counting its size.
    fn add_profile(
        &mut self,
        settings: &EncodeSettings,
        meta: &Meta,
        process: &crate::capture::format::Process,
        profile: otlp::Profile,
    ) {
        let resource = resource_attributes(settings, meta, process);
        let entry = self.resources.entry(resource);
        let index = entry.index();
        if let indexmap::map::Entry::Vacant(_) = entry {
            let empty = resource_profiles(entry.key().clone(), vec![]);
            self.bytes += 1 + MAX_PREFIX + empty.encoded_len() + 2 * MAX_PREFIX;
        }
        self.bytes += field_len(profile.encoded_len());
        entry.or_default().push(profile);
        self.pushed.push(index);
        self.profiles += 1;
    }

    /// The dictionary stack of `window.stacks[stack]`.
    fn stack(
        &mut self,
        window: &Window,
        stack: u32,
        location_cache: &mut FxHashMap<(u32, bool), i32>,
    ) -> Result<i32> {
        let capture_stack = &window.stacks[stack as usize];
        let mut indices = Vec::with_capacity(capture_stack.locations.len());
        for (position, &location) in capture_stack.locations.iter().enumerate() {
            let kernel = position < capture_stack.kernel_frames as usize;
            let index = match location_cache.get(&(location, kernel)) {
                Some(&index) => index,
                None => {
                    let index = self.location(window, location, kernel)?;
                    location_cache.insert((location, kernel), index);
                    index
                }
            };
            indices.push(index);
        }
        Ok(Self::intern(
            &mut self.stacks,
            &mut self.bytes,
            indices,
            |l| {
                otlp::Stack {
                    location_indices: l.clone(),
                }
                .encoded_len()
            },
        ))
    }

    /// The dictionary location of `window.locations[index]`, with its mapping, functions and
    /// frame type.
    fn location(&mut self, window: &Window, index: u32, kernel: bool) -> Result<i32> {
        let location = window.locations.get(index as usize).ok_or_else(|| {
            bad_input(format!(
                "window {} is corrupt: a stack refers to location {index}, which does not exist",
                window.index
            ))
        })?;
        let mapping = self.mapping(window, location);
        // The names `amprof report` gives, innermost first: one per line, or one for none.
        let mut names = Vec::with_capacity(location.lines.len().max(1));
        frames::for_each_frame(window, location, |frame| names.push(frame.to_string()));
        let mut lines = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let line = location.lines.get(i);
            let file = line
                .and_then(|l| window.functions.get(l.function as usize))
                .map_or("", |f| f.file.as_str());
            let key = (self.string(name), self.string(file));
            let function = Self::intern(&mut self.functions, &mut self.bytes, key, |&(n, f)| {
                function_message(n, f).encoded_len()
            });
            lines.push((function, line.map_or(0, |l| i64::from(l.line))));
        }
        let frame_type = if kernel { "kernel" } else { "native" };
        let attributes = vec![self.attribute("profile.frame.type", Value::Str(frame_type.into()))];
        let key = LocationKey {
            mapping,
            address: location.address,
            lines,
            attributes,
        };
        Ok(Self::intern(
            &mut self.locations,
            &mut self.bytes,
            key,
            |k| location_message(k).encoded_len(),
        ))
    }

    /// The dictionary mapping of `location` (0: none known).
    fn mapping(&mut self, window: &Window, location: &crate::capture::format::Location) -> i32 {
        let Some(module) = frames::location_module(window, location) else {
            return 0;
        };
        let (start, limit, file_offset) = match (location.mapping as usize)
            .checked_sub(1)
            .and_then(|m| window.mappings.get(m))
        {
            Some(m) if module.kind != ModuleKind::Kernel as i32 => (m.start, m.end, m.file_offset),
            _ => (0, 0, 0),
        };
        let filename = self.string(&module.path);
        let mut attributes = Vec::new();
        if !module.build_id.is_empty() {
            let hex: String = module.build_id.iter().map(|b| format!("{b:02x}")).collect();
            attributes.push(self.attribute("process.executable.build_id.gnu", Value::Str(hex)));
        }
        let key = MappingKey {
            start,
            limit,
            file_offset,
            filename,
            attributes,
        };
        Self::intern(&mut self.mappings, &mut self.bytes, key, |k| {
            mapping_message(k).encoded_len()
        })
    }

    fn into_request(self) -> Encoded {
        let dictionary = otlp::ProfilesDictionary {
            mapping_table: self.mappings.set.iter().map(mapping_message).collect(),
            location_table: self.locations.set.iter().map(location_message).collect(),
            function_table: self
                .functions
                .set
                .iter()
                .map(|&(n, f)| function_message(n, f))
                .collect(),
            link_table: vec![otlp::Link::default()],
            string_table: self.strings.set.into_iter().collect(),
            attribute_table: self
                .attributes
                .set
                .iter()
                .map(|(k, v)| attribute_message(*k, v))
                .collect(),
            stack_table: self
                .stacks
                .set
                .into_iter()
                .map(|location_indices| otlp::Stack { location_indices })
                .collect(),
        };
        let message = ExportProfilesServiceRequest {
            resource_profiles: self
                .resources
                .into_iter()
                .map(|(attributes, profiles)| resource_profiles(attributes, profiles))
                .collect(),
            dictionary: Some(dictionary),
        };
        debug_assert!(
            message.encoded_len() <= self.bytes,
            "size estimate too small"
        );
        Encoded {
            windows: self.windows,
            message,
        }
    }
}

fn attribute_message(key: i32, value: &Value) -> otlp::KeyValueAndUnit {
    // Entry 0 must be the zero value: no key, no value.
    let value = (key != 0).then(|| value.any());
    otlp::KeyValueAndUnit {
        key_strindex: key,
        value,
        unit_strindex: 0,
    }
}

fn function_message(name: i32, file: i32) -> otlp::Function {
    otlp::Function {
        name_strindex: name,
        system_name_strindex: 0,
        filename_strindex: file,
        start_line: 0,
    }
}

fn mapping_message(key: &MappingKey) -> otlp::Mapping {
    otlp::Mapping {
        memory_start: key.start,
        memory_limit: key.limit,
        file_offset: key.file_offset,
        filename_strindex: key.filename,
        attribute_indices: key.attributes.clone(),
    }
}

fn location_message(key: &LocationKey) -> otlp::Location {
    otlp::Location {
        mapping_index: key.mapping,
        address: key.address,
        lines: key
            .lines
            .iter()
            .map(|&(function_index, line)| otlp::Line {
                function_index,
                line,
                column: 0,
            })
            .collect(),
        attribute_indices: key.attributes.clone(),
    }
}

fn resource_profiles(
    attributes: Vec<(String, Value)>,
    profiles: Vec<otlp::Profile>,
) -> otlp::ResourceProfiles {
    otlp::ResourceProfiles {
        resource: Some(Resource {
            attributes: attributes
                .into_iter()
                .map(|(key, value)| KeyValue {
                    key,
                    value: Some(value.any()),
                    key_strindex: 0,
                })
                .collect(),
            dropped_attributes_count: 0,
            entity_refs: vec![],
        }),
        scope_profiles: vec![otlp::ScopeProfiles {
            scope: Some(InstrumentationScope {
                name: "amprof".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                attributes: vec![],
                dropped_attributes_count: 0,
            }),
            profiles,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

/// The resource of a process: who it is, on which host, for which service.
fn resource_attributes(
    settings: &EncodeSettings,
    meta: &Meta,
    process: &crate::capture::format::Process,
) -> Vec<(String, Value)> {
    let executable = if process.exe.is_empty() {
        process.name.as_str()
    } else {
        frames::basename(&process.exe)
    };
    let service = settings
        .service_name
        .clone()
        .unwrap_or_else(|| format!("unknown_service:{executable}"));
    let mut attributes = vec![
        ("service.name".to_string(), Value::Str(service)),
        ("host.name".to_string(), Value::Str(meta.hostname.clone())),
    ];
    // The user's attributes override the host's, never the facts about the process.
    for (key, value) in &settings.resource_attributes {
        if key.starts_with("process.") || (key == "service.name" && settings.service_name.is_some())
        {
            continue;
        }
        match attributes.iter_mut().find(|(k, _)| k == key) {
            Some(existing) => existing.1 = Value::Str(value.clone()),
            None => attributes.push((key.clone(), Value::Str(value.clone()))),
        }
    }
    attributes.push(("process.pid".into(), Value::Int(process.pid.into())));
    attributes.push((
        "process.executable.name".into(),
        Value::Str(executable.into()),
    ));
    if !process.exe.is_empty() {
        attributes.push((
            "process.executable.path".into(),
            Value::Str(process.exe.clone()),
        ));
    }
    attributes
}

/// A 16-byte id that is the same each time the same window of the same process of the same
/// capture is pushed, so that a backend can drop a resent duplicate: FNV-1a (128 bits) of what
/// identifies it.
fn profile_id(meta: &Meta, window: &Window, pid: u32, first_seen_ns: u64) -> Vec<u8> {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut hash = OFFSET;
    let parts: [&[u8]; 6] = [
        meta.hostname.as_bytes(),
        &meta.start_ns.to_le_bytes(),
        &meta.realtime_offset_ns.to_le_bytes(),
        &window.index.to_le_bytes(),
        &pid.to_le_bytes(),
        &first_seen_ns.to_le_bytes(),
    ];
    for part in parts {
        for &byte in part {
            hash ^= u128::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
        hash ^= 0xff;
        hash = hash.wrapping_mul(PRIME);
    }
    hash.max(1).to_be_bytes().to_vec()
}

/// The id of the `kind` profile of the window and process whose on-CPU profile has `on_cpu`:
/// that id for on-CPU samples; for another kind, as stable, and distinct from it (both are sent
/// with the same resource and times), hashed with the kind's OTLP type name.
fn kind_profile_id(on_cpu: &[u8], kind: SampleKind) -> Vec<u8> {
    if kind == SampleKind::OnCpu {
        return on_cpu.to_vec();
    }
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut hash = u128::from_be_bytes(on_cpu.try_into().unwrap_or([0; 16]));
    for &byte in kind.descriptor().otlp.0.as_bytes() {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash.max(1).to_be_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::format::{OffCpuReason, Process};
    use crate::capture::testing::WindowBuilder;

    fn meta() -> Meta {
        Meta {
            hostname: "box".into(),
            frequency_hz: 99,
            start_ns: 1_000,
            realtime_offset_ns: 1_700_000_000_000_000_000,
            ..Meta::default()
        }
    }

    /// A window with `processes` processes, each with one 2-frame stack hit `samples` times.
    fn window(index: u64, processes: u32, samples: u32) -> Window {
        let mut w = WindowBuilder::at(index, 1_000 + index * 10, 1_000 + (index + 1) * 10);
        let app = w.module_with("/usr/bin/app", ModuleKind::File, &[0xab, 0xcd]);
        let main = w.function_in("main", "app.c");
        let mut offset = 0;
        for p in 0..processes {
            let process = w.process_with(Process {
                pid: 100 + p,
                name: format!("app{p}"),
                exe: "/usr/bin/app".into(),
                ..Process::default()
            });
            w.thread(100 + p, process, &format!("t{p}"));
            let mapping = w.mapping(process, app, 0x1000, 0x2000, 0);
            let named = w.location_in(mapping, 0x1010 + u64::from(p), &[main]);
            w.lines(named, &[(main, 7)]);
            let unnamed = w.location_in(mapping, 0x1800, &[]);
            let stack = w.stack(process, &[named, unnamed], 0);
            for _ in 0..samples {
                offset += 1;
                w.sample(offset, 100 + p, p % 2, stack);
            }
        }
        w.build()
    }

    fn encoder(max: usize) -> Encoder {
        Encoder::new(EncodeSettings {
            max_request_bytes: max,
            ..EncodeSettings::default()
        })
    }

    fn resolve(message: &ExportProfilesServiceRequest, stack: i32) -> Vec<String> {
        let d = message.dictionary.as_ref().unwrap();
        d.stack_table[stack as usize]
            .location_indices
            .iter()
            .flat_map(|&l| d.location_table[l as usize].lines.clone())
            .map(|line| {
                let f = &d.function_table[line.function_index as usize];
                d.string_table[f.name_strindex as usize].clone()
            })
            .collect()
    }

    #[test]
    fn encodes_a_window_with_zero_entries_and_report_names() {
        let mut e = encoder(usize::MAX);
        assert!(e.push(&meta(), &window(0, 2, 3)).unwrap().is_empty());
        let request = e.finish().unwrap();
        assert_eq!(request.windows, vec![0]);
        let m = &request.message;
        let d = m.dictionary.as_ref().unwrap();
        assert_eq!(d.string_table[0], "");
        assert_eq!(d.mapping_table[0], otlp::Mapping::default());
        assert_eq!(d.location_table[0], otlp::Location::default());
        assert_eq!(d.function_table[0], otlp::Function::default());
        assert_eq!(d.link_table[0], otlp::Link::default());
        assert_eq!(d.stack_table[0], otlp::Stack::default());
        assert_eq!(d.attribute_table[0], otlp::KeyValueAndUnit::default());
        assert_eq!(m.resource_profiles.len(), 2);
        let profile = &m.resource_profiles[0].scope_profiles[0].profiles[0];
        assert_eq!(profile.samples.len(), 1);
        assert_eq!(
            profile.samples[0].timestamps_unix_nano,
            vec![
                1_700_000_000_000_001_001,
                1_700_000_000_000_001_002,
                1_700_000_000_000_001_003
            ]
        );
        assert_eq!(profile.time_unix_nano, 1_700_000_000_000_001_000);
        assert_eq!(profile.duration_nano, 10);
        assert_eq!(profile.period, 1_000_000_000 / 99);
        assert_eq!(
            resolve(m, profile.samples[0].stack_index),
            vec!["main".to_string(), "app+0x800".to_string()]
        );
        // The same mapping in two processes is one entry; build-ids are attributes.
        assert_eq!(d.mapping_table.len(), 2);
        assert_eq!(d.mapping_table[1].attribute_indices.len(), 1);
    }

    #[test]
    fn the_size_estimate_bounds_the_encoding_and_batches_split_by_window() {
        let one = {
            let mut e = encoder(usize::MAX);
            e.push(&meta(), &window(0, 3, 50)).unwrap();
            e.finish().unwrap().message.encoded_len()
        };
        // Room for about two windows: requests of two windows, none above the limit.
        let mut e = encoder(one * 2 + one / 2);
        let mut requests = Vec::new();
        for index in 0..5 {
            requests.extend(e.push(&meta(), &window(index, 3, 50)).unwrap());
        }
        requests.extend(e.finish());
        let windows: Vec<Vec<u64>> = requests.iter().map(|r| r.windows.clone()).collect();
        assert!(windows.len() >= 2, "{windows:?}");
        assert_eq!(windows.concat(), vec![0, 1, 2, 3, 4]);
        for r in &requests {
            assert!(r.message.encoded_len() <= one * 2 + one / 2);
        }
    }

    #[test]
    fn a_window_too_large_alone_is_split_by_process() {
        let mut e = encoder(1_000);
        let mut requests = e.push(&meta(), &window(7, 4, 40)).unwrap();
        requests.extend(e.finish());
        assert!(requests.len() > 1);
        let mut profiles = 0;
        for r in &requests {
            assert_eq!(r.windows, vec![7]);
            profiles += r.message.resource_profiles.len();
        }
        assert_eq!(profiles, 4);
    }

    #[test]
    fn corrupt_windows_are_errors_not_panics() {
        let mut w = window(0, 1, 2);
        w.sample_stacks[1] = 9;
        assert!(encoder(usize::MAX).push(&meta(), &w).is_err());
        let mut w = window(0, 1, 2);
        w.sample_cpus.pop();
        assert!(encoder(usize::MAX).push(&meta(), &w).is_err());
        let mut w = window(0, 1, 2);
        w.stacks[0].locations.push(99);
        assert!(encoder(usize::MAX).push(&meta(), &w).is_err());
    }

    /// `window(index, processes, samples)` with off-CPU samples in every process: per process
    /// `p`, 3 ms blocked and 2 ms runnable in its stack on thread `100 + p`, and 1 ms blocked on
    /// the same stack on CPU 1, at 2, 4 and 6 ns past `10·p` ns into the window.
    fn window_with_off_cpu(index: u64, processes: u32, samples: u32) -> Window {
        let on_cpu = window(index, processes, samples);
        let mut w = WindowBuilder::at(index, on_cpu.start_ns, on_cpu.end_ns);
        *w.window_mut() = on_cpu;
        for p in 0..processes {
            let (stack, at) = (p, 10 * u64::from(p));
            w.off_cpu_sample(at + 2, 100 + p, 0, stack, 3_000_000, OffCpuReason::Blocked);
            w.off_cpu_sample(at + 4, 100 + p, 0, stack, 2_000_000, OffCpuReason::Runnable);
            w.off_cpu_sample(at + 6, 100 + p, 1, stack, 1_000_000, OffCpuReason::Blocked);
        }
        w.build()
    }

    fn encode_one(w: &Window) -> ExportProfilesServiceRequest {
        let mut e = encoder(usize::MAX);
        assert!(e.push(&meta(), w).unwrap().is_empty());
        let message = e.finish().unwrap().message;
        // What a receiver sees: the official types decode what amprof encoded.
        ExportProfilesServiceRequest::decode(message.encode_to_vec().as_slice()).unwrap()
    }

    fn value_type(m: &ExportProfilesServiceRequest, t: Option<&otlp::ValueType>) -> String {
        let s = &m.dictionary.as_ref().unwrap().string_table;
        t.map_or("none".into(), |t| {
            format!(
                "{}/{}",
                s[t.type_strindex as usize], s[t.unit_strindex as usize]
            )
        })
    }

    /// A sample's attributes as `key=value` strings.
    fn attributes(m: &ExportProfilesServiceRequest, sample: &otlp::Sample) -> Vec<String> {
        let d = m.dictionary.as_ref().unwrap();
        sample
            .attribute_indices
            .iter()
            .map(|&i| {
                let a = &d.attribute_table[i as usize];
                let value = match a.value.as_ref().and_then(|v| v.value.clone()) {
                    Some(any_value::Value::StringValue(s)) => s,
                    Some(any_value::Value::IntValue(i)) => i.to_string(),
                    other => format!("{other:?}"),
                };
                format!("{}={value}", d.string_table[a.key_strindex as usize])
            })
            .collect()
    }

    #[test]
    fn off_cpu_samples_get_a_profile_of_their_own_per_process() {
        let w = window_with_off_cpu(0, 2, 3);
        let m = encode_one(&w);
        assert_eq!(m.resource_profiles.len(), 2);
        for (p, resource) in m.resource_profiles.iter().enumerate() {
            let profiles = &resource.scope_profiles[0].profiles;
            assert_eq!(profiles.len(), 2, "an on-CPU and an off-CPU profile");
            let (on, off) = (&profiles[0], &profiles[1]);
            assert_eq!(value_type(&m, on.sample_type.as_ref()), "samples/count");
            assert_eq!(value_type(&m, on.period_type.as_ref()), "cpu/nanoseconds");
            assert_eq!(on.period, 1_000_000_000 / 99);
            // The on-CPU profile holds the on-CPU samples only: 3, no values.
            let on_count: usize = on
                .samples
                .iter()
                .map(|s| {
                    assert!(s.values.is_empty());
                    s.timestamps_unix_nano.len()
                })
                .sum();
            assert_eq!(on_count, 3);

            assert_eq!(
                value_type(&m, off.sample_type.as_ref()),
                "off_cpu/nanoseconds"
            );
            assert_eq!(off.period_type, None);
            assert_eq!(off.period, 0);
            assert_eq!(off.time_unix_nano, on.time_unix_nano);
            assert_eq!(off.duration_nano, on.duration_nano);
            assert_eq!(off.profile_id.len(), 16);
            assert_ne!(off.profile_id, on.profile_id);
            // Every event has its value beside its timestamp, and the values are the stack's
            // off-CPU time.
            let mut total = 0;
            for s in &off.samples {
                assert_eq!(s.values.len(), s.timestamps_unix_nano.len());
                assert_eq!(s.stack_index, on.samples[0].stack_index);
                total += s.values.iter().sum::<i64>();
            }
            assert_eq!(total as u64, w.stacks[p].off_cpu_ns);
            assert_eq!(total, 6_000_000);
            // One sample per (stack, thread, CPU, reason), with the times the thread ran again.
            let start = 1_700_000_000_000_001_000 + w.start_ns - 1_000;
            let mut seen: Vec<(Vec<String>, Vec<u64>, Vec<i64>)> = off
                .samples
                .iter()
                .map(|s| {
                    (
                        attributes(&m, s),
                        s.timestamps_unix_nano.iter().map(|t| t - start).collect(),
                        s.values.clone(),
                    )
                })
                .collect();
            seen.sort();
            let at = 10 * p as u64;
            let tid = format!("thread.id={}", 100 + p);
            let name = format!("thread.name=t{p}");
            let attrs = |cpu: u32, reason: &str| {
                vec![
                    tid.clone(),
                    name.clone(),
                    format!("cpu.logical_number={cpu}"),
                    format!("amprof.off_cpu.reason={reason}"),
                ]
            };
            let mut expected = vec![
                (attrs(0, "blocked"), vec![at + 2], vec![3_000_000]),
                (attrs(0, "runnable"), vec![at + 4], vec![2_000_000]),
                (attrs(1, "blocked"), vec![at + 6], vec![1_000_000]),
            ];
            expected.sort();
            assert_eq!(seen, expected);
        }
    }

    /// A profile with every index of the dictionary followed.
    fn resolved(m: &ExportProfilesServiceRequest, p: &otlp::Profile) -> String {
        let samples: Vec<String> = p
            .samples
            .iter()
            .map(|s| {
                format!(
                    "{:?} {:?} {:?} {:?} {}",
                    resolve(m, s.stack_index),
                    attributes(m, s),
                    s.timestamps_unix_nano,
                    s.values,
                    s.link_index
                )
            })
            .collect();
        format!(
            "{} {} {} {} {} {:?} {:?} {:?}",
            value_type(m, p.sample_type.as_ref()),
            value_type(m, p.period_type.as_ref()),
            p.period,
            p.time_unix_nano,
            p.duration_nano,
            p.profile_id,
            p.attribute_indices,
            samples
        )
    }

    #[test]
    fn on_cpu_profiles_do_not_change_beside_off_cpu_ones() {
        let alone = encode_one(&window(3, 2, 4));
        let beside = encode_one(&window_with_off_cpu(3, 2, 4));
        assert_eq!(alone.resource_profiles.len(), 2);
        assert_eq!(beside.resource_profiles.len(), 2);
        for (a, b) in alone
            .resource_profiles
            .iter()
            .zip(&beside.resource_profiles)
        {
            assert_eq!(a.resource, b.resource);
            assert_eq!(a.scope_profiles[0].profiles.len(), 1);
            assert_eq!(
                resolved(&alone, &a.scope_profiles[0].profiles[0]),
                resolved(&beside, &b.scope_profiles[0].profiles[0])
            );
        }
        // The first process's on-CPU profile comes before any off-CPU string or attribute: the
        // very same message.
        assert_eq!(
            alone.resource_profiles[0].scope_profiles[0].profiles[0],
            beside.resource_profiles[0].scope_profiles[0].profiles[0]
        );
    }

    #[test]
    fn a_process_only_off_the_cpu_has_only_an_off_cpu_profile() {
        let mut w = WindowBuilder::new(0);
        let p = w.process(7, "sleeper");
        let f = w.function("nanosleep");
        let l = w.location(0x10, &[f]);
        let s = w.stack(p, &[l], 0);
        w.off_cpu_sample(5, 7, 0, s, 40_000_000, OffCpuReason::Blocked);
        let m = encode_one(&w.build());
        assert_eq!(m.resource_profiles.len(), 1);
        let profiles = &m.resource_profiles[0].scope_profiles[0].profiles;
        assert_eq!(profiles.len(), 1);
        assert_eq!(
            value_type(&m, profiles[0].sample_type.as_ref()),
            "off_cpu/nanoseconds"
        );
        assert_eq!(profiles[0].samples[0].values, vec![40_000_000]);
        assert_eq!(
            resolve(&m, profiles[0].samples[0].stack_index),
            ["nanosleep"]
        );
    }

    #[test]
    fn corrupt_off_cpu_columns_are_errors_not_panics() {
        let mut w = window_with_off_cpu(0, 1, 2);
        w.off_cpu_stacks[1] = 9;
        assert!(encoder(usize::MAX).push(&meta(), &w).is_err());
        let mut w = window_with_off_cpu(0, 1, 2);
        w.off_cpu_ns.pop();
        assert!(encoder(usize::MAX).push(&meta(), &w).is_err());
        let mut w = window_with_off_cpu(0, 1, 2);
        w.off_cpu_reasons[0] = 7;
        assert!(encoder(usize::MAX).push(&meta(), &w).is_err());
        let mut w = window_with_off_cpu(0, 1, 2);
        w.off_cpu_ns[0] = u64::MAX;
        let m = encode_one(&w);
        let off = &m.resource_profiles[0].scope_profiles[0].profiles[1];
        assert!(off.samples.iter().any(|s| s.values == [i64::MAX]));
    }

    #[test]
    fn the_size_estimate_bounds_off_cpu_profiles_too() {
        let one = encode_one(&window_with_off_cpu(0, 3, 50)).encoded_len();
        let mut e = encoder(one + one / 2);
        let mut requests = Vec::new();
        for index in 0..4 {
            requests.extend(e.push(&meta(), &window_with_off_cpu(index, 3, 50)).unwrap());
        }
        requests.extend(e.finish());
        assert!(requests.len() >= 2);
        let windows: Vec<u64> = requests.iter().flat_map(|r| r.windows.clone()).collect();
        assert_eq!(windows, [0, 1, 2, 3]);
        for r in &requests {
            assert!(r.message.encoded_len() <= one + one / 2);
        }
        // Split by process, a process's two profiles stay together.
        let mut e = encoder(one / 2);
        let mut requests = e.push(&meta(), &window_with_off_cpu(9, 3, 50)).unwrap();
        requests.extend(e.finish());
        assert!(requests.len() > 1);
        for r in &requests {
            for resource in &r.message.resource_profiles {
                assert_eq!(resource.scope_profiles[0].profiles.len(), 2);
            }
        }
    }

    #[test]
    fn profile_ids_are_stable_and_distinct() {
        let (m, w) = (meta(), window(0, 1, 1));
        assert_eq!(profile_id(&m, &w, 1, 2), profile_id(&m, &w, 1, 2));
        assert_ne!(profile_id(&m, &w, 1, 2), profile_id(&m, &w, 2, 2));
        assert_eq!(profile_id(&m, &w, 1, 2).len(), 16);
        let on = profile_id(&m, &w, 1, 2);
        assert_eq!(
            kind_profile_id(&on, SampleKind::OffCpu),
            kind_profile_id(&on, SampleKind::OffCpu)
        );
        assert_ne!(kind_profile_id(&on, SampleKind::OffCpu), on);
    }
}
