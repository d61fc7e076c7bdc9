//! Every format of the committed captures in `tests/data/`, against golden outputs in
//! `tests/data/golden/`: a change to what amprof writes shows as a diff there, to be read and
//! committed on purpose (`AMPROF_UPDATE=1 cargo test --test fast` rewrites them).
//!
//! The captures are real recordings of the fixtures (`hotspot.data`: `-g fp`, two threads;
//! `dwarf-inline.data`: `-g dwarf --inline`, a no-frame-pointer C chain beside it). Formats that
//! depend on this machine (perf.data's kernel map) take the recording machine's kallsyms excerpt
//! committed beside each capture; binary formats are compared as text dumps of what their readers
//! see (linux-perf-data for perf.data, libdd's protobuf types for pprof, the official OTLP types).

use std::{
    fmt::Write as _,
    io::{Cursor, Read as _},
    path::{Path, PathBuf},
};

use amprof::{
    capture::{CaptureReader, Selection, Window},
    encode::{
        otlp::{EncodeSettings, RequestEncoder},
        perf::{Kernel, PerfWriter},
    },
};

use crate::util::{amprof, assert_ok, scratch};

const CAPTURES: [&str; 2] = ["hotspot", "dwarf-inline"];

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Compares `actual` with the golden file `name`, or rewrites it under `AMPROF_UPDATE`.
pub fn golden(name: &str, actual: &str) {
    let path = data("golden").join(name);
    if std::env::var_os("AMPROF_UPDATE").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (AMPROF_UPDATE=1 writes it)", path.display()));
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name} differs from its golden output at line {}:\n  golden: {:?}\n  now:    {:?}\n(AMPROF_UPDATE=1 cargo test --test fast rewrites it: review the diff)",
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

fn report(capture: &str, args: &[&str]) -> Vec<u8> {
    let input = data(&format!("{capture}.data"));
    let output = amprof()
        .args(["report", "-q", "-i"])
        .arg(&input)
        .args(args)
        .output()
        .unwrap();
    assert_ok(&output);
    output.stdout
}

fn windows(capture: &str) -> (amprof::capture::Meta, Vec<Window>) {
    let mut reader = CaptureReader::open(&data(&format!("{capture}.data"))).unwrap();
    let meta = reader.meta().clone();
    (meta, reader.read_all().unwrap())
}

#[test]
fn summaries_match() {
    for capture in CAPTURES {
        let text = String::from_utf8(report(capture, &[])).unwrap();
        golden(&format!("{capture}.summary.txt"), &text);
        let json = String::from_utf8(report(capture, &["--json"])).unwrap();
        golden(&format!("{capture}.summary.json"), &json);
        let selected =
            String::from_utf8(report(capture, &["--window", "0", "--top", "3"])).unwrap();
        golden(&format!("{capture}.summary-window-0.txt"), &selected);
    }
}

#[test]
fn folded_stacks_match() {
    for capture in CAPTURES {
        let folded = String::from_utf8(report(capture, &["--format", "folded"])).unwrap();
        golden(&format!("{capture}.folded"), &folded);
    }
}

#[test]
fn flamegraphs_match() {
    for capture in CAPTURES {
        let svg =
            String::from_utf8(report(capture, &["--format", "flamegraph", "-o", "-"])).unwrap();
        golden(&format!("{capture}.svg"), &svg);
    }
}

