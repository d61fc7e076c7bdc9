//! `report --diff`: two captures built here (WindowBuilder) with a designed change, so that every
//! expected number can be worked out by hand. The base gives `app` 75% `hot_a` and 25% `hot_b`;
//! the new gives it 25% and 75%, with twice the samples (a longer recording); `db` keeps the
//! same share in both. Goldens keep the whole text outputs (`AMPROF_UPDATE=1` rewrites them).

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use amprof::capture::{
    Window,
    format::{Meta, OffCpuReason},
    testing::{WindowBuilder, meta, write_capture},
};

use crate::{
    golden::golden,
    util::{amprof, assert_ok, flamegraph_frames, rgb, scratch},
};

const MS: u64 = 1_000_000;

/// Window `index`: `app` (pid 100) samples `main;hot_a` `a` times and `main;hot_b` `b` times,
/// `db` (pid 200) `db_main` `d` times.
fn window(index: u64, a: u64, b: u64, d: u64) -> Window {
    let mut w = WindowBuilder::new(index);
    let app = w.process(100, "app");
    let db = w.process(200, "db");
    let exe = w.module("/usr/bin/app");
    let map = w.mapping(app, exe, 0x1000, 0x9000, 0);
    let [main, hot_a, hot_b, db_main] =
        ["main", "hot_a", "hot_b", "db_main"].map(|f| w.function(f));
    let [l_main, l_a, l_b] = [(0x1100, main), (0x1200, hot_a), (0x1300, hot_b)]
        .map(|(address, f)| w.location_in(map, address, &[f]));
    let l_db = w.location(0x5000, &[db_main]);
    let [s_a, s_b, s_db] = [
        w.stack(app, &[l_a, l_main], 0),
        w.stack(app, &[l_b, l_main], 0),
        w.stack(db, &[l_db], 0),
    ];
    let mut t = 0;
    for (stack, count, tid) in [(s_a, a, 100), (s_b, b, 100), (s_db, d, 200)] {
        for _ in 0..count {
            t += 1_000;
            w.sample(t, tid, 0, stack);
        }
    }
    w.build()
}

/// `base.data` (2 windows: `app` 15 `hot_a` + 5 `hot_b`, `db` 10, each) and `new.data` (2
/// windows: `app` 10 + 30, `db` 20, each), in a fresh directory.
fn captures(name: &str) -> PathBuf {
    let dir = scratch(name);
    write_capture(
        &dir.join("base.data"),
        &meta(),
        [window(0, 15, 5, 10), window(1, 15, 5, 10)],
    )
    .unwrap();
    write_capture(
        &dir.join("new.data"),
        &meta(),
        [window(0, 10, 30, 20), window(1, 10, 30, 20)],
    )
    .unwrap();
    dir
}

/// `amprof report -i new.data --diff base.data ARGS` in `dir` (relative paths: the outputs name
/// them).
fn diff(dir: &Path, args: &[&str]) -> Output {
    amprof()
        .current_dir(dir)
        .args(["report", "-i", "new.data", "--diff", "base.data"])
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: Output) -> String {
    assert_ok(&output);
    String::from_utf8(output.stdout).unwrap()
}

fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&stdout(diff(dir, &all))).unwrap()
}

/// `(function, base %, new %, change)` of a JSON list, rounded to 0.01.
fn changes(list: &serde_json::Value) -> Vec<(String, f64, f64, f64)> {
    let round = |v: &serde_json::Value| (v.as_f64().unwrap() * 100.0).round() / 100.0;
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["function"].as_str().unwrap().to_string(),
                round(&c["base_percent"]),
                round(&c["new_percent"]),
                round(&c["change"]),
            )
        })
        .collect()
}

