//! perf.data written, then read back by `linux-perf-data` (the parser samply and others use)
//! and taken apart byte by byte where perf is particular.

use std::{io::Cursor, path::Path};

use linux_perf_data::{
    DsoKey, PerfFileReader, PerfFileRecord,
    linux_perf_event_reader::{AttrFlags, ClockId, CpuMode, EventRecord, Mmap2FileId, PerfClock},
};

use super::{
    Kernel, PerfWriter, Written, abi,
    bytes::{put_build_id_event, put_c_string, put_header_string},
};
use crate::capture::{
    Event, SampleKind, Selection,
    format::{Meta, ModuleKind, OffCpuReason, Process, Window},
    testing::{self, WindowBuilder},
};

/// The ids perf tells events apart by: cpu-clock's, offcpu-time's, the same in every file.
const EVENT_ID: u64 = 1;
const OFF_CPU_EVENT_ID: u64 = 2;

const TEXT: u64 = 0xffff_ffff_8100_0000;
const KFUNC: u64 = TEXT + 0x100;
const APP_ID: [u8; 20] = [0xab; 20];
const KERNEL_ID: [u8; 20] = [0xcd; 20];

fn meta() -> Meta {
    Meta {
        amprof_version: "9.9.9".into(),
        hostname: "box".into(),
        kernel_release: "6.1.0-test".into(),
        cpus: 4,
        frequency_hz: 100,
        command_line: vec!["amprof".into(), "record".into(), "-d".into(), "2s".into()],
        start_ns: 1_000,
        realtime_offset_ns: 5_000,
        ..testing::meta()
    }
}

/// A window of process `pid` named `name`, first seen at `seen`: a kernel + user stack in
/// `/usr/bin/app` (thread `pid`), a user stack through JIT code (thread `pid + 1`).
fn window(index: u64, start_ns: u64, pid: u32, name: &str, seen: u64) -> Window {
    let mut w = WindowBuilder::at(index, start_ns, start_ns + 1_000_000_000);
    let process = w.process_with(Process {
        pid,
        name: name.into(),
        exe: "/usr/bin/app".into(),
        first_seen_ns: seen,
        maps_unavailable: false,
    });
    w.thread(pid, process, name);
    w.thread(pid + 1, process, "worker");
    let app = w.module_with("/usr/bin/app", ModuleKind::File, &APP_ID);
    let kernel = w.module_with("[kernel.kallsyms]", ModuleKind::Kernel, &KERNEL_ID);
    let anon = w.module_with("[anon]", ModuleKind::Anonymous, &[]);
    let text = w.mapping(process, app, 0x40_0000, 0x41_0000, 0x1000);
    let jit = w.mapping(process, anon, 0x7f00_0000, 0x7f01_0000, 0);
    let (kfunc, main) = (w.function("kfunc"), w.function("main"));
    let in_kernel = w.kernel_location(kernel, KFUNC + 0x10, &[kfunc]);
    let in_main = w.location_in(text, 0x40_0100, &[main]);
    w.lines(in_main, &[(main, 7)]);
    let in_jit = w.location_in(jit, 0x7f00_0010, &[]);
    let through_kernel = w.stack(process, &[in_kernel, in_main], 1);
    let through_jit = w.stack(process, &[in_jit, in_main], 0);
    w.sample(10, pid, 0, through_kernel);
    w.sample(30, pid + 1, 1, through_jit);
    w.sample(60, pid, 2, through_kernel);
    w.window_mut().lost = 3;
    w.build()
}

/// A kallsyms file of its own (tests run in parallel threads).
fn kallsyms(name: &str, text: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "amprof-perf-test-{}-{}-{name}.kallsyms",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&path, text).unwrap();
    path
}

fn this_kernel() -> std::path::PathBuf {
    kallsyms(
        "same",
        &format!(
            "{TEXT:016x} T _text\n{TEXT:016x} T _stext\n{KFUNC:016x} T kfunc\n{:016x} t other\n{:016x} T _etext\n{:016x} d some_data\n",
            KFUNC + 0x80,
            TEXT + 0x10_0000,
            KFUNC + 0x8,
        ),
    )
}

