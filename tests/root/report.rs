//! `amprof report`: formats, selection, and refusing bad captures.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use crate::util::*;

/// One capture of the hotspot fixture (2 s, two windows), recorded once for these tests.
fn capture() -> &'static Path {
    static CAPTURE: OnceLock<PathBuf> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let _root = require_root();
        let dir = scratch("report");
        let capture = dir.join("hotspot.data");
        record_hotspot(&capture, &["-F", "499", "--window", "1s"], &["2"]);
        capture
    })
}

#[test]
fn the_flamegraph_is_well_formed_svg_naming_the_hot_functions() {
    let svg = scratch("flamegraph").join("flame.svg");
    let output = amprof()
        .args(["report", "--format", "flamegraph", "-i"])
        .arg(capture())
        .arg("-o")
        .arg(&svg)
        .output()
        .unwrap();
    assert_ok(&output);
    let text = std::fs::read_to_string(&svg).unwrap();
    let document = parse_svg(&text);
    assert_eq!(document.root_element().tag_name().name(), "svg");
    let titles: Vec<&str> = document
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text())
        .collect();
    for function in ["hot_a", "hot_b", "run", "main"] {
        assert!(
            titles
                .iter()
                .any(|t| t.starts_with(&format!("{function} ("))),
            "no frame for {function}"
        );
    }
    assert!(text.contains("499 Hz"), "the title gives the frequency");
}

#[test]
fn folded_output_parses_and_adds_up() {
    let output = amprof()
        .args(["report", "--format", "folded", "-i"])
        .arg(capture())
        .output()
        .unwrap();
    assert_ok(&output);
    let text = String::from_utf8(output.stdout).unwrap();
    let mut total = 0;
    let mut hot_a = 0;
    for line in text.lines() {
        let (stack, count) = line.rsplit_once(' ').expect("`stack count` lines");
        let count: u64 = count.parse().expect("a count");
        assert!(!stack.is_empty() && count > 0, "{line}");
        total += count;
        if stack.starts_with("hotspot;") && stack.ends_with(";main;run;hot_a")
            || stack.contains(";main;run;hot_a;")
        {
            hot_a += count;
        }
    }
    let summary = summary(capture(), &[]);
    assert_eq!(total, summary["totals"]["samples"].as_u64().unwrap());
    assert!(
        hot_a as f64 > 0.6 * total as f64,
        "hot_a: {hot_a} of {total}"
    );
}

#[test]
fn selection_by_window_pid_and_comm() {
    let all = summary(capture(), &[]);
    let windows = all["windows"].as_array().unwrap();
    // A 2 s command in 1 s windows: two full windows and the start-up's part of a third.
    assert!((2..=3).contains(&windows.len()), "{windows:?}");
    let first = summary(capture(), &["--window", "0"]);
    assert_eq!(first["windows"].as_array().unwrap().len(), 1);
    assert_eq!(first["totals"]["samples"], windows[0]["samples"]);
    let range = format!("0..{}", windows.len() - 1);
    let every = summary(capture(), &["--window", &range]);
    assert_eq!(every["totals"]["samples"], all["totals"]["samples"]);
    let second = summary(capture(), &["--window", "1..1"]);
    assert_eq!(second["totals"]["samples"], windows[1]["samples"]);
    let nobody = summary(capture(), &["--comm", "no-such-process"]);
    assert_eq!(nobody["totals"]["samples"], 0);
    let pid = pids(&all)[0].to_string();
    let by_pid = summary(capture(), &["--pid", &pid]);
    assert_eq!(
        by_pid["totals"]["samples"],
        all["top_processes"][0]["samples"]
    );

    let output = run(&["report", "-i", capture().to_str().unwrap(), "--window", "7"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no window in 7..7"));
}

#[test]
fn the_text_summary_lists_windows_and_top_functions() {
    let output = run(&["report", "-i", capture().to_str().unwrap()]);
    assert_ok(&output);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("top functions by self samples"), "{text}");
    assert!(text.contains("hot_a"), "{text}");
    assert!(text.contains("499 Hz"), "{text}");
}

/// Damaged, foreign and future captures: exit code 3 and one line naming the problem.
#[test]
fn bad_captures_are_refused_with_a_clear_error() {
    let dir = scratch("bad-captures");
    let good = std::fs::read(capture()).unwrap();
    let mut future = good.clone();
    future[8] = 99;
    let mut flipped = good.clone();
    flipped[40] ^= 0xff;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "empty"),
        (
            "foreign",
            b"PERFILE2 and then some more bytes".to_vec(),
            "perf.data",
        ),
        (
            "text",
            b"hello, world, this is not a capture\n".to_vec(),
            "not an amprof capture",
        ),
        ("future", future, "version 99"),
        ("corrupt", flipped, "corrupt"),
        ("header-only", good[..20].to_vec(), "no metadata"),
    ];
    for (name, bytes, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let output = run(&["report", "-i", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{name}: {stderr}");
        assert!(stderr.contains(needle), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
    }
    let output = run(&["report", "-i", dir.join("missing").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no such file"));
}

/// A capture cut anywhere (a killed recording) still reports every complete window.
#[test]
fn a_truncated_capture_reports_its_complete_windows() {
    let dir = scratch("truncated");
    let good = std::fs::read(capture()).unwrap();
    let all = summary(capture(), &[]);
    let path = dir.join("cut.data");
    // Cut in the middle of the last window record.
    std::fs::write(&path, &good[..good.len() - 40]).unwrap();
    let cut = summary(&path, &[]);
    assert_eq!(cut["capture"]["state"], "truncated");
    assert!(cut["windows"].as_array().unwrap().len() < all["windows"].as_array().unwrap().len());
    assert_eq!(cut["windows"][0], all["windows"][0]);
}

#[test]
fn a_reader_that_closes_the_pipe_early_is_not_an_error() {
    use std::process::Stdio;
    // `amprof report --format flamegraph -o - | head -c1`: the reader goes away before amprof writes
    // (the SVG is larger than the output buffer: the error comes from a write, not the flush).
    let mut child = amprof()
        .args(["report", "--format", "flamegraph", "-o", "-", "-i"])
        .arg(capture())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_ok(&output);
    assert!(
        output.stderr.is_empty(),
        "nothing on stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
