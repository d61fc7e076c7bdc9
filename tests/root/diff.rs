//! `amprof report --diff` on real recordings: the hotspot fixture recorded twice, its workload
//! changed in between (hot_a's part of each round's work 75%, then 25%; hot_b the rest), must
//! show hot_a shrinking and hot_b growing by about 50 percentage points, in the summary, the
//! differential flamegraph and the folded columns.
//!
//! Tolerance: each recording is 2 s at 499 Hz of one busy thread, about 1000 samples. A share
//! p measured from n samples has a standard deviation of √(p(1−p)/n): 1.4 points at p = 0.75,
//! so 2 points for the difference of two recordings. The fixture also spends a little outside
//! hot_a and hot_b (its loop, the clock reads, start-up, page faults), a point or two taken from
//! both; measured: hot_a 73.1% → 25.1% (−48.0), hot_b 26.4% → 71.3% (+45.0). The tests allow 8
//! points on the change and 6 on each share: four standard deviations plus that, while a diff
//! that saw no change, or the wrong way, or the wrong function, is 50 points off. (The shares
//! are of time: they match the designed work only because the fixture's two loops run at the
//! same speed; see hotspot.c.)

use std::{path::PathBuf, sync::OnceLock};

use crate::util::*;

/// hot_a's designed share of the work, base then new, in %.
const BASE_HOT_A: f64 = 75.0;
const NEW_HOT_A: f64 = 25.0;
/// Allowed error on a share and on a change, in percentage points (see the module
/// documentation).
const SHARE_TOLERANCE: f64 = 6.0;
const CHANGE_TOLERANCE: f64 = 8.0;

/// The two recordings, `(base, new)`, made once for these tests.
fn captures() -> &'static (PathBuf, PathBuf) {
    static CAPTURES: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    CAPTURES.get_or_init(|| {
        let _root = require_root();
        let dir = scratch("diff");
        let record = |name: &str, hot_a_percent: f64| {
            let capture = dir.join(name);
            let hot_a_percent = hot_a_percent.to_string();
            let flags = ["-F", "499", "--window", "1s"];
            record_hotspot(&capture, &flags, &["2", "1", &hot_a_percent]);
            capture
        };
        (
            record("before.data", BASE_HOT_A),
            record("after.data", NEW_HOT_A),
        )
    })
}

/// `amprof report -i NEW --diff BASE --comm hotspot ARGS`, its standard output.
fn diff(args: &[&str]) -> String {
    let (base, new) = captures();
    let output = amprof()
        .arg("report")
        .arg("-i")
        .arg(new)
        .arg("--diff")
        .arg(base)
        .args(["--comm", "hotspot"])
        .args(args)
        .output()
        .unwrap();
    assert_ok(&output);
    String::from_utf8(output.stdout).unwrap()
}

fn assert_near(what: &str, measured: f64, expected: f64, tolerance: f64) {
    assert!(
        (measured - expected).abs() <= tolerance,
        "{what}: measured {measured:.2}, designed {expected:.2} ± {tolerance}"
    );
}

#[test]
fn the_summary_shows_the_change_at_the_right_function_and_size() {
    let summary: serde_json::Value = serde_json::from_str(&diff(&["--json"])).unwrap();
    let samples = (
        summary["base"]["samples"].as_u64().unwrap(),
        summary["new"]["samples"].as_u64().unwrap(),
    );
    assert!(samples.0 > 500 && samples.1 > 500, "samples: {samples:?}");
    let changes = summary["self_changes"].as_array().unwrap();
    // The two changes the workload made come first, the largest either way.
    let top: Vec<&str> = changes[..2]
        .iter()
        .map(|c| c["function"].as_str().unwrap())
        .collect();
    assert!(
        top.contains(&"hot_a") && top.contains(&"hot_b"),
        "{changes:#?}"
    );
    let share = |function: &str| {
        let c = changes
            .iter()
            .find(|c| c["function"] == function)
            .unwrap_or_else(|| panic!("{function} in {changes:#?}"));
        let f = |k: &str| c[k].as_f64().unwrap();
        (f("base_percent"), f("new_percent"), f("change"))
    };
    let (a, b) = (share("hot_a"), share("hot_b"));
    println!(
        "base {} samples, new {}: hot_a {:.1}% → {:.1}% ({:+.1}), hot_b {:.1}% → {:.1}% ({:+.1})",
        samples.0, samples.1, a.0, a.1, a.2, b.0, b.1, b.2
    );
    assert_near("hot_a's base share", a.0, BASE_HOT_A, SHARE_TOLERANCE);
    assert_near("hot_a's new share", a.1, NEW_HOT_A, SHARE_TOLERANCE);
    assert_near(
        "hot_a's change",
        a.2,
        NEW_HOT_A - BASE_HOT_A,
        CHANGE_TOLERANCE,
    );
    assert_near(
        "hot_b's base share",
        b.0,
        100.0 - BASE_HOT_A,
        SHARE_TOLERANCE,
    );
    assert_near("hot_b's new share", b.1, 100.0 - NEW_HOT_A, SHARE_TOLERANCE);
    assert_near(
        "hot_b's change",
        b.2,
        BASE_HOT_A - NEW_HOT_A,
        CHANGE_TOLERANCE,
    );
    // The text says the same.
    let text = diff(&[]);
    assert!(
        text.contains("functions whose self share changed most"),
        "{text}"
    );
    let hot_a = text
        .lines()
        .find(|l| l.contains(" hot_a "))
        .expect("a line for hot_a");
    assert!(hot_a.contains(&format!("{:+.1}", a.2)), "{text}");
}

