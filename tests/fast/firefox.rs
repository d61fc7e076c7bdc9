//! `report --format firefox` on a capture built here, with times chosen so that every track,
//! sample and marker can be worked out by hand, read back by the format's tables
//! (`support/firefox_reader.rs`), and loaded by the Firefox Profiler's own code
//! (`tests/firefox/load.mjs`, installed by `.ci/setup`).

use std::path::{Path, PathBuf};

use amprof::capture::{
    Window,
    format::{Meta, OffCpuReason},
    testing::{START_NS, WindowBuilder, meta, write_capture},
};

use crate::{
    firefox_reader::{
        Profile, Thread, firefox_profiler_load, load_in_the_firefox_profiler, profiler_functions,
    },
    util::{assert_ok, run, scratch},
};

const MS: u64 = 1_000_000;

/// 1000 Hz (a 1 ms period), off-CPU samples every 1 ms off the CPU.
fn ms_meta() -> Meta {
    Meta {
        frequency_hz: 1000,
        off_cpu_period_ns: MS,
        ..meta()
    }
}

/// Window 0: `app` (pid 100; threads `app` 100 and `worker` 101) and `db` (pid 200, named with
/// a right-to-left override). `worker` runs `main;work;copy_user_[k]` at 10, 11, 12 ms on CPU 0
/// and 13 ms on CPU 1, blocks in `main;lock;futex_wait_[k];schedule_[k]` for 5 ms until 20 ms,
/// and waits 2.5 ms for a CPU in `main;work` until 40 ms; `app` runs `main` at 20 ms, `db`
/// runs `db_main` at 30 ms; `reader` (102, of `app`) is only seen blocked in `main;lock`
/// from 20 to 50 ms. 3 samples lost, 2 truncated.
/// Window 1: `worker`, renamed `busy-worker`, waits 2.5 ms for a CPU again, until 1010 ms, and
/// runs at 1011 ms.
fn windows() -> [Window; 2] {
    let mut w = WindowBuilder::new(0);
    let app = w.process(100, "app");
    w.thread(101, app, "worker");
    w.thread(102, app, "reader");
    let db = w.process(200, "db\u{202e}evil");
    let k = w.kernel_module();
    let [main, work, lock, db_main] = ["main", "work", "lock", "db_main"].map(|f| w.function(f));
    let [copy, sched, futex] = ["copy_user", "schedule", "futex_wait"].map(|f| w.function(f));
    let [l_main, l_work, l_lock, l_db] = [
        (0x1100, main),
        (0x1200, work),
        (0x1300, lock),
        (0x5000, db_main),
    ]
    .map(|(a, f)| w.location(a, &[f]));
    let [k_copy, k_sched, k_futex] =
        [copy, sched, futex].map(|f| w.kernel_location(k, 0xffff_0000 + u64::from(f), &[f]));
    let working = w.stack(app, &[k_copy, l_work, l_main], 1);
    let in_main = w.stack(app, &[l_main], 0);
    let locked = w.stack(app, &[k_sched, k_futex, l_lock, l_main], 2);
    let preempted = w.stack(app, &[l_work, l_main], 0);
    let db_working = w.stack(db, &[l_db], 0);
    for (t, cpu) in [(10, 0), (11, 0), (12, 0), (13, 1)] {
        w.sample(t * MS, 101, cpu, working);
    }
    w.sample(20 * MS, 100, 1, in_main);
    w.sample(30 * MS, 200, 0, db_working);
    w.off_cpu_sample(20 * MS, 101, 0, locked, 5 * MS, OffCpuReason::Blocked);
    w.off_cpu_sample(
        40 * MS,
        101,
        1,
        preempted,
        2_500_000,
        OffCpuReason::Runnable,
    );
    w.off_cpu_sample(50 * MS, 102, 0, locked, 30 * MS, OffCpuReason::Blocked);
    w.window_mut().lost = 3;
    w.window_mut().truncated = 2;
    let first = w.build();

    let mut w = WindowBuilder::new(1);
    let app = w.process(100, "app");
    w.thread(101, app, "busy-worker");
    let [main, work] = ["main", "work"].map(|f| w.function(f));
    let [l_main, l_work] = [(0x1100, main), (0x1200, work)].map(|(a, f)| w.location(a, &[f]));
    let preempted = w.stack(app, &[l_work, l_main], 0);
    w.off_cpu_sample(
        10 * MS,
        101,
        0,
        preempted,
        2_500_000,
        OffCpuReason::Runnable,
    );
    w.sample(11 * MS, 101, 0, preempted);
    [first, w.build()]
}

