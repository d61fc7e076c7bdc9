//! `amprof report --format pprof`: the profile holds every sample of the capture, named as
//! `report` names it, with its labels, times, mappings and build-ids, and Google's own pprof
//! (`go tool pprof`) reads it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use crate::pprof_reader as pprof;
use crate::util::*;

/// One capture of the hotspot fixture (2 threads, 2 s, 1 s windows at 499 Hz), made once.
fn capture() -> &'static Path {
    static CAPTURE: OnceLock<PathBuf> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let _root = require_root();
        let capture = scratch("pprof-export").join("hotspot.data");
        record_hotspot(&capture, &["-F", "499", "--window", "1s"], &["2", "2"]);
        capture
    })
}

/// Google's pprof, built once from Debian's golang-github-google-pprof-dev (offline).
fn go_pprof() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-pprof");
        let binary = dir.join("pprof");
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg("github.com/google/pprof")
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOCACHE", dir.join("cache"))
            .env("GOENV", "off")
            .env("GOPROXY", "off")
            .env_remove("GOFLAGS")
            .status()
            .expect("go runs (install golang-go and golang-github-google-pprof-dev: .ci/setup)");
        assert!(status.success(), "building github.com/google/pprof");
        binary
    })
}

/// Exports `capture()` with `extra` args to a fresh file and decodes it.
fn export(name: &str, extra: &[&str]) -> (PathBuf, pprof::Profile) {
    let file = scratch(name).join("cpu.pprof");
    let output = amprof()
        .args(["report", "--format", "pprof", "-i"])
        .arg(capture())
        .arg("-o")
        .arg(&file)
        .args(extra)
        .output()
        .unwrap();
    assert_ok(&output);
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(&[0x1f, 0x8b]), "the file is gzipped");
    (file.clone(), pprof::decode(&bytes))
}

/// `report --format folded` of `capture()` with `extra` args.
fn folded(extra: &[&str]) -> std::collections::BTreeMap<String, u64> {
    let output = amprof()
        .args(["report", "--format", "folded", "-i"])
        .arg(capture())
        .args(extra)
        .output()
        .unwrap();
    assert_ok(&output);
    pprof::parse_folded(&String::from_utf8(output.stdout).unwrap())
}

/// The build-id `readelf` finds in `binary`.
fn build_id(binary: &Path) -> String {
    let output = Command::new("readelf")
        .arg("-n")
        .arg(binary)
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("the fixture has a build-id")
        .trim()
        .to_string()
}

