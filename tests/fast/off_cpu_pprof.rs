//! Off-CPU samples in pprof (`report --format pprof --event ...`) and in the Datadog upload
//! (`push --to datadog --dry-run`, which writes each request as it would be sent), from
//! captures built here, read back with libdd's protobuf types and taken apart as the Datadog
//! intake takes them (multipart, event.json, zstd pprof).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use amprof::capture::{
    Meta, Window,
    format::OffCpuReason,
    testing::{WindowBuilder, meta, write_capture},
};

use crate::{
    pprof_reader as pprof,
    util::{amprof, assert_ok, scratch},
};

/// 99 Hz, as [`meta`].
const PERIOD: i64 = 1_000_000_000 / 99;

fn off_cpu_meta() -> Meta {
    Meta {
        off_cpu_period_ns: 1_000_000,
        ..meta()
    }
}

/// Window `index` of process 10 (`app`, threads 10 and 11 `worker`): `main;run` on the CPU
/// 3 times; `main;wait` off it blocked 3 ms and runnable 2 ms; `main;sleep` off it only, 40 ms
/// (`off_cpu`: without the off-CPU samples, as a recording without `--off-cpu`).
fn window(index: u64, off_cpu: bool) -> Window {
    let mut w = WindowBuilder::new(index);
    let p = w.process(10, "app");
    w.thread(11, p, "worker");
    let [main, run, wait, sleep] = ["main", "run", "wait", "sleep"].map(|f| w.function(f));
    let l_main = w.location(0x100, &[main]);
    let l_run = w.location(0x200, &[run]);
    let l_wait = w.location(0x300, &[wait]);
    let l_sleep = w.location(0x400, &[sleep]);
    let s_run = w.stack(p, &[l_run, l_main], 0);
    let s_wait = w.stack(p, &[l_wait, l_main], 0);
    let s_sleep = w.stack(p, &[l_sleep, l_main], 0);
    w.sample(1_000, 10, 0, s_run);
    w.sample(3_000, 11, 1, s_run);
    w.sample(6_000, 10, 1, s_run);
    if off_cpu {
        w.off_cpu_sample(2_000, 11, 1, s_wait, 3_000_000, OffCpuReason::Blocked);
        w.off_cpu_sample(4_000, 10, 0, s_wait, 2_000_000, OffCpuReason::Runnable);
        w.off_cpu_sample(5_000, 11, 0, s_sleep, 40_000_000, OffCpuReason::Blocked);
    }
    w.build()
}

/// A capture of 2 windows, with off-CPU samples or without (and then recorded without).
fn capture(name: &str, off_cpu: bool) -> PathBuf {
    let path = scratch(name).join("capture.data");
    let meta = if off_cpu { off_cpu_meta() } else { meta() };
    write_capture(&path, &meta, (0..2).map(|i| window(i, off_cpu))).unwrap();
    path
}

fn report_pprof(capture: &Path, event: Option<&str>) -> pprof::Profile {
    let file = capture.with_file_name(format!("{}.pb.gz", event.unwrap_or("default")));
    let mut command = amprof();
    command
        .args(["report", "-q", "--format", "pprof", "-i"])
        .arg(capture)
        .arg("-o")
        .arg(&file);
    if let Some(event) = event {
        command.args(["--event", event]);
    }
    let output = command.output().unwrap();
    assert_ok(&output);
    pprof::decode(&std::fs::read(&file).unwrap())
}

fn types(profile: &pprof::Profile) -> Vec<(String, String)> {
    pprof::sample_types(profile)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|&(t, u)| (t.into(), u.into())).collect()
}

/// Per leaf function (`run`, `wait`, `sleep`) and off-CPU reason label, the sum of each value.
fn totals(profile: &pprof::Profile) -> BTreeMap<(String, Option<String>), Vec<i64>> {
    let mut totals: BTreeMap<(String, Option<String>), Vec<i64>> = BTreeMap::new();
    for sample in &profile.samples {
        let location = profile
            .locations
            .iter()
            .find(|l| l.id == sample.location_ids[0])
            .unwrap();
        let function = profile
            .functions
            .iter()
            .find(|f| f.id == location.lines[0].function_id)
            .unwrap();
        let key = (
            pprof::string(profile, function.name).to_string(),
            pprof::label(profile, sample, "off_cpu_reason").map(str::to_string),
        );
        let sum = totals
            .entry(key)
            .or_insert_with(|| vec![0; sample.values.len()]);
        for (s, v) in sum.iter_mut().zip(&sample.values) {
            *s += v;
        }
        // Every sample keeps its process, thread, CPU and time.
        for label in [
            "process_id",
            "process_name",
            "thread id",
            "thread name",
            "cpu",
        ] {
            assert!(pprof::label(profile, sample, label).is_some(), "{label}");
        }
        assert!(pprof::num_label(profile, sample, "end_timestamp_ns").is_some());
    }
    totals
}

