//! Reading pprof profiles back in tests (tests/root/pprof_export.rs, tests/root/push_datadog.rs), with
//! the prost messages of Datadog's libdd-profiling-protobuf, and comparing them with a capture.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read as _,
    path::Path,
};

pub use libdd_profiling_protobuf::prost_impls::{Message as _, Profile, Sample};

/// Decodes a pprof profile: gzip, zstd or uncompressed.
pub fn decode(bytes: &[u8]) -> Profile {
    let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .expect("valid gzip");
        raw
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::decode_all(bytes).expect("valid zstd")
    } else {
        bytes.to_vec()
    };
    Profile::decode(raw.as_slice()).expect("a pprof profile")
}

/// String `index` of the profile's string table.
pub fn string(profile: &Profile, index: i64) -> &str {
    &profile.string_table[usize::try_from(index).expect("a string index")]
}

/// `(type, unit)` of the sample values.
pub fn sample_types(profile: &Profile) -> Vec<(String, String)> {
    profile
        .sample_types
        .iter()
        .map(|t| {
            (
                string(profile, t.r#type).into(),
                string(profile, t.unit).into(),
            )
        })
        .collect()
}

/// The string value of label `key` of `sample`.
pub fn label<'p>(profile: &'p Profile, sample: &Sample, key: &str) -> Option<&'p str> {
    sample
        .labels
        .iter()
        .find(|l| string(profile, l.key) == key && l.str != 0)
        .map(|l| string(profile, l.str))
}

/// The numeric value of label `key` of `sample`.
pub fn num_label(profile: &Profile, sample: &Sample, key: &str) -> Option<i64> {
    sample
        .labels
        .iter()
        .find(|l| string(profile, l.key) == key && l.str == 0)
        .map(|l| l.num)
}

/// Folded stacks of the profile, as `amprof report --format folded` writes them:
/// `process;root;...;leaf` (kernel frames suffixed `_[k]`) to the number of samples.
pub fn folded(profile: &Profile) -> BTreeMap<String, u64> {
    let functions: BTreeMap<u64, &str> = profile
        .functions
        .iter()
        .map(|f| (f.id, string(profile, f.name)))
        .collect();
    let locations: BTreeMap<u64, _> = profile.locations.iter().map(|l| (l.id, l)).collect();
    // amprof gives kernel frames a mapping of the whole address space (the kernel's extent is
    // not recorded); user frames have their file's mapping, or none.
    let kernel: BTreeSet<u64> = profile
        .mappings
        .iter()
        .filter(|m| m.memory_start == 0 && m.memory_limit == u64::MAX)
        .map(|m| m.id)
        .collect();
    let mut stacks = BTreeMap::new();
    for sample in &profile.samples {
        let mut line = clean(label(profile, sample, "process_name").unwrap_or("[unknown]"));
        for id in sample.location_ids.iter().rev() {
            let location = locations[id];
            let suffix = if kernel.contains(&location.mapping_id) {
                "_[k]"
            } else {
                ""
            };
            for l in location.lines.iter().rev() {
                line.push(';');
                line.push_str(&clean(functions[&l.function_id]));
                line.push_str(suffix);
            }
        }
        *stacks.entry(line).or_insert(0) += sample.values[0] as u64;
    }
    stacks
}

/// A frame name as folded lines carry it.
fn clean(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            ';' => ':',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
}

/// Parses `amprof report --format folded` output.
pub fn parse_folded(text: &str) -> BTreeMap<String, u64> {
    let mut stacks = BTreeMap::new();
    for line in text.lines() {
        let (stack, count) = line.rsplit_once(' ').expect("`stack count` lines");
        *stacks.entry(stack.to_string()).or_insert(0) += count.parse::<u64>().expect("a count");
    }
    stacks
}

/// Adds the stacks of `b` to `a`.
pub fn merge(a: &mut BTreeMap<String, u64>, b: BTreeMap<String, u64>) {
    for (stack, count) in b {
        *a.entry(stack).or_insert(0) += count;
    }
}

/// The windows of a capture: `(index, start, end)` in ns since the Unix epoch, and samples.
pub fn windows(capture: &Path) -> Vec<(u64, i64, i64, usize)> {
    let mut reader = amprof::capture::CaptureReader::open(capture).expect("a capture");
    let offset = reader.meta().realtime_offset_ns;
    let mut windows = Vec::new();
    while let Some(w) = reader.next_window().expect("a window") {
        windows.push((
            w.index,
            w.start_ns as i64 + offset,
            w.end_ns as i64 + offset,
            w.sample_stacks.len(),
        ));
    }
    windows
}
