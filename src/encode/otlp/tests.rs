use opentelemetry_proto::tonic::{common::v1::any_value, profiles::v1development as otlp};
use prost::Message as _;

use super::{
    profiles::{kind_profile_id, profile_id},
    *,
};
use crate::capture::{
    SampleKind,
    format::{ModuleKind, OffCpuReason, Process},
    testing::WindowBuilder,
};

fn meta() -> Meta {
    Meta {
        hostname: "box".into(),
        frequency_hz: 99,
        start_ns: 1_000,
        realtime_offset_ns: 1_700_000_000_000_000_000,
        ..Meta::default()
    }
}

/// A window with `processes` processes, each with one 2-frame stack hit `samples` times.
fn window(index: u64, processes: u32, samples: u32) -> Window {
    let mut w = WindowBuilder::at(index, 1_000 + index * 10, 1_000 + (index + 1) * 10);
    let app = w.module_with("/usr/bin/app", ModuleKind::File, &[0xab, 0xcd]);
    let main = w.function_in("main", "app.c");
    let mut offset = 0;
    for p in 0..processes {
        let process = w.process_with(Process {
            pid: 100 + p,
            name: format!("app{p}"),
            exe: "/usr/bin/app".into(),
            ..Process::default()
        });
        w.thread(100 + p, process, &format!("t{p}"));
        let mapping = w.mapping(process, app, 0x1000, 0x2000, 0);
        let named = w.location_in(mapping, 0x1010 + u64::from(p), &[main]);
        w.lines(named, &[(main, 7)]);
        let unnamed = w.location_in(mapping, 0x1800, &[]);
        let stack = w.stack(process, &[named, unnamed], 0);
        for _ in 0..samples {
            offset += 1;
            w.sample(offset, 100 + p, p % 2, stack);
        }
    }
    w.build()
}

fn encoder(max: usize) -> RequestEncoder {
    RequestEncoder::new(EncodeSettings {
        max_request_bytes: max,
        ..EncodeSettings::default()
    })
}

fn resolve(message: &ExportProfilesServiceRequest, stack: i32) -> Vec<String> {
    let d = message.dictionary.as_ref().unwrap();
    d.stack_table[stack as usize]
        .location_indices
        .iter()
        .flat_map(|&l| d.location_table[l as usize].lines.clone())
        .map(|line| {
            let f = &d.function_table[line.function_index as usize];
            d.string_table[f.name_strindex as usize].clone()
        })
        .collect()
}

#[test]
fn encodes_a_window_with_zero_entries_and_report_names() {
    let mut e = encoder(usize::MAX);
    assert!(e.push(&meta(), &window(0, 2, 3)).is_empty());
    let request = e.finish().unwrap();
    assert_eq!(request.windows, vec![0]);
    let m = &request.message;
    let d = m.dictionary.as_ref().unwrap();
    assert_eq!(d.string_table[0], "");
    assert_eq!(d.mapping_table[0], otlp::Mapping::default());
    assert_eq!(d.location_table[0], otlp::Location::default());
    assert_eq!(d.function_table[0], otlp::Function::default());
    assert_eq!(d.link_table[0], otlp::Link::default());
    assert_eq!(d.stack_table[0], otlp::Stack::default());
    assert_eq!(d.attribute_table[0], otlp::KeyValueAndUnit::default());
    assert_eq!(m.resource_profiles.len(), 2);
    let profile = &m.resource_profiles[0].scope_profiles[0].profiles[0];
    assert_eq!(profile.samples.len(), 1);
    assert_eq!(
        profile.samples[0].timestamps_unix_nano,
        vec![
            1_700_000_000_000_001_001,
            1_700_000_000_000_001_002,
            1_700_000_000_000_001_003
        ]
    );
    assert_eq!(profile.time_unix_nano, 1_700_000_000_000_001_000);
    assert_eq!(profile.duration_nano, 10);
    assert_eq!(profile.period, 1_000_000_000 / 99);
    assert_eq!(
        resolve(m, profile.samples[0].stack_index),
        vec!["main".to_string(), "app+0x800".to_string()]
    );
    // The same mapping in two processes is one entry; build-ids are attributes.
    assert_eq!(d.mapping_table.len(), 2);
    assert_eq!(d.mapping_table[1].attribute_indices.len(), 1);
}

