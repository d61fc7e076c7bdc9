//! User stacks walked in the kernel with unwind tables (`-g dwarf`), against the stack copy
//! (`-g dwarf-copy`) on the same programs: depth, signal frames, processes that start during
//! the recording, and what a sample costs in bytes. Needs root (eBPF).

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use crate::util::*;

/// Records `command` with `flags` into `scratch(name)`; returns the capture and `--json`.
fn record(name: &str, flags: &[&str], command: &[&str]) -> (PathBuf, serde_json::Value) {
    let capture = scratch(name).join("capture.data");
    let output = amprof()
        .args(["record", "-q", "--json", "-F", "499", "-o"])
        .arg(&capture)
        .args(flags)
        .arg("--")
        .args(command)
        .output()
        .unwrap();
    assert_ok(&output);
    let json = serde_json::from_slice(&output.stdout).expect("record --json");
    (capture, json)
}

/// Share of samples whose stack satisfies `test`; fails when there are too few to judge.
fn share(stacks: &[(Vec<String>, u64)], test: impl Fn(&[String]) -> bool) -> f64 {
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    assert!(total >= 100, "too few samples to judge: {total}");
    let matching: u64 = stacks
        .iter()
        .filter(|(frames, _)| test(frames))
        .map(|(_, c)| c)
        .sum();
    matching as f64 / total as f64
}

/// The stack reaches a thread's start routine or the process entry point.
fn complete(frames: &[String]) -> bool {
    frames.first().is_some_and(|root| {
        [
            "_start",
            "clone3",
            "__clone3",
            "clone",
            "__clone",
            "start_thread",
        ]
        .contains(&root.as_str())
    })
}

/// The `unwinding` counts of a `record --json`: (walked in the kernel, total).
fn walked_in_kernel(json: &serde_json::Value) -> (u64, u64) {
    let u = &json["unwinding"];
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    let total = n("in_kernel") + n("kernel_then_copy") + n("copied") + n("kernel_truncated");
    (n("in_kernel"), total)
}

/// tests/fixtures/recursion.c without frame pointers, as distributions build.
fn recursion() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        compile_c_as(
            "recursion",
            "recursion-nofp",
            &["-O2", "-fomit-frame-pointer", "-pthread"],
        )
    })
}

const DEPTH: usize = 800;

/// 800 frames of recursion (about 40 KiB of stack, more than the 16 KiB a sample copies):
/// walked whole in the kernel, down to the thread's start; the stack copy cannot get there.
/// (The samples taken before the program's tables are built, its first tenths of a second,
/// are unwound from the copy: hence 5 s and 90%.)
#[test]
fn deep_stacks_are_walked_whole_in_the_kernel() {
    // It judges the shares of what it samples: other tests' load would move them.
    let _alone = require_root_alone();
    let depth = DEPTH.to_string();
    let program = recursion().to_str().unwrap();
    let deep = |frames: &[String]| frames.iter().filter(|f| *f == "recurse").count() >= DEPTH;

    let (capture, json) = record("kunwind-deep", &["-g", "dwarf"], &[program, "5", &depth]);
    let stacks = user_stacks(&capture, "recursion-nofp");
    let whole = share(&stacks, |f| deep(f) && complete(f));
    assert!(
        whole >= 0.9,
        "dwarf: {:.1}% of samples have all {DEPTH} frames and the thread start",
        whole * 100.0
    );
    let (in_kernel, total) = walked_in_kernel(&json);
    assert!(
        in_kernel * 10 >= total * 9,
        "dwarf: only {in_kernel} of {total} user stacks were walked in the kernel: {json}"
    );

    // The fixture is deeper than a stack copy reaches: the test can tell the two apart.
    let (capture, _) = record(
        "kunwind-deep-copy",
        &["-g", "dwarf-copy"],
        &[program, "3", &depth],
    );
    let stacks = user_stacks(&capture, "recursion-nofp");
    let whole = share(&stacks, |f| deep(f) && complete(f));
    assert!(
        whole < 0.1,
        "dwarf-copy reached the thread start in {:.1}%: is the fixture deep enough?",
        whole * 100.0
    );
}

/// A handler running on top of the kernel's signal frame: the walk crosses the frame
/// (`__restore_rt`) into the interrupted code and on to `_start`.
#[test]
fn signal_frames_are_crossed() {
    // It judges the shares of what it samples: other tests' load would move them.
    let _alone = require_root_alone();
    let program = compile_c_as("signal", "signal-nofp", &["-O2", "-fomit-frame-pointer"]);
    let (capture, json) = record(
        "kunwind-signal",
        &["-g", "dwarf"],
        &[program.to_str().unwrap(), "2"],
    );
    let stacks = user_stacks(&capture, "signal-nofp");
    let in_handler = |f: &[String]| f.iter().any(|x| x == "spin_in_handler");
    let through = share(&stacks, |f| {
        in_handler(f)
            && complete(f)
            && f.iter().any(|x| x == "main")
            && f.iter().any(|x| x == "wait_for_signals")
    });
    let handler = share(&stacks, in_handler);
    assert!(
        handler >= 0.5,
        "the handler ran in {:.1}% of samples: {stacks:?}",
        handler * 100.0
    );
    assert!(
        through >= 0.9 * handler,
        "{:.1}% of samples in the handler, {:.1}% of all through the signal frame to _start: {stacks:?}",
        handler * 100.0,
        through * 100.0
    );
    let (in_kernel, total) = walked_in_kernel(&json);
    assert!(
        in_kernel * 10 >= total * 8,
        "{in_kernel} of {total} walked in the kernel"
    );
}

