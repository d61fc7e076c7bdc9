//! Captures built by hand, for tests, benchmarks and fuzzing: the one builder of windows and
//! metadata, so that every test says only what matters to it.
//!
//! ```
//! use amprof::capture::testing::{WindowBuilder, meta};
//! let mut w = WindowBuilder::new(0);
//! let p = w.process(42, "app");
//! let f = w.function("main");
//! let l = w.location(0x1000, &[f]);
//! let s = w.stack(p, &[l], 0);
//! w.sample(1_000, 42, 0, s);
//! let window = w.build();
//! assert_eq!(window.stacks[0].count, 1);
//! # let _ = meta();
//! ```

use std::path::Path;

use super::{
    CaptureWriter, End, RecordKind, encode_record, file_header,
    format::{
        Function, Line, Location, Mapping, Meta, Module, ModuleKind, OffCpu, OffCpuReason, Process,
        Stack, Thread, Window,
    },
};

/// Where window 0 starts in built captures (monotonic ns): any realistic boot time.
pub const START_NS: u64 = 1_000_000_000_000;
/// Length of built windows.
pub const WINDOW_NS: u64 = 1_000_000_000;

/// Metadata of a built capture: 2 CPUs at 99 Hz, [`WINDOW_NS`] windows from [`START_NS`],
/// `fp` call graphs, host `host`.
pub fn meta() -> Meta {
    Meta {
        amprof_version: "0.0.0-test".into(),
        hostname: "host".into(),
        kernel_release: "6.0.0-test".into(),
        arch: "x86_64".into(),
        cpus: 2,
        frequency_hz: 99,
        event: "cpu-clock".into(),
        window_ns: WINDOW_NS,
        start_ns: START_NS,
        realtime_offset_ns: 1_700_000_000_000_000_000 - START_NS as i64,
        call_graph: "fp".into(),
        ..Meta::default()
    }
}

/// A window being built: every `add` returns the index the window's other tables refer to it by.
#[derive(Debug)]
pub struct WindowBuilder {
    window: Window,
    /// `(offset from the window's start, tid, cpu, stack)` of each sample.
    samples: Vec<(u64, u32, u32, u32)>,
    /// `(offset, tid, cpu, stack, ns, reason)` of each off-CPU sample.
    off_cpu: Vec<(u64, u32, u32, u32, u64, OffCpuReason)>,
}

impl WindowBuilder {
    /// Window `index`, `[START_NS + index·WINDOW_NS, +WINDOW_NS)`.
    pub fn new(index: u64) -> Self {
        Self::at(
            index,
            START_NS + index * WINDOW_NS,
            START_NS + (index + 1) * WINDOW_NS,
        )
    }

    /// Window `index` over `[start_ns, end_ns)`.
    pub fn at(index: u64, start_ns: u64, end_ns: u64) -> Self {
        Self {
            window: Window {
                index,
                start_ns,
                end_ns,
                ..Window::default()
            },
            samples: Vec::new(),
            off_cpu: Vec::new(),
        }
    }

    /// A process image (first seen at the window's start), with its main thread of the same name.
    pub fn process(&mut self, pid: u32, name: &str) -> u32 {
        let index = self.process_with(Process {
            pid,
            name: name.into(),
            exe: String::new(),
            first_seen_ns: self.window.start_ns,
            maps_unavailable: false,
        });
        self.thread(pid, index, name);
        index
    }

    /// A process image as given (no thread).
    pub fn process_with(&mut self, process: Process) -> u32 {
        push(&mut self.window.processes, process)
    }

    pub fn thread(&mut self, tid: u32, process: u32, name: &str) {
        self.window.threads.push(Thread {
            tid,
            process,
            name: name.into(),
        });
    }

    /// A file module at `path` (no build-id).
    pub fn module(&mut self, path: &str) -> u32 {
        self.module_with(path, ModuleKind::File, &[])
    }

    pub fn module_with(&mut self, path: &str, kind: ModuleKind, build_id: &[u8]) -> u32 {
        push(
            &mut self.window.modules,
            Module {
                path: path.into(),
                build_id: build_id.to_vec(),
                kind: kind as i32,
            },
        )
    }

    /// The kernel module (`[kernel.kallsyms]`).
    pub fn kernel_module(&mut self) -> u32 {
        self.module_with("[kernel.kallsyms]", ModuleKind::Kernel, &[])
    }

    /// `module` mapped at `[start, end)` of `process`, from `file_offset`.
    pub fn mapping(
        &mut self,
        process: u32,
        module: u32,
        start: u64,
        end: u64,
        file_offset: u64,
    ) -> u32 {
        push(
            &mut self.window.mappings,
            Mapping {
                process,
                start,
                end,
                file_offset,
                module,
            },
        )
    }

    pub fn function(&mut self, name: &str) -> u32 {
        self.function_in(name, "")
    }

    /// A function with its source file.
    pub fn function_in(&mut self, name: &str, file: &str) -> u32 {
        push(
            &mut self.window.functions,
            Function {
                name: name.into(),
                file: file.into(),
            },
        )
    }

