//! Captures made to attack `amprof report`: names chosen to drive a terminal or break the
//! formats. Every capture here is built by the test (with the capture format's own types and
//! writer), so that these tests need no root and run in the fast tier.

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use crate::util::{assert_ok, parse_svg, run, scratch};
use amprof::capture::{
    CaptureWriter,
    format::{
        End, Function, Line, Location, Mapping, Meta, Module, ModuleKind, Process, Stack, Target,
        TargetKind, Thread, Window,
    },
};

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
        off_cpu_period_ns: 0,
        kernel_limits: vec![format!("the kernel refused{text}")],
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
            ..Stack::default()
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
    let document = parse_svg(&text);
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
        let output = crate::util::amprof()
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

// ---------------------------------------------------------------------------------------------
// Captures that would make report allocate without bound.

/// A finished `amprof report`: its exit status, what it printed (standard output cut at 1 MiB:
/// only its size is kept beyond), its peak memory and how long it ran.
struct Measured {
    /// Killed after [`REPORT_TIMEOUT`].
    timed_out: bool,
    code: Option<i32>,
    signal: Option<i32>,
    stdout_bytes: u64,
    stderr: String,
    peak_rss_mib: f64,
    seconds: f64,
}

/// Longest a report may take here: a hostile capture must not hang it either.
const REPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// A safety net, not the measure: address space beyond this makes allocations fail, so that a
/// regression cannot take the machine's memory.
const ADDRESS_SPACE_LIMIT: u64 = 4 << 30;

/// Runs `amprof ARGS` and measures its peak resident memory: wait4's `ru_maxrss`. (The child
/// starts as a copy of this test process, whose resident memory at the time counts too: the
/// captures here are written window by window, so that it stays small.)
fn run_measured(args: &[&str]) -> Measured {
    use std::{io::Read as _, os::unix::process::CommandExt as _, process::Stdio};
    let started = std::time::Instant::now();
    let mut command = crate::util::amprof();
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: ADDRESS_SPACE_LIMIT,
                rlim_max: ADDRESS_SPACE_LIMIT,
            };
            libc::setrlimit(libc::RLIMIT_AS, &limit);
            Ok(())
        });
    }
    // Reaped below by wait4, which gives the resource usage that Child::wait does not.
    #[allow(clippy::zombie_processes)]
    let mut child = command.spawn().expect("amprof starts");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut buffer = vec![0; 1 << 16];
        let mut total = 0u64;
        while let Ok(n @ 1..) = stdout.read(&mut buffer) {
            total += n as u64;
        }
        total
    });
    let stderr = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.by_ref().take(1 << 20).read_to_end(&mut text);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        String::from_utf8_lossy(&text).into_owned()
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        let done = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(done >= 0, "wait4: {}", std::io::Error::last_os_error());
        if done == pid {
            break;
        }
        if !killed && started.elapsed() > REPORT_TIMEOUT {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Measured {
        timed_out: killed,
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        stdout_bytes: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        seconds: started.elapsed().as_secs_f64(),
    }
}

impl std::fmt::Debug for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}exit {:?} signal {:?}, {} bytes out, peak RSS {:.0} MiB, {:.1} s, stderr: {}",
            if self.timed_out { "TIMED OUT, " } else { "" },
            self.code,
            self.signal,
            self.stdout_bytes,
            self.peak_rss_mib,
            self.seconds,
            self.stderr
        )
    }
}

/// The formats and the flags `report` writes them with (file formats into `dir`).
fn every_format(dir: &Path) -> Vec<(&'static str, Vec<String>)> {
    let file = |name: &str| dir.join(name).to_str().unwrap().to_string();
    vec![
        ("summary", vec!["--top".into(), "20".into()]),
        ("folded", vec!["--format".into(), "folded".into()]),
        (
            "flamegraph",
            vec![
                "--format".into(),
                "flamegraph".into(),
                "-o".into(),
                file("flame.svg"),
            ],
        ),
        (
            "pprof",
            vec![
                "--format".into(),
                "pprof".into(),
                "-o".into(),
                file("profile.pb.gz"),
            ],
        ),
        (
            "perf",
            vec![
                "--format".into(),
                "perf".into(),
                "-o".into(),
                file("perf.data"),
            ],
        ),
    ]
}