fn capture(dir: &Path) -> PathBuf {
    let path = dir.join("firefox.data");
    write_capture(&path, &ms_meta(), windows()).unwrap();
    path
}

/// `amprof report -f firefox` of `capture` into `output` (`-`: standard output), with `extra`.
fn run_report(capture: &Path, output: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "report",
        "-i",
        capture.to_str().unwrap(),
        "-f",
        "firefox",
        "-o",
        output,
    ];
    args.extend(extra);
    run(&args)
}

/// The profile `report -f firefox` writes to `output`, read back.
fn report(capture: &Path, output: &Path, extra: &[&str]) -> Profile {
    assert_ok(&run_report(capture, output.to_str().unwrap(), extra));
    Profile::read(output)
}

fn names(frames: &[crate::firefox_reader::Frame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| format!("{}:{}", f.name, f.category))
        .collect()
}

/// `(start, end)` of the markers of `thread` named `name`, in ms.
fn spans(thread: &Thread, name: &str) -> Vec<(f64, f64)> {
    thread
        .markers_named(name)
        .map(|m| (round(m.start), round(m.end.unwrap())))
        .collect()
}

fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

#[test]
fn tracks_samples_and_markers() {
    let dir = scratch("firefox-tracks");
    let capture = capture(&dir);
    let output = dir.join("profile.json.gz");
    let profile = report(&capture, &output, &[]);
    // The Firefox Profiler's own code loads it, and finds the functions.
    let loaded = load_in_the_firefox_profiler(&output);
    assert_eq!(
        profiler_functions(&loaded, "busy-worker"),
        ["copy_user", "main", "work"]
    );
    assert!(
        std::fs::read(&output).unwrap().starts_with(&[0x1f, 0x8b]),
        "a .gz name gives gzip"
    );
    assert_eq!(profile.interval_ms, 1.0);
    assert!(
        profile.categories.iter().any(|c| c == "Kernel")
            && profile.categories.iter().any(|c| c == "User")
    );

    // One track per thread, grouped by process, named by the thread's latest name.
    let app = profile.process_threads(100);
    let mut app_threads: Vec<_> = app
        .iter()
        .map(|t| (t.tid.as_str(), t.name.as_str()))
        .collect();
    app_threads.sort();
    assert_eq!(
        app_threads,
        [("100", "app"), ("101", "busy-worker"), ("102", "reader")]
    );
    assert!(app.iter().all(|t| t.process_name == "app"));
    assert!(profile.thread(100, 100).is_main && !profile.thread(100, 101).is_main);
    let db = profile.thread(200, 200);
    assert!(
        !db.name.contains('\u{202e}') && !db.process_name.contains('\u{202e}'),
        "names are made printable: {:?}",
        db.name
    );

    // Each sample at its own time, with its stack root first and kernel frames marked.
    let worker = profile.thread(100, 101);
    let times: Vec<f64> = worker.samples.iter().map(|s| round(s.time)).collect();
    assert_eq!(times, [10.0, 11.0, 12.0, 13.0, 1011.0]);
    assert_eq!(
        names(&worker.samples[0].stack),
        ["main:User", "work:User", "copy_user:Kernel"]
    );
    assert!(
        worker
            .samples
            .iter()
            .all(|s| s.weight == 1 && s.cpu_delta == 1000)
    );

    // CPU numbers: a marker per run on one CPU (a sample stands for the period before it).
    assert_eq!(spans(worker, "CPU 0"), [(9.0, 12.0), (1010.0, 1011.0)]);
    assert_eq!(spans(worker, "CPU 1"), [(12.0, 13.0)]);

    // Off-CPU waits: markers with their stacks, even with on-CPU samples only.
    assert_eq!(spans(worker, "Blocked"), [(15.0, 20.0)]);
    assert_eq!(spans(worker, "Runnable"), [(37.5, 40.0), (1007.5, 1010.0)]);
    let blocked = worker.markers_named("Blocked").next().unwrap();
    assert_eq!(
        names(&blocked.stack),
        [
            "main:User",
            "lock:User",
            "futex_wait:Kernel",
            "schedule:Kernel"
        ]
    );
    assert!(
        worker
            .samples
            .iter()
            .all(|s| s.stack.iter().all(|f| !f.name.starts_with("[off-cpu"))),
        "--event on-cpu: no off-CPU samples"
    );

    // A thread first seen waiting: its wait from its start, where its track starts too, and
    // shown when the profile opens though it has no sample.
    let reader = profile.thread(100, 102);
    assert_eq!(spans(reader, "Blocked"), [(20.0, 50.0)]);
    assert_eq!(reader.register_time, 20.0);
    assert!(reader.samples.is_empty());
    let visible = &profile.json["meta"]["initialVisibleThreads"];
    let index = profile.threads.iter().position(|t| t.tid == "102").unwrap();
    assert!(
        visible.as_array().unwrap().contains(&index.into()),
        "{visible}"
    );

    // Windows, and the lost and truncated counts, on a track of their own.
    let windows = &profile
        .threads
        .iter()
        .find(|t| t.name == "amprof windows")
        .unwrap();
    assert_eq!(spans(windows, "Window 0"), [(0.0, 1000.0)]);
    assert_eq!(spans(windows, "Window 1"), [(1000.0, 2000.0)]);
    let window0 = &windows.markers_named("Window 0").next().unwrap().data;
    assert_eq!(window0["samples"], 6.0);
    assert_eq!(window0["lost"], 3.0);
    assert_eq!(window0["truncated"], 2.0);
    assert_eq!(window0["offCpuSamples"], 3.0);
    assert_eq!(spans(windows, "Lost samples"), [(0.0, 1000.0)]);
    assert_eq!(spans(windows, "Truncated stacks"), [(0.0, 1000.0)]);
    assert_eq!(
        windows.markers_named("Lost samples").next().unwrap().data["count"],
        3.0
    );

    // The profile starts at the capture's start, on the wall clock.
    let start = profile.json["meta"]["startTime"].as_f64().unwrap();
    let expected = (START_NS as i64 + ms_meta().realtime_offset_ns) as f64 / 1e6;
    assert!((start - expected).abs() < 1.0, "{start} vs {expected}");
}

