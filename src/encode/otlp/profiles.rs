//! What a request says about each process and its samples: one `Profile` per kind of sample
//! (from the kind's [`crate::capture::KindDescriptor`]: its sample type, period type, label
//! attribute, and whether samples carry values), the `ResourceProfiles` it goes under (the
//! resource attributes that say which process it is), and the profile ids a backend can drop a
//! resent duplicate by.

use indexmap::IndexMap;
use opentelemetry_proto::tonic::{
    common::v1::{InstrumentationScope, KeyValue},
    profiles::v1development as otlp,
    resource::v1::Resource,
};
use rustc_hash::FxHashMap;

use super::{
    EncodeSettings,
    dictionary::{Dictionary, Value},
};
use crate::{
    capture::{Meta, SampleKind, Window, format::Process},
    encode::frames,
};

/// Samples of one kind grouped by (stack index, tid, cpu, label value): their Unix-epoch
/// times, in order, and for a kind whose samples differ in weight (not periodic), the weight
/// of each at the same positions. One group is one OTLP `Sample`.
pub(super) type SampleGroups =
    IndexMap<(u32, u32, u32, Option<&'static str>), (Vec<u64>, Vec<i64>)>;

/// A monotonic capture time as nanoseconds since the Unix epoch.
pub(super) fn unix_ns(meta: &Meta, monotonic_ns: u64) -> u64 {
    let unix = i128::from(monotonic_ns) + i128::from(meta.realtime_offset_ns);
    unix.clamp(0, i128::from(u64::MAX)) as u64
}

/// Builds the profiles of one window: what its samples share (thread names, the sampling
/// period), and the dictionary entries of its stacks and locations made so far, so that a stack
/// met again costs a lookup.
pub(super) struct WindowProfiles<'w> {
    meta: &'w Meta,
    window: &'w Window,
    /// Nanoseconds per sample of a periodic kind (0 without a frequency).
    period: i64,
    /// Dictionary location of each (capture location, kernel frame or not).
    location_cache: FxHashMap<(u32, bool), i32>,
    /// Dictionary stack of each capture stack.
    stack_cache: FxHashMap<u32, i32>,
    /// By (tid, process) first: a thread that execs is in two process images, named twice.
    thread_names: FxHashMap<(u32, Option<u32>), &'w str>,
}

impl<'w> WindowProfiles<'w> {
    pub(super) fn new(meta: &'w Meta, window: &'w Window) -> Self {
        let mut thread_names: FxHashMap<(u32, Option<u32>), &str> = FxHashMap::default();
        for t in &window.threads {
            thread_names.insert((t.tid, Some(t.process)), &t.name);
            thread_names.entry((t.tid, None)).or_insert(&t.name);
        }
        let period = 1_000_000_000u64
            .checked_div(meta.frequency_hz)
            .map_or(0, |p| p as i64);
        Self {
            meta,
            window,
            period,
            location_cache: FxHashMap::default(),
            stack_cache: FxHashMap::default(),
            thread_names,
        }
    }

    /// The `kind` profile of `process` (an index into `window.processes`) from its samples of
    /// that kind, `groups`; `id`: the process's on-CPU profile id in this window.
    pub(super) fn profile(
        &mut self,
        dictionary: &mut Dictionary,
        process: usize,
        kind: SampleKind,
        groups: &SampleGroups,
        id: &[u8],
    ) -> otlp::Profile {
        let descriptor = kind.descriptor();
        let mut samples = Vec::with_capacity(groups.len());
        for (&(stack, tid, cpu, label), (times, weights)) in groups {
            let (stack_index, mut attribute_indices) =
                self.sample_key(dictionary, process, stack, tid, cpu);
            if let (Some(key), Some(label)) = (descriptor.otlp_label, label) {
                attribute_indices.push(dictionary.attribute(key, Value::Str(label.into())));
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
            type_strindex: dictionary.string(descriptor.otlp.0),
            unit_strindex: dictionary.string(descriptor.otlp.1),
        };
        // A kind without a period (off-CPU: a sample stands for its own duration) gets none,
        // as the eBPF profiler sends none.
        let period_type = descriptor.otlp_period.map(|(t, u)| otlp::ValueType {
            type_strindex: dictionary.string(t),
            unit_strindex: dictionary.string(u),
        });
        let window = self.window;
        otlp::Profile {
            sample_type: Some(sample_type),
            samples,
            time_unix_nano: unix_ns(self.meta, window.start_ns),
            duration_nano: window.end_ns.saturating_sub(window.start_ns),
            period: if period_type.is_some() {
                self.period
            } else {
                0
            },
            period_type,
            profile_id: kind_profile_id(id, kind),
            ..Default::default()
        }
    }

    /// The stack and the thread and CPU attributes of a sample of `process` (an index into
    /// `window.processes`).
    fn sample_key(
        &mut self,
        dictionary: &mut Dictionary,
        process: usize,
        stack: u32,
        tid: u32,
        cpu: u32,
    ) -> (i32, Vec<i32>) {
        let stack_index = match self.stack_cache.get(&stack) {
            Some(&index) => index,
            None => {
                let index = dictionary.stack(self.window, stack, &mut self.location_cache);
                self.stack_cache.insert(stack, index);
                index
            }
        };
        let mut attribute_indices = vec![dictionary.attribute("thread.id", Value::Int(tid.into()))];
        let name = self
            .thread_names
            .get(&(tid, Some(process as u32)))
            .or_else(|| self.thread_names.get(&(tid, None)));
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            attribute_indices.push(dictionary.attribute("thread.name", Value::Str((*name).into())));
        }
        attribute_indices.push(dictionary.attribute("cpu.logical_number", Value::Int(cpu.into())));
        (stack_index, attribute_indices)
    }
}

/// The `ResourceProfiles` of one resource: its attributes, and its profiles under amprof's
/// instrumentation scope.
pub(super) fn resource_profiles(
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
pub(super) fn resource_attributes(
    settings: &EncodeSettings,
    meta: &Meta,
    process: &Process,
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
pub(super) fn profile_id(meta: &Meta, window: &Window, pid: u32, first_seen_ns: u64) -> Vec<u8> {
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
pub(super) fn kind_profile_id(on_cpu: &[u8], kind: SampleKind) -> Vec<u8> {
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