/// Converts `windows` with `selection` and the running kernel `kallsyms`, returning the
/// file, what was written and the kernel plan.
fn convert(
    windows: &[Window],
    selection: &Selection,
    kallsyms: &Path,
) -> (Vec<u8>, Written, Kernel) {
    let meta = meta();
    let with_kernel = windows
        .iter()
        .find(|w| w.stacks.iter().any(|s| s.kernel_frames > 0));
    let kernel = Kernel::check(with_kernel, kallsyms);
    let _ = std::fs::remove_file(kallsyms); // read once, by the check
    let mut out = Cursor::new(Vec::new());
    let mut writer = PerfWriter::for_event(&mut out, &meta, &kernel, selection.event).unwrap();
    for window in windows {
        writer.window(window, selection).unwrap();
    }
    let written = writer.finish().unwrap();
    (out.into_inner(), written, kernel)
}

/// (type, misc, time from the sample_id or sample) of every record, in file order.
fn raw_records(file: &[u8]) -> Vec<(u32, u16)> {
    let word = |at: usize| u64::from_ne_bytes(file[at..at + 8].try_into().unwrap());
    let (offset, size) = (word(40) as usize, word(48) as usize);
    let mut records = Vec::new();
    let mut at = offset;
    while at < offset + size {
        let kind = u32::from_ne_bytes(file[at..at + 4].try_into().unwrap());
        let misc = u16::from_ne_bytes(file[at + 4..at + 6].try_into().unwrap());
        let len = u16::from_ne_bytes(file[at + 6..at + 8].try_into().unwrap());
        assert!(len >= 8 && len % 8 == 0, "record size {len}");
        records.push((kind, misc));
        at += len as usize;
    }
    assert_eq!(at, offset + size, "records fill the data section exactly");
    records
}

