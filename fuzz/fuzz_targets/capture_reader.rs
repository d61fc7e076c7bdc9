//! Any bytes given to the capture reader give windows or an error: never a panic, a hang or an
//! allocation sized by the file's own claims (libFuzzer's -malloc_limit_mb catches those). The
//! windows it accepts then go through every consumer: a reader's validation must be enough for
//! them all.
#![no_main]

use std::io::Cursor;

use amprof::{
    capture::{CaptureReader, Event, Selection},
    encode::{
        folded, perf, pprof,
        otlp::{EncodeSettings, RequestEncoder},
    },
    report::summary::Tally,
};
use libfuzzer_sys::fuzz_target;

/// The input with every record's checksum made right, so that mutations reach the decoding,
/// validation and consumers instead of stopping at the checksum.
fn with_valid_checksums(data: &[u8]) -> Vec<u8> {
    let mut fixed = data.to_vec();
    let mut at = amprof::capture::HEADER_LEN;
    while at + amprof::capture::RECORD_HEADER_LEN <= fixed.len() {
        let len = u32::from_le_bytes(fixed[at..at + 4].try_into().unwrap()) as usize;
        let payload = at + amprof::capture::RECORD_HEADER_LEN;
        let Some(end) = payload.checked_add(len).filter(|&e| e <= fixed.len()) else {
            break;
        };
        let crc = crc32fast::hash(&fixed[payload..end]);
        fixed[at + 8..at + 12].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
    fixed
}

fuzz_target!(|data: &[u8]| {
    read(data);
    read(&with_valid_checksums(data));
});

fn read(data: &[u8]) {
    let Ok(mut reader) = CaptureReader::new(data, data.len() as u64) else {
        return;
    };
    let meta = reader.meta().clone();
    let mut windows = Vec::new();
    while let Ok(Some(window)) = reader.next_window() {
        windows.push(window);
        if windows.len() > 16 {
            break;
        }
    }
    let selection = Selection::default();
    let mut fold = folded::Fold::default();
    let mut tally = Tally::default();
    for window in &windows {
        fold.add(window, &selection);
        tally.add(&meta, window, &selection);
    }
    let _ = fold.lines();
    let kernel = perf::Kernel::check(windows.first(), std::path::Path::new("/nonexistent"));
    if let Ok(mut writer) = perf::PerfWriter::new(Cursor::new(Vec::new()), &meta, &kernel) {
        for window in &windows {
            let _ = writer.window(window, &selection);
        }
        let _ = writer.finish();
    }
    // Wall: every sample of both kinds goes through the builder.
    if let Ok(mut builder) = pprof::ProfileBuilder::new(&meta, pprof::Values::of_event(Event::Wall)) {
        for window in &windows {
            let _ = builder.add_window(window, &selection, &|_| true);
        }
        let _ = builder.finish();
    }
    let mut encoder = RequestEncoder::new(EncodeSettings {
        max_request_bytes: 1 << 20,
        ..EncodeSettings::default()
    });
    for window in &windows {
        encoder.push(&meta, window);
    }
    let _ = encoder.finish();
}