/// Frames of hundreds of KiB (rustc has 540 KiB ones): their CFA offsets fit the table rows,
/// and the walk goes on above them. A copy of the stack could not reach past them at all.
#[test]
fn large_frames_are_crossed() {
    // It judges the shares of what it samples: other tests' load would move them.
    let _alone = require_root_alone();
    let program = compile_c_as(
        "bigframe",
        "bigframe-nofp",
        &["-O2", "-fomit-frame-pointer"],
    );
    let (capture, json) = record(
        "kunwind-bigframe",
        &["-g", "dwarf"],
        &[program.to_str().unwrap(), "2"],
    );
    let stacks = user_stacks(&capture, "bigframe-nofp");
    let spinning = |f: &[String]| f.iter().any(|x| x == "spin");
    let through = share(&stacks, |f| {
        spinning(f)
            && complete(f)
            && f.iter().any(|x| x == "inner_frame")
            && f.iter().any(|x| x == "outer_frame")
            && f.iter().any(|x| x == "main")
    });
    let spin = share(&stacks, spinning);
    assert!(spin >= 0.5, "spin ran in {:.1}% of samples", spin * 100.0);
    assert!(
        through >= 0.9 * spin,
        "{:.1}% of samples in spin, {:.1}% of all through both large frames to _start: {stacks:?}",
        spin * 100.0,
        through * 100.0
    );
    let (in_kernel, total) = walked_in_kernel(&json);
    assert!(
        in_kernel * 10 >= total * 8,
        "{in_kernel} of {total} walked in the kernel"
    );
}

/// What leaves the kernel per sample: with tables, frame addresses only (as with frame
/// pointers); with the stack copy, kilobytes of stack.
#[test]
fn a_walked_stack_costs_its_frames_not_a_stack_copy() {
    // It judges the shares of what it samples: other tests' load would move them.
    let _alone = require_root_alone();
    let program = compile_c_as(
        "chain",
        "chain-nofp-bytes",
        &["-O2", "-fomit-frame-pointer"],
    );
    let program = program.to_str().unwrap();
    let per_sample = |json: &serde_json::Value| {
        json["ring_bytes"].as_f64().unwrap() / json["samples"].as_f64().unwrap().max(1.0)
    };
    // 8 s: the samples before the binary's table is loaded are copied (a fallback that costs
    // more, under load, when the table is built later); they must stay a small share. (The
    // clean-clone CI run of 8f1ca96, at 4 s: dwarf 236, dwarf-copy 1136, fp 120, a tenth of
    // the samples copied while a cold machine built the table.)
    let (_, tables) = record("kunwind-bytes", &["-g", "dwarf"], &[program, "8"]);
    let (_, copy) = record("kunwind-bytes-copy", &["-g", "dwarf-copy"], &[program, "4"]);
    let (_, fp) = record("kunwind-bytes-fp", &["-g", "fp"], &[program, "4"]);
    let (tables, copy, fp) = (per_sample(&tables), per_sample(&copy), per_sample(&fp));
    eprintln!("bytes per sample: dwarf {tables:.0}, dwarf-copy {copy:.0}, fp {fp:.0}");
    // The copy is as deep as this shallow stack goes (halved until it fits the stack: 1 to
    // 4 KiB, by where ASLR put the stack's end), so only 5x.
    assert!(
        tables <= 2.0 * fp.max(200.0) && tables * 5.0 <= copy,
        "bytes per sample: dwarf {tables:.0}, dwarf-copy {copy:.0}, fp {fp:.0}"
    );
}

/// Programs that live a fraction of a second, started while recording: each gets its tables
/// (the binary's is built once), so most of their samples are walked in the kernel, and their
/// stacks are complete.
#[test]
fn short_lived_processes_are_walked_in_the_kernel() {
    // It judges the shares of what it samples: other tests' load would move them.
    let _alone = require_root_alone();
    let program = compile_c_as("chain", "chain-short", &["-O2", "-fomit-frame-pointer"]);
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do {} 0.25; done",
        program.display()
    );
    let (capture, json) = record("kunwind-short", &["-g", "dwarf"], &["sh", "-c", &script]);
    let stacks = user_stacks(&capture, "chain-short");
    let whole = share(&stacks, |f| {
        complete(f) && f.iter().any(|x| x == "level_three")
    });
    assert!(whole >= 0.9, "{:.1}% complete", whole * 100.0);
    let (in_kernel, total) = walked_in_kernel(&json);
    assert!(
        in_kernel * 2 >= total,
        "{in_kernel} of {total} user stacks walked in the kernel: {json}"
    );
}