#[test]
fn every_record_kind_round_trips_through_linux_perf_data() {
    let kernel = this_kernel();
    let first = window(0, 1_000, 100, "app", 900);
    // The same image again, then an exec: same pid, new image, new name.
    let second = window(1, 1_000_001_000, 100, "app", 900);
    let exec = window(2, 2_000_001_000, 100, "app2", 2_000_000_500);
    let (file, written, kernel) = convert(&[first, second, exec], &Selection::default(), &kernel);
    assert_eq!(written.samples, 9);
    assert_eq!(kernel.map, Ok((TEXT, TEXT + 0x10_0000)));

    let PerfFileReader {
        mut perf_file,
        mut record_iter,
    } = PerfFileReader::parse_file(Cursor::new(&file[..])).unwrap();
    assert_eq!(perf_file.hostname().unwrap(), Some("box"));
    assert_eq!(perf_file.os_release().unwrap(), Some("6.1.0-test"));
    assert_eq!(perf_file.arch().unwrap(), Some("x86_64"));
    assert_eq!(perf_file.perf_version().unwrap(), Some("amprof 9.9.9"));
    let cpus = perf_file.nr_cpus().unwrap().unwrap();
    assert_eq!((cpus.nr_cpus_available, cpus.nr_cpus_online), (4, 4));
    assert_eq!(
        perf_file.cmdline().unwrap().unwrap(),
        ["amprof", "record", "-d", "2s"]
    );
    let range = perf_file.sample_time_range().unwrap().unwrap();
    assert_eq!(
        (range.first_sample_time, range.last_sample_time),
        (1_010, 2_000_001_060)
    );
    let clock = perf_file.clock_data().unwrap().unwrap();
    assert_eq!(
        (clock.clockid, clock.wall_clock_ns, clock.clockid_time_ns),
        (1, 6_000, 1_000)
    );
    let attrs = perf_file.event_attributes();
    assert_eq!(attrs.len(), 1);
    assert_eq!(attrs[0].name(), Some("cpu-clock"));
    assert_eq!(attrs[0].ids(), [EVENT_ID]);
    let attr = attrs[0].attributes();
    assert!(matches!(attr.clock, PerfClock::ClockId(ClockId::Monotonic)));
    assert!(
        attr.flags
            .contains(AttrFlags::SAMPLE_ID_ALL | AttrFlags::USE_CLOCKID)
    );
    let build_ids = perf_file.build_ids().unwrap();
    assert_eq!(build_ids[&DsoKey::Kernel].build_id, KERNEL_ID);
    let app = DsoKey::detect(b"/usr/bin/app", CpuMode::User).unwrap();
    assert_eq!(build_ids[&app].build_id, APP_ID);
    assert_eq!(build_ids.len(), 2, "{build_ids:?}");

    let mut comms = Vec::new();
    let mut mmaps = Vec::new();
    let mut samples = Vec::new();
    let mut lost = Vec::new();
    let mut user_records = Vec::new();
    while let Some(record) = record_iter.next_record(&mut perf_file).unwrap() {
        match record {
            PerfFileRecord::EventRecord { record, .. } => {
                let common = record.common_data().unwrap();
                assert_eq!(common.id, Some(EVENT_ID));
                let time = common.timestamp.unwrap();
                match record.parse().unwrap() {
                    EventRecord::Comm(c) => comms.push((
                        c.pid,
                        c.tid,
                        String::from_utf8(c.name.as_slice().to_vec()).unwrap(),
                        c.is_execve,
                        time,
                    )),
                    EventRecord::Mmap2(m) => mmaps.push((
                        m.pid,
                        m.address,
                        m.length,
                        m.page_offset,
                        String::from_utf8(m.path.as_slice().to_vec()).unwrap(),
                        match m.file_id {
                            Mmap2FileId::BuildId(id) => id,
                            Mmap2FileId::InodeAndVersion(_) => vec![],
                        },
                        time,
                    )),
                    EventRecord::Sample(s) => {
                        let chain = s.callchain.unwrap();
                        let chain: Vec<u64> =
                            (0..chain.len()).map(|i| chain.get(i).unwrap()).collect();
                        samples.push((
                            s.pid.unwrap(),
                            s.tid.unwrap(),
                            s.timestamp.unwrap(),
                            s.cpu.unwrap(),
                            s.period.unwrap(),
                            s.ip.unwrap(),
                            chain,
                        ));
                    }
                    EventRecord::Raw(raw) if raw.record_type.0 == abi::RECORD_LOST_SAMPLES => {
                        let count =
                            u64::from_ne_bytes(raw.data.as_slice()[..8].try_into().unwrap());
                        lost.push((count, time));
                    }
                    other => panic!("unexpected record {other:?}"),
                }
            }
            PerfFileRecord::UserRecord(user) => user_records.push(user.record_type),
        }
    }
    assert_eq!(user_records.len(), 1, "FINISHED_INIT: {user_records:?}");
    assert_eq!(user_records[0].record_type().0, abi::RECORD_FINISHED_INIT);

    let (t0, t1) = (1_000, 1_000_001_000);
    let t2 = 2_000_001_000;
    assert_eq!(
        comms,
        [
            (100, 100, "app".to_string(), false, t0 + 10),
            (100, 101, "worker".to_string(), false, t0 + 30),
            (100, 100, "app2".to_string(), true, t2 + 10),
            (100, 101, "worker".to_string(), false, t2 + 30),
        ],
        "one COMM per image and thread name, an exec for the new image"
    );
    let app = |time| {
        (
            100,
            0x40_0000,
            0x1_0000,
            0x1000,
            "/usr/bin/app".to_string(),
            APP_ID.to_vec(),
            time,
        )
    };
    let jit = |time| {
        (
            100,
            0x7f00_0000,
            0x1_0000,
            0,
            "//anon".to_string(),
            vec![],
            time,
        )
    };
    assert_eq!(
        mmaps,
        [
            (
                -1,
                TEXT,
                0x10_0000,
                TEXT,
                "[kernel.kallsyms]_text".to_string(),
                KERNEL_ID.to_vec(),
                meta().start_ns
            ),
            app(t0 + 10),
            jit(t0 + 30),
            app(t2 + 10),
            jit(t2 + 30),
        ],
        "MMAP2s once per image, fresh ones after the exec"
    );
    let kernel_chain = vec![
        abi::CONTEXT_KERNEL,
        KFUNC + 0x10,
        abi::CONTEXT_USER,
        0x40_0100,
    ];
    let jit_chain = vec![abi::CONTEXT_USER, 0x7f00_0010, 0x40_0100];
    let mut expected = Vec::new();
    for start in [t0, t1, t2] {
        expected.push((
            100,
            100,
            start + 10,
            0,
            10_000_000,
            KFUNC + 0x10,
            kernel_chain.clone(),
        ));
        expected.push((
            100,
            101,
            start + 30,
            1,
            10_000_000,
            0x7f00_0010,
            jit_chain.clone(),
        ));
        expected.push((
            100,
            100,
            start + 60,
            2,
            10_000_000,
            KFUNC + 0x10,
            kernel_chain.clone(),
        ));
    }
    assert_eq!(samples, expected);
    assert_eq!(lost, [(3, t0 + 60), (3, t1 + 60), (3, t2 + 60)]);

    // In the file itself: the kernel map and FINISHED_INIT first, a FINISHED_ROUND closing
    // each window, and what a sample needs right before it.
    let records = raw_records(&file);
    assert_eq!(
        records[0],
        (
            abi::RECORD_MMAP2,
            abi::MISC_KERNEL | abi::MISC_MMAP_BUILD_ID
        )
    );
    assert_eq!(records[1].0, abi::RECORD_FINISHED_INIT);
    assert_eq!(
        records
            .iter()
            .filter(|r| r.0 == abi::RECORD_FINISHED_ROUND)
            .count(),
        3
    );
    assert_eq!(records.last().unwrap().0, abi::RECORD_FINISHED_ROUND);
    let kinds: Vec<u32> = records.iter().map(|r| r.0).collect();
    assert_eq!(
        &kinds[2..8],
        [
            abi::RECORD_COMM,
            abi::RECORD_MMAP2,
            abi::RECORD_SAMPLE,
            abi::RECORD_MMAP2,
            abi::RECORD_COMM,
            abi::RECORD_SAMPLE
        ],
        "what a sample needs comes right before it"
    );
}

