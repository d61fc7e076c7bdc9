//! Captures made to attack `amprof report`: names chosen to drive a terminal or break the
//! formats. Every capture here is built by the test (with the capture format's own types and
//! writer), so that these tests need no root and run in the fast tier.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use amprof::capture::{
    CaptureWriter,
    format::{
        End, Function, Line, Location, Mapping, Meta, Module, ModuleKind, Process, Stack, Target,
        TargetKind, Thread, Window,
    },
};
use common::{assert_ok, run, scratch};

/// Start of the first window (monotonic ns) in every capture built here.
const START_NS: u64 = 1_000_000_000;
const WINDOW_NS: u64 = 1_000_000_000;

/// Texts that act on a terminal or a parser if printed raw: every C0 control but NUL, DEL,
/// every C1 control, the bidi and invisible format characters, a clipboard write (OSC 52), a
/// screen clear, and the folded format's separator.
fn hostile_texts() -> Vec<String> {
    let c0: String = (1u8..0x20).chain([0x7f]).map(char::from).collect();
    let c1: String = (0x80..0xa0).filter_map(char::from_u32).collect();
    let bidi: String = [
        '\u{200b}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}',
        '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{feff}', '\u{61c}',
        '\u{2028}', '\u{2029}', '\u{fffe}', '\u{ffff}',
    ]
    .into_iter()
    .collect();
    vec![
        format!("c0{c0}end"),
        format!("c1{c1}end"),
        format!("bidi{bidi}end"),
        "osc52\x1b]52;c;SGVsbG8sIGNsaXBib2FyZA==\x07end".into(),
        "clear\x1b[2J\x1b[Hend".into(),
        "title\x1b]0;owned\x1b\\end".into(),
        "semi;colon\nnew\rline end".into(),
    ]
}

/// Metadata of a capture whose host, kernel and command are `text`.
fn meta(text: &str) -> Meta {
    Meta {
        amprof_version: format!("0.1.0{text}"),
        hostname: format!("host{text}"),
        kernel_release: format!("6.1{text}"),
        arch: format!("x86_64{text}"),
        cpus: 2,
        frequency_hz: 99,
        event: format!("cpu-clock{text}"),
        window_ns: WINDOW_NS,
        keep: 0,
        target: Some(Target {
            kind: TargetKind::Command as i32,
            pids: vec![100],
            command: vec![format!("cmd{text}"), format!("arg{text}")],
        }),
        command_line: vec!["amprof".into(), format!("record{text}")],
        start_ns: START_NS,
        realtime_offset_ns: 1_700_000_000_000_000_000,
        call_graph: format!("fp{text}"),
        duration_ns: WINDOW_NS,
        user_stack_bytes: 0,
        inline: false,
    }
}

/// A window with one process per name of `names`, each with a thread, a module, a function and
/// a stack named after it: kernel frame, named frame, an unsymbolized frame in the module, the
/// next process's function.
fn named_window(names: &[String]) -> Window {
    let n = names.len() as u32;
    let mut w = Window {
        index: 0,
        start_ns: START_NS,
        end_ns: START_NS + WINDOW_NS,
        ..Window::default()
    };
    w.modules.push(Module {
        path: "[kernel.kallsyms]".into(),
        build_id: vec![],
        kind: ModuleKind::Kernel as i32,
    });
    w.functions.push(Function {
        name: format!("kernel_fn{}", names[0]),
        file: String::new(),
    });
    w.locations.push(Location {
        address: 0xffff_ffff_8100_0000,
        mapping: 0,
        kernel_module: 1,
        lines: vec![Line {
            function: 0,
            line: 0,
        }],
    });
    for (i, name) in names.iter().enumerate() {
        let i = i as u32;
        w.processes.push(Process {
            pid: 100 + i,
            name: format!("proc{name}"),
            exe: format!("/usr/bin/exe{name}"),
            first_seen_ns: START_NS,
            maps_unavailable: false,
        });
        w.threads.push(Thread {
            tid: 100 + i,
            process: i,
            name: format!("thread{name}"),
        });
        w.modules.push(Module {
            path: format!("/lib/module{name}.so"),
            build_id: vec![0xab; 20],
            kind: ModuleKind::File as i32,
        });
        w.mappings.push(Mapping {
            process: i,
            start: 0x40_0000,
            end: 0x50_0000,
            file_offset: 0,
            module: 1 + i,
        });
        w.functions.push(Function {
            name: format!("function{name}"),
            file: format!("/src/file{name}.c"),
        });
        // Named, then unsymbolized, in this process's mapping (index + 1).
        for lines in [
            vec![Line {
                function: 1 + i,
                line: 7,
            }],
            vec![],
        ] {
            w.locations.push(Location {
                address: 0x40_1000 + 0x10 * u64::from(i),
                mapping: 1 + i,
                kernel_module: 0,
                lines,
            });
        }
    }
    for i in 0..n {
        let named = |p: u32| 1 + 2 * p;
        w.stacks.push(Stack {
            process: i,
            locations: vec![0, named(i), named(i) + 1, named((i + 1) % n)],
            kernel_frames: 1,
            count: 1,
            no_user_stack: false,
            truncated: false,
        });
        w.sample_time_deltas.push(1000);
        w.sample_tids.push(100 + i);
        w.sample_cpus.push(i % 2);
        w.sample_stacks.push(i);
    }
    w
}

