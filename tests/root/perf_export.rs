//! `amprof report --format perf`, read by the real Linux perf (Debian's `linux-perf`, installed by
//! `.ci/setup`): what perf counts, resolves and shows must be what amprof recorded.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

use crate::util::*;
use amprof::capture::CaptureReader;

/// A capture with user and kernel work: the hotspot fixture (2 threads) next to `dd` copying
/// /dev/zero (its time goes to the kernel), in 1 s windows.
fn capture() -> &'static Path {
    static CAPTURE: OnceLock<PathBuf> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let _root = require_root();
        let capture = scratch("perf-export").join("mixed.data");
        let script = format!(
            "{} 2 2 & timeout 2 dd if=/dev/zero of=/dev/null bs=1M; wait",
            hotspot().display()
        );
        let output = amprof()
            .args(["record", "-q", "-F", "499", "--window", "1s", "-o"])
            .arg(&capture)
            .args(["--", "sh", "-c", &script])
            .output()
            .unwrap();
        assert_ok(&output);
        capture
    })
}

/// Converts `capture` to perf.data in `dir`, with extra `report` arguments.
fn convert(capture: &Path, dir: &str, extra: &[&str]) -> PathBuf {
    let out = scratch(dir).join("perf.data");
    let output = amprof()
        .args(["report", "--format", "perf", "-i"])
        .arg(capture)
        .arg("-o")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    assert_ok(&output);
    out
}