/// [`window`] with off-CPU samples too: thread `pid + 1` blocked in the kernel stack at 20
/// for 5 ms, thread `pid` in the JIT stack at 40 for 70 ms; 4 off-CPU samples lost.
fn window_with_off_cpu(index: u64, start_ns: u64) -> Window {
    let mut w = window(index, start_ns, 100, "app", 900);
    // The builder's columns are filled in by build(): add the samples to the built window.
    let mut off = WindowBuilder::at(index, start_ns, start_ns + 1_000_000_000);
    off.off_cpu_sample(20, 101, 3, 0, 5_000_000, OffCpuReason::Blocked);
    off.off_cpu_sample(40, 100, 0, 1, 70_000_000, OffCpuReason::Runnable);
    let off = off.build();
    w.off_cpu_time_deltas = off.off_cpu_time_deltas;
    w.off_cpu_tids = off.off_cpu_tids;
    w.off_cpu_cpus = off.off_cpu_cpus;
    w.off_cpu_stacks = off.off_cpu_stacks;
    w.off_cpu_ns = off.off_cpu_ns;
    w.off_cpu_reasons = off.off_cpu_reasons;
    w.off_cpu_wait_ns = off.off_cpu_wait_ns;
    w.stacks[0].off_cpu_count = 1;
    w.stacks[0].off_cpu_ns = 5_000_000;
    w.stacks[1].off_cpu_count = 1;
    w.stacks[1].off_cpu_ns = 70_000_000;
    w.off_cpu_lost = 4;
    w
}

/// (event id, tid, time, period) of every sample, (record type, event id) of every other
/// record, and the (name, ids) of every attr of `file`.
#[allow(clippy::type_complexity)]
fn events_of(
    file: &[u8],
) -> (
    Vec<(u64, i32, u64, u64)>,
    Vec<(u32, u64)>,
    Vec<(String, Vec<u64>)>,
) {
    let PerfFileReader {
        mut perf_file,
        mut record_iter,
    } = PerfFileReader::parse_file(Cursor::new(file)).unwrap();
    let attrs = perf_file
        .event_attributes()
        .iter()
        .map(|a| (a.name().unwrap().to_string(), a.ids().to_vec()))
        .collect();
    let (mut samples, mut others) = (Vec::new(), Vec::new());
    while let Some(record) = record_iter.next_record(&mut perf_file).unwrap() {
        let PerfFileRecord::EventRecord { record, .. } = record else {
            continue;
        };
        let id = record.common_data().unwrap().id.unwrap();
        match record.parse().unwrap() {
            EventRecord::Sample(s) => samples.push((
                s.id.unwrap(),
                s.tid.unwrap(),
                s.timestamp.unwrap(),
                s.period.unwrap(),
            )),
            _ => others.push((record.record_type.0, id)),
        }
    }
    (samples, others, attrs)
}

