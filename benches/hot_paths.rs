//! Micro-benchmarks of amprof's hot paths, on synthetic but realistic data (no root needed):
//!
//! - `ingest`: ring-buffer records parsed and aggregated into a window (frame-pointer mode),
//!   the per-sample work of `record`. Target: at least 1 million samples/s on one core.
//! - `symbolize`: closing a window, with the symbol caches cold (misses) and warm (hits).
//! - `capture`: encoding and appending windows to a capture file, and reading them back.
//! - `export`: each output format's encoder on the same capture.
//!
//! Run: `cargo bench --bench hot_paths` (results in target/criterion; BENCHMARKS.md has a run).

use std::{hint::black_box, io::Cursor, path::Path, sync::Arc};

use amprof::{
    capture::{
        CaptureReader, CaptureWriter, Completeness, Detail, Event as CaptureEvent, KindTotals,
        Meta, Selection, Window,
    },
    encode::{Encoder, Ending, firefox, folded, otlp, perf, pprof},
    record::{
        procs::{ProcessImage, ProcessTable, read_maps},
        sampler::{RingEvent, parse_event},
        symbolize::WindowSymbolizer,
        window::{ClosedSample, ClosedStack, ClosedWindow, WindowAggregator},
    },
};
use amprof_abi::{EVENT_SAMPLE, EventHeader, SampleHead};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const SAMPLES: usize = 100_000;
const STACKS: usize = 2_000;
const PROCESSES: u32 = 50;
const DEPTH: usize = 24;

/// Deterministic pseudo-random numbers (xorshift), so every run measures the same data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Ring-buffer records as the eBPF program writes them: `STACKS` distinct stacks of `DEPTH`
/// user frames and a few kernel frames, spread over `PROCESSES` processes and two CPUs.
fn ring_records() -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let stacks: Vec<(u32, Vec<u64>)> = (0..STACKS)
        .map(|_| {
            let pid = 1000 + (rng.next() % u64::from(PROCESSES)) as u32;
            let kernel = (rng.next() % 4) as usize;
            let frames = (0..kernel + DEPTH)
                .map(|i| {
                    if i < kernel {
                        0xffff_ffff_8100_0000 + rng.next() % 0x100_0000
                    } else {
                        0x5555_5555_0000 + rng.next() % 0x10_0000
                    }
                })
                .collect();
            (pid, frames)
        })
        .collect();
    (0..SAMPLES)
        .map(|i| {
            let (pid, frames) = &stacks[(rng.next() % STACKS as u64) as usize];
            let kernel_frames = frames
                .iter()
                .filter(|&&f| f >= 0xffff_0000_0000_0000)
                .count();
            let head = SampleHead {
                header: EventHeader {
                    kind: EVENT_SAMPLE,
                    cpu: (i % 2) as u32,
                    time_ns: 1_000_000 + i as u64 * 10_000,
                    pid: *pid,
                    tid: *pid,
                    comm: *b"workload\0\0\0\0\0\0\0\0",
                },
                kernel_bytes: (kernel_frames * 8) as u32,
                user_bytes: ((frames.len() - kernel_frames) * 8) as u32,
                ..SampleHead::default()
            };
            let mut record = Vec::with_capacity(size_of::<SampleHead>() + frames.len() * 8);
            // SAFETY: SampleHead is plain old data.
            record.extend_from_slice(unsafe {
                std::slice::from_raw_parts((&raw const head).cast::<u8>(), size_of::<SampleHead>())
            });
            for frame in frames {
                record.extend_from_slice(&frame.to_ne_bytes());
            }
            record
        })
        .collect()
}