#[test]
fn the_flamegraph_colours_hot_a_blue_and_hot_b_red() {
    let dir = scratch("diff-flamegraph");
    let svg_path = dir.join("diff.svg");
    diff(&["--format", "flamegraph", "-o", svg_path.to_str().unwrap()]);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let frames: Vec<(String, (u8, u8, u8))> = flamegraph_frames(&svg)
        .into_iter()
        .map(|(title, fill)| (title, rgb(&fill)))
        .collect();
    // The widest frame of each function (its self samples make its colour).
    let widest = |function: &str| {
        frames
            .iter()
            .filter(|(title, _)| title.starts_with(&format!("{function} (")))
            .max_by_key(|(title, _)| {
                let samples = title.split(['(', ' ']).nth(2).unwrap_or("0");
                samples.replace(',', "").parse::<u64>().unwrap_or(0)
            })
            .unwrap_or_else(|| panic!("no {function} frame in {frames:?}"))
            .clone()
    };
    let (a_title, a) = widest("hot_a");
    let (b_title, b) = widest("hot_b");
    println!("hot_a: {a_title} {a:?}; hot_b: {b_title} {b:?}");
    // inferno's scale: blue (c, c, 255) and red (255, c, c), c from 100 (the largest change)
    // to 250 (none); the two changes are the largest of the graph: deep colours.
    assert!(a.2 == 255 && a.0 == a.1 && a.0 < 150, "hot_a blue: {a:?}");
    assert!(b.0 == 255 && b.1 == b.2 && b.1 < 150, "hot_b red: {b:?}");
    assert!(svg.contains("red: grew, blue: shrank"));
}

#[test]
fn folded_columns_show_the_shares_before_and_after() {
    let folded = diff(&["--format", "folded"]);
    let (mut base, mut new) = ((0u64, 0u64, 0u64), (0u64, 0u64, 0u64));
    for line in folded.lines() {
        let mut fields = line.rsplitn(3, ' ');
        let after: u64 = fields.next().unwrap().parse().unwrap();
        let before: u64 = fields.next().unwrap().parse().unwrap();
        let stack = fields.next().unwrap();
        let leaf = stack.rsplit(';').next().unwrap();
        for (totals, weight) in [(&mut base, before), (&mut new, after)] {
            totals.0 += weight;
            match leaf {
                "hot_a" => totals.1 += weight,
                "hot_b" => totals.2 += weight,
                _ => {}
            }
        }
    }
    // The base column is scaled to the new's total (each line rounded: ± ½ a sample each).
    let lines = folded.lines().count() as f64;
    assert_near(
        "the base column's total",
        base.0 as f64,
        new.0 as f64,
        lines,
    );
    let percent = |part: u64, whole: u64| 100.0 * part as f64 / whole as f64;
    let shares = [
        percent(base.1, base.0),
        percent(new.1, new.0),
        percent(base.2, base.0),
        percent(new.2, new.0),
    ];
    println!(
        "folded: totals {} and {}; hot_a {:.1}% → {:.1}%, hot_b {:.1}% → {:.1}%",
        base.0, new.0, shares[0], shares[1], shares[2], shares[3]
    );
    assert_near("hot_a before", shares[0], BASE_HOT_A, SHARE_TOLERANCE);
    assert_near("hot_a after", shares[1], NEW_HOT_A, SHARE_TOLERANCE);
    assert_near(
        "hot_b before",
        shares[2],
        100.0 - BASE_HOT_A,
        SHARE_TOLERANCE,
    );
    assert_near("hot_b after", shares[3], 100.0 - NEW_HOT_A, SHARE_TOLERANCE);
}