/// One window of the explosive capture: `stacks` stacks (one process each, so that every folded
/// line differs), each `depth` references to a location whose function has a 60,000-byte name,
/// some through a location of 200 inlined lines. About 2 KB a stack; tens of GB expanded.
fn explosive_window(index: u64, stacks: u32, depth: usize) -> Window {
    let mut w = Window {
        index,
        start_ns: START_NS + index * WINDOW_NS,
        end_ns: START_NS + (index + 1) * WINDOW_NS,
        ..Window::default()
    };
    w.functions = vec![
        Function {
            name: "x".repeat(60_000),
            file: String::new(),
        },
        Function {
            name: format!("inlined_{}", "y".repeat(100)),
            file: String::new(),
        },
    ];
    w.locations = vec![
        Location {
            address: 0x1000,
            mapping: 0,
            kernel_module: 0,
            lines: vec![Line {
                function: 0,
                line: 1,
            }],
        },
        Location {
            address: 0x2000,
            mapping: 0,
            kernel_module: 0,
            lines: (0..200)
                .map(|i| Line {
                    function: (i == 199) as u32,
                    line: i,
                })
                .collect(),
        },
    ];
    for i in 0..stacks {
        w.processes.push(Process {
            pid: 1000 + i,
            name: format!("p{i}"),
            exe: String::new(),
            first_seen_ns: w.start_ns,
            maps_unavailable: false,
        });
        w.threads.push(Thread {
            tid: 1000 + i,
            process: i,
            name: format!("t{i}"),
        });
        w.stacks.push(Stack {
            process: i,
            locations: (0..depth).map(|d| u32::from(d % 16 == 15)).collect(),
            kernel_frames: 0,
            count: 1,
            no_user_stack: false,
            truncated: false,
            ..Stack::default()
        });
        w.sample_time_deltas.push(1);
        w.sample_tids.push(1000 + i);
        w.sample_cpus.push(0);
        w.sample_stacks.push(i);
    }
    w
}

/// A window as recordings make them: `stacks` distinct stacks of 20 to 180 frames over 2,000
/// locations and 1,000 functions of 20 to 120 bytes, in 20 processes; a location in 8 has an
/// inlined frame. About 200 bytes a stack, expanding some 20 times.
fn ordinary_window(index: u64, stacks: u32) -> Window {
    let mut w = Window {
        index,
        start_ns: START_NS + index * WINDOW_NS,
        end_ns: START_NS + (index + 1) * WINDOW_NS,
        ..Window::default()
    };
    // xorshift: the same windows on every run.
    let mut state = 0x9e37_79b9_7f4a_7c15 ^ index;
    let mut next = move |below: u32| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 33) as u32 % below
    };
    for i in 0..20 {
        w.processes.push(Process {
            pid: 100 + i,
            name: format!("worker-{i}"),
            exe: format!("/usr/bin/worker-{i}"),
            first_seen_ns: w.start_ns,
            maps_unavailable: false,
        });
        w.threads.push(Thread {
            tid: 100 + i,
            process: i,
            name: format!("worker-{i}"),
        });
    }
    w.modules.push(Module {
        path: "/usr/lib/libworker.so".into(),
        build_id: vec![0x5a; 20],
        kind: ModuleKind::File as i32,
    });
    w.mappings.push(Mapping {
        process: 0,
        start: 0x40_0000,
        end: 0x80_0000,
        file_offset: 0,
        module: 0,
    });
    for f in 0..1000 {
        let len = 20 + next(100) as usize;
        w.functions.push(Function {
            name: format!("ns::function_{f}_{}", "z".repeat(len)),
            file: format!("/src/file_{}.cc", f % 50),
        });
    }
    for l in 0..2000 {
        let mut lines = vec![Line {
            function: next(1000),
            line: l,
        }];
        if l % 8 == 0 {
            lines.insert(
                0,
                Line {
                    function: next(1000),
                    line: l + 1,
                },
            );
        }
        w.locations.push(Location {
            address: 0x40_1000 + 16 * u64::from(l),
            mapping: 1,
            kernel_module: 0,
            lines,
        });
    }
    for s in 0..stacks {
        let depth = 20 + next(160);
        w.stacks.push(Stack {
            process: s % 20,
            locations: (0..depth).map(|_| next(2000)).collect(),
            kernel_frames: 0,
            count: 1,
            no_user_stack: false,
            truncated: false,
            ..Stack::default()
        });
        w.sample_time_deltas.push(1000);
        w.sample_tids.push(100 + s % 20);
        w.sample_cpus.push(s % 2);
        w.sample_stacks.push(s);
    }
    w
}