fn ingest(c: &mut Criterion) {
    let records = ring_records();
    // A /proc without these pids: processes are "gone", as for a short-lived burst.
    let empty_proc = std::env::temp_dir().join("amprof-bench-no-proc");
    let _ = std::fs::create_dir_all(&empty_proc);
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(SAMPLES as u64));
    group.bench_function("fp_samples", |b| {
        b.iter_batched(
            || WindowAggregator::new(0, 10_000_000_000, ProcessTable::new(&empty_proc)),
            |mut aggregator| {
                let mut scratch = Vec::new();
                for record in &records {
                    if let Some(RingEvent::Sample(sample)) = parse_event(record, &mut scratch) {
                        aggregator.add(&sample);
                    }
                }
                aggregator
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// A closed window of this very process, with addresses spread over its own code: real
/// binaries, real symbols.
fn own_window(index: u64) -> ClosedWindow {
    let mut table = ProcessTable::default();
    let pid = std::process::id();
    table.image(pid, b"hot_paths\0\0\0\0\0\0\0", 0, 0);
    let image: Arc<ProcessImage> = Arc::clone(table.get(pid).expect("own image"));
    let text: Vec<(u64, u64)> = read_maps(Path::new("/proc/self/maps"), usize::MAX)
        .map(|(maps, _)| maps)
        .unwrap_or_default()
        .iter()
        .filter(|m| m.path.starts_with('/'))
        .map(|m| (m.start, m.end))
        .collect();
    let mut rng = Rng(42 + index);
    let stacks: Vec<ClosedStack> = (0..STACKS)
        .map(|_| ClosedStack {
            image: 0,
            frames: (0..DEPTH)
                .map(|_| {
                    let (start, end) = text[(rng.next() % text.len() as u64) as usize];
                    start + rng.next() % (end - start)
                })
                .collect(),
            kernel_frames: 0,
            no_user_stack: false,
            truncated: false,
            totals: (0..10).fold(KindTotals::default(), |mut totals, _| {
                totals.add(Detail::OnCpu);
                totals
            }),
        })
        .collect();
    let samples = (0..STACKS * 10)
        .map(|i| ClosedSample {
            time_ns: 1_000 + i as u64,
            tid: pid,
            cpu: (i % 2) as u32,
            stack: (i / 10) as u32,
            detail: Detail::OnCpu,
        })
        .collect();
    ClosedWindow {
        index,
        start_ns: 0,
        end_ns: 10_000_000_000,
        lost: 0,
        idle: 0,
        late: 0,
        images: vec![image],
        threads: vec![(pid, 0, "hot_paths".into())],
        stacks,
        samples,
        off_cpu_lost: 0,
        problems: Default::default(),
        unwinding: None,
    }
}

/// Time enough to name a window: benchmarks measure the work, not the deadline.
fn no_deadline() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(3600)
}

fn symbolize(c: &mut Criterion) {
    let mut group = c.benchmark_group("symbolize");
    group.throughput(Throughput::Elements((STACKS * DEPTH) as u64));
    group.sample_size(10);
    group.bench_function("window_cold_cache", |b| {
        b.iter_batched(
            || (WindowSymbolizer::new(false), own_window(0)),
            |(mut symbolizer, window)| black_box(symbolizer.build(window, no_deadline())),
            BatchSize::LargeInput,
        )
    });
    let mut warm = WindowSymbolizer::new(false);
    warm.build(own_window(0), no_deadline());
    group.bench_function("window_warm_cache", |b| {
        b.iter_batched(
            || own_window(0),
            |w| black_box(warm.build(w, no_deadline())),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn meta() -> Meta {
    Meta {
        amprof_version: "bench".into(),
        hostname: "bench".into(),
        cpus: 2,
        frequency_hz: 999,
        event: "cpu-clock".into(),
        window_ns: 10_000_000_000,
        call_graph: "fp".into(),
        ..Meta::default()
    }
}

/// A capture of `n` symbolized windows, written to `path`.
fn write_capture(path: &Path, windows: &[Window]) {
    let _ = std::fs::remove_file(path);
    let mut writer = CaptureWriter::create(path, &meta(), None).expect("create capture");
    for window in windows {
        writer
            .write_window(&mut window.clone())
            .expect("write window");
    }
    writer
        .finish(&amprof::capture::End::default())
        .expect("finish");
}

fn capture(c: &mut Criterion) {
    let mut symbolizer = WindowSymbolizer::new(false);
    let windows: Vec<Window> = (0..3)
        .map(|i| symbolizer.build(own_window(i), no_deadline()))
        .collect();
    let samples: u64 = windows.iter().map(|w| w.sample_stacks.len() as u64).sum();
    let dir = std::env::temp_dir().join("amprof-bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join("bench.data");
    let mut group = c.benchmark_group("capture");
    group.throughput(Throughput::Elements(samples));
    group.sample_size(20);
    group.bench_function("write_3_windows", |b| {
        b.iter(|| write_capture(&path, &windows))
    });
    write_capture(&path, &windows);
    group.bench_function("read_3_windows", |b| {
        b.iter(|| {
            let mut reader = CaptureReader::open(&path).expect("open");
            black_box(reader.read_all().expect("read"))
        })
    });
    group.finish();

    let mut group = c.benchmark_group("export");
    group.throughput(Throughput::Elements(samples));
    group.sample_size(20);
    let selection = Selection::default();
    group.bench_function("folded", |b| {
        b.iter(|| {
            let mut fold = folded::Fold::default();
            for window in &windows {
                fold.add(window, &selection);
            }
            black_box(fold.lines())
        })
    });
    group.bench_function("perf_data", |b| {
        let kernel = perf::Kernel::check(None, Path::new("/nonexistent"));
        let meta = meta();
        b.iter(|| {
            let mut writer =
                perf::PerfWriter::new(Cursor::new(Vec::new()), &meta, &kernel).expect("writer");
            for window in &windows {
                writer.window(window, &selection).expect("window");
            }
            black_box(writer.finish().expect("finish"))
        })
    });
    group.bench_function("pprof", |b| {
        let meta = meta();
        b.iter(|| {
            let mut builder = pprof::ProfileBuilder::new(
                &meta,
                pprof::Values::of_event(amprof::capture::Event::OnCpu),
            )
            .expect("builder");
            for window in &windows {
                builder
                    .add_window(window, &selection, &|_| true)
                    .expect("window");
            }
            black_box(builder.finish().expect("finish"))
        })
    });
    group.bench_function("firefox", |b| {
        let meta = meta();
        let ending = Ending {
            completeness: Completeness::Finalized,
            end: None,
        };
        b.iter(|| {
            let mut out = Vec::new();
            let mut profile: Box<dyn Encoder + '_> = Box::new(firefox::Firefox::new(
                &meta,
                CaptureEvent::OnCpu,
                false,
                &mut out,
            ));
            for window in &windows {
                profile.add(window, &selection).expect("window");
            }
            profile.finish(&ending).expect("finish");
            black_box(out)
        })
    });
    group.bench_function("otlp", |b| {
        let meta = meta();
        b.iter(|| {
            let mut encoder = otlp::RequestEncoder::new(otlp::EncodeSettings {
                max_request_bytes: 64 << 20,
                ..Default::default()
            });
            let mut requests = Vec::new();
            for window in &windows {
                requests.extend(encoder.push(&meta, window));
            }
            requests.extend(encoder.finish());
            black_box(requests)
        })
    });
    group.finish();
}

criterion_group!(benches, ingest, symbolize, capture);
criterion_main!(benches);
