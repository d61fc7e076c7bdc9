//! One request being filled: the samples of a window grouped by process, the profiles of the
//! processes taken so far under their resources, the dictionary they share, and an upper bound
//! of the request's encoded size, with checkpoints to roll back the last window (or process)
//! taken when it does not fit.

use indexmap::IndexMap;
use opentelemetry_proto::tonic::{
    collector::profiles::v1development::ExportProfilesServiceRequest,
    profiles::v1development as otlp,
};
use prost::Message as _;

use super::{
    EncodeSettings, Encoded, MAX_PREFIX,
    dictionary::{Dictionary, Mark, Value},
    field_len,
    profiles::{
        SampleGroups, WindowProfiles, profile_id, resource_attributes, resource_profiles, unix_ns,
    },
};
use crate::capture::{Meta, SampleKind, Window, format::Process, kind_samples};

/// The samples of one process in a window, by kind ([`SampleKind::ALL`]'s order).
#[derive(Default)]
pub(super) struct ProcessSamples {
    /// Index into `window.processes`.
    process: usize,
    by_kind: [SampleGroups; SampleKind::ALL.len()],
}

/// Groups the samples of `window` by process, in process order. The window's columns are
/// consistent: the capture reader checked every window read from a file, the stream every
/// window a recording hands over (`crate::push::stream`).
pub(super) fn group_samples(meta: &Meta, window: &Window) -> Vec<ProcessSamples> {
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
    groups
}

/// The request being filled: its dictionary, profiles by resource, and an upper bound of its
/// encoded size.
pub(super) struct Batch {
    dictionary: Dictionary,
    /// Per resource (identified by its attributes): its profiles.
    resources: IndexMap<Vec<(String, Value)>, Vec<otlp::Profile>>,
    /// Resources that received a profile since the last checkpoint, for rollback.
    pushed: Vec<usize>,
    windows: Vec<u64>,
    /// Profiles taken so far.
    pub(super) profiles: usize,
    /// Upper bound of the encoded `resource_profiles` fields.
    resource_bytes: usize,
}

/// Where a [`Batch`] was, to roll back to.
pub(super) struct Checkpoint {
    dictionary: Mark,
    resources: usize,
    profiles: usize,
    resource_bytes: usize,
}

impl Batch {
    pub(super) fn new() -> Self {
        Self {
            dictionary: Dictionary::new(),
            resources: IndexMap::new(),
            pushed: Vec::new(),
            windows: Vec::new(),
            profiles: 0,
            resource_bytes: 0,
        }
    }

    /// An upper bound of the request's encoded size.
    pub(super) fn bytes(&self) -> usize {
        self.dictionary.bytes + self.resource_bytes
    }

    pub(super) fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.profiles == 0
    }

    pub(super) fn note_window(&mut self, index: u64) {
        if self.windows.last() != Some(&index) {
            self.windows.push(index);
        }
    }

    pub(super) fn checkpoint(&mut self) -> Checkpoint {
        self.pushed.clear();
        Checkpoint {
            dictionary: self.dictionary.mark(),
            resources: self.resources.len(),
            profiles: self.profiles,
            resource_bytes: self.resource_bytes,
        }
    }

    pub(super) fn rollback(&mut self, to: Checkpoint) {
        self.dictionary.truncate(&to.dictionary);
        for resource in self.pushed.drain(..).rev() {
            if let Some((_, profiles)) = self.resources.get_index_mut(resource) {
                profiles.pop();
            }
        }
        self.resources.truncate(to.resources);
        self.profiles = to.profiles;
        self.resource_bytes = to.resource_bytes;
    }

    /// Adds the profiles of `groups[which]` of `window`: per process, a profile of each kind
    /// of sample it has ([`SampleKind::ALL`]'s order).
    pub(super) fn add(
        &mut self,
        settings: &EncodeSettings,
        meta: &Meta,
        window: &Window,
        groups: &[ProcessSamples],
        which: &[usize],
    ) {
        let mut profiles = WindowProfiles::new(meta, window);
        for &g in which {
            let group = &groups[g];
            let process = &window.processes[group.process];
            let id = profile_id(meta, window, process.pid, process.first_seen_ns);
            for (kind, kind_groups) in SampleKind::ALL.into_iter().zip(&group.by_kind) {
                if kind_groups.is_empty() {
                    continue;
                }
                let profile =
                    profiles.profile(&mut self.dictionary, group.process, kind, kind_groups, &id);
                self.add_profile(settings, meta, process, profile);
            }
        }
    }

    /// Adds `profile` under the resource of `process`, counting its size.
    fn add_profile(
        &mut self,
        settings: &EncodeSettings,
        meta: &Meta,
        process: &Process,
        profile: otlp::Profile,
    ) {
        let resource = resource_attributes(settings, meta, process);
        let entry = self.resources.entry(resource);
        let index = entry.index();
        if let indexmap::map::Entry::Vacant(_) = entry {
            let empty = resource_profiles(entry.key().clone(), vec![]);
            self.resource_bytes += 1 + MAX_PREFIX + empty.encoded_len() + 2 * MAX_PREFIX;
        }
        self.resource_bytes += field_len(profile.encoded_len());
        entry.or_default().push(profile);
        self.pushed.push(index);
        self.profiles += 1;
    }

    pub(super) fn into_request(self) -> Encoded {
        let bytes = self.bytes();
        let message = ExportProfilesServiceRequest {
            resource_profiles: self
                .resources
                .into_iter()
                .map(|(attributes, profiles)| resource_profiles(attributes, profiles))
                .collect(),
            dictionary: Some(self.dictionary.into_message()),
        };
        debug_assert!(message.encoded_len() <= bytes, "size estimate too small");
        Encoded {
            windows: self.windows,
            message,
        }
    }
}
