//! `amprof push otlp --dry-run` of a capture with off-CPU samples: the requests it writes, as
//! they would go on the wire (gzip, protobuf), decoded with the official OTLP types. No network:
//! the dry run writes the requests instead of sending them.

use std::{io::Read as _, path::Path};

use amprof::capture::{
    format::{OffCpuReason, Window},
    testing::{WindowBuilder, meta, write_capture},
};
use opentelemetry_proto::tonic::{
    collector::profiles::v1development::ExportProfilesServiceRequest, common::v1::any_value::Value,
    profiles::v1development as otlp,
};
use prost::Message as _;

use crate::util::{amprof, assert_ok, scratch};

/// Window `index`: process 100 (`web`, one thread) runs `work` and blocks in `read`; process 200 (`db`)
/// runs `query` and waits for a CPU in `lock`.
fn window(index: u64) -> Window {
    let mut w = WindowBuilder::new(index);
    let web = w.process(100, "web");
    let db = w.process(200, "db");
    w.thread(201, db, "db-worker");
    let [work, read, query, lock] = ["work", "read", "query", "lock"].map(|f| w.function(f));
    let [work, read, query, lock] =
        [(0x10, work), (0x20, read), (0x30, query), (0x40, lock)].map(|(a, f)| w.location(a, &[f]));
    let web_on = w.stack(web, &[work], 0);
    let web_off = w.stack(web, &[read, work], 0);
    let db_on = w.stack(db, &[query], 0);
    let db_off = w.stack(db, &[lock, query], 0);
    w.sample(1_000, 100, 0, web_on);
    w.sample(2_000, 201, 1, db_on);
    w.off_cpu_sample(3_000, 100, 0, web_off, 7_000_000, OffCpuReason::Blocked);
    w.sample(4_000, 100, 0, web_on);
    w.off_cpu_sample(5_000, 201, 1, db_off, 250_000, OffCpuReason::Runnable);
    w.off_cpu_sample(6_000, 100, 1, web_off, 11_000_000, OffCpuReason::Blocked);
    w.build()
}

/// The requests `push otlp --dry-run` writes for `capture`, with `extra` arguments.
fn dry_run(capture: &Path, dir: &Path, extra: &[&str]) -> Vec<ExportProfilesServiceRequest> {
    let mut command = amprof();
    command.args(["push", "otlp", "-q", "--dry-run", "-o"]);
    command.arg(dir).arg("-i").arg(capture).args(extra);
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    assert_ok(&command.output().unwrap());
    let mut bodies: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "body"))
        .collect();
    bodies.sort();
    bodies
        .iter()
        .map(|path| {
            let headers = std::fs::read_to_string(path.with_extension("headers")).unwrap();
            assert!(headers.contains("content-encoding: gzip"), "{headers}");
            let mut protobuf = Vec::new();
            flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
                .read_to_end(&mut protobuf)
                .unwrap();
            ExportProfilesServiceRequest::decode(protobuf.as_slice()).unwrap()
        })
        .collect()
}

/// A profile as text: its types, then one line per sample (frames leaf first, attributes,
/// timestamps from the window's start, values), sorted.
fn describe(request: &ExportProfilesServiceRequest, profile: &otlp::Profile) -> Vec<String> {
    let d = request.dictionary.as_ref().unwrap();
    let s = |i: i32| d.string_table[i as usize].as_str();
    let value_type = |t: &Option<otlp::ValueType>| {
        t.as_ref()
            .map(|t| format!("{}/{}", s(t.type_strindex), s(t.unit_strindex)))
    };
    let mut lines = Vec::new();
    for sample in &profile.samples {
        let frames: Vec<&str> = d.stack_table[sample.stack_index as usize]
            .location_indices
            .iter()
            .flat_map(|&l| &d.location_table[l as usize].lines)
            .map(|line| s(d.function_table[line.function_index as usize].name_strindex))
            .collect();
        let attributes: Vec<String> = sample
            .attribute_indices
            .iter()
            .map(|&i| {
                let a = &d.attribute_table[i as usize];
                let value = match a.value.as_ref().and_then(|v| v.value.clone()) {
                    Some(Value::StringValue(v)) => v,
                    Some(Value::IntValue(v)) => v.to_string(),
                    other => format!("{other:?}"),
                };
                format!("{}={value}", s(a.key_strindex))
            })
            .collect();
        let times: Vec<u64> = sample
            .timestamps_unix_nano
            .iter()
            .map(|t| t - profile.time_unix_nano)
            .collect();
        lines.push(format!(
            "{} {} at {times:?} values {:?}",
            frames.join(";"),
            attributes.join(" "),
            sample.values
        ));
    }
    lines.sort();
    lines.insert(
        0,
        format!(
            "{:?} period {:?} {}",
            value_type(&profile.sample_type),
            value_type(&profile.period_type),
            profile.period
        ),
    );
    lines
}