#[test]
fn folded_gives_both_columns_with_the_base_scaled_to_the_new_total() {
    let dir = captures("diff-folded");
    // Base 60 samples, new 120: the base column doubles; db's share did not change.
    let all = stdout(diff(&dir, &["--format", "folded"]));
    assert_eq!(
        all,
        "app;main;hot_a 60 20\napp;main;hot_b 20 60\ndb;db_main 40 40\n"
    );
    // --pid selects on both sides: app alone, 40 samples then 80.
    let app = stdout(diff(&dir, &["--format", "folded", "--pid", "100"]));
    assert_eq!(app, "app;main;hot_a 60 20\napp;main;hot_b 20 60\n");
    // --base-* select on the base only: the base's db (20 samples, scaled ×4) against the new's
    // app (80). A base flag not given is the new side's: --base-comm db alone would select
    // pid 100 named db in the base, nothing.
    let crossed = stdout(diff(
        &dir,
        &["--format", "folded", "--pid", "100", "--base-pid", "200"],
    ));
    assert_eq!(
        crossed,
        "app;main;hot_a 0 20\napp;main;hot_b 0 60\ndb;db_main 80 0\n"
    );
}

#[test]
fn the_summary_gives_both_shares_and_the_change() {
    let dir = captures("diff-summary");
    let app = json(&dir, &["--pid", "100"]);
    assert_eq!(app["event"], "on-cpu");
    assert_eq!(app["unit"], "samples");
    for (side, path, samples) in [("base", "base.data", 40), ("new", "new.data", 80)] {
        assert_eq!(app[side]["path"], path);
        assert_eq!(app[side]["samples"], samples);
        assert_eq!(app[side]["weight"], samples);
        assert_eq!(app[side]["windows"], serde_json::json!([0, 1]));
        assert_eq!(app[side]["seconds"], 2.0);
    }
    // hot_a went from 75% to 25% of app's samples, hot_b the other way; ties by name.
    assert_eq!(
        changes(&app["self_changes"]),
        [
            ("hot_a".into(), 75.0, 25.0, -50.0),
            ("hot_b".into(), 25.0, 75.0, 50.0),
        ]
    );
    assert_eq!(app["self_changes"][0]["base_weight"], 30);
    assert_eq!(app["self_changes"][0]["new_weight"], 20);
    assert_eq!(app["self_changes"][0]["module"], "app");
    // main is in every stack of both: 100% each side, no change, listed last.
    assert_eq!(
        changes(&app["total_changes"]).last().unwrap(),
        &("main".into(), 100.0, 100.0, 0.0)
    );
    // Every process: db's third did not move.
    let all = json(&dir, &["--top", "2"]);
    assert_eq!(
        changes(&all["self_changes"]),
        [
            ("hot_a".into(), 50.0, 16.67, -33.33),
            ("hot_b".into(), 16.67, 50.0, 33.33),
        ]
    );
    // Two parts of one capture: window 0 against window 1 of the base, the same.
    let same = stdout(
        amprof()
            .current_dir(&dir)
            .args(["report", "--json", "-i", "base.data", "--diff", "base.data"])
            .args(["--base-window", "0", "--window", "1"])
            .output()
            .unwrap(),
    );
    let same: serde_json::Value = serde_json::from_str(&same).unwrap();
    assert_eq!(same["base"]["windows"], serde_json::json!([0]));
    assert_eq!(same["new"]["windows"], serde_json::json!([1]));
    assert!(
        changes(&same["self_changes"])
            .iter()
            .all(|c| c.3 == 0.0 && c.1 > 0.0),
        "{same}"
    );

    let text = stdout(diff(&dir, &["--pid", "100"]));
    golden("diff.summary.txt", &text);
    assert!(
        text.contains(" 75.0%   25.0%    -50.0  hot_a  [app]"),
        "{text}"
    );
}

/// The fill of the frame whose tooltip starts with `function (`.
pub fn fill_of(frames: &[(String, String)], function: &str) -> (u8, u8, u8) {
    let (_, fill) = frames
        .iter()
        .find(|(title, _)| title.starts_with(&format!("{function} (")))
        .unwrap_or_else(|| panic!("no frame {function} in {frames:?}"));
    rgb(fill)
}

