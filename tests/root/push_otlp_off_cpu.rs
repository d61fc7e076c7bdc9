//! Off-CPU samples pushed to the OTLP receiver that is not amprof's code (tests/otlp_receiver.py,
//! PyPI's `opentelemetry-proto`), over HTTP and gRPC: a profile of their own per window and
//! process, `off_cpu`/`nanoseconds`, one value per timestamp, the reason as a sample attribute.
//! The capture is built (no recording, no eBPF): this tier holds it for the receiver's Python
//! environment, which `.ci/setup` installs.

use serde_json::Value;

use crate::push_otlp::Receiver;
use crate::util::{amprof, assert_ok, scratch};
use amprof::capture::{
    format::{Meta, OffCpuReason, Window},
    testing::{WindowBuilder, meta, write_capture},
};

/// Window `index`: `app` (pid 300) runs `spin` twice and blocks in `poll`, 4 ms then 9 ms, and
/// waits 1 ms for a CPU in `spin`.
fn window(index: u64) -> Window {
    let mut w = WindowBuilder::new(index);
    let app = w.process(300, "app");
    let [spin, poll] = ["spin", "poll"].map(|f| w.function(f));
    let spin = w.location(0x100, &[spin]);
    let poll = w.location(0x200, &[poll]);
    let running = w.stack(app, &[spin], 0);
    let blocked = w.stack(app, &[poll, spin], 0);
    w.sample(10_000, 300, 0, running);
    w.off_cpu_sample(20_000, 300, 0, blocked, 4_000_000, OffCpuReason::Blocked);
    w.off_cpu_sample(30_000, 300, 1, running, 1_000_000, OffCpuReason::Runnable);
    w.sample(40_000, 300, 1, running);
    w.off_cpu_sample(50_000, 300, 1, blocked, 9_000_000, OffCpuReason::Blocked);
    w.build()
}

fn delivered(protocol: &str, scheme: &str) {
    let dir = scratch(&format!("push-otlp-off-cpu-{protocol}"));
    let capture = dir.join("capture.data");
    let meta = Meta {
        off_cpu_period_ns: 1_000_000,
        ..meta()
    };
    write_capture(&capture, &meta, [window(0), window(1)]).unwrap();
    let receiver = Receiver::start(&dir, protocol, &[]);
    let mut command = amprof();
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    let output = command
        .args(["push", "--to", "otlp", "-q", "-i"])
        .arg(&capture)
        .args(["--endpoint", &receiver.endpoint(scheme)])
        .args([
            "--protocol",
            if protocol == "grpc" {
                "grpc"
            } else {
                "http/protobuf"
            },
        ])
        .output()
        .unwrap();
    assert_ok(&output);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["errors"], serde_json::json!([]));
    let profiles = requests[0]["profiles"].as_array().unwrap();
    // Per window: the on-CPU profile, then the off-CPU one.
    assert_eq!(profiles.len(), 4);
    for (i, p) in profiles.iter().enumerate() {
        assert_eq!(p["resource"]["process.pid"], 300);
        let samples = p["samples"].as_array().unwrap();
        if i % 2 == 0 {
            assert_eq!(p["sample_type"], serde_json::json!(["samples", "count"]));
            let count: usize = samples
                .iter()
                .map(|s| s["timestamps"].as_array().unwrap().len())
                .sum();
            assert_eq!(count, 2);
            continue;
        }
        assert_eq!(
            p["sample_type"],
            serde_json::json!(["off_cpu", "nanoseconds"])
        );
        assert_eq!(p["period"], 0);
        let mut seen: Vec<(String, String, Vec<u64>)> = samples
            .iter()
            .map(|s| {
                let frames: Vec<&str> = s["frames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["name"].as_str().unwrap())
                    .collect();
                let values = s["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect();
                let reason = match &s["attributes"]["amprof.off_cpu.reason"] {
                    Value::String(r) => r.clone(),
                    other => panic!("no reason: {other}"),
                };
                (frames.join(";"), reason, values)
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                ("poll;spin".into(), "blocked".into(), vec![4_000_000]),
                ("poll;spin".into(), "blocked".into(), vec![9_000_000]),
                ("spin".into(), "runnable".into(), vec![1_000_000]),
            ]
        );
    }
}

#[test]
fn off_cpu_profiles_reach_an_http_receiver() {
    delivered("http", "http");
}

#[test]
fn off_cpu_profiles_reach_a_grpc_receiver() {
    delivered("grpc", "http");
}