#[test]
fn the_size_estimate_bounds_the_encoding_and_batches_split_by_window() {
    let one = {
        let mut e = encoder(usize::MAX);
        e.push(&meta(), &window(0, 3, 50));
        e.finish().unwrap().message.encoded_len()
    };
    // Room for about two windows: requests of two windows, none above the limit.
    let mut e = encoder(one * 2 + one / 2);
    let mut requests = Vec::new();
    for index in 0..5 {
        requests.extend(e.push(&meta(), &window(index, 3, 50)));
    }
    requests.extend(e.finish());
    let windows: Vec<Vec<u64>> = requests.iter().map(|r| r.windows.clone()).collect();
    assert!(windows.len() >= 2, "{windows:?}");
    assert_eq!(windows.concat(), vec![0, 1, 2, 3, 4]);
    for r in &requests {
        assert!(r.message.encoded_len() <= one * 2 + one / 2);
    }
}

#[test]
fn a_window_too_large_alone_is_split_by_process() {
    let mut e = encoder(1_000);
    let mut requests = e.push(&meta(), &window(7, 4, 40));
    requests.extend(e.finish());
    assert!(requests.len() > 1);
    let mut profiles = 0;
    for r in &requests {
        assert_eq!(r.windows, vec![7]);
        profiles += r.message.resource_profiles.len();
    }
    assert_eq!(profiles, 4);
}

/// `window(index, processes, samples)` with off-CPU samples in every process: per process
/// `p`, 3 ms blocked and 2 ms runnable in its stack on thread `100 + p`, and 1 ms blocked on
/// the same stack on CPU 1, at 2, 4 and 6 ns past `10·p` ns into the window.
fn window_with_off_cpu(index: u64, processes: u32, samples: u32) -> Window {
    let on_cpu = window(index, processes, samples);
    let mut w = WindowBuilder::at(index, on_cpu.start_ns, on_cpu.end_ns);
    *w.window_mut() = on_cpu;
    for p in 0..processes {
        let (stack, at) = (p, 10 * u64::from(p));
        w.off_cpu_sample(at + 2, 100 + p, 0, stack, 3_000_000, OffCpuReason::Blocked);
        w.off_cpu_sample(at + 4, 100 + p, 0, stack, 2_000_000, OffCpuReason::Runnable);
        w.off_cpu_sample(at + 6, 100 + p, 1, stack, 1_000_000, OffCpuReason::Blocked);
    }
    w.build()
}

fn encode_one(w: &Window) -> ExportProfilesServiceRequest {
    let mut e = encoder(usize::MAX);
    assert!(e.push(&meta(), w).is_empty());
    let message = e.finish().unwrap().message;
    // What a receiver sees: the official types decode what amprof encoded.
    ExportProfilesServiceRequest::decode(message.encode_to_vec().as_slice()).unwrap()
}

fn value_type(m: &ExportProfilesServiceRequest, t: Option<&otlp::ValueType>) -> String {
    let s = &m.dictionary.as_ref().unwrap().string_table;
    t.map_or("none".into(), |t| {
        format!(
            "{}/{}",
            s[t.type_strindex as usize], s[t.unit_strindex as usize]
        )
    })
}

/// A sample's attributes as `key=value` strings.
fn attributes(m: &ExportProfilesServiceRequest, sample: &otlp::Sample) -> Vec<String> {
    let d = m.dictionary.as_ref().unwrap();
    sample
        .attribute_indices
        .iter()
        .map(|&i| {
            let a = &d.attribute_table[i as usize];
            let value = match a.value.as_ref().and_then(|v| v.value.clone()) {
                Some(any_value::Value::StringValue(s)) => s,
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                other => format!("{other:?}"),
            };
            format!("{}={value}", d.string_table[a.key_strindex as usize])
        })
        .collect()
}