#[test]
fn off_cpu_and_wall_samples_weigh_their_time_in_periods() {
    let dir = scratch("firefox-wall");
    let capture = capture(&dir);
    let wall = report(&capture, &dir.join("wall.json"), &["--event", "wall"]);
    let worker = wall.thread(100, 101);
    // 5 ms blocked = 5 periods; 2.5 ms runnable twice = 2 then 3 (the half carried).
    let off: Vec<(f64, i64, u64, String)> = worker
        .samples
        .iter()
        .filter(|s| s.cpu_delta == 0)
        .map(|s| {
            let leaf = s.stack.last().unwrap();
            (
                round(s.time),
                s.weight,
                s.cpu_delta,
                format!("{}:{}", leaf.name, leaf.category),
            )
        })
        .collect();
    assert_eq!(
        off,
        [
            (15.0, 5, 0, "[off-cpu: blocked]:Off-CPU".into()),
            (37.5, 2, 0, "[off-cpu: runnable]:Off-CPU".into()),
            (1007.5, 3, 0, "[off-cpu: runnable]:Off-CPU".into()),
        ]
    );
    assert_eq!(worker.samples.len(), 8, "5 on-CPU samples and 3 waits");
    assert_eq!(
        worker.leaf_weights().get("[off-cpu: blocked]"),
        Some(&5),
        "{:?}",
        worker.leaf_weights()
    );

    let off_cpu = report(&capture, &dir.join("off.json"), &["--event", "off-cpu"]);
    let worker = off_cpu.thread(100, 101);
    assert_eq!(worker.samples.len(), 3, "waits only");
    assert_eq!(worker.samples.iter().map(|s| s.weight).sum::<i64>(), 10);
    assert_eq!(worker.markers_named("Blocked").count(), 1);
    assert!(
        off_cpu.process_threads(200).is_empty() && off_cpu.process_threads(100).len() == 2,
        "no track for a thread only on the CPU"
    );
}