/// About 50 MB of windows that expand without bound: no recording makes them.
fn explosive_capture(dir: &Path) -> PathBuf {
    let path = dir.join("explosive.data");
    write_capture(
        &path,
        &meta(""),
        (0..50).map(|index| explosive_window(index, 500, 2000)),
    );
    path
}

/// About 50 MB of ordinary windows, then one that expands without bound: refused at the end,
/// having held all the others.
fn late_explosive_capture(dir: &Path) -> PathBuf {
    let path = dir.join("late-explosive.data");
    let ordinary = (0..45).map(|index| ordinary_window(index, 5000));
    write_capture(
        &path,
        &meta(""),
        ordinary.chain([explosive_window(45, 500, 2000)]),
    );
    path
}

/// Captures of about 50 MB whose stacks expand to terabytes of names, from their first window
/// or only in their last: every format refuses them with exit code 3 and one line, in memory
/// bounded by 5 times the file's size and 64 MiB, and writes nothing. (Refused at once, the
/// first takes 16 MiB. The second is refused after 45 ordinary windows, which the summary holds
/// decoded, about 3.5 times their size, and pprof turns into a profile, about 4.5.) (Before the reader
/// bounded expansion, the first took the summary past 60 s, folded and flamegraph output past
/// 3 GiB and pprof past 1.5 GiB, and went into perf.data.)
#[test]
fn a_capture_that_expands_without_bound_is_refused_in_bounded_memory() {
    let dir = scratch("explosive-capture");
    refused_in_bounded_memory(&dir, &explosive_capture(&dir), "window 0 ");
    refused_in_bounded_memory(&dir, &late_explosive_capture(&dir), "window 45 ");
}

fn refused_in_bounded_memory(dir: &Path, capture: &Path, needle: &str) {
    let size = std::fs::metadata(capture).unwrap().len();
    assert!(size > 45 << 20, "{size} bytes");
    let bound_mib = (5 * size) as f64 / f64::from(1 << 20) + 64.0;
    let mut failures = Vec::new();
    for (format, flags) in every_format(dir) {
        let mut args = vec!["report", "-i", capture.to_str().unwrap()];
        args.extend(flags.iter().map(String::as_str));
        let run = run_measured(&args);
        eprintln!("{format}: {run:?}");
        let refused = run.code == Some(3)
            && run.stderr.lines().count() == 1
            && run.stderr.starts_with("amprof: error: ")
            && run.stderr.contains(needle);
        if !refused || run.peak_rss_mib > bound_mib {
            failures.push(format!("{format}: {run:?}"));
        }
    }
    // Nothing was written for the refused reports.
    for name in ["flame.svg", "profile.pb.gz", "perf.data"] {
        if dir.join(name).exists() {
            failures.push(format!("{name} was written"));
        }
    }
    assert!(
        failures.is_empty(),
        "not refused in one line (exit 3) within {bound_mib:.0} MiB:\n{}",
        failures.join("\n")
    );
}