fn key(leaf: &str, reason: Option<&str>) -> (String, Option<String>) {
    (leaf.into(), reason.map(str::to_string))
}

#[test]
fn report_pprof_gives_each_event_its_own_sample_types() {
    let capture = capture("off-cpu-report-pprof", true);

    // on-cpu (the default): the CPU profile of before, off-CPU samples left out.
    for event in [None, Some("on-cpu")] {
        let profile = report_pprof(&capture, event);
        assert_eq!(
            types(&profile),
            pairs(&[("cpu-samples", "count"), ("cpu-time", "nanoseconds")])
        );
        assert_eq!(profile.period, PERIOD);
        assert_eq!(
            totals(&profile),
            BTreeMap::from([(key("run", None), vec![6, 6 * PERIOD])])
        );
    }

    // off-cpu: its samples and time, with why, and no sampling period.
    let profile = report_pprof(&capture, Some("off-cpu"));
    assert_eq!(
        types(&profile),
        pairs(&[
            ("off-cpu-samples", "count"),
            ("off-cpu-time", "nanoseconds")
        ])
    );
    assert!(profile.period_type.is_none());
    assert_eq!(
        totals(&profile),
        BTreeMap::from([
            (key("sleep", Some("blocked")), vec![2, 80_000_000]),
            (key("wait", Some("blocked")), vec![2, 6_000_000]),
            (key("wait", Some("runnable")), vec![2, 4_000_000]),
        ])
    );
    // The time of an off-CPU sample is when its thread ran again.
    let realtime = off_cpu_meta().realtime_offset_ns;
    let mut times: Vec<i64> = profile
        .samples
        .iter()
        .map(|s| pprof::num_label(&profile, s, "end_timestamp_ns").unwrap() - realtime)
        .collect();
    times.sort();
    let start = amprof::capture::testing::START_NS as i64;
    let window = amprof::capture::testing::WINDOW_NS as i64;
    assert_eq!(
        times,
        [
            2_000,
            4_000,
            5_000,
            window + 2_000,
            window + 4_000,
            window + 5_000
        ]
        .map(|t| start + t)
    );

    // wall: both kinds apart, and their sum last (what pprof readers show by default).
    let profile = report_pprof(&capture, Some("wall"));
    assert_eq!(
        types(&profile),
        pairs(&[
            ("cpu-samples", "count"),
            ("cpu-time", "nanoseconds"),
            ("off-cpu-samples", "count"),
            ("off-cpu-time", "nanoseconds"),
            ("wall-time", "nanoseconds"),
        ])
    );
    assert_eq!(profile.period, PERIOD);
    assert_eq!(
        totals(&profile),
        BTreeMap::from([
            (key("run", None), vec![6, 6 * PERIOD, 0, 0, 6 * PERIOD]),
            (
                key("sleep", Some("blocked")),
                vec![0, 0, 2, 80_000_000, 80_000_000]
            ),
            (
                key("wait", Some("blocked")),
                vec![0, 0, 2, 6_000_000, 6_000_000]
            ),
            (
                key("wait", Some("runnable")),
                vec![0, 0, 2, 4_000_000, 4_000_000]
            ),
        ])
    );
}

/// One request `push --dry-run` wrote, taken apart.
struct Upload {
    event: serde_json::Value,
    profile: pprof::Profile,
}

/// Pushes `capture` to Datadog with `--dry-run` and takes apart each request written.
fn dry_run_uploads(capture: &Path) -> Vec<Upload> {
    let dir = capture.with_file_name("requests");
    let output = amprof()
        .args(["push", "--to", "datadog", "-q", "--dry-run", "-o"])
        .arg(&dir)
        .args(["--agent-url", "http://127.0.0.1:9", "-i"])
        .arg(capture)
        .env_remove("DD_API_KEY")
        .env_remove("DD_SERVICE")
        .env_remove("DD_TAGS")
        .output()
        .unwrap();
    assert_ok(&output);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "headers"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no request written");
    files
        .iter()
        .map(|file| {
            let headers = std::fs::read_to_string(file).unwrap();
            let content_type = headers
                .lines()
                .filter_map(|l| l.split_once(": "))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
                .expect("a content type")
                .1;
            let body = std::fs::read(file.with_extension("body")).unwrap();
            let parts = multipart(content_type, &body);
            let names: Vec<&str> = parts.iter().map(|(name, _)| name.as_str()).collect();
            assert_eq!(names, ["event", "profile.pprof"]);
            Upload {
                event: serde_json::from_slice(&parts[0].1).unwrap(),
                profile: pprof::decode(&parts[1].1),
            }
        })
        .collect()
}