/// pprof, as libdd's own protobuf types read it: types, mappings, and every sample's frames
/// (function names, leaf first), values and labels.
#[test]
fn pprof_profiles_match() {
    use libdd_profiling_protobuf::prost_impls::{Message as _, Profile};
    for capture in CAPTURES {
        let dir = scratch(&format!("golden-pprof-{capture}"));
        let file = dir.join("profile.pb.gz");
        report(
            capture,
            &["--format", "pprof", "-o", file.to_str().unwrap()],
        );
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&file).unwrap())
            .read_to_end(&mut bytes)
            .unwrap();
        let profile = Profile::decode(bytes.as_slice()).unwrap();
        let s = |i: i64| profile.string_table[i as usize].clone();
        let mut dump = String::new();
        for t in &profile.sample_types {
            writeln!(dump, "sample type {}/{}", s(t.r#type), s(t.unit)).unwrap();
        }
        writeln!(
            dump,
            "period {} time {} duration {}",
            profile.period, profile.time_nanos, profile.duration_nanos
        )
        .unwrap();
        for m in &profile.mappings {
            writeln!(
                dump,
                "mapping {} {:#x}..{:#x}+{:#x} {} build-id {:?} functions {}",
                m.id,
                m.memory_start,
                m.memory_limit,
                m.file_offset,
                s(m.filename),
                s(m.build_id),
                m.has_functions
            )
            .unwrap();
        }
        let function = |id: u64| {
            profile
                .functions
                .iter()
                .find(|f| f.id == id)
                .map_or("?".to_string(), |f| s(f.name))
        };
        let mut samples: std::collections::BTreeMap<String, u64> = Default::default();
        for sample in &profile.samples {
            let frames: Vec<String> = sample
                .location_ids
                .iter()
                .map(|id| {
                    let location = profile.locations.iter().find(|l| l.id == *id).unwrap();
                    let names: Vec<String> = location
                        .lines
                        .iter()
                        .map(|l| function(l.function_id))
                        .collect();
                    format!("{}@{:#x}", names.join("|"), location.address)
                })
                .collect();
            let labels: Vec<String> = sample
                .labels
                .iter()
                .map(|l| {
                    if l.str != 0 {
                        format!("{}={}", s(l.key), s(l.str))
                    } else {
                        format!("{}={}", s(l.key), l.num)
                    }
                })
                .collect();
            // Each sample's own time aside, the same sample recurs: counted once.
            let labels: Vec<String> = labels
                .into_iter()
                .filter(|l| !l.starts_with("end_timestamp_ns="))
                .collect();
            *samples
                .entry(format!(
                    "{:?} [{}] {}",
                    sample.values,
                    labels.join(" "),
                    frames.join(";")
                ))
                .or_insert(0) += 1;
        }
        for (sample, count) in samples {
            writeln!(dump, "{count} x sample {sample}").unwrap();
        }
        golden(&format!("{capture}.pprof.txt"), &dump);
    }
}