/// Writes a finalized capture of `windows` to `path`.
fn write_capture(path: &Path, meta: &Meta, windows: impl IntoIterator<Item = Window>) {
    let mut writer = CaptureWriter::create(path, meta, None).expect("create the capture");
    let mut end_ns = START_NS;
    let mut count = 0;
    for mut window in windows {
        end_ns = window.end_ns;
        count += 1;
        writer.write_window(&mut window).expect("write a window");
    }
    writer
        .finish(&End {
            end_ns,
            windows_closed: count,
            windows_evicted: 0,
            reason: "duration\x1b[2J".into(),
        })
        .expect("finish the capture");
}

fn report(capture: &Path, args: &[&str]) -> Output {
    let mut all = vec!["report", "-i", capture.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&all)
}

/// Fails if `text` holds anything a terminal would act on: a C0 control but the newline, DEL,
/// a C1 control, a bidi or invisible format character.
fn assert_printable(text: &str, what: &str) {
    for (at, c) in text.char_indices() {
        let bad = (c.is_control() && c != '\n')
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{61c}' | '\u{fffe}' | '\u{ffff}');
        assert!(
            !bad,
            "{what}: U+{:04X} at byte {at}: {:?}",
            c as u32,
            &text[at.saturating_sub(40)..]
                .chars()
                .take(80)
                .collect::<String>()
        );
    }
}

fn names_capture(dir: &Path) -> PathBuf {
    let texts = hostile_texts();
    let path = dir.join("names.data");
    write_capture(&path, &meta(&texts.concat()), [named_window(&texts)]);
    path
}

#[test]
fn hostile_names_cannot_drive_the_terminal() {
    let dir = scratch("hostile-names-summary");
    let capture = names_capture(&dir);
    let output = report(&capture, &["--top", "100"]);
    assert_ok(&output);
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    assert_printable(&text, "summary");
    // The names are there, escaped.
    for needle in [
        r"procosc52\x1b]52;c;SGVsbG8sIGNsaXBib2FyZA==\x07end",
        r"functionclear\x1b[2J\x1b[Hend",
        r"\u{202e}",
        r"\u{9b}",
        r"host",
        r"(stopped by duration\x1b[2J)",
        r"command `cmd",
    ] {
        assert!(text.contains(needle), "no {needle} in {text}");
    }
    // JSON keeps the names as they are: serde escapes them.
    let output = report(&capture, &["--json", "--top", "100"]);
    assert_ok(&output);
    assert_printable(&String::from_utf8_lossy(&output.stdout), "summary --json");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let names: Vec<&str> = json["top_processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for text in hostile_texts() {
        assert!(names.contains(&format!("proc{text}").as_str()), "{names:?}");
    }
}

