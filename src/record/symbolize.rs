//! Turning a closed window into a self-contained capture [`Window`]: frames resolved to mappings
//! and modules, named while the processes (and their files) are still there.
//!
//! This half runs on the writer thread and touches no file of a sampled process: it lays out the
//! window's tables, asks a [`Resolver`] on a [`Worker`] thread for the names its caches miss,
//! and waits for the answer no longer than the deadline the writer gives. An answer too late
//! leaves those locations unnamed (they keep module and offset, and are counted in the window's
//! problems); the resolver is abandoned and a fresh one started, and the file it was stuck on is
//! never tried again.
//!
//! Results are cached across windows per (file, offset) and per kernel address, so a steady
//! recording names each hot address once. Addresses that cannot be named keep their module and
//! offset (`libfoo.so+0x1234`, built by readers from the location's mapping).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;

use super::{
    procs::{FileKey, MapEntry, ProcessImage},
    resolve::{Answer, FileRef, Job, Resolver, StallWatch, Symbols},
    window::ClosedWindow,
    worker::Worker,
};
use crate::capture::{
    SampleKind,
    format::{
        Function, Line, Location, Mapping, Module, ModuleKind, Problems, Process, Stack, Thread,
        Window,
    },
};

/// Keeps caches from growing without bound over a long recording.
const MAX_CACHED: usize = 1 << 20;

pub struct WindowSymbolizer {
    resolver: Worker<Job, Answer>,
    watch: StallWatch,
    user: FxHashMap<(FileKey, u64), Symbols>,
    kernel: FxHashMap<u64, Symbols>,
    build_ids: FxHashMap<FileKey, Vec<u8>>,
    kernel_build_id: Vec<u8>,
    /// Pages of mapped files read as zeros so far (see [`super::sigbus`]).
    pages_vanished: u64,
}

impl WindowSymbolizer {
    /// A symbolizer; with `inline`, inlined functions become frames of their own.
    pub fn new(inline: bool) -> Self {
        let watch = StallWatch::default();
        let resolver_watch = watch.clone();
        Self {
            resolver: Worker::start(
                "amprof-symbolize",
                Arc::new(move || {
                    let mut resolver = Resolver::new(inline, resolver_watch.clone());
                    Box::new(move |job| resolver.run(job))
                }),
            ),
            watch,
            user: FxHashMap::default(),
            kernel: FxHashMap::default(),
            build_ids: FxHashMap::default(),
            kernel_build_id: kernel_build_id().unwrap_or_default(),
            pages_vanished: super::sigbus::pages_replaced(),
        }
    }