/// A 1 ms wait the kernel kept for a 5 ms period: its marker is the 1 ms it lasted, its
/// samples weigh the 5 ms it stands for.
#[test]
fn a_short_wait_is_drawn_as_long_as_it_lasted_and_weighs_what_it_stands_for() {
    let dir = scratch("firefox-short-wait");
    let path = dir.join("short.data");
    let mut windows = windows();
    // The first window's first off-CPU sample: 5 ms blocked, ending at 20 ms.
    assert_eq!(windows[0].off_cpu_ns[0], 5 * MS);
    windows[0].off_cpu_wait_ns[0] = MS;
    write_capture(&path, &ms_meta(), windows).unwrap();
    let profile = report(&path, &dir.join("wall.json"), &["--event", "wall"]);
    let worker = profile.thread(100, 101);
    assert_eq!(spans(worker, "Blocked"), [(19.0, 20.0)]);
    assert_eq!(
        worker.leaf_weights().get("[off-cpu: blocked]"),
        Some(&5),
        "{:?}",
        worker.leaf_weights()
    );
}

#[test]
fn selection_plain_json_and_a_capture_without_off_cpu() {
    let dir = scratch("firefox-select");
    let capture = capture(&dir);
    // Standard output is plain JSON; --pid keeps one process (and the windows track).
    let out = run_report(&capture, "-", &["--pid", "200", "--window", "0"]);
    assert_ok(&out);
    let profile = Profile::parse(serde_json::from_slice(&out.stdout).unwrap());
    let mut pids: Vec<&str> = profile.threads.iter().map(|t| t.pid.as_str()).collect();
    pids.sort();
    assert_eq!(pids, ["0", "200"]);
    let windows = profile.threads.iter().find(|t| t.pid == "0").unwrap();
    assert_eq!(windows.markers_named("Window 1").count(), 0);
    // A later window alone: the timeline starts there, the windows track too.
    let later = report(&capture, &dir.join("later.json"), &["--window", "1"]);
    let starts: Vec<f64> = later.threads.iter().map(|t| t.register_time).collect();
    assert!(starts.iter().all(|&s| s >= 1000.0), "{starts:?}");

    // --event off-cpu on a capture recorded without --off-cpu is a usage error, as elsewhere.
    let plain = dir.join("plain.data");
    let mut no_off_cpu = windows_without_off_cpu();
    no_off_cpu[0].off_cpu_lost = 0;
    write_capture(&plain, &meta(), no_off_cpu).unwrap();
    let x = dir.join("x.json");
    let out = run_report(&plain, x.to_str().unwrap(), &["--event", "off-cpu"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!x.exists());
}

fn windows_without_off_cpu() -> [Window; 2] {
    windows().map(|mut w| {
        w.off_cpu_time_deltas.clear();
        w.off_cpu_tids.clear();
        w.off_cpu_cpus.clear();
        w.off_cpu_stacks.clear();
        w.off_cpu_ns.clear();
        w.off_cpu_reasons.clear();
        w.off_cpu_wait_ns.clear();
        for stack in &mut w.stacks {
            stack.off_cpu_count = 0;
            stack.off_cpu_ns = 0;
        }
        w
    })
}

/// The check by the Firefox Profiler's code can fail: a format version from the future, a file
/// cut short, and markers the profiler does not count as the file does are refused.
#[test]
fn the_firefox_profiler_check_refuses_broken_profiles() {
    let dir = scratch("firefox-broken");
    let capture = capture(&dir);
    let good = dir.join("good.json");
    report(&capture, &good, &[]);
    let text = std::fs::read_to_string(&good).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut future = json.clone();
    future["meta"]["preprocessedProfileVersion"] = 9999.into();
    let mut short = json.clone();
    let markers = &mut short["threads"][0]["markers"];
    markers["endTime"].as_array_mut().unwrap().pop();
    let cases = [
        ("future.json", future.to_string()),
        ("cut.json", text[..text.len() / 2].to_string()),
        ("short-column.json", short.to_string()),
    ];
    for (name, broken) in cases {
        let path = dir.join(name);
        std::fs::write(&path, broken).unwrap();
        let (loaded, report) = firefox_profiler_load(&path);
        assert!(!loaded, "{name} loaded: {report}");
        assert!(
            report["errors"]
                .to_string()
                .contains("the Firefox Profiler rejected it"),
            "{name}: refused by the profiler itself: {report}"
        );
    }
}