#[test]
fn the_flamegraph_is_red_where_it_grew_and_blue_where_it_shrank() {
    let dir = captures("diff-flamegraph");
    let svg = stdout(diff(&dir, &["--format", "flamegraph", "-o", "-"]));
    golden("diff.svg", &svg);
    let frames = flamegraph_frames(&svg);
    let (r, g, b) = fill_of(&frames, "hot_b");
    assert!(r == 255 && g < 200 && g == b, "hot_b grew: red, {frames:?}");
    let (r, g, b) = fill_of(&frames, "hot_a");
    assert!(
        b == 255 && r < 200 && r == g,
        "hot_a shrank: blue, {frames:?}"
    );
    // db did not change, nor did main (no self samples): white.
    assert_eq!(fill_of(&frames, "db_main"), (250, 250, 250));
    assert_eq!(fill_of(&frames, "main"), (250, 250, 250));
    // Widths are the new's; tooltips give the change as a share of the new's samples.
    let title = |f: &str| {
        frames
            .iter()
            .find(|(t, _)| t.starts_with(f))
            .unwrap()
            .0
            .clone()
    };
    assert_eq!(title("hot_b ("), "hot_b (60 samples, 50.00%; +33.33%)");
    assert_eq!(title("hot_a ("), "hot_a (20 samples, 16.67%; -33.33%)");
    assert!(svg.contains("red: grew, blue: shrank"));
    assert!(svg.contains("base base.data: 60 samples, windows 0..1, 2.0 s"));
    assert!(svg.contains("new new.data: 120 samples, windows 0..1, 2.0 s"));
}

#[test]
fn an_empty_side_is_a_note_and_shares_of_zero() {
    let dir = captures("diff-empty");
    let output = diff(&dir, &["--json", "--base-comm", "nobody"]);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let summary: serde_json::Value = serde_json::from_str(&stdout(output)).unwrap();
    assert!(
        stderr.contains("the base capture base.data has no samples selected"),
        "{stderr}"
    );
    assert_eq!(summary["base"]["samples"], 0);
    let list = changes(&summary["self_changes"]);
    assert!(list.iter().all(|c| c.1 == 0.0 && c.3 == c.2), "{list:?}");
    // Nothing to scale to: both columns raw.
    let new_empty = ["--comm", "nobody", "--base-comm", "app"];
    let folded = stdout(diff(
        &dir,
        &[&["--format", "folded", "-q"], &new_empty[..]].concat(),
    ));
    assert_eq!(folded, "app;main;hot_a 30 0\napp;main;hot_b 10 0\n");
    // No new samples: an SVG that says so, not an error.
    let svg = stdout(diff(
        &dir,
        &[&["--format", "flamegraph", "-o", "-"], &new_empty[..]].concat(),
    ));
    assert!(svg.contains("no samples selected"), "{svg}");
    // The same for one capture.
    let svg = stdout(
        amprof()
            .current_dir(&dir)
            .args([
                "report",
                "-i",
                "new.data",
                "--format",
                "flamegraph",
                "-o",
                "-",
            ])
            .args(["--comm", "nobody"])
            .output()
            .unwrap(),
    );
    assert!(svg.contains("no samples selected"), "{svg}");
}

