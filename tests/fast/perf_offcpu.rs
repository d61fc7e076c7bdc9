//! Off-CPU samples in `report --format perf` (`--event off-cpu|wall`), read by the real Linux
//! perf: the file has perf's own off-CPU event (`offcpu-time`) beside cpu-clock, and `perf
//! evlist`, `perf report` and `perf script` count, weigh and name its samples as amprof
//! recorded them.
//!
//! The captures are built here (no eBPF, no root): their user frames are functions of this
//! test binary, mapped as /proc/self/maps says, so that perf names them from the binary on disk
//! as it does for a recording; their kernel frames are the running kernel's, placed by its
//! /proc/kallsyms (unreadable addresses, as for most users without root: perf shows
//! `[unknown]`, and the test expects that). perf is a tool these tests need, like the root
//! tier's (`.ci/setup` installs it): without it they fail, never skip.

use std::{
    hint::black_box,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use crate::util::{assert_ok, run, scratch};
use amprof::capture::{
    CaptureWriter,
    format::{End, Meta, ModuleKind, OffCpuReason, Process, Window},
    testing::{self, WindowBuilder},
};

// Functions of this binary that the captures' user frames point into. They are never called:
// only their addresses matter, and their names, which perf reads from this binary's symbols.

#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn amprof_test_main(n: u64) -> u64 {
    amprof_test_waits_on_lock(n) + amprof_test_sleeps(n) + amprof_test_spins(n)
}

#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn amprof_test_waits_on_lock(n: u64) -> u64 {
    (0..black_box(n)).map(|i| black_box(i * 3)).sum()
}

#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn amprof_test_sleeps(n: u64) -> u64 {
    (0..black_box(n)).map(|i| black_box(i ^ 5)).sum()
}

#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn amprof_test_spins(n: u64) -> u64 {
    (0..black_box(n)).map(|i| black_box(i.rotate_left(7))).sum()
}

const PID: u32 = 4242;
const WORKER: u32 = 4243;
/// Nanoseconds one on-CPU sample stands for at the captures' 99 Hz.
const ON_CPU_PERIOD: u64 = 1_000_000_000 / 99;

/// Where a function of this binary is mapped: the executable mapping of /proc/self/maps that
/// holds `address`, as (start, end, file offset, path).
fn mapping_of(address: u64) -> (u64, u64, u64, String) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (range, perms, offset) = (fields[0], fields[1], fields[2]);
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        if (start..end).contains(&address) && perms.contains('x') {
            let path = fields[5..].join(" ");
            return (start, end, u64::from_str_radix(offset, 16).unwrap(), path);
        }
    }
    panic!("{address:#x} is in no executable mapping of this process");
}

/// The kernel functions of the captures' kernel frames.
const KERNEL_FUNCTIONS: [&str; 4] = ["__schedule", "schedule", "futex_wait", "do_nanosleep"];

/// A kernel function of the running kernel (one of [`KERNEL_FUNCTIONS`]): its address in
/// /proc/kallsyms and the name perf will give it (`[unknown]` when the addresses are hidden:
/// no kernel map is written then).
fn kernel_function(name: &str) -> (u64, String) {
    // /proc/kallsyms read once, for the few functions used.
    static ADDRESSES: OnceLock<Vec<(String, u64)>> = OnceLock::new();
    let addresses = ADDRESSES.get_or_init(|| {
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        kallsyms
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_ascii_whitespace();
                let (address, kind, symbol) = (fields.next()?, fields.next()?, fields.next()?);
                (matches!(kind, "t" | "T") && KERNEL_FUNCTIONS.contains(&symbol))
                    .then(|| Some((symbol.to_string(), u64::from_str_radix(address, 16).ok()?)))
                    .flatten()
            })
            .collect()
    });
    match addresses.iter().find(|(symbol, _)| symbol == name) {
        Some(&(_, address)) if address != 0 => (address, name.into()),
        // Hidden (kptr_restrict): any kernel address; amprof writes no kernel map for it.
        _ => (0xffff_ffff_8100_0000, "[unknown]".into()),
    }
}

/// An off-CPU or on-CPU sample as built and as perf must show it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Expected {
    time: u64,
    tid: u32,
    event: &'static str,
    period: u64,
    /// Frame names, leaf first, as perf names them.
    frames: Vec<String>,
}