    /// An address in no mapping, named by `functions` (innermost first; none: unnamed).
    pub fn location(&mut self, address: u64, functions: &[u32]) -> u32 {
        self.add_location(address, 0, 0, functions)
    }

    /// A user address in `mapping`.
    pub fn location_in(&mut self, mapping: u32, address: u64, functions: &[u32]) -> u32 {
        self.add_location(address, mapping + 1, 0, functions)
    }

    /// A kernel address of kernel module `module`.
    pub fn kernel_location(&mut self, module: u32, address: u64, functions: &[u32]) -> u32 {
        self.add_location(address, 0, module + 1, functions)
    }

    fn add_location(
        &mut self,
        address: u64,
        mapping: u32,
        kernel_module: u32,
        functions: &[u32],
    ) -> u32 {
        push(
            &mut self.window.locations,
            Location {
                address,
                mapping,
                kernel_module,
                lines: functions
                    .iter()
                    .map(|&function| Line { function, line: 0 })
                    .collect(),
            },
        )
    }

    /// Sets the source lines of `location`: `(function, line)`, innermost first.
    pub fn lines(&mut self, location: u32, lines: &[(u32, u32)]) {
        if let Some(l) = self.window.locations.get_mut(location as usize) {
            l.lines = lines
                .iter()
                .map(|&(function, line)| Line { function, line })
                .collect();
        }
    }

    /// A stack of `process`: `locations` leaf first, the first `kernel_frames` of them kernel
    /// frames. Its count is that of the samples given it.
    pub fn stack(&mut self, process: u32, locations: &[u32], kernel_frames: u32) -> u32 {
        push(
            &mut self.window.stacks,
            Stack {
                process,
                locations: locations.to_vec(),
                kernel_frames,
                ..Stack::default()
            },
        )
    }

    /// A sample of `stack` at `offset_ns` from the window's start (samples in time order).
    pub fn sample(&mut self, offset_ns: u64, tid: u32, cpu: u32, stack: u32) {
        self.samples.push((offset_ns, tid, cpu, stack));
    }

    /// An off-CPU sample of `stack` (see [`Window::off_cpu_ns`]): the thread ran again at
    /// `offset_ns` from the window's start after `ns` off the CPU (in time order).
    pub fn off_cpu_sample(
        &mut self,
        offset_ns: u64,
        tid: u32,
        cpu: u32,
        stack: u32,
        ns: u64,
        reason: OffCpuReason,
    ) {
        self.off_cpu.push((offset_ns, tid, cpu, stack, ns, reason));
    }

    /// The window as built so far, to change what the builder has no method for.
    pub fn window_mut(&mut self) -> &mut Window {
        &mut self.window
    }

    /// The window, its sample columns and stack counts filled in.
    pub fn build(mut self) -> Window {
        let w = &mut self.window;
        let mut previous = w.start_ns;
        for (offset, tid, cpu, stack) in self.samples {
            w.push_sample(
                &mut previous,
                w.start_ns.saturating_add(offset),
                tid,
                cpu,
                stack,
            );
            if let Some(s) = w.stacks.get_mut(stack as usize) {
                s.count += 1;
            }
        }
        let mut previous = w.start_ns;
        for (offset, tid, cpu, stack, ns, reason) in self.off_cpu {
            w.push_off_cpu_sample(
                &mut previous,
                w.start_ns.saturating_add(offset),
                tid,
                cpu,
                stack,
                // A wait as long as what it stands for (it reached the period).
                OffCpu {
                    ns,
                    wait_ns: ns,
                    reason,
                },
            );
            if let Some(s) = w.stacks.get_mut(stack as usize) {
                s.off_cpu_count += 1;
                s.off_cpu_ns += ns;
            }
        }
        self.window
    }
}

fn push<T>(table: &mut Vec<T>, item: T) -> u32 {
    table.push(item);
    table.len() as u32 - 1
}

/// The bytes of a capture of `windows`, finalized unless `end` is `None`.
pub fn capture_bytes(meta: &Meta, windows: &[Window], end: Option<&End>) -> Vec<u8> {
    let mut bytes = file_header().to_vec();
    bytes.extend(encode_record(RecordKind::Meta, meta));
    for window in windows {
        bytes.extend(encode_record(RecordKind::Window, window));
    }
    if let Some(end) = end {
        bytes.extend(encode_record(RecordKind::End, end));
    }
    bytes
}

/// Writes a finalized capture of `windows` to `path` with the real writer.
pub fn write_capture(
    path: &Path,
    meta: &Meta,
    windows: impl IntoIterator<Item = Window>,
) -> anyhow::Result<()> {
    let mut writer = CaptureWriter::create(path, meta, None)?;
    let mut count = 0;
    let mut end_ns = meta.start_ns;
    for mut window in windows {
        end_ns = window.end_ns;
        writer.write_window(&mut window)?;
        count += 1;
    }
    writer.finish(&End {
        end_ns,
        windows_closed: count,
        windows_evicted: 0,
        reason: "duration".into(),
    })
}