#[test]
fn bad_usage_and_bad_captures_are_one_line_errors() {
    let dir = captures("diff-errors");
    std::fs::write(
        dir.join("garbage.data"),
        b"not a capture at all, just some text",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let output = amprof().current_dir(&dir).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        (output.status.code(), stderr)
    };
    for format in ["perf", "pprof", "firefox"] {
        let (code, stderr) = run(&[
            "report",
            "-i",
            "new.data",
            "--diff",
            "base.data",
            "--format",
            format,
        ]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "--diff compares captures as a summary, a flamegraph or folded stacks, not --format {format}"
            )),
            "{stderr}"
        );
    }
    for flag in ["--base-window=0", "--base-pid=1", "--base-comm=x"] {
        let (code, stderr) = run(&["report", "-i", "new.data", flag]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("--diff"), "{stderr}");
    }
    // The flags after `report -i new.data`, the exit code, and what the one line says.
    let cases: [(&[&str], i32, &str); 5] = [
        // A --pid the base does not have (pids rarely survive from one recording to the next).
        (
            &["--diff", "base.data", "--pid", "999"],
            2,
            "the base capture base.data has no samples of pid 999 (--pid selects in both captures): give --base-pid, or select by --comm",
        ),
        (
            &["--diff", "missing.data"],
            3,
            "cannot open capture missing.data: no such file",
        ),
        (&["--diff", "garbage.data"], 3, "not an amprof capture"),
        (
            &["--diff", "base.data", "--base-window", "7"],
            2,
            "the base capture has no window in 7..7",
        ),
        (
            &["--diff", "base.data", "--event", "off-cpu"],
            2,
            "--event off-cpu: the base capture has no off-CPU samples",
        ),
    ];
    for (flags, want, says) in cases {
        let (code, stderr) = run(&[&["report", "-i", "new.data"][..], flags].concat());
        assert_eq!(code, Some(want), "{flags:?}: {stderr}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
}

/// One window of `app` off the CPU: blocked in `main;lock` (kernel `futex_wait`) `lock_ms`, in
/// `main;read_pipe` (kernel `pipe_read`) `read_ms`; and one on-CPU sample of `main`.
fn off_cpu_window(lock_ms: u64, read_ms: u64) -> Window {
    let mut w = WindowBuilder::new(0);
    let app = w.process(100, "app");
    let k = w.kernel_module();
    let [main, lock, read_pipe, futex, pipe] =
        ["main", "lock", "read_pipe", "futex_wait", "pipe_read"].map(|f| w.function(f));
    let [l_main, l_lock, l_read] = [(0x1100, main), (0x1300, lock), (0x1400, read_pipe)]
        .map(|(address, f)| w.location(address, &[f]));
    let [k_futex, k_pipe] =
        [futex, pipe].map(|f| w.kernel_location(k, 0xffff_0000 + u64::from(f), &[f]));
    let locked = w.stack(app, &[k_futex, l_lock, l_main], 1);
    let reading = w.stack(app, &[k_pipe, l_read, l_main], 1);
    let working = w.stack(app, &[l_main], 0);
    w.sample(500, 100, 0, working);
    if lock_ms > 0 {
        w.off_cpu_sample(1_000, 100, 0, locked, lock_ms * MS, OffCpuReason::Blocked);
    }
    if read_ms > 0 {
        w.off_cpu_sample(2_000, 100, 0, reading, read_ms * MS, OffCpuReason::Blocked);
    }
    w.build()
}

#[test]
fn off_cpu_time_compares_in_its_own_weights() {
    let dir = scratch("diff-off-cpu");
    let off_meta = Meta {
        off_cpu_period_ns: MS,
        ..meta()
    };
    write_capture(&dir.join("base.data"), &off_meta, [off_cpu_window(30, 0)]).unwrap();
    write_capture(&dir.join("new.data"), &off_meta, [off_cpu_window(10, 30)]).unwrap();
    let summary = json(&dir, &["--event", "off-cpu"]);
    assert_eq!(summary["unit"], "ns");
    assert_eq!(summary["base"]["weight"], 30 * MS);
    assert_eq!(summary["new"]["weight"], 40 * MS);
    assert_eq!(summary["new"]["samples"], 2);
    // Self time off the CPU goes to the innermost user frame, as in the summary; ties by name.
    assert_eq!(
        changes(&summary["self_changes"]),
        [
            ("lock".into(), 100.0, 25.0, -75.0),
            ("read_pipe".into(), 0.0, 75.0, 75.0),
        ]
    );
    // Folded in µs, the base (30 ms) scaled to the new's 40 ms.
    let folded = stdout(diff(&dir, &["--format", "folded", "--event", "off-cpu"]));
    assert_eq!(
        folded,
        "app;main;lock;futex_wait_[k];[off-cpu: blocked] 40000 10000\n\
         app;main;read_pipe;pipe_read_[k];[off-cpu: blocked] 0 30000\n"
    );
}