/// Ordinary captures report in every format (exit code 0), and their expansion stays well
/// within the bound.
#[test]
fn ordinary_captures_still_report() {
    let dir = scratch("ordinary-capture");
    let capture = dir.join("ordinary.data");
    write_capture(
        &capture,
        &meta(""),
        (0..4).map(|i| ordinary_window(i, 2000)),
    );
    for (format, flags) in every_format(&dir) {
        let mut args = vec!["report", "-q", "-i", capture.to_str().unwrap()];
        args.extend(flags.iter().map(String::as_str));
        let run = run_measured(&args);
        assert_eq!(run.code, Some(0), "{format}: {run:?}");
        assert!(run.stderr.is_empty(), "{format}: {run:?}");
    }
    assert!(dir.join("flame.svg").exists() && dir.join("perf.data").exists());
}

/// Deep recursion through a function with a long name (a C++ template, 1,870 bytes) is the
/// most a real capture expands: about 700 times its size, recorded. Made denser here (every
/// stack one sample, 1 to 500 frames deep: about 1,800 times), and larger than the allowance,
/// it is still read in full.
#[test]
fn deep_recursion_through_long_names_is_not_refused() {
    use amprof::capture::CaptureReader;
    let dir = scratch("deep-recursion-capture");
    let capture = dir.join("deep.data");
    let name = format!(
        "some_company::analytics::Optimizer<{}>::optimize",
        "std::vector<std::string>, ".repeat(70)
    );
    assert!((1800..2000).contains(&name.len()), "{}", name.len());
    let windows = (0..3).map(|index| {
        let mut w = explosive_window(index, 1000, 0);
        w.functions = vec![Function {
            name: name.clone(),
            file: "/src/optimizer.h".into(),
        }];
        w.locations.truncate(1);
        for (i, stack) in w.stacks.iter_mut().enumerate() {
            stack.locations = vec![0; 1 + (i * 7919) % 500];
        }
        w
    });
    write_capture(&capture, &meta(""), windows);
    let size = std::fs::metadata(&capture).unwrap().len();
    let mut reader = CaptureReader::open(&capture).unwrap();
    let mut expansion = 0u64;
    while let Some(w) = reader.next_window().expect("read in full") {
        let per_stack = |s: &Stack| s.locations.len() as u64 * (name.len() as u64 + 1);
        expansion += w.stacks.iter().map(per_stack).sum::<u64>();
    }
    let ratio = expansion as f64 / size as f64;
    assert!(
        expansion > amprof::capture::EXPANSION_ALLOWANCE,
        "{expansion}"
    );
    assert!(
        (1500.0..amprof::capture::MAX_EXPANSION_FACTOR as f64).contains(&ratio),
        "{ratio}"
    );
}

/// One stack that expands to more frames than any recording makes (2,000 references to a
/// location of 9 inlined functions), sampled 1,000 times, in a capture of a few KB: pprof and
/// Datadog would carry every frame of it with every sample. Every format refuses it at once
/// (exit code 3), in little memory. (Before the per-stack bound, pprof took 27 s and 617 MB.)
#[test]
fn a_stack_deeper_than_any_recording_is_refused() {
    let dir = scratch("deep-stack-capture");
    let capture = dir.join("deep-stack.data");
    let mut w = explosive_window(0, 1, 2000);
    w.functions[0].name = "f".repeat(100);
    w.locations[1].lines.truncate(9);
    for stack in &mut w.stacks {
        stack.locations = vec![1; 2000];
        stack.count = 1000;
    }
    w.sample_time_deltas = vec![1; 1000];
    w.sample_tids = vec![1000; 1000];
    w.sample_cpus = vec![0; 1000];
    w.sample_stacks = vec![0; 1000];
    write_capture(&capture, &meta(""), [w]);
    assert!(std::fs::metadata(&capture).unwrap().len() < 64 << 10);
    for (format, flags) in every_format(&dir) {
        let mut args = vec!["report", "-i", capture.to_str().unwrap()];
        args.extend(flags.iter().map(String::as_str));
        let run = run_measured(&args);
        assert_eq!(run.code, Some(3), "{format}: {run:?}");
        assert!(run.stderr.contains("18000 frames"), "{format}: {run:?}");
        assert!(run.peak_rss_mib < 64.0, "{format}: {run:?}");
    }
}