#[test]
fn off_cpu_samples_get_a_profile_of_their_own_per_process() {
    let w = window_with_off_cpu(0, 2, 3);
    let m = encode_one(&w);
    assert_eq!(m.resource_profiles.len(), 2);
    for (p, resource) in m.resource_profiles.iter().enumerate() {
        let profiles = &resource.scope_profiles[0].profiles;
        assert_eq!(profiles.len(), 2, "an on-CPU and an off-CPU profile");
        let (on, off) = (&profiles[0], &profiles[1]);
        assert_eq!(value_type(&m, on.sample_type.as_ref()), "samples/count");
        assert_eq!(value_type(&m, on.period_type.as_ref()), "cpu/nanoseconds");
        assert_eq!(on.period, 1_000_000_000 / 99);
        // The on-CPU profile holds the on-CPU samples only: 3, no values.
        let on_count: usize = on
            .samples
            .iter()
            .map(|s| {
                assert!(s.values.is_empty());
                s.timestamps_unix_nano.len()
            })
            .sum();
        assert_eq!(on_count, 3);

        assert_eq!(
            value_type(&m, off.sample_type.as_ref()),
            "off_cpu/nanoseconds"
        );
        assert_eq!(off.period_type, None);
        assert_eq!(off.period, 0);
        assert_eq!(off.time_unix_nano, on.time_unix_nano);
        assert_eq!(off.duration_nano, on.duration_nano);
        assert_eq!(off.profile_id.len(), 16);
        assert_ne!(off.profile_id, on.profile_id);
        // Every event has its value beside its timestamp, and the values are the stack's
        // off-CPU time.
        let mut total = 0;
        for s in &off.samples {
            assert_eq!(s.values.len(), s.timestamps_unix_nano.len());
            assert_eq!(s.stack_index, on.samples[0].stack_index);
            total += s.values.iter().sum::<i64>();
        }
        assert_eq!(total as u64, w.stacks[p].off_cpu_ns);
        assert_eq!(total, 6_000_000);
        // One sample per (stack, thread, CPU, reason), with the times the thread ran again.
        let start = 1_700_000_000_000_001_000 + w.start_ns - 1_000;
        let mut seen: Vec<(Vec<String>, Vec<u64>, Vec<i64>)> = off
            .samples
            .iter()
            .map(|s| {
                (
                    attributes(&m, s),
                    s.timestamps_unix_nano.iter().map(|t| t - start).collect(),
                    s.values.clone(),
                )
            })
            .collect();
        seen.sort();
        let at = 10 * p as u64;
        let tid = format!("thread.id={}", 100 + p);
        let name = format!("thread.name=t{p}");
        let attrs = |cpu: u32, reason: &str| {
            vec![
                tid.clone(),
                name.clone(),
                format!("cpu.logical_number={cpu}"),
                format!("amprof.off_cpu.reason={reason}"),
            ]
        };
        let mut expected = vec![
            (attrs(0, "blocked"), vec![at + 2], vec![3_000_000]),
            (attrs(0, "runnable"), vec![at + 4], vec![2_000_000]),
            (attrs(1, "blocked"), vec![at + 6], vec![1_000_000]),
        ];
        expected.sort();
        assert_eq!(seen, expected);
    }
}

/// A profile with every index of the dictionary followed.
fn resolved(m: &ExportProfilesServiceRequest, p: &otlp::Profile) -> String {
    let samples: Vec<String> = p
        .samples
        .iter()
        .map(|s| {
            format!(
                "{:?} {:?} {:?} {:?} {}",
                resolve(m, s.stack_index),
                attributes(m, s),
                s.timestamps_unix_nano,
                s.values,
                s.link_index
            )
        })
        .collect();
    format!(
        "{} {} {} {} {} {:?} {:?} {:?}",
        value_type(m, p.sample_type.as_ref()),
        value_type(m, p.period_type.as_ref()),
        p.period,
        p.time_unix_nano,
        p.duration_nano,
        p.profile_id,
        p.attribute_indices,
        samples
    )
}