#[test]
fn off_cpu_samples_are_perfs_offcpu_time_event() {
    let windows = [
        window_with_off_cpu(0, 1_000),
        window_with_off_cpu(1, 1_000_001_000),
    ];
    let wall = Selection {
        event: Event::Wall,
        ..Selection::default()
    };
    let (file, written, _) = convert(&windows, &wall, &this_kernel());
    assert_eq!((written.samples, written.of(SampleKind::OffCpu)), (10, 4));
    let (samples, others, attrs) = events_of(&file);
    assert_eq!(
        attrs,
        [
            ("cpu-clock".to_string(), vec![EVENT_ID]),
            ("offcpu-time".to_string(), vec![OFF_CPU_EVENT_ID])
        ]
    );
    let (on, off) = (EVENT_ID, OFF_CPU_EVENT_ID);
    let mut expected = Vec::new();
    for start in [1_000, 1_000_001_000] {
        expected.extend([
            (on, 100, start + 10, 10_000_000),
            (off, 101, start + 20, 5_000_000),
            (on, 101, start + 30, 10_000_000),
            (off, 100, start + 40, 70_000_000),
            (on, 100, start + 60, 10_000_000),
        ]);
    }
    assert_eq!(samples, expected, "one time order, each sample its event's");
    // Side records carry cpu-clock's id; what was lost, the id of the event it was lost from.
    let lost: Vec<(u32, u64)> = others
        .iter()
        .filter(|r| r.0 == abi::RECORD_LOST_SAMPLES)
        .copied()
        .collect();
    assert_eq!(
        lost,
        [
            (abi::RECORD_LOST_SAMPLES, on),
            (abi::RECORD_LOST_SAMPLES, off)
        ]
        .repeat(2)
    );
    assert!(
        others
            .iter()
            .all(|&(kind, id)| kind == abi::RECORD_LOST_SAMPLES || id == on),
        "{others:?}"
    );

    // Off-CPU alone: one event, offcpu-time, whose id every record carries.
    let off_cpu = Selection {
        event: Event::OffCpu,
        ..Selection::default()
    };
    let (file, written, _) = convert(&windows, &off_cpu, &this_kernel());
    assert_eq!((written.samples, written.of(SampleKind::OffCpu)), (4, 4));
    let (samples, others, attrs) = events_of(&file);
    assert_eq!(attrs, [("offcpu-time".to_string(), vec![OFF_CPU_EVENT_ID])]);
    let periods: Vec<(u64, u64)> = samples.iter().map(|s| (s.0, s.3)).collect();
    assert_eq!(periods, [(off, 5_000_000), (off, 70_000_000)].repeat(2));
    assert!(others.iter().all(|&(_, id)| id == off), "{others:?}");
    assert_eq!(
        others
            .iter()
            .filter(|r| r.0 == abi::RECORD_LOST_SAMPLES)
            .count(),
        2,
        "only the off-CPU losses"
    );

    // On-CPU (the default) leaves them out: the file of a capture without them.
    let (with, written, _) = convert(&windows, &Selection::default(), &this_kernel());
    assert_eq!((written.samples, written.of(SampleKind::OffCpu)), (6, 0));
    let plain = [
        window(0, 1_000, 100, "app", 900),
        window(1, 1_000_001_000, 100, "app", 900),
    ];
    let (without, _, _) = convert(&plain, &Selection::default(), &this_kernel());
    assert_eq!(with, without);
}

#[test]
fn selection_drops_samples_and_everything_only_they_needed() {
    let w = window(0, 1_000, 100, "app", 900);
    let other = Selection {
        pids: vec![7],
        ..Selection::default()
    };
    let (file, written, _) = convert(std::slice::from_ref(&w), &other, &this_kernel());
    assert_eq!(written.samples, 0);
    let kinds: Vec<u32> = raw_records(&file).iter().map(|r| r.0).collect();
    assert_eq!(
        kinds,
        [
            abi::RECORD_MMAP2,
            abi::RECORD_FINISHED_INIT,
            abi::RECORD_LOST_SAMPLES,
            abi::RECORD_FINISHED_ROUND
        ]
    );
    let by_comm = Selection {
        comms: vec!["app".into()],
        ..Selection::default()
    };
    let (_, written, _) = convert(&[w], &by_comm, &this_kernel());
    assert_eq!(written.samples, 3);
}