fn pid(resource: &otlp::ResourceProfiles) -> i64 {
    resource
        .resource
        .iter()
        .flat_map(|r| &r.attributes)
        .find(|a| a.key == "process.pid")
        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            Value::IntValue(pid) => Some(*pid),
            _ => None,
        })
        .unwrap()
}

#[test]
fn off_cpu_samples_are_pushed_as_off_cpu_profiles() {
    let dir = scratch("push-otlp-off-cpu");
    let capture = dir.join("off-cpu.data");
    let meta = amprof::capture::format::Meta {
        off_cpu_period_ns: 1_000_000,
        ..meta()
    };
    write_capture(&capture, &meta, [window(0), window(1)]).unwrap();

    let requests = dry_run(&capture, &dir.join("all"), &[]);
    assert_eq!(requests.len(), 1, "two small windows, one request");
    let request = &requests[0];
    // Per window and process: its on-CPU profile, then its off-CPU one.
    let mut profiles = Vec::new();
    for resource in &request.resource_profiles {
        for profile in &resource.scope_profiles[0].profiles {
            profiles.push((pid(resource), describe(request, profile)));
        }
    }
    let web_on = vec![
        "Some(\"samples/count\") period Some(\"cpu/nanoseconds\") 10101010".to_string(),
        "work thread.id=100 thread.name=web cpu.logical_number=0 at [1000, 4000] values []".into(),
    ];
    let web_off = vec![
        "Some(\"off_cpu/nanoseconds\") period None 0".to_string(),
        "read;work thread.id=100 thread.name=web cpu.logical_number=0 \
         amprof.off_cpu.reason=blocked at [3000] values [7000000]"
            .into(),
        "read;work thread.id=100 thread.name=web cpu.logical_number=1 \
         amprof.off_cpu.reason=blocked at [6000] values [11000000]"
            .into(),
    ];
    let db_on = vec![
        "Some(\"samples/count\") period Some(\"cpu/nanoseconds\") 10101010".to_string(),
        "query thread.id=201 thread.name=db-worker cpu.logical_number=1 at [2000] values []".into(),
    ];
    let db_off = vec![
        "Some(\"off_cpu/nanoseconds\") period None 0".to_string(),
        "lock;query thread.id=201 thread.name=db-worker cpu.logical_number=1 \
         amprof.off_cpu.reason=runnable at [5000] values [250000]"
            .into(),
    ];
    // Both windows (one resource per process: the windows' profiles follow one another).
    let expected = vec![
        (100, web_on.clone()),
        (100, web_off.clone()),
        (100, web_on.clone()),
        (100, web_off.clone()),
        (200, db_on.clone()),
        (200, db_off.clone()),
        (200, db_on),
        (200, db_off),
    ];
    assert_eq!(profiles, expected);

    // Off-CPU time adds up to the capture's (Stack.off_cpu_ns) per window.
    let total: i64 = request
        .resource_profiles
        .iter()
        .flat_map(|r| &r.scope_profiles[0].profiles)
        .flat_map(|p| &p.samples)
        .flat_map(|s| &s.values)
        .sum();
    let in_capture: u64 = [window(0), window(1)]
        .iter()
        .flat_map(|w| &w.stacks)
        .map(|s| s.off_cpu_ns)
        .sum();
    assert_eq!(total as u64, in_capture);

    // One process: its off-CPU samples stay off-CPU samples, the other's are gone.
    let requests = dry_run(&capture, &dir.join("web"), &["--pid", "100"]);
    let request = &requests[0];
    assert_eq!(request.resource_profiles.len(), 1);
    let profiles: Vec<Vec<String>> = request.resource_profiles[0].scope_profiles[0]
        .profiles
        .iter()
        .map(|p| describe(request, p))
        .collect();
    assert_eq!(profiles, [web_on.clone(), web_off.clone(), web_on, web_off]);
}