/// The stacks of every window, in the order they are added to it.
#[derive(Clone, Copy)]
enum Stack {
    /// Blocked on a lock: `__schedule`, `schedule`, `futex_wait`, then user frames.
    Lock = 0,
    /// Sleeping: `__schedule`, `schedule`, `do_nanosleep`, then user frames.
    Sleep = 1,
    /// On the CPU, user frames only.
    Spin = 2,
}

/// A sample to build: offset from the window's start, thread, stack, and the time off the CPU
/// for an off-CPU sample (`None`: on-CPU).
type Planned = (u64, u32, Stack, Option<u64>);

/// Window `index` of process [`PID`] (threads `app` and `worker`) with the `samples` planned,
/// each also pushed to `expected` as perf must show it; it lost 1 on-CPU and 2 off-CPU samples.
fn window(index: u64, samples: &[Planned], expected: &mut Vec<Expected>) -> Window {
    let mut w = WindowBuilder::new(index);
    let process = w.process_with(Process {
        pid: PID,
        name: "app".into(),
        exe: "/usr/bin/app".into(),
        first_seen_ns: testing::START_NS,
        maps_unavailable: false,
    });
    w.thread(PID, process, "app");
    w.thread(WORKER, process, "worker");
    let main = amprof_test_main as *const () as u64;
    let (start, end, offset, path) = mapping_of(main);
    let binary = w.module_with(&path, ModuleKind::File, &[]);
    let kernel = w.kernel_module();
    let text = w.mapping(process, binary, start, end, offset);
    let user = |w: &mut WindowBuilder, name: &str, f: u64| {
        let function = w.function(name);
        // Inside the function, past its first instruction, as a return address is.
        (w.location_in(text, f + 4, &[function]), name.to_string())
    };
    let in_kernel = |w: &mut WindowBuilder, name: &str| {
        let (address, perf_name) = kernel_function(name);
        let function = w.function(name);
        (
            w.kernel_location(kernel, address + 4, &[function]),
            perf_name,
        )
    };
    let main = user(&mut w, "amprof_test_main", main);
    let lock = user(
        &mut w,
        "amprof_test_waits_on_lock",
        amprof_test_waits_on_lock as *const () as u64,
    );
    let sleeps = user(
        &mut w,
        "amprof_test_sleeps",
        amprof_test_sleeps as *const () as u64,
    );
    let spins = user(
        &mut w,
        "amprof_test_spins",
        amprof_test_spins as *const () as u64,
    );
    let switch = in_kernel(&mut w, "__schedule");
    let schedule = in_kernel(&mut w, "schedule");
    let futex = in_kernel(&mut w, "futex_wait");
    let nanosleep = in_kernel(&mut w, "do_nanosleep");
    let mut stack = |frames: &[&(u32, String)], kernel_frames: u32| {
        let locations: Vec<u32> = frames.iter().map(|f| f.0).collect();
        let names: Vec<String> = frames.iter().map(|f| f.1.clone()).collect();
        (w.stack(process, &locations, kernel_frames), names)
    };
    // In the order of `Stack`: each stack's index is its discriminant.
    let names = [
        stack(&[&switch, &schedule, &futex, &lock, &main], 3),
        stack(&[&switch, &schedule, &nanosleep, &sleeps, &main], 3),
        stack(&[&spins, &main], 0),
    ]
    .map(|(_, names)| names);
    for &(at, tid, which, off_cpu) in samples {
        let stack = which as u32;
        match off_cpu {
            Some(ns) => w.off_cpu_sample(at, tid, tid % 2, stack, ns, OffCpuReason::Blocked),
            None => w.sample(at, tid, tid % 2, stack),
        }
        expected.push(Expected {
            time: w.window_mut().start_ns + at,
            tid,
            event: if off_cpu.is_some() {
                "offcpu-time"
            } else {
                "cpu-clock"
            },
            period: off_cpu.unwrap_or(ON_CPU_PERIOD),
            frames: names[which as usize].clone(),
        });
    }
    w.window_mut().lost = 1;
    w.window_mut().off_cpu_lost = 2;
    w.build()
}