#[test]
fn the_profile_holds_every_sample_with_its_labels_times_and_build_ids() {
    let (_, profile) = export("pprof-all", &[]);
    assert_eq!(
        pprof::sample_types(&profile),
        [
            ("cpu-samples".into(), "count".into()),
            ("cpu-time".into(), "nanoseconds".into())
        ]
    );
    let period_type = profile.period_type.expect("a period type");
    assert_eq!(pprof::string(&profile, period_type.r#type), "cpu-time");
    assert_eq!(pprof::string(&profile, period_type.unit), "nanoseconds");
    assert_eq!(profile.period, 1_000_000_000 / 499);

    // Time and duration: those of the windows, on the Unix epoch clock.
    let windows = pprof::windows(capture());
    let (first, last) = (windows.first().unwrap(), windows.last().unwrap());
    assert_eq!(profile.time_nanos, first.1);
    assert_eq!(profile.duration_nanos, last.2 - first.1);

    // Every sample, with the frames `report` names, and nothing else.
    let total: usize = windows.iter().map(|w| w.3).sum();
    assert!(total > 500, "{total} samples in 2 s at 499 Hz");
    assert_eq!(profile.samples.len(), total, "one pprof sample per sample");
    assert_eq!(pprof::folded(&profile), folded(&[]));

    // Labels on every sample; times within the profile.
    let mut threads = std::collections::BTreeSet::new();
    for sample in &profile.samples {
        assert_eq!(sample.values, [1, profile.period]);
        let pid: u32 = pprof::label(&profile, sample, "process_id")
            .expect("process_id")
            .parse()
            .unwrap();
        let tid: u32 = pprof::label(&profile, sample, "thread id")
            .expect("thread id")
            .parse()
            .unwrap();
        let cpu: u32 = pprof::label(&profile, sample, "cpu")
            .expect("cpu")
            .parse()
            .unwrap();
        assert!(cpu < 1024);
        let time = pprof::num_label(&profile, sample, "end_timestamp_ns").expect("a timestamp");
        assert!(
            (profile.time_nanos..profile.time_nanos + profile.duration_nanos).contains(&time),
            "sample time {time} outside the profile"
        );
        if pprof::label(&profile, sample, "process_name") == Some("hotspot") {
            // (Not always `hotspot`: a thread first seen before the exec keeps its old name.)
            assert!(pprof::label(&profile, sample, "thread name").is_some_and(|n| !n.is_empty()));
            threads.insert((pid, tid));
        }
    }
    assert_eq!(threads.len(), 2, "both hotspot threads: {threads:?}");

    // Functions with their source file and line; the binary's mapping with its build-id.
    let hot_a = profile
        .functions
        .iter()
        .find(|f| pprof::string(&profile, f.name) == "hot_a")
        .expect("a function hot_a");
    assert!(pprof::string(&profile, hot_a.filename).ends_with("hotspot.c"));
    assert!(
        profile
            .locations
            .iter()
            .flat_map(|l| &l.lines)
            .any(|l| l.function_id == hot_a.id && l.line > 0),
        "hot_a has line numbers"
    );
    let fixture = hotspot().canonicalize().unwrap();
    let mapping = profile
        .mappings
        .iter()
        .find(|m| Path::new(pprof::string(&profile, m.filename)) == fixture)
        .expect("a mapping of the fixture");
    assert_eq!(
        pprof::string(&profile, mapping.build_id),
        build_id(&fixture)
    );
    assert!(mapping.memory_start < mapping.memory_limit);
    assert!(
        profile.mappings.iter().all(|m| m.has_functions),
        "mappings say they are symbolized, so that readers keep amprof's names"
    );
    assert!(mapping.has_filenames && mapping.has_line_numbers);
}

#[test]
fn go_tool_pprof_reads_it() {
    let (file, _) = export("pprof-go", &[]);
    let top = Command::new(go_pprof())
        .args(["-top", "-nodecount=5"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&top.stdout);
    let stderr = String::from_utf8_lossy(&top.stderr);
    assert!(top.status.success(), "pprof -top: {stderr}");
    assert!(stdout.contains("Type: cpu-time"), "{stdout}");
    let hot: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .take(2)
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(hot, ["hot_a", "hot_b"], "{stdout}");
    assert!(
        !stderr.contains("symbolization"),
        "pprof re-symbolized: {stderr}"
    );
    let raw = Command::new(go_pprof())
        .arg("-raw")
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&raw.stdout);
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert!(text.contains("PeriodType: cpu-time nanoseconds"), "{text}");
    assert!(
        text.contains("cpu-samples/count cpu-time/nanoseconds"),
        "{text}"
    );
    assert!(text.contains("process_name:[hotspot]"), "{text}");
    let tags = Command::new(go_pprof())
        .args(["-tags", "-tagfocus=process_name=hotspot"])
        .arg(&file)
        .output()
        .unwrap();
    let tags = String::from_utf8_lossy(&tags.stdout);
    for label in [
        "process_id:",
        "thread id:",
        "thread name:",
        "cpu:",
        "end_timestamp_ns:",
    ] {
        assert!(tags.contains(label), "no {label} in pprof -tags: {tags}");
    }
}

#[test]
fn windows_and_processes_narrow_the_profile() {
    let summary = summary(capture(), &[]);
    let pid = summary["top_processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hotspot")
        .expect("hotspot was sampled")["pid"]
        .to_string();
    let args = ["--window", "1", "--pid", pid.as_str()];
    let (_, profile) = export("pprof-narrow", &args);
    let window = pprof::windows(capture())
        .into_iter()
        .find(|w| w.0 == 1)
        .unwrap();
    assert_eq!(profile.time_nanos, window.1);
    assert_eq!(profile.duration_nanos, window.2 - window.1);
    assert!(!profile.samples.is_empty());
    assert!(
        profile
            .samples
            .iter()
            .all(|s| pprof::label(&profile, s, "process_id") == Some(pid.as_str()))
    );
    assert_eq!(pprof::folded(&profile), folded(&args));
}

#[test]
fn bad_selections_and_outputs_fail_cleanly() {
    let dir = scratch("pprof-bad");
    let file = dir.join("none.pprof");
    let output = amprof()
        .args(["report", "--format", "pprof", "--window", "99", "-i"])
        .arg(capture())
        .arg("-o")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no window in 99..99"), "{stderr}");
    assert!(!file.exists(), "no file for a failed export");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "no temporary left"
    );

    let output = amprof()
        .args(["report", "--format", "pprof", "-i"])
        .arg(dir.join("missing.data"))
        .arg("-o")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
}

#[test]
fn inlined_frames_are_locations_of_their_own_at_one_address() {
    let _root = require_root();
    let inlined = compile_c("inlined", &["-O2"]);
    let dir = scratch("pprof-inline");
    let capture = dir.join("inline.data");
    let output = amprof()
        .args(["record", "-q", "--inline", "-F", "499", "-o"])
        .arg(&capture)
        .arg("--")
        .arg(&inlined)
        .arg("1")
        .output()
        .unwrap();
    assert_ok(&output);
    let file = dir.join("inline.pprof");
    let output = amprof()
        .args(["report", "--format", "pprof", "-i"])
        .arg(&capture)
        .arg("-o")
        .arg(&file)
        .output()
        .unwrap();
    assert_ok(&output);
    let profile = pprof::decode(&std::fs::read(&file).unwrap());
    let output = amprof()
        .args(["report", "--format", "folded", "-i"])
        .arg(&capture)
        .output()
        .unwrap();
    assert_ok(&output);
    let folded = pprof::parse_folded(&String::from_utf8(output.stdout).unwrap());
    assert_eq!(pprof::folded(&profile), folded);

    let function = |name: &str| {
        profile
            .functions
            .iter()
            .find(|f| pprof::string(&profile, f.name) == name)
            .unwrap_or_else(|| panic!("a function {name}"))
            .id
    };
    let (inner, outer) = (function("inlined_square"), function("outer_function"));
    let locations: std::collections::BTreeMap<u64, _> =
        profile.locations.iter().map(|l| (l.id, l)).collect();
    // In a stack, the inlined frame comes right before the function it was inlined into, at
    // the same address, in the same mapping.
    let pairs = profile
        .samples
        .iter()
        .flat_map(|s| s.location_ids.windows(2))
        .filter(|pair| locations[&pair[0]].lines[0].function_id == inner)
        .inspect(|pair| {
            let (a, b) = (locations[&pair[0]], locations[&pair[1]]);
            assert_eq!(b.lines[0].function_id, outer);
            assert_eq!((a.address, a.mapping_id), (b.address, b.mapping_id));
            assert!(a.lines[0].line > 0 && b.lines[0].line > 0, "source lines");
        })
        .count();
    assert!(pairs > 0, "samples in inlined_square");
}