#[test]
fn hostile_names_keep_folded_stacks_one_per_line() {
    let dir = scratch("hostile-names-folded");
    let capture = names_capture(&dir);
    let output = report(&capture, &["--format", "folded"]);
    assert_ok(&output);
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    assert_printable(&text, "folded");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        hostile_texts().len(),
        "one line per stack: {text}"
    );
    for line in lines {
        let (stack, count) = line.rsplit_once(' ').expect("`stack count`");
        assert_eq!(count, "1", "{line}");
        // Process, then the user frames root first (three of them), then the kernel frame.
        assert_eq!(stack.split(';').count(), 5, "{line}");
        assert!(stack.starts_with("proc"), "{line}");
        assert!(stack.ends_with("_[k]"), "{line}");
    }
}

#[test]
fn hostile_names_keep_the_flamegraph_valid_xml() {
    let dir = scratch("hostile-names-flamegraph");
    let capture = names_capture(&dir);
    let svg = dir.join("flame.svg");
    let output = report(
        &capture,
        &["--format", "flamegraph", "-o", svg.to_str().unwrap()],
    );
    assert_ok(&output);
    let text = std::fs::read_to_string(&svg).unwrap();
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let document = roxmltree::Document::parse_with_options(&text, options)
        .unwrap_or_else(|e| panic!("the SVG is not well-formed XML: {e}"));
    let texts: Vec<&str> = document.descendants().filter_map(|n| n.text()).collect();
    for t in &texts {
        assert_printable(t, "an SVG text");
    }
    let all = texts.concat();
    for needle in [r"host", r"functionosc52\x1b]52:c:", r"\u{202e}"] {
        assert!(all.contains(needle), "no {needle} in the SVG");
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile neighbours: what report writes is private, and no name planted in advance matters.

/// Every file `report` writes is created 0600 and, under sudo, belongs to the user who ran sudo
/// (checked when the tests run as root: only root can give a file away).
#[test]
fn report_outputs_are_private() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = scratch("report-modes");
    let capture = names_capture(&dir);
    let root = unsafe { libc::geteuid() } == 0;
    for (format, name) in [
        ("summary", "summary.txt"),
        ("folded", "stacks.folded"),
        ("flamegraph", "flame.svg"),
        ("pprof", "profile.pb.gz"),
        ("perf", "perf.data"),
    ] {
        let path = dir.join(name);
        let output = common::amprof()
            .args(["report", "-q", "--format", format, "-i"])
            .arg(&capture)
            .arg("-o")
            .arg(&path)
            .env("SUDO_UID", "65534")
            .env("SUDO_GID", "65534")
            .output()
            .unwrap();
        assert_ok(&output);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file(), "{format}");
        assert_eq!(
            meta.mode() & 0o777,
            0o600,
            "{format}: mode {:o}",
            meta.mode()
        );
        if root {
            assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "{format}");
        }
    }
}

/// A local user who knows how amprof used to name its temporary files (`.NAME.PID.N.tmp`) plants
/// them, as files and as symlinks to a file of root's, beside a capture: a ring recording that
/// rewrites its file at every window still succeeds, and the victim is untouched.
#[test]
fn a_capture_is_written_past_temporary_names_planted_in_advance() {
    let dir = scratch("planted-temporary-names");
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let path = dir.join("ring.data");
    let pid = std::process::id();
    for n in 0..32 {
        let planted = dir.join(format!(".ring.data.{pid}.{n}.tmp"));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
    }
    let texts = ["a".to_string(), "b".to_string()];
    let mut writer = CaptureWriter::create(&path, &meta(""), Some(2)).unwrap();
    for index in 0..5 {
        let mut window = named_window(&texts);
        window.index = index;
        window.start_ns = START_NS + index * WINDOW_NS;
        window.end_ns = window.start_ns + WINDOW_NS;
        writer.write_window(&mut window).unwrap();
    }
    assert_eq!(writer.windows_evicted(), 3);
    drop(writer);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let output = report(&path, &["--json"]);
    assert_ok(&output);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["windows"].as_array().unwrap().len(), 2);
    // Nothing but the capture, the victim and the planted names.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2 + 32);
}