/// The parts of a multipart body, `(name, data)`, as the intake reads them.
fn multipart(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = multer::parse_boundary(content_type).expect("a multipart boundary");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut form = multer::Multipart::with_reader(body, boundary);
        let mut parts = Vec::new();
        while let Some(field) = form.next_field().await.expect("a well-formed body") {
            let name = field.name().unwrap_or_default().to_string();
            parts.push((name, field.bytes().await.unwrap().to_vec()));
        }
        parts
    })
}

/// The keys of a JSON object.
fn keys(value: &serde_json::Value) -> Vec<&str> {
    value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn datadog_gets_off_cpu_time_as_wall_time() {
    let capture = capture("off-cpu-push-datadog", true);
    let uploads = dry_run_uploads(&capture);
    // One program, one window each: one upload per window.
    assert_eq!(uploads.len(), 2);
    for (index, upload) in uploads.iter().enumerate() {
        let profile = &upload.profile;
        assert_eq!(
            types(profile),
            pairs(&[
                ("cpu-samples", "count"),
                ("cpu-time", "nanoseconds"),
                ("wall-samples", "count"),
                ("wall-time", "nanoseconds"),
            ])
        );
        let period = profile.period_type.as_ref().unwrap();
        assert_eq!(pprof::string(profile, period.r#type), "cpu-time");
        assert_eq!(profile.period, PERIOD);
        // CPU time is on-CPU samples only; wall time is every sample's time, on the CPU or off.
        assert_eq!(
            totals(profile),
            BTreeMap::from([
                (key("run", None), vec![3, 3 * PERIOD, 3, 3 * PERIOD]),
                (key("sleep", Some("blocked")), vec![0, 0, 1, 40_000_000]),
                (key("wait", Some("blocked")), vec![0, 0, 1, 3_000_000]),
                (key("wait", Some("runnable")), vec![0, 0, 1, 2_000_000]),
            ])
        );
        let event = &upload.event;
        assert_eq!(event["family"], "native");
        assert_eq!(event["attachments"], serde_json::json!(["profile.pprof"]));
        let internal = &event["internal"]["amprof"];
        assert_eq!(internal["windows"], serde_json::json!([index]));
        assert_eq!(internal["samples"], 6);
        assert_eq!(internal["off_cpu_samples"], 3);
        assert_eq!(internal["off_cpu_lost"], 0);
        assert_eq!(
            event["info"]["profiler"]["settings"]["off_cpu_period_ns"],
            1_000_000
        );
    }
}

/// A capture recorded without `--off-cpu` uploads as it did before off-CPU samples existed: the
/// CPU profile, and no off-CPU keys in event.json.
#[test]
fn datadog_uploads_of_captures_without_off_cpu_are_unchanged() {
    let capture = capture("off-cpu-push-datadog-none", false);
    let uploads = dry_run_uploads(&capture);
    assert_eq!(uploads.len(), 2);
    for upload in &uploads {
        let profile = &upload.profile;
        assert_eq!(
            types(profile),
            pairs(&[("cpu-samples", "count"), ("cpu-time", "nanoseconds")])
        );
        assert_eq!(profile.period, PERIOD);
        assert_eq!(
            totals(profile),
            BTreeMap::from([(key("run", None), vec![3, 3 * PERIOD])])
        );
        assert_eq!(
            keys(&upload.event["internal"]["amprof"]),
            ["idle", "lost", "samples", "windows"]
        );
        assert_eq!(
            keys(&upload.event["info"]["profiler"]["settings"]),
            ["call_graph", "event", "frequency_hz", "window_ns"]
        );
    }
}

/// A window whose threads were only off the CPU is still uploaded (it is not `empty`).
#[test]
fn datadog_uploads_windows_of_off_cpu_samples_only() {
    let path = scratch("off-cpu-push-datadog-only").join("capture.data");
    let mut w = WindowBuilder::new(0);
    let p = w.process(10, "app");
    let f = w.function("sleep");
    let l = w.location(0x10, &[f]);
    let s = w.stack(p, &[l], 0);
    w.off_cpu_sample(5_000, 10, 0, s, 7_000_000, OffCpuReason::Runnable);
    write_capture(&path, &off_cpu_meta(), [w.build()]).unwrap();
    let uploads = dry_run_uploads(&path);
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        totals(&uploads[0].profile),
        BTreeMap::from([(key("sleep", Some("runnable")), vec![0, 0, 1, 7_000_000])])
    );
}
