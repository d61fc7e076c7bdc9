//! The capture format's round trip: what the writer writes, the reader reads back whole, window
//! for window (ring eviction and a recording killed mid-write included).

use amprof::capture::{
    CaptureReader, CaptureWriter, Completeness, End, Window,
    format::{ModuleKind, Problems},
    testing::{WindowBuilder, meta, write_capture},
};

use crate::util::scratch;

/// Window `index` with most of what recordings put in one: two processes (one exec'd within the
/// window), kernel, file, JIT and inlined frames, problems counted.
fn window(index: u64) -> Window {
    let mut w = WindowBuilder::new(index);
    let app = w.process(100, "app");
    let exec = w.process(100, "app2");
    w.thread(101, app, "worker");
    let kernel = w.kernel_module();
    let lib = w.module_with("/usr/lib/libapp.so", ModuleKind::File, &[0xab; 20]);
    let anon = w.module_with("[anon]", ModuleKind::Anonymous, &[]);
    let text = w.mapping(app, lib, 0x7000_0000, 0x7010_0000, 0x1000);
    let jit = w.mapping(exec, anon, 0x9000_0000, 0x9000_1000, 0);
    let (sys, outer, inlined) = (
        w.function("do_syscall_64"),
        w.function_in("outer", "/src/app.c"),
        w.function_in("inlined", "/src/app.h"),
    );
    let k = w.kernel_location(kernel, 0xffff_ffff_8100_1234, &[sys]);
    let u = w.location_in(text, 0x7000_0100, &[inlined, outer]);
    w.lines(u, &[(inlined, 3), (outer, 42)]);
    let j = w.location_in(jit, 0x9000_0010, &[]);
    let first = w.stack(app, &[k, u], 1);
    let second = w.stack(exec, &[j], 0);
    for i in 0..10 {
        w.sample(
            i * 1_000_000,
            if i % 2 == 0 { 100 } else { 101 },
            (i % 2) as u32,
            first,
        );
    }
    w.sample(50_000_000, 100, 1, second);
    w.window_mut().lost = 2;
    w.window_mut().problems = Some(Problems {
        files_refused: 1,
        perf_map_lines_skipped: 3,
        ..Problems::default()
    });
    w.build()
}

fn read(path: &std::path::Path) -> (Vec<Window>, Option<Completeness>) {
    let mut reader = CaptureReader::open(path).unwrap();
    let windows = reader.read_all().unwrap();
    (windows, reader.completeness())
}

#[test]
fn windows_read_back_as_written() {
    let path = scratch("roundtrip").join("capture.data");
    let written: Vec<Window> = (0..3).map(window).collect();
    write_capture(&path, &meta(), written.clone()).unwrap();
    let mut reader = CaptureReader::open(&path).unwrap();
    assert_eq!(reader.meta(), &meta());
    assert_eq!(reader.read_all().unwrap(), written);
    assert_eq!(reader.completeness(), Some(Completeness::Finalized));
    assert_eq!(reader.end().unwrap().windows_closed, 3);
}

#[test]
fn a_ring_keeps_the_last_windows_with_their_evictions_counted() {
    let path = scratch("roundtrip-ring").join("ring.data");
    let mut writer = CaptureWriter::create(&path, &meta(), Some(2)).unwrap();
    for index in 0..5 {
        writer.write_window(&mut window(index)).unwrap();
    }
    let evicted = writer.windows_evicted();
    assert_eq!(evicted, 3);
    writer
        .finish(&End {
            windows_closed: 5,
            windows_evicted: evicted,
            ..End::default()
        })
        .unwrap();
    let (windows, completeness) = read(&path);
    let indices: Vec<u64> = windows.iter().map(|w| w.index).collect();
    assert_eq!(indices, [3, 4]);
    assert_eq!(windows[0].evicted_before, 2);
    let mut expected = window(4);
    expected.evicted_before = 3;
    assert_eq!(windows[1], expected);
    assert_eq!(completeness, Some(Completeness::Finalized));
}

#[test]
fn a_capture_cut_mid_record_reads_to_its_last_whole_window() {
    let path = scratch("roundtrip-cut").join("cut.data");
    let written: Vec<Window> = (0..3).map(window).collect();
    write_capture(&path, &meta(), written.clone()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // Cut inside the end record, then inside the last window.
    for cut in [bytes.len() - 3, bytes.len() - 60] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let (windows, completeness) = read(&path);
        assert!(matches!(completeness, Some(Completeness::Truncated { .. })));
        assert_eq!(windows[..], written[..windows.len()]);
        assert!(windows.len() >= 2);
    }
}
