//! Off-CPU samples in the text outputs (`report --event off-cpu|wall`): folded weights in µs,
//! the flamegraph's event and unit, the summary's off-CPU section and JSON, and the usage error
//! for a capture recorded without `--off-cpu`. The capture is built here (WindowBuilder), with
//! times chosen so that every expected number can be worked out by hand; goldens keep the
//! whole outputs (`AMPROF_UPDATE=1` rewrites them).

use std::path::{Path, PathBuf};

use amprof::capture::{
    Window,
    format::{Meta, OffCpuReason},
    testing::{WindowBuilder, meta, write_capture},
};

use crate::{
    golden::golden,
    util::{assert_ok, run, scratch},
};

const MS: u64 = 1_000_000;

/// Window `index` of two processes: `app` (pid 100) works on the CPU (`main;work`, 4 samples),
/// waits for a lock (`main;lock;futex_wait_[k];schedule_[k]`, blocked 30 ms + 0.6004 ms),
/// reads a pipe (`main;read_pipe;pipe_read_[k];schedule_[k]`, blocked 20 ms) and is preempted
/// in `work` (runnable 5 ms); `db` (pid 200) sleeps (`db_main;nanosleep_[k];schedule_[k]`,
/// blocked 40 ms) and works (1 sample).
fn window(index: u64) -> Window {
    let mut w = WindowBuilder::new(index);
    let app = w.process(100, "app");
    let db = w.process(200, "db");
    let k = w.kernel_module();
    let exe = w.module("/usr/bin/app");
    let map = w.mapping(app, exe, 0x1000, 0x9000, 0);
    let [main, work, lock, read_pipe, db_main] =
        ["main", "work", "lock", "read_pipe", "db_main"].map(|f| w.function(f));
    let [sched, futex, pipe, sleep] =
        ["schedule", "futex_wait", "pipe_read", "nanosleep"].map(|f| w.function(f));
    let [l_main, l_work, l_lock, l_read] = [
        (0x1100, main),
        (0x1200, work),
        (0x1300, lock),
        (0x1400, read_pipe),
    ]
    .map(|(a, f)| w.location_in(map, a, &[f]));
    let l_db = w.location(0x5000, &[db_main]);
    let [k_sched, k_futex, k_pipe, k_sleep] =
        [sched, futex, pipe, sleep].map(|f| w.kernel_location(k, 0xffff_0000 + u64::from(f), &[f]));
    let working = w.stack(app, &[l_work, l_main], 0);
    let locked = w.stack(app, &[k_sched, k_futex, l_lock, l_main], 2);
    let reading = w.stack(app, &[k_sched, k_pipe, l_read, l_main], 2);
    let preempted = w.stack(app, &[l_work, l_main], 0);
    let sleeping = w.stack(db, &[k_sched, k_sleep, l_db], 2);
    let db_working = w.stack(db, &[l_db], 0);
    for t in 0..4 {
        w.sample(1_000 + t, 101, 0, working);
    }
    w.sample(1_010, 200, 1, db_working);
    w.off_cpu_sample(2_000, 101, 0, locked, 30 * MS, OffCpuReason::Blocked);
    w.off_cpu_sample(2_001, 102, 1, locked, 600_400, OffCpuReason::Blocked);
    w.off_cpu_sample(2_002, 103, 1, reading, 20 * MS, OffCpuReason::Blocked);
    w.off_cpu_sample(2_003, 101, 0, preempted, 5 * MS, OffCpuReason::Runnable);
    w.off_cpu_sample(2_004, 200, 1, sleeping, 40 * MS, OffCpuReason::Blocked);
    w.window_mut().off_cpu_lost = index;
    w.build()
}

fn off_cpu_meta() -> Meta {
    Meta {
        off_cpu_period_ns: MS,
        ..meta()
    }
}

/// A capture of windows 0 and 1, with off-CPU samples.
fn capture(dir: &Path) -> PathBuf {
    let path = dir.join("off-cpu.data");
    write_capture(&path, &off_cpu_meta(), [window(0), window(1)]).unwrap();
    path
}

fn report(capture: &Path, args: &[&str]) -> String {
    let mut all = vec!["report", "-q", "-i", capture.to_str().unwrap()];
    all.extend_from_slice(args);
    let output = run(&all);
    assert_ok(&output);
    String::from_utf8(output.stdout).unwrap()
}

/// `(line, weight)` of folded output.
fn parse_folded(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .map(|l| {
            let (stack, weight) = l.rsplit_once(' ').unwrap();
            (stack.to_string(), weight.parse().unwrap())
        })
        .collect()
}