#[test]
fn a_kernel_laid_out_differently_gets_no_kernel_map() {
    let w = window(0, 1_000, 100, "app", 900);
    // Another boot: KASLR moved every function.
    let moved = kallsyms(
        "moved",
        &format!(
            "{:016x} T _text\n{:016x} T kfunc\n{:016x} T _etext\n",
            TEXT + 0x20_0000,
            KFUNC + 0x20_0000,
            TEXT + 0x30_0000
        ),
    );
    let hidden = kallsyms(
        "hidden",
        "0000000000000000 T _text\n0000000000000000 T kfunc\n",
    );
    for (kallsyms, why) in [
        (moved, "do not match"),
        (hidden, "kptr_restrict"),
        (
            Path::new("/nonexistent/kallsyms").to_path_buf(),
            "cannot read",
        ),
    ] {
        let (file, _, kernel) = convert(std::slice::from_ref(&w), &Selection::default(), &kallsyms);
        match &kernel.map {
            Err(reason) => assert!(reason.contains(why), "{reason}"),
            other => panic!("{other:?}"),
        }
        let PerfFileReader {
            mut perf_file,
            mut record_iter,
        } = PerfFileReader::parse_file(Cursor::new(&file[..])).unwrap();
        while let Some(record) = record_iter.next_record(&mut perf_file).unwrap() {
            if let PerfFileRecord::EventRecord { record, .. } = record
                && let EventRecord::Mmap2(m) = record.parse().unwrap()
            {
                assert_ne!(m.pid, -1, "no kernel map");
            }
        }
        // The kernel's build-id is still listed: it names the kernel that was profiled.
        assert!(perf_file.build_ids().unwrap().contains_key(&DsoKey::Kernel));
    }
}

#[test]
fn a_capture_without_kernel_frames_gets_the_running_kernels_map() {
    let mut w = window(0, 1_000, 100, "app", 900);
    w.stacks[0].locations.remove(0);
    w.stacks[0].kernel_frames = 0;
    let (file, written, kernel) = convert(
        std::slice::from_ref(&w),
        &Selection::default(),
        &this_kernel(),
    );
    assert_eq!(written.samples, 3);
    assert!(!kernel.has_frames && kernel.build_id.is_empty());
    assert_eq!(kernel.map, Ok((TEXT, TEXT + 0x10_0000)));
    assert_eq!(raw_records(&file)[0], (abi::RECORD_MMAP2, abi::MISC_KERNEL));
}

#[test]
fn strings_and_build_id_entries_are_padded_as_perf_writes_them() {
    let mut s = Vec::new();
    put_header_string(&mut s, "vm");
    assert_eq!(s.len(), 4 + 64);
    assert_eq!(u32::from_ne_bytes(s[..4].try_into().unwrap()), 64);
    assert_eq!(&s[4..7], b"vm\0");
    let mut c = Vec::new();
    put_c_string(&mut c, "12345678", 8);
    assert_eq!(c.len(), 16, "room for the NUL");
    let mut b = Vec::new();
    put_build_id_event(&mut b, "/bin/x", &[1, 2, 3], false);
    assert_eq!(b.len(), 36 + 64);
    assert_eq!(u16::from_ne_bytes(b[6..8].try_into().unwrap()), 100);
    assert_eq!(b[12 + 20], 3, "size byte");
    assert_eq!(&b[36..43], b"/bin/x\0");
}

#[test]
fn every_kind_is_an_event_of_its_own_named_by_its_descriptor() {
    use super::events::PerfEvent;
    let meta = meta();
    for event in [Event::OnCpu, Event::OffCpu, Event::Wall] {
        let events = PerfEvent::of(event);
        let kinds: Vec<SampleKind> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, event.kinds().iter().collect::<Vec<_>>());
        for e in events {
            let place = SampleKind::ALL.iter().position(|&k| k == e.kind).unwrap();
            assert_eq!(e.id, place as u64 + 1, "{e:?}");
            let name = e.kind.descriptor().perf_event.unwrap_or("cpu-clock");
            assert_eq!(e.name(&meta), name);
        }
    }
    // The capture's own sampling event goes by the capture's name of it.
    let cycles = Meta {
        event: "cycles".into(),
        ..meta
    };
    assert_eq!(PerfEvent::of(Event::OnCpu)[0].name(&cycles), "cycles");
}