/// A capture of two windows with on-CPU and off-CPU samples, and every sample as perf must
/// show it, in time order (built once for the tests of this file).
fn capture() -> &'static (PathBuf, Vec<Expected>) {
    static CAPTURE: OnceLock<(PathBuf, Vec<Expected>)> = OnceLock::new();
    CAPTURE.get_or_init(|| build_capture(&scratch("perf-offcpu")))
}

fn build_capture(dir: &Path) -> (PathBuf, Vec<Expected>) {
    use Stack::{Lock, Sleep, Spin};
    let mut expected = Vec::new();
    let windows = [
        window(
            0,
            &[
                (1_000_000, WORKER, Lock, Some(30_000_000)),
                (1_500_000, PID, Spin, None),
                (2_000_000, PID, Sleep, Some(200_000_000)),
                (2_500_000, WORKER, Spin, None),
                (3_000_000, WORKER, Lock, Some(5_000_000)),
            ],
            &mut expected,
        ),
        window(
            1,
            &[
                (400_000, PID, Spin, None),
                (700_000, WORKER, Lock, Some(123_456_789)),
            ],
            &mut expected,
        ),
    ];
    let meta = Meta {
        off_cpu_period_ns: 1_000_000,
        ..testing::meta()
    };
    let path = dir.join("offcpu.data");
    let mut writer = CaptureWriter::create(&path, &meta, None).unwrap();
    for mut window in windows {
        writer.write_window(&mut window).unwrap();
    }
    writer
        .finish(&End {
            end_ns: testing::START_NS + 2 * testing::WINDOW_NS,
            windows_closed: 2,
            windows_evicted: 0,
            reason: "duration".into(),
        })
        .unwrap();
    (path, expected)
}

