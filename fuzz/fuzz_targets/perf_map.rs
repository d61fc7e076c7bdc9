//! Any bytes given as a JIT's perf map or a process's maps line parse or are skipped: never a
//! panic. (Both are written by the sampled process or describe what it mapped.)
#![no_main]

use amprof::record::{perf_map, procs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        if let Some((start, end, name)) = perf_map::parse_line(line) {
            assert!(start < end && !name.is_empty());
        }
        let _ = procs::parse_maps_line(&String::from_utf8_lossy(line));
    }
});