    /// Builds the capture record of `closed`, naming what can be named by `deadline`.
    pub fn build(&mut self, closed: ClosedWindow, deadline: Instant) -> Window {
        if self.user.len() + self.kernel.len() > MAX_CACHED {
            self.user.clear();
            self.kernel.clear();
            self.build_ids.clear();
        }
        let mut problems = closed.problems.clone();
        let mut out = Window {
            index: closed.index,
            start_ns: closed.start_ns,
            end_ns: closed.end_ns,
            lost: closed.lost,
            idle: closed.idle,
            late: closed.late,
            ..Window::default()
        };
        out.processes = closed
            .images
            .iter()
            .map(|image| Process {
                pid: image.pid,
                name: image.name.clone(),
                exe: image.exe.clone(),
                first_seen_ns: image.first_seen_ns,
                maps_unavailable: image.maps_unavailable,
            })
            .collect();
        out.threads = closed
            .threads
            .iter()
            .map(|(tid, process, name)| Thread {
                tid: *tid,
                process: *process,
                name: name.clone(),
            })
            .collect();

        let mut tables = Tables::default();
        // First pass: every distinct location of the window, and what would name it.
        let mut stacks = Vec::with_capacity(closed.stacks.len());
        for stack in &closed.stacks {
            let image = &closed.images[stack.image as usize];
            let kernel = stack.kernel_frames as usize;
            let locations = stack
                .frames
                .iter()
                .enumerate()
                .map(|(i, &address)| {
                    let is_return = i != 0 && i != kernel;
                    if i < kernel {
                        tables.kernel_location(address, is_return, &self.kernel_build_id)
                    } else {
                        tables.user_location(stack.image, image, address, is_return)
                    }
                })
                .collect();
            let mut named = Stack {
                process: stack.image,
                locations,
                kernel_frames: stack.kernel_frames,
                no_user_stack: stack.no_user_stack,
                truncated: stack.truncated,
                ..Stack::default()
            };
            stack.totals.write_to(&mut named);
            stacks.push(named);
            if stack.truncated {
                out.truncated += stack.totals.all_samples();
            }
        }
        out.stacks = stacks;

        // Second pass: what the caches miss, from the resolver, within the deadline.
        let symbols = self.symbols(&closed.images, &tables, deadline, &mut problems);
        let mut functions: FxHashMap<(Arc<str>, Option<Arc<str>>), u32> = FxHashMap::default();
        for (location, symbols) in tables.locations.iter_mut().zip(symbols) {
            location.lines = symbols
                .iter()
                .map(|frame| {
                    let next = functions.len() as u32;
                    let function = *functions
                        .entry((frame.name.clone(), frame.file.clone()))
                        .or_insert(next);
                    Line {
                        function,
                        line: frame.line,
                    }
                })
                .collect();
        }
        let mut function_table = vec![Function::default(); functions.len()];
        for ((name, file), index) in functions {
            function_table[index as usize] = Function {
                name: name.to_string(),
                file: file.map(|f| f.to_string()).unwrap_or_default(),
            };
        }
        out.functions = function_table;
        for (module, file) in tables.modules.iter_mut().zip(&tables.module_files) {
            if let Some(file) = file {
                module.build_id = self.build_ids.get(&file.key).cloned().unwrap_or_default();
            }
        }
        out.modules = tables.modules;
        out.mappings = tables.mappings;
        out.locations = tables.locations;

        // Each kind's columns hold its times as deltas from its own previous sample.
        let mut previous = [closed.start_ns; SampleKind::ALL.len()];
        for s in closed.samples {
            let previous = &mut previous[s.detail.kind() as usize];
            s.detail
                .push(&mut out, previous, s.time_ns, s.tid, s.cpu, s.stack);
        }
        out.off_cpu_lost = closed.off_cpu_lost;
        let vanished = super::sigbus::pages_replaced();
        problems.file_pages_vanished += vanished - self.pages_vanished;
        self.pages_vanished = vanished;
        out.problems = problems.nonzero();
        out.unwinding = closed.unwinding.clone();
        out
    }