/// perf.data, as linux-perf-data reads it back, with the kernel map the recording machine's
/// kallsyms gives.
#[test]
fn perf_data_matches() {
    use linux_perf_data::{PerfFileReader, PerfFileRecord, linux_perf_event_reader::EventRecord};
    for capture in CAPTURES {
        let (meta, windows) = windows(capture);
        let kallsyms = data(&format!("{capture}.kallsyms"));
        let first_kernel = windows
            .iter()
            .find(|w| w.stacks.iter().any(|s| s.kernel_frames > 0));
        let kernel = Kernel::check(first_kernel, &kallsyms);
        assert!(kernel.map.is_ok(), "{capture}: {:?}", kernel.map);
        let mut file = Cursor::new(Vec::new());
        let mut writer = PerfWriter::new(&mut file, &meta, &kernel).unwrap();
        for window in &windows {
            writer.window(window, &Selection::default()).unwrap();
        }
        writer.finish().unwrap();
        let bytes = file.into_inner();
        let PerfFileReader {
            mut perf_file,
            mut record_iter,
        } = PerfFileReader::parse_file(Cursor::new(&bytes[..])).unwrap();
        let mut dump = String::new();
        writeln!(
            dump,
            "host {:?} release {:?} cmdline {:?}",
            perf_file.hostname().unwrap(),
            perf_file.os_release().unwrap(),
            perf_file.cmdline().unwrap()
        )
        .unwrap();
        let mut build_ids: Vec<String> = perf_file
            .build_ids()
            .unwrap()
            .iter()
            .map(|(key, id)| format!("{key:?} {:02x?}", id.build_id))
            .collect();
        build_ids.sort();
        for id in build_ids {
            writeln!(dump, "build-id {id}").unwrap();
        }
        let mut samples: std::collections::BTreeMap<String, u64> = Default::default();
        while let Some(record) = record_iter.next_record(&mut perf_file).unwrap() {
            let PerfFileRecord::EventRecord { record, .. } = record else {
                continue;
            };
            let time = record
                .common_data()
                .ok()
                .and_then(|c| c.timestamp)
                .unwrap_or(0);
            match record.parse().unwrap() {
                EventRecord::Comm(c) => writeln!(
                    dump,
                    "{time} COMM {}/{} {} exec={}",
                    c.pid,
                    c.tid,
                    String::from_utf8_lossy(&c.name.as_slice()),
                    c.is_execve
                ),
                EventRecord::Mmap2(m) => writeln!(
                    dump,
                    "{time} MMAP2 {} {:#x}+{:#x} @{:#x} {}",
                    m.pid,
                    m.address,
                    m.length,
                    m.page_offset,
                    String::from_utf8_lossy(&m.path.as_slice())
                ),
                // Samples are counted by thread, CPU and call chain (their times are checked by
                // the unit tests of the writer).
                EventRecord::Sample(s) => {
                    *samples
                        .entry(format!(
                            "{:?}/{:?} cpu {:?} {:x?}",
                            s.pid,
                            s.tid,
                            s.cpu,
                            s.callchain.map(|c| (0..c.len())
                                .map(|i| c.get(i).unwrap())
                                .collect::<Vec<u64>>())
                        ))
                        .or_insert(0) += 1;
                    Ok(())
                }
                _ => Ok(()),
            }
            .unwrap();
        }
        for (sample, count) in samples {
            writeln!(dump, "{count} x SAMPLE {sample}").unwrap();
        }
        golden(&format!("{capture}.perf.txt"), &dump);
    }
}

/// OTLP requests, as the official protobuf types decode them: resources, profiles and samples
/// with their frames.
#[test]
fn otlp_requests_match() {
    for capture in CAPTURES {
        let (meta, windows) = windows(capture);
        let mut encoder = RequestEncoder::new(EncodeSettings {
            max_request_bytes: 4 << 20,
            ..EncodeSettings::default()
        });
        let mut requests = Vec::new();
        for window in &windows {
            requests.extend(encoder.push(&meta, window));
        }
        requests.extend(encoder.finish());
        let mut dump = String::new();
        for request in &requests {
            let message = &request.message;
            let dictionary = message.dictionary.as_ref().unwrap();
            let s = |i: i32| dictionary.string_table[i as usize].clone();
            writeln!(dump, "request of windows {:?}", request.windows).unwrap();
            for resource in &message.resource_profiles {
                let attributes: Vec<String> = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .map(|a| {
                        format!(
                            "{}={:?}",
                            a.key,
                            a.value.as_ref().and_then(|v| v.value.clone())
                        )
                    })
                    .collect();
                writeln!(dump, "  resource {}", attributes.join(" ")).unwrap();
                for scope in &resource.scope_profiles {
                    for profile in &scope.profiles {
                        writeln!(
                            dump,
                            "    profile period {} samples {}",
                            profile.period,
                            profile.samples.len()
                        )
                        .unwrap();
                        for sample in &profile.samples {
                            let stack = &dictionary.stack_table[sample.stack_index as usize];
                            let frames: Vec<String> = stack
                                .location_indices
                                .iter()
                                .map(|&l| {
                                    let location = &dictionary.location_table[l as usize];
                                    location
                                        .lines
                                        .iter()
                                        .map(|line| {
                                            s(dictionary.function_table
                                                [line.function_index as usize]
                                                .name_strindex)
                                        })
                                        .collect::<Vec<_>>()
                                        .join("|")
                                })
                                .collect();
                            writeln!(
                                dump,
                                "      {} x {}",
                                sample.timestamps_unix_nano.len(),
                                frames.join(";")
                            )
                            .unwrap();
                        }
                    }
                }
            }
        }
        golden(&format!("{capture}.otlp.txt"), &dump);
    }
}