#[test]
fn on_cpu_profiles_do_not_change_beside_off_cpu_ones() {
    let alone = encode_one(&window(3, 2, 4));
    let beside = encode_one(&window_with_off_cpu(3, 2, 4));
    assert_eq!(alone.resource_profiles.len(), 2);
    assert_eq!(beside.resource_profiles.len(), 2);
    for (a, b) in alone
        .resource_profiles
        .iter()
        .zip(&beside.resource_profiles)
    {
        assert_eq!(a.resource, b.resource);
        assert_eq!(a.scope_profiles[0].profiles.len(), 1);
        assert_eq!(
            resolved(&alone, &a.scope_profiles[0].profiles[0]),
            resolved(&beside, &b.scope_profiles[0].profiles[0])
        );
    }
    // The first process's on-CPU profile comes before any off-CPU string or attribute: the
    // very same message.
    assert_eq!(
        alone.resource_profiles[0].scope_profiles[0].profiles[0],
        beside.resource_profiles[0].scope_profiles[0].profiles[0]
    );
}

#[test]
fn a_process_only_off_the_cpu_has_only_an_off_cpu_profile() {
    let mut w = WindowBuilder::new(0);
    let p = w.process(7, "sleeper");
    let f = w.function("nanosleep");
    let l = w.location(0x10, &[f]);
    let s = w.stack(p, &[l], 0);
    w.off_cpu_sample(5, 7, 0, s, 40_000_000, OffCpuReason::Blocked);
    let m = encode_one(&w.build());
    assert_eq!(m.resource_profiles.len(), 1);
    let profiles = &m.resource_profiles[0].scope_profiles[0].profiles;
    assert_eq!(profiles.len(), 1);
    assert_eq!(
        value_type(&m, profiles[0].sample_type.as_ref()),
        "off_cpu/nanoseconds"
    );
    assert_eq!(profiles[0].samples[0].values, vec![40_000_000]);
    assert_eq!(
        resolve(&m, profiles[0].samples[0].stack_index),
        ["nanosleep"]
    );
}

/// Corrupt windows are refused before they get here: see `crate::push::stream`'s
/// `a_corrupt_window_is_failed_not_encoded` and the capture reader's own tests.
#[test]
fn an_off_cpu_time_beyond_i64_is_the_largest_value() {
    let mut w = window_with_off_cpu(0, 1, 2);
    w.off_cpu_ns[0] = u64::MAX;
    let m = encode_one(&w);
    let off = &m.resource_profiles[0].scope_profiles[0].profiles[1];
    assert!(off.samples.iter().any(|s| s.values == [i64::MAX]));
}

#[test]
fn the_size_estimate_bounds_off_cpu_profiles_too() {
    let one = encode_one(&window_with_off_cpu(0, 3, 50)).encoded_len();
    let mut e = encoder(one + one / 2);
    let mut requests = Vec::new();
    for index in 0..4 {
        requests.extend(e.push(&meta(), &window_with_off_cpu(index, 3, 50)));
    }
    requests.extend(e.finish());
    assert!(requests.len() >= 2);
    let windows: Vec<u64> = requests.iter().flat_map(|r| r.windows.clone()).collect();
    assert_eq!(windows, [0, 1, 2, 3]);
    for r in &requests {
        assert!(r.message.encoded_len() <= one + one / 2);
    }
    // Split by process, a process's two profiles stay together.
    let mut e = encoder(one / 2);
    let mut requests = e.push(&meta(), &window_with_off_cpu(9, 3, 50));
    requests.extend(e.finish());
    assert!(requests.len() > 1);
    for r in &requests {
        for resource in &r.message.resource_profiles {
            assert_eq!(resource.scope_profiles[0].profiles.len(), 2);
        }
    }
}

#[test]
fn profile_ids_are_stable_and_distinct() {
    let (m, w) = (meta(), window(0, 1, 1));
    assert_eq!(profile_id(&m, &w, 1, 2), profile_id(&m, &w, 1, 2));
    assert_ne!(profile_id(&m, &w, 1, 2), profile_id(&m, &w, 2, 2));
    assert_eq!(profile_id(&m, &w, 1, 2).len(), 16);
    let on = profile_id(&m, &w, 1, 2);
    assert_eq!(
        kind_profile_id(&on, SampleKind::OffCpu),
        kind_profile_id(&on, SampleKind::OffCpu)
    );
    assert_ne!(kind_profile_id(&on, SampleKind::OffCpu), on);
}