    /// Symbols for every location of `tables`, in order: from the caches, else from the
    /// resolver if it answers by `deadline`.
    fn symbols(
        &mut self,
        images: &[Arc<ProcessImage>],
        tables: &Tables,
        deadline: Instant,
        problems: &mut Problems,
    ) -> Vec<Symbols> {
        let mut job = Job::default();
        let mut kernel_index: FxHashMap<u64, usize> = FxHashMap::default();
        let mut file_index: FxHashMap<FileKey, usize> = FxHashMap::default();
        let mut jit_index: FxHashMap<u32, usize> = FxHashMap::default();
        let mut vdso_index: FxHashMap<u64, usize> = FxHashMap::default();
        let mut file_job = |job: &mut Job, file: &FileRef| -> usize {
            *file_index.entry(file.key.clone()).or_insert_with(|| {
                job.files.push((file.clone(), Vec::new(), false));
                job.files.len() - 1
            })
        };
        for want in &tables.wanted {
            match want {
                Wanted::Kernel(address) if !self.kernel.contains_key(address) => {
                    kernel_index.entry(*address).or_insert_with(|| {
                        job.kernel.push(*address);
                        job.kernel.len() - 1
                    });
                }
                Wanted::File { file, offset }
                    if !self.user.contains_key(&(file.key.clone(), *offset)) =>
                {
                    let i = file_job(&mut job, file);
                    job.files[i].1.push(*offset);
                }
                Wanted::Vdso(offset) => {
                    vdso_index.entry(*offset).or_insert_with(|| {
                        job.vdso.push(*offset);
                        job.vdso.len() - 1
                    });
                }
                Wanted::Jit { image, address } => {
                    let image = &images[*image as usize];
                    let i = *jit_index.entry(image.pid).or_insert_with(|| {
                        job.jits.push(((image.pid, image.uid), Vec::new()));
                        job.jits.len() - 1
                    });
                    job.jits[i].1.push(*address);
                }
                _ => {}
            }
        }
        for file in tables.module_files.iter().flatten() {
            if !self.build_ids.contains_key(&file.key) {
                let i = file_job(&mut job, file);
                job.files[i].2 = true;
            }
        }
        for (_, offsets, _) in &mut job.files {
            offsets.sort_unstable();
            offsets.dedup();
        }

        let mut jit_symbols: Vec<FxHashMap<u64, Symbols>> = Vec::new();
        let mut vdso_symbols: Vec<Symbols> = Vec::new();
        if !job.is_empty() {
            let asked = (job.kernel.clone(), job.files.clone());
            let jit_addresses: Vec<Vec<u64>> = job.jits.iter().map(|(_, a)| a.clone()).collect();
            self.resolver.submit(job);
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.resolver.answer_within(wait) {
                Some(Some(answer)) => {
                    let (kernel, files) = asked;
                    self.kernel.extend(kernel.into_iter().zip(answer.kernel));
                    for ((file, offsets, want_build_id), (symbols, build_id)) in
                        files.into_iter().zip(answer.files)
                    {
                        if want_build_id {
                            self.build_ids.insert(file.key.clone(), build_id);
                        }
                        for (offset, symbols) in offsets.into_iter().zip(symbols) {
                            self.user.insert((file.key.clone(), offset), symbols);
                        }
                    }
                    jit_symbols = jit_addresses
                        .into_iter()
                        .zip(answer.jits)
                        .map(|(addresses, symbols)| addresses.into_iter().zip(symbols).collect())
                        .collect();
                    vdso_symbols = answer.vdso;
                    problems.add(&answer.problems);
                }
                // The resolver panicked on hostile input: this window goes without the names it
                // would have given (the worker starts afresh).
                Some(None) => problems.files_refused += 1,
                None => self.abandon_resolver(),
            }
        }

        let symbols: Vec<Symbols> = tables
            .wanted
            .iter()
            .map(|want| match want {
                Wanted::Kernel(address) => self.kernel.get(address).cloned(),
                Wanted::File { file, offset } => {
                    self.user.get(&(file.key.clone(), *offset)).cloned()
                }
                Wanted::Vdso(offset) => vdso_index
                    .get(offset)
                    .and_then(|&i| vdso_symbols.get(i))
                    .cloned(),
                Wanted::Jit { image, address } => jit_index
                    .get(&images[*image as usize].pid)
                    .and_then(|&i| jit_symbols.get(i))
                    .and_then(|names| names.get(address))
                    .cloned(),
                Wanted::Nothing => Some(Symbols::default()),
            })
            .map(|symbols| {
                symbols.unwrap_or_else(|| {
                    problems.locations_not_symbolized += 1;
                    Symbols::default()
                })
            })
            .collect();
        symbols
    }

    /// The resolver did not answer in time: whatever file it is on is given up for good, and a
    /// fresh resolver takes the next windows.
    fn abandon_resolver(&mut self) {
        let current = self.watch.current.lock().ok().and_then(|mut c| c.take());
        if let (Some(key), Ok(mut stalled)) = (current, self.watch.stalled.lock()) {
            stalled.insert(key);
        }
        self.resolver.restart();
    }
}

/// How long symbolization of one window may take while recording runs; when recording stops,
/// the writer shortens it (see `record`).
pub const SYMBOLIZE_BUDGET: Duration = Duration::from_secs(30);

/// The mapping's file, as the resolver gets it.
fn file_ref(map: &MapEntry) -> FileRef {
    FileRef {
        key: map.file_key(),
        pinned: map.pinned.clone(),
    }
}

/// What names one location.
enum Wanted {
    Kernel(u64),
    File { file: FileRef, offset: u64 },
    Vdso(u64),
    Jit { image: u32, address: u64 },
    Nothing,
}

/// The window's tables, built as locations are met.
#[derive(Default)]
struct Tables {
    locations: Vec<Location>,
    wanted: Vec<Wanted>,
    location_index: FxHashMap<(u32, u64, bool), u32>,
    modules: Vec<Module>,
    module_index: FxHashMap<FileKey, u32>,
    /// The file behind each module (kernel and pseudo modules have none), for build-ids.
    module_files: Vec<Option<FileRef>>,
    mappings: Vec<Mapping>,
    mapping_index: FxHashMap<(u32, u64), u32>,
    kernel_module: Option<u32>,
}