#[test]
fn folded_weighs_off_cpu_time_in_microseconds() {
    let dir = scratch("off-cpu-folded");
    let capture = capture(&dir);

    // on-cpu: sample counts, no off-CPU stack, as without off-CPU samples.
    let on = report(&capture, &["--format", "folded"]);
    assert_eq!(
        parse_folded(&on),
        [("app;main;work".into(), 8), ("db;db_main".into(), 2)]
    );

    // off-cpu: µs, one line per reason, summed over both windows.
    let off = report(&capture, &["--format", "folded", "--event", "off-cpu"]);
    golden("off-cpu.off-cpu.folded", &off);
    let lines = parse_folded(&off);
    let weight = |stack: &str| lines.iter().find(|(l, _)| l == stack).map(|(_, w)| *w);
    // 2 × 30.6004 ms = 61.2008 ms: 61201 µs (summed in ns, then rounded).
    assert_eq!(
        weight("app;main;lock;futex_wait_[k];schedule_[k];[off-cpu: blocked]"),
        Some(61_201)
    );
    assert_eq!(
        weight("app;main;read_pipe;pipe_read_[k];schedule_[k];[off-cpu: blocked]"),
        Some(40_000)
    );
    assert_eq!(weight("app;main;work;[off-cpu: runnable]"), Some(10_000));
    assert_eq!(
        weight("db;db_main;nanosleep_[k];schedule_[k];[off-cpu: blocked]"),
        Some(80_000)
    );
    assert_eq!(lines.len(), 4, "{off}");

    // wall: both in µs, an on-CPU sample standing for 1/99 s (10101010 ns).
    let wall = report(&capture, &["--format", "folded", "--event", "wall"]);
    golden("off-cpu.wall.folded", &wall);
    let wall = parse_folded(&wall);
    assert!(wall.contains(&("app;main;work".into(), 80_808)), "{wall:?}");
    assert!(wall.contains(&("db;db_main".into(), 20_202)), "{wall:?}");
    for line in &lines {
        assert!(wall.contains(line), "{line:?} not in {wall:?}");
    }
    assert_eq!(wall.len(), 6);

    // The process selection applies to off-CPU stacks too.
    let db = report(
        &capture,
        &["--format", "folded", "-e", "off-cpu", "--comm", "db"],
    );
    assert_eq!(
        parse_folded(&db),
        [(
            "db;db_main;nanosleep_[k];schedule_[k];[off-cpu: blocked]".into(),
            80_000
        )]
    );
}

#[test]
fn flamegraph_says_which_event_and_unit() {
    let dir = scratch("off-cpu-flamegraph");
    let capture = capture(&dir);
    for (event, title, count_name, all) in [
        (
            "on-cpu",
            "amprof · host · 2.0 s · 99 Hz",
            "samples",
            "all (10 samples, 100%)",
        ),
        (
            "off-cpu",
            "amprof · off-CPU time · host · 2.0 s",
            "µs off-CPU",
            "all (191,201 µs off-CPU, 100%)",
        ),
        (
            "wall",
            "amprof · wall-clock time (on + off CPU) · host · 2.0 s",
            "µs wall",
            "all (292,211 µs wall, 100%)",
        ),
    ] {
        let svg = report(
            &capture,
            &["--format", "flamegraph", "-o", "-", "-e", event],
        );
        if event != "on-cpu" {
            golden(&format!("off-cpu.{event}.svg"), &svg);
        }
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..roxmltree::ParsingOptions::default()
        };
        let document = roxmltree::Document::parse_with_options(&svg, options)
            .unwrap_or_else(|e| panic!("{event}: the SVG is not well-formed XML: {e}"));
        let by_id = |id: &str| {
            document
                .descendants()
                .find(|n| n.attribute("id") == Some(id))
                .and_then(|n| n.text())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(by_id("title"), title);
        let frames: Vec<(String, Option<String>)> = document
            .descendants()
            .filter(|n| n.has_tag_name("g"))
            .filter_map(|g| {
                let title = g.children().find(|n| n.has_tag_name("title"))?.text()?;
                let fill = g
                    .children()
                    .find(|n| n.has_tag_name("rect"))
                    .and_then(|r| r.attribute("fill"))
                    .map(str::to_string);
                Some((title.to_string(), fill))
            })
            .collect();
        assert!(frames.iter().any(|(t, _)| t == all), "{event}: {frames:?}");
        assert!(
            frames.iter().all(|(t, _)| t.contains(count_name)),
            "{event}: {frames:?}"
        );
        let blocked = frames
            .iter()
            .find(|(t, _)| t.starts_with("[off-cpu: blocked]"));
        match event {
            "on-cpu" => assert!(blocked.is_none()),
            _ => assert_eq!(
                blocked.and_then(|(_, fill)| fill.as_deref()),
                Some("rgb(80,120,230)"),
                "{event}: off-CPU frames are blue"
            ),
        }
    }
    let svg = report(
        &capture,
        &["--format", "flamegraph", "-o", "-", "-e", "off-cpu"],
    );
    assert!(
        svg.contains("0.191 s off the CPU: 0.181 s blocked, 0.010 s runnable (waiting for a CPU)")
    );
    let svg = report(
        &capture,
        &["--format", "flamegraph", "-o", "-", "-e", "wall"],
    );
    assert!(svg.contains("0.101 s on the CPU (10 samples at 99 Hz), 0.191 s off it"));
}

