//! What perf.data has around its records: the file header (rewritten at the end, once the
//! data's size is known), the attrs and their ids before the data, and the feature sections
//! after it.

use std::collections::BTreeSet;

use super::{
    abi,
    bytes::{put_build_id_event, put_header_string, put_u32, put_u64},
    events::PerfEvent,
};
use crate::capture::format::Meta;

/// Where the data section starts with `events` events: after the header, the attrs, and their
/// one id each.
pub(super) const fn data_offset(events: usize) -> u64 {
    abi::FILE_HEADER_SIZE
        + events as u64
            * (abi::ATTR_SIZE as u64 + abi::FILE_SECTION_SIZE + std::mem::size_of::<u64>() as u64)
}

/// The file header of a file of `events` events: `data_size` bytes of records, `features` set.
pub(super) fn file_header(
    events: usize,
    data_size: u64,
    features: &[u32],
) -> [u8; abi::FILE_HEADER_SIZE as usize] {
    let attr_size = abi::ATTR_SIZE as u64 + abi::FILE_SECTION_SIZE;
    let mut h = Vec::with_capacity(abi::FILE_HEADER_SIZE as usize);
    put_u64(&mut h, abi::MAGIC);
    put_u64(&mut h, abi::FILE_HEADER_SIZE);
    put_u64(&mut h, attr_size);
    put_u64(&mut h, abi::FILE_HEADER_SIZE); // attrs.offset
    put_u64(&mut h, events as u64 * attr_size); // attrs.size
    put_u64(&mut h, data_offset(events));
    put_u64(&mut h, data_size);
    put_u64(&mut h, 0); // event_types (unused since perf 3.x)
    put_u64(&mut h, 0);
    let mut bitmap = [0u64; 4];
    for &feature in features {
        bitmap[feature as usize / 64] |= 1 << (feature % 64);
    }
    for word in bitmap {
        put_u64(&mut h, word);
    }
    let mut header = [0u8; abi::FILE_HEADER_SIZE as usize];
    header.copy_from_slice(&h);
    header
}

/// The start of a file of `events` for a capture described by `meta`: a header to be
/// rewritten once the data's size is known, each event's attr with its ids section, then the
/// ids, one per event; the data section follows.
pub(super) fn start(meta: &Meta, events: &[PerfEvent]) -> Vec<u8> {
    let data_offset = data_offset(events.len());
    let mut start = Vec::with_capacity(data_offset as usize);
    start.extend_from_slice(&file_header(events.len(), 0, &[]));
    let mut ids_offset = abi::FILE_HEADER_SIZE
        + events.len() as u64 * (abi::ATTR_SIZE as u64 + abi::FILE_SECTION_SIZE);
    for (i, &e) in events.iter().enumerate() {
        start.extend_from_slice(&e.attr(meta, i == 0));
        put_u64(&mut start, ids_offset);
        put_u64(&mut start, 8);
        ids_offset += 8;
    }
    for e in events {
        put_u64(&mut start, e.id);
    }
    debug_assert_eq!(start.len() as u64, data_offset);
    start
}

/// What follows the data section, which ends at `data_end`: the table of the feature
/// `sections` (offset and size of each), then their payloads.
pub(super) fn feature_sections(sections: &[(u32, Vec<u8>)], data_end: u64) -> Vec<u8> {
    let table_len = sections.len() as u64 * abi::FILE_SECTION_SIZE;
    let mut offset = data_end + table_len;
    let mut bytes = Vec::with_capacity(table_len as usize);
    for (_, payload) in sections {
        put_u64(&mut bytes, offset);
        put_u64(&mut bytes, payload.len() as u64);
        offset += payload.len() as u64;
    }
    for (_, payload) in sections {
        bytes.extend_from_slice(payload);
    }
    bytes
}

/// The feature sections of a file of `events` for a capture described by `meta`, by ascending
/// feature bit (the order perf reads them in): `build_ids` are the BUILD_ID entries (path,
/// build-id, kernel or not), `sample_times` the first and last sample's (none without samples).
pub(super) fn features(
    meta: &Meta,
    events: &[PerfEvent],
    build_ids: &BTreeSet<(String, Vec<u8>, bool)>,
    sample_times: Option<(u64, u64)>,
) -> Vec<(u32, Vec<u8>)> {
    let string = |s: &str| {
        let mut b = Vec::new();
        put_header_string(&mut b, s);
        b
    };
    let mut sections = Vec::new();
    let mut entries = Vec::new();
    for (path, build_id, kernel) in build_ids {
        put_build_id_event(&mut entries, path, build_id, *kernel);
    }
    sections.push((abi::FEAT_BUILD_ID, entries));
    sections.push((abi::FEAT_HOSTNAME, string(&meta.hostname)));
    sections.push((abi::FEAT_OSRELEASE, string(&meta.kernel_release)));
    sections.push((
        abi::FEAT_VERSION,
        string(&format!("amprof {}", meta.amprof_version)),
    ));
    sections.push((abi::FEAT_ARCH, string(&meta.arch)));
    let mut cpus = Vec::new();
    put_u32(&mut cpus, meta.cpus); // available
    put_u32(&mut cpus, meta.cpus); // online
    sections.push((abi::FEAT_NRCPUS, cpus));
    let mut cmdline = Vec::new();
    put_u32(&mut cmdline, meta.command_line.len() as u32);
    for arg in &meta.command_line {
        put_header_string(&mut cmdline, arg);
    }
    sections.push((abi::FEAT_CMDLINE, cmdline));
    // The events' names: without them perf would call offcpu-time `bpf-output`.
    let mut desc = Vec::new();
    put_u32(&mut desc, events.len() as u32);
    put_u32(&mut desc, abi::ATTR_SIZE);
    for (i, &event) in events.iter().enumerate() {
        desc.extend_from_slice(&event.attr(meta, i == 0));
        put_u32(&mut desc, 1); // ids
        put_header_string(&mut desc, event.name(meta));
        put_u64(&mut desc, event.id);
    }
    sections.push((abi::FEAT_EVENT_DESC, desc));
    if let Some((first, last)) = sample_times {
        let mut times = Vec::new();
        put_u64(&mut times, first);
        put_u64(&mut times, last);
        sections.push((abi::FEAT_SAMPLE_TIME, times));
    }
    let mut clockid = Vec::new();
    put_u64(&mut clockid, 1); // resolution of CLOCK_MONOTONIC in ns
    sections.push((abi::FEAT_CLOCKID, clockid));
    // The wall-clock time of one monotonic instant: `perf script -F+time --clock ...`.
    let mut clock = Vec::new();
    put_u32(&mut clock, 1); // version
    put_u32(&mut clock, abi::CLOCK_MONOTONIC);
    put_u64(
        &mut clock,
        meta.start_ns.saturating_add_signed(meta.realtime_offset_ns),
    );
    put_u64(&mut clock, meta.start_ns);
    sections.push((abi::FEAT_CLOCK_DATA, clock));
    sections
}