impl Tables {
    fn kernel_location(&mut self, address: u64, is_return: bool, build_id: &[u8]) -> u32 {
        let key = (u32::MAX, address, is_return);
        if let Some(&i) = self.location_index.get(&key) {
            return i;
        }
        let module = *self.kernel_module.get_or_insert_with(|| {
            self.modules.push(Module {
                path: "[kernel.kallsyms]".into(),
                build_id: build_id.to_vec(),
                kind: ModuleKind::Kernel as i32,
            });
            self.module_files.push(None);
            self.modules.len() as u32 - 1
        });
        self.push_location(
            key,
            Location {
                address,
                mapping: 0,
                kernel_module: module + 1,
                lines: Vec::new(),
            },
            Wanted::Kernel(address.saturating_sub(u64::from(is_return))),
        )
    }

    fn user_location(
        &mut self,
        image_index: u32,
        image: &ProcessImage,
        address: u64,
        is_return: bool,
    ) -> u32 {
        let key = (image_index, address, is_return);
        if let Some(&i) = self.location_index.get(&key) {
            return i;
        }
        let lookup = address.saturating_sub(u64::from(is_return));
        let (mapping, wanted) = match image.find(lookup) {
            Some(map) => {
                let mapping = self.mapping(image_index, map);
                let offset = lookup - map.start + map.file_offset;
                let wanted = match map.kind {
                    ModuleKind::File => Wanted::File {
                        file: file_ref(map),
                        offset,
                    },
                    ModuleKind::Vdso => Wanted::Vdso(lookup - map.start),
                    ModuleKind::Anonymous => Wanted::Jit {
                        image: image_index,
                        address: lookup,
                    },
                    ModuleKind::Kernel => Wanted::Nothing,
                };
                (mapping + 1, wanted)
            }
            None => (
                0,
                Wanted::Jit {
                    image: image_index,
                    address: lookup,
                },
            ),
        };
        self.push_location(
            key,
            Location {
                address,
                mapping,
                kernel_module: 0,
                lines: Vec::new(),
            },
            wanted,
        )
    }

    fn mapping(&mut self, image_index: u32, map: &MapEntry) -> u32 {
        if let Some(&i) = self.mapping_index.get(&(image_index, map.start)) {
            return i;
        }
        let key = map.file_key();
        let module = match self.module_index.get(&key) {
            Some(&m) => m,
            None => {
                self.modules.push(Module {
                    path: map.path.to_string(),
                    build_id: Vec::new(),
                    kind: map.kind as i32,
                });
                let m = self.modules.len() as u32 - 1;
                self.module_index.insert(key, m);
                self.module_files
                    .push((map.kind == ModuleKind::File).then(|| file_ref(map)));
                m
            }
        };
        self.mappings.push(Mapping {
            process: image_index,
            start: map.start,
            end: map.end,
            file_offset: map.file_offset,
            module,
        });
        let i = self.mappings.len() as u32 - 1;
        self.mapping_index.insert((image_index, map.start), i);
        i
    }

    fn push_location(&mut self, key: (u32, u64, bool), location: Location, wanted: Wanted) -> u32 {
        let i = self.locations.len() as u32;
        self.locations.push(location);
        self.wanted.push(wanted);
        self.location_index.insert(key, i);
        i
    }
}

/// The running kernel's build-id, from the ELF notes in `/sys/kernel/notes`.
pub fn kernel_build_id() -> Option<Vec<u8>> {
    let notes = std::fs::read("/sys/kernel/notes").ok()?;
    let mut rest = notes.as_slice();
    let word = |b: &[u8], i: usize| -> Option<usize> {
        Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    while rest.len() >= 12 {
        let (name_len, desc_len, kind) = (word(rest, 0)?, word(rest, 4)?, word(rest, 8)?);
        let name_end = 12 + name_len.next_multiple_of(4);
        let desc_end = name_end + desc_len.next_multiple_of(4);
        const NT_GNU_BUILD_ID: usize = 3;
        if kind == NT_GNU_BUILD_ID && rest.get(12..12 + name_len) == Some(b"GNU\0") {
            return rest.get(name_end..name_end + desc_len).map(<[u8]>::to_vec);
        }
        rest = rest.get(desc_end..)?;
    }
    None
}