/// Runs perf with `args`; fails the test if it fails.
fn perf(args: &[&str], file: &Path) -> Output {
    let output = Command::new("perf")
        .args(args)
        .arg("-i")
        .arg(file)
        .output()
        .expect("perf runs (install linux-perf: .ci/setup)");
    assert!(
        output.status.success(),
        "perf {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// perf's stdout, after checking that it had nothing to warn about.
fn perf_quietly(args: &[&str], file: &Path) -> String {
    let output = perf(args, file);
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "",
        "perf {args:?} warned"
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A sample as perf and the capture see it: time (ns), thread, CPU.
type TimedSample = (u64, u32, u32);

/// Every sample perf reads, sorted.
fn perf_samples(file: &Path) -> Vec<TimedSample> {
    let text = perf_quietly(&["script", "-F", "tid,cpu,time", "--ns"], file);
    let mut samples: Vec<TimedSample> = text
        .lines()
        .map(|line| {
            // "  6495 [000]  3384.356646610: "
            let mut fields = line.split_whitespace();
            let tid = fields.next().unwrap().parse().unwrap();
            let cpu = fields
                .next()
                .unwrap()
                .trim_matches(['[', ']'])
                .parse()
                .unwrap();
            let (secs, nanos) = fields
                .next()
                .unwrap()
                .trim_end_matches(':')
                .split_once('.')
                .unwrap();
            let time = secs.parse::<u64>().unwrap() * 1_000_000_000 + nanos.parse::<u64>().unwrap();
            (time, tid, cpu)
        })
        .collect();
    samples.sort_unstable();
    samples
}

/// Every sample of the capture's windows, sorted, and the windows' `[start, end)`.
fn capture_samples(capture: &Path) -> (Vec<TimedSample>, Vec<(u64, u64)>) {
    let windows = CaptureReader::open(capture).unwrap().read_all().unwrap();
    let mut samples = Vec::new();
    for window in &windows {
        let mut time = window.start_ns;
        for (i, delta) in window.sample_time_deltas.iter().enumerate() {
            time += delta;
            samples.push((time, window.sample_tids[i], window.sample_cpus[i]));
        }
    }
    samples.sort_unstable();
    let bounds = windows.iter().map(|w| (w.start_ns, w.end_ns)).collect();
    (samples, bounds)
}

/// Self samples per `[k] symbol` / `[.] symbol`, as `perf report` counts them.
fn perf_self_counts(file: &Path, extra: &[&str]) -> BTreeMap<String, u64> {
    let mut args = vec![
        "report",
        "--stdio",
        "--no-children",
        "-g",
        "none",
        "--sort",
        "sym",
        "-F",
        "sample,sym",
    ];
    args.extend_from_slice(extra);
    perf_quietly(&args, file)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (count, symbol) = l.trim().split_once(char::is_whitespace).unwrap();
            (symbol.trim().to_string(), count.parse().unwrap())
        })
        .collect()
}

/// The function with the most self samples among those `keep` accepts, from a JSON summary.
fn top_self(summary: &serde_json::Value, keep: impl Fn(&str) -> bool) -> (String, u64) {
    let top = summary["top_self"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| keep(f["module"].as_str().unwrap()))
        .expect("a function");
    (
        top["function"].as_str().unwrap().to_string(),
        top["samples"].as_u64().unwrap(),
    )
}

#[test]
fn perf_reads_every_sample_with_its_time_thread_and_cpu_without_a_warning() {
    let file = convert(capture(), "perf-samples", &[]);
    let (expected, windows) = capture_samples(capture());
    let samples = perf_samples(&file);
    // Fewer on a machine busy with other work: a command's samples are its CPU time.
    assert!(samples.len() > 100, "{} samples", samples.len());
    assert_eq!(
        samples.len() as u64,
        summary(capture(), &[])["totals"]["samples"]
    );
    assert_eq!(
        samples, expected,
        "perf's (time, tid, cpu) are the capture's"
    );
    for (time, _, _) in &samples {
        assert!(
            windows
                .iter()
                .any(|(start, end)| start <= time && time < end),
            "sample at {time} ns is in no window"
        );
    }
    // The default report, call graphs and all, has nothing to warn about either.
    let report = perf_quietly(&["report", "--stdio"], &file);
    assert!(report.contains("hot_a"), "{report}");
}

#[test]
fn perf_resolves_the_same_top_user_and_kernel_functions_as_amprof() {
    let file = convert(capture(), "perf-symbols", &[]);
    let summary = summary(capture(), &[]);
    let counts = perf_self_counts(&file, &[]);
    let (user, user_samples) = top_self(&summary, |m| m != "[kernel.kallsyms]");
    let (kernel, kernel_samples) = top_self(&summary, |m| m == "[kernel.kallsyms]");
    assert_eq!(user, "hot_a", "the fixture's hottest function");
    // perf resolves from the MMAP2 records and the binaries on disk, amprof from its capture:
    // they must agree on where each sample was.
    assert_eq!(
        counts.get(&format!("[.] {user}")),
        Some(&user_samples),
        "{counts:?}"
    );
    assert_eq!(
        counts.get(&format!("[k] {kernel}")),
        Some(&kernel_samples),
        "{counts:?}"
    );
    let perf_top_kernel = counts
        .iter()
        .filter(|(s, _)| s.starts_with("[k] "))
        .max_by_key(|(_, n)| **n)
        .unwrap();
    assert_eq!(perf_top_kernel.0, &format!("[k] {kernel}"));
}

#[test]
fn the_header_names_host_kernel_cpus_command_and_clock() {
    let file = convert(capture(), "perf-header", &[]);
    let header = perf_quietly(&["report", "--header-only"], &file);
    let meta = CaptureReader::open(capture()).unwrap().meta().clone();
    for line in [
        format!("# hostname : {}", meta.hostname),
        format!("# os release : {}", meta.kernel_release),
        format!("# arch : {}", meta.arch),
        format!("# nrcpus online : {}", meta.cpus),
        format!("# cmdline : {}", meta.command_line.join(" ")),
        "# clockid: monotonic (1)".to_string(),
    ] {
        assert!(header.contains(&line), "no `{line}` in\n{header}");
    }
    assert!(header.contains("name = cpu-clock"), "{header}");
    assert!(header.contains("sample_freq } = 499"), "{header}");
    assert!(header.contains("# time of first sample"), "{header}");
}

#[test]
fn perf_lists_the_real_build_ids() {
    let file = convert(capture(), "perf-buildids", &[]);
    let listed = perf_quietly(&["buildid-list"], &file);
    let build_id_of = |args: &[&str]| {
        let output = Command::new("perf").args(args).output().unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    let hotspot_id = build_id_of(&["buildid-list", "-i", hotspot().to_str().unwrap()]);
    assert_eq!(hotspot_id.len(), 40, "{hotspot_id}");
    assert!(
        listed.contains(&format!("{hotspot_id} {}", hotspot().display())),
        "{listed}"
    );
    let kernel_id = build_id_of(&["buildid-list", "-k"]);
    assert!(
        listed.contains(&format!("{kernel_id} [kernel.kallsyms]")),
        "{listed}"
    );
    // Every listed file has the build-id perf itself reads from it.
    for line in listed.lines() {
        let (id, path) = line.split_once(' ').unwrap();
        if path.starts_with('/') && Path::new(path).exists() {
            assert_eq!(build_id_of(&["buildid-list", "-i", path]), id, "{path}");
        }
    }
}

#[test]
fn window_and_process_selection_apply() {
    let all = summary(capture(), &[]);
    let pid = all["top_processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hotspot")
        .unwrap()["pid"]
        .to_string();
    for extra in [
        vec!["--window", "1"],
        vec!["--comm", "dd"],
        vec!["--window", "0..1", "--pid", pid.as_str()],
    ] {
        let file = convert(capture(), "perf-selection", &extra);
        let expected = summary(capture(), &extra)["totals"]["samples"]
            .as_u64()
            .unwrap();
        assert!(expected > 0, "{extra:?}");
        assert_eq!(perf_samples(&file).len() as u64, expected, "{extra:?}");
    }
    let output = amprof()
        .args(["report", "--format", "perf", "--window", "9", "-i"])
        .arg(capture())
        .arg("-o")
        .arg(scratch("perf-no-window").join("perf.data"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn standard_output_is_refused_because_perf_data_needs_seeking() {
    let output = amprof()
        .args(["report", "--format", "perf", "-o", "-", "-i"])
        .arg(capture())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("seekable file"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// Binaries deleted, or replaced by another build, after recording: the conversion works, and
/// perf shows their frames as unknown instead of failing, or naming the wrong functions.
#[test]
fn binaries_gone_or_replaced_since_recording_show_as_unknown() {
    let _root = require_root();
    for (case, replace) in [("deleted", false), ("replaced", true)] {
        let dir = scratch(&format!("perf-{case}"));
        let binary = dir.join("doomed");
        std::fs::copy(hotspot(), &binary).unwrap();
        let capture = dir.join("doomed.data");
        let output = amprof()
            .args(["record", "-q", "-F", "499", "-o"])
            .arg(&capture)
            .arg("--")
            .arg(&binary)
            .arg("1")
            .output()
            .unwrap();
        assert_ok(&output);
        assert!(self_samples(&summary(&capture, &[]), "hot_a") > 0);
        std::fs::remove_file(&binary).unwrap();
        if replace {
            // Another program where the fixture was: same path, different build-id.
            compile_c_to("hotspot", &["-O2"], &binary);
        }
        let file = convert(&capture, &format!("perf-{case}-out"), &[]);
        let counts = perf_self_counts(&file, &["--comm", "doomed"]);
        assert!(!counts.is_empty(), "{case}: no samples");
        assert!(
            counts.keys().all(|s| !s.contains("hot_")),
            "{case}: perf named functions of a binary it does not have: {counts:?}"
        );
        let total: u64 = counts.values().sum();
        let unknown: u64 = counts
            .iter()
            .filter(|(s, _)| s.starts_with("[.] 0x"))
            .map(|(_, n)| n)
            .sum();
        assert!(unknown * 2 > total, "{case}: {counts:?}");
    }
}

/// Compiles `tests/fixtures/NAME.c` with `flags` into `out`.
fn compile_c_to(name: &str, flags: &[&str], out: &Path) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.c"));
    let status = Command::new("cc")
        .args(flags)
        .args(["-pthread", "-o"])
        .arg(out)
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A process that execs keeps its pid: perf must see the old program's samples under the old
/// name and binary, and the new program's under the new ones.
#[test]
fn an_exec_shows_as_a_new_program_under_the_same_pid() {
    let _root = require_root();
    let capture = scratch("perf-exec").join("exec.data");
    let script = format!(
        "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exec {} 1",
        hotspot().display()
    );
    let output = amprof()
        .args(["record", "-q", "-F", "499", "-o"])
        .arg(&capture)
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_ok(&output);
    let file = convert(&capture, "perf-exec-out", &[]);
    let text = perf_quietly(
        &["script", "-F", "comm,pid,time,ip,sym,dso", "-G", "--ns"],
        &file,
    );
    // "  hotspot 12988  3593.363361000:  55c41fc841fa hot_a (/path/hotspot)"
    let mut by_pid: BTreeMap<u32, Vec<(String, String)>> = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [comm, pid, _time, _ip, rest @ ..] = fields.as_slice() else {
            panic!("{line}");
        };
        by_pid
            .entry(pid.parse().unwrap())
            .or_default()
            .push((comm.to_string(), rest.join(" ")));
    }
    let (pid, samples) = by_pid
        .iter()
        .find(|(_, s)| s.iter().any(|(comm, _)| comm == "sh"))
        .expect("samples of the shell");
    // amprof's child is `amprof` until it execs the shell, which execs hotspot.
    let first_sh = samples.iter().position(|(comm, _)| comm == "sh").unwrap();
    let first_hotspot = samples
        .iter()
        .position(|(comm, _)| comm == "hotspot")
        .unwrap_or_else(|| panic!("pid {pid} never became hotspot: {samples:?}"));
    let (before, after) = (&samples[first_sh..first_hotspot], &samples[first_hotspot..]);
    assert!(
        before.len() > 5 && after.len() > 20,
        "{} / {}",
        before.len(),
        after.len()
    );
    assert!(before.iter().all(|(comm, _)| comm == "sh"), "{before:?}");
    assert!(
        before
            .iter()
            .any(|(_, frame)| frame.contains("/usr/bin/dash")),
        "the shell's own code: {before:?}"
    );
    assert!(after.iter().all(|(comm, _)| comm == "hotspot"), "{after:?}");
    let hot = after
        .iter()
        .filter(|(_, frame)| frame.starts_with("hot_a ") || frame.starts_with("hot_b "))
        .count();
    assert!(hot * 10 > after.len() * 8, "{hot} of {}", after.len());
    // As perf records an exec: a COMM flagged exec, then the new program's mappings.
    let events = perf_quietly(
        &["script", "--show-task-events", "--show-mmap-events"],
        &file,
    );
    let exec = format!("PERF_RECORD_COMM exec: hotspot:{pid}/{pid}");
    let at = events.find(&exec).unwrap_or_else(|| panic!("no `{exec}`"));
    assert!(events[at..].contains(&format!("PERF_RECORD_MMAP2 {pid}/{pid}")));
    assert!(events[at..].contains(&hotspot().display().to_string()));
}