#[test]
fn summary_has_an_off_cpu_section() {
    let dir = scratch("off-cpu-summary");
    let capture = capture(&dir);
    let text = report(&capture, &[]);
    golden("off-cpu.summary.txt", &text);
    for needle in [
        "off-cpu   a sample per 1 ms a thread spends off the CPU",
        "off-CPU   0.191 s: 0.181 s blocked (94.8%), 0.010 s runnable (5.2%) · 10 samples, 1 lost",
        // Self: the innermost user frame; total: kernel frames too.
        "     80.0  41.8%  db_main",
        "     61.2  32.0%  lock  [app]",
        "    181.2  94.8%  schedule  [kernel.kallsyms]",
        "    111.2  58.2%      100  app",
        // The on-CPU lists are still there.
        "top functions by self samples",
    ] {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    }
    // --event off-cpu leaves the on-CPU lists out.
    let off = report(&capture, &["--event", "off-cpu"]);
    golden("off-cpu.summary-off-cpu.txt", &off);
    assert!(!off.contains("top functions by self samples"), "{off}");
    assert!(off.contains("top off-CPU functions by self time"), "{off}");

    let json = report(&capture, &["--json"]);
    golden("off-cpu.summary.json", &json);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let off = &json["off_cpu"];
    assert_eq!(off["period_ns"], MS);
    assert_eq!(off["samples"], 10);
    assert_eq!(off["lost"], 1);
    assert_eq!(
        off["blocked_ns"],
        2 * (30 * MS + 600_400 + 20 * MS + 40 * MS)
    );
    assert_eq!(off["runnable_ns"], 2 * 5 * MS);
    assert_eq!(off["total_ns"], 191_200_800);
    assert_eq!(off["top_self"][0]["function"], "db_main");
    assert_eq!(off["top_self"][0]["ns"], 80 * MS);
    assert_eq!(off["top_processes"][0]["name"], "app");
    assert_eq!(off["top_processes"][0]["pid"], 100);
    assert_eq!(off["top_processes"][0]["ns"], 111_200_800);
    let window = &json["windows"][1];
    assert_eq!(window["off_cpu"]["samples"], 5);
    assert_eq!(window["off_cpu"]["ns"], 95_600_400);
    assert_eq!(window["off_cpu"]["lost"], 1);
    // On-CPU counts are the on-CPU samples alone.
    assert_eq!(json["totals"]["samples"], 10);
    assert_eq!(json["top_self"][0]["samples"], 8);
    assert_eq!(json["top_processes"].as_array().unwrap().len(), 2);
}

#[test]
fn off_cpu_events_need_a_capture_with_off_cpu_samples() {
    let dir = scratch("off-cpu-missing");
    let path = dir.join("on-cpu.data");
    let mut w = WindowBuilder::new(0);
    let p = w.process(1, "app");
    let f = w.function("main");
    let l = w.location(0x10, &[f]);
    let s = w.stack(p, &[l], 0);
    w.sample(1, 1, 0, s);
    write_capture(&path, &meta(), [w.build()]).unwrap();
    let input = path.to_str().unwrap();
    for event in ["off-cpu", "wall"] {
        for format in ["summary", "folded", "flamegraph", "pprof", "perf"] {
            let out = dir.join(format!("out.{format}"));
            let output = run(&[
                "report",
                "-i",
                input,
                "-e",
                event,
                "-f",
                format,
                "-o",
                out.to_str().unwrap(),
            ]);
            assert_eq!(output.status.code(), Some(2), "{event} {format}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(
                stderr.contains(&format!(
                    "--event {event}: the capture has no off-CPU samples: record with --off-cpu"
                )),
                "{stderr}"
            );
            assert!(!out.exists(), "{event} {format}: no output is written");
        }
    }
    // on-cpu, the default, is fine.
    assert_ok(&run(&["report", "-q", "-i", input, "-e", "on-cpu"]));
}