/// `report --format perf` of `capture` with `--event event`.
fn convert(capture: &Path, event: &str) -> PathBuf {
    let out = scratch(&format!("perf-offcpu-{event}")).join("perf.data");
    let output = run(&[
        "report",
        "--format",
        "perf",
        "--event",
        event,
        "-i",
        capture.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ok(&output);
    out
}

/// perf's stdout for `args` on `file`; fails the test if perf is missing, fails, or warns
/// about the file's records (order, format).
fn perf(args: &[&str], file: &Path) -> String {
    let output = Command::new("perf")
        .args(args)
        .arg("-i")
        .arg(file)
        .output()
        .expect("perf runs (install linux-perf: .ci/setup)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "perf {args:?} failed: {stderr}");
    for complaint in ["out of order", "unprocessable", "unsupported", "Invalid"] {
        assert!(
            !stderr.contains(complaint),
            "perf {args:?} complained: {stderr}"
        );
    }
    String::from_utf8(output.stdout).unwrap()
}

/// `perf report --stdio`'s sections: (event, samples, event count), and its lost samples.
fn report_events(text: &str) -> (Vec<(String, u64, u64)>, u64) {
    let mut events = Vec::new();
    let mut lost = 0;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(n) = line.strip_prefix("# Total Lost Samples: ") {
            lost = n.parse().unwrap();
        }
        // "# Samples: 4  of event 'offcpu-time'", then "# Event count (approx.): 358456789"
        if let Some(rest) = line.strip_prefix("# Samples: ") {
            let (samples, event) = rest.split_once("  of event ").unwrap();
            let count = lines
                .next()
                .and_then(|l| l.strip_prefix("# Event count (approx.): "))
                .unwrap_or_else(|| panic!("no event count after {line:?}"));
            events.push((
                event.trim_matches('\'').to_string(),
                samples.parse().unwrap(),
                count.parse().unwrap(),
            ));
        }
    }
    (events, lost)
}

/// `perf script -F tid,time,event,period,ip,sym --ns`'s samples, in its order.
fn script_samples(text: &str) -> Vec<Expected> {
    let mut samples: Vec<Expected> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(frame) = line.strip_prefix('\t') {
            // "\tffffffff82265be4 __schedule"
            let (_address, name) = frame.trim().split_once(' ').unwrap();
            samples.last_mut().unwrap().frames.push(name.to_string());
            continue;
        }
        // " 4243  1000.001000000:   30000000 offcpu-time: "
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (secs, nanos) = fields[1].trim_end_matches(':').split_once('.').unwrap();
        samples.push(Expected {
            tid: fields[0].parse().unwrap(),
            time: secs.parse::<u64>().unwrap() * 1_000_000_000 + nanos.parse::<u64>().unwrap(),
            period: fields[2].parse().unwrap(),
            event: match fields[3].trim_end_matches(':') {
                "offcpu-time" => "offcpu-time",
                "cpu-clock" => "cpu-clock",
                other => panic!("unexpected event {other}"),
            },
            frames: Vec::new(),
        });
    }
    samples
}

/// What perf must show for a file of `events` of the capture whose samples are `expected`:
/// the events `perf evlist` lists, each event's samples and total period in `perf report`,
/// every sample with its thread, time, period and frames in `perf script`, and the samples
/// the kernel side lost from those events.
fn assert_perf_shows(file: &Path, events: &[&str], expected: &[Expected], lost: u64) {
    let evlist: Vec<String> = perf(&["evlist"], file)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(evlist, events);
    let verbose = perf(&["evlist", "-v"], file);
    if events.contains(&"offcpu-time") {
        // As perf's `--off-cpu` declares it: a BPF-output software event (type 1, config 10),
        // one record per sample, the same sample fields as cpu-clock.
        let attr = verbose
            .lines()
            .find(|l| l.starts_with("offcpu-time:"))
            .unwrap();
        assert!(
            attr.starts_with(
                "offcpu-time: type: 1, size: 112, config: 0xa, { sample_period, sample_freq }: 1, \
                 sample_type: IP|TID|TIME|CALLCHAIN|CPU|PERIOD|IDENTIFIER,"
            ),
            "{attr}"
        );
    }

    let wanted: Vec<Expected> = expected
        .iter()
        .filter(|e| events.contains(&e.event))
        .cloned()
        .collect();
    let (sections, perf_lost) = report_events(&perf(&["report", "--stdio"], file));
    let sums: Vec<(String, u64, u64)> = events
        .iter()
        .map(|&event| {
            let of_event = wanted.iter().filter(|e| e.event == event);
            (
                event.to_string(),
                of_event.clone().count() as u64,
                of_event.map(|e| e.period).sum(),
            )
        })
        .collect();
    assert_eq!(sections, sums, "perf report's samples and event counts");
    assert_eq!(perf_lost, lost, "perf report's lost samples");

    let script = perf(
        &["script", "-F", "tid,time,event,period,ip,sym", "--ns"],
        file,
    );
    assert_eq!(script_samples(&script), wanted, "perf script:\n{script}");
}

#[test]
fn wall_gives_perf_both_events_in_one_time_order() {
    let (capture, expected) = capture();
    assert_eq!(expected.len(), 7);
    let file = convert(capture, "wall");
    // Lost: 1 on-CPU and 2 off-CPU samples in each of the two windows.
    assert_perf_shows(&file, &["cpu-clock", "offcpu-time"], expected, 6);
}

#[test]
fn off_cpu_gives_perf_its_off_cpu_event_alone() {
    let (capture, expected) = capture();
    let file = convert(capture, "off-cpu");
    assert_perf_shows(&file, &["offcpu-time"], expected, 4);
}

#[test]
fn on_cpu_leaves_off_cpu_samples_out() {
    let (capture, expected) = capture();
    let file = convert(capture, "on-cpu");
    assert_perf_shows(&file, &["cpu-clock"], expected, 2);
}

/// A capture recorded with `--off-cpu` but without windows (stopped before the first closed):
/// `--event off-cpu` still gives perf the off-CPU event, with no samples.
#[test]
fn a_capture_without_windows_keeps_its_event() {
    let dir = scratch("perf-offcpu-empty");
    let capture = dir.join("empty.data");
    let meta = Meta {
        off_cpu_period_ns: 1_000_000,
        ..testing::meta()
    };
    testing::write_capture(&capture, &meta, []).unwrap();
    let file = dir.join("perf.data");
    let output = run(&[
        "report",
        "-f",
        "perf",
        "--event",
        "off-cpu",
        "-i",
        capture.to_str().unwrap(),
        "-o",
        file.to_str().unwrap(),
    ]);
    assert_ok(&output);
    assert_eq!(perf(&["evlist"], &file).trim(), "offcpu-time");
}
