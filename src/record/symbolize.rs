//! Turning a closed window into a self-contained capture [`Window`]: frames resolved to mappings
//! and modules, named with blazesym while the processes (and their files) are still there.
//!
//! Results are cached across windows per (file, offset) and per kernel address, so a steady
//! recording symbolizes each hot address once. Addresses that cannot be named keep their module
//! and offset (`libfoo.so+0x1234`, built by readers from the location's mapping).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use blazesym::symbolize::{
    self as bz, Input, Symbolized,
    source::{Elf, Kernel, Source},
};
use rustc_hash::FxHashMap;

use super::{
    debuginfo,
    procs::{FileKey, MapEntry, ProcessImage},
    window::ClosedWindow,
};
use crate::capture::format::{
    Function, Line, Location, Mapping, Module, ModuleKind, Process, Stack, Thread, Window,
};

/// One source-level frame: a function name, and its file and line when debug info has them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SymbolFrame {
    pub name: Arc<str>,
    pub file: Option<Arc<str>>,
    pub line: u32,
}

/// What an address symbolized to, innermost frame first; empty when unknown.
type Symbols = Arc<[SymbolFrame]>;

/// Keeps caches from growing without bound over a long recording.
const MAX_CACHED: usize = 1 << 20;

pub struct WindowSymbolizer {
    blazesym: bz::Symbolizer,
    build_ids: FxHashMap<FileKey, Option<Vec<u8>>>,
    user: FxHashMap<(FileKey, u64), Symbols>,
    kernel: FxHashMap<u64, Symbols>,
    kernel_build_id: Vec<u8>,
    perf_maps: FxHashMap<u32, PerfMap>,
    open_paths: FxHashMap<FileKey, Option<String>>,
    debuginfod: debuginfo::Debuginfod,
    /// This process's own vDSO, which is every process's vDSO: vDSO frames are named through it.
    own_vdso: Option<u64>,
}

impl WindowSymbolizer {
    /// A symbolizer; with `inline`, inlined functions become frames of their own.
    pub fn new(inline: bool) -> Self {
        let own_vdso = super::procs::read_maps(Path::new("/proc/self/maps"))
            .and_then(|maps| maps.into_iter().find(|m| m.kind == ModuleKind::Vdso))
            .map(|m| m.start);
        Self {
            blazesym: bz::Symbolizer::builder()
                .enable_code_info(true)
                .enable_inlined_fns(inline)
                .enable_demangling(true)
                .build(),
            build_ids: FxHashMap::default(),
            user: FxHashMap::default(),
            kernel: FxHashMap::default(),
            kernel_build_id: kernel_build_id().unwrap_or_default(),
            perf_maps: FxHashMap::default(),
            open_paths: FxHashMap::default(),
            debuginfod: debuginfo::Debuginfod::from_env(),
            own_vdso,
        }
    }

    /// Builds the capture record of `closed`.
    pub fn build(&mut self, closed: ClosedWindow) -> Window {
        if self.user.len() + self.kernel.len() > MAX_CACHED {
            self.user.clear();
            self.kernel.clear();
            self.build_ids.clear();
            self.open_paths.clear();
            self.perf_maps.clear();
        }
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
        // First pass: every distinct location of the window, and the addresses to symbolize.
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
            stacks.push(Stack {
                process: stack.image,
                locations,
                kernel_frames: stack.kernel_frames,
                count: stack.count,
                no_user_stack: stack.no_user_stack,
                truncated: stack.truncated,
            });
            if stack.truncated {
                out.truncated += stack.count;
            }
        }
        out.stacks = stacks;

        // Second pass: symbolize what the caches miss, one batch per module.
        let symbols: Vec<Symbols> = self.symbolize(&closed.images, &tables);
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
            if let Some((key, fallback)) = file {
                module.build_id = self.build_id(key, fallback.as_deref());
            }
        }
        out.modules = tables.modules;
        out.mappings = tables.mappings;
        out.locations = tables.locations;

        let mut previous = closed.start_ns;
        for (time, tid, cpu, stack) in closed.samples {
            out.sample_time_deltas.push(time - previous);
            previous = time;
            out.sample_tids.push(tid);
            out.sample_cpus.push(cpu);
            out.sample_stacks.push(stack);
        }
        out
    }

    /// Symbols for every location of `tables`, in order.
    fn symbolize(&mut self, images: &[Arc<ProcessImage>], tables: &Tables) -> Vec<Symbols> {
        // Group the cache misses by what resolves them.
        let mut by_file: FxHashMap<FileKey, (Option<String>, Vec<u64>)> = FxHashMap::default();
        let mut kernel_misses: Vec<u64> = Vec::new();
        for want in &tables.wanted {
            match want {
                Wanted::Kernel(address) if !self.kernel.contains_key(address) => {
                    kernel_misses.push(*address);
                }
                Wanted::File {
                    key,
                    fallback,
                    offset,
                } if !self.user.contains_key(&(key.clone(), *offset)) => {
                    by_file
                        .entry(key.clone())
                        .or_insert_with(|| (fallback.clone(), Vec::new()))
                        .1
                        .push(*offset);
                }
                _ => {}
            }
        }
        if !kernel_misses.is_empty() {
            kernel_misses.sort_unstable();
            kernel_misses.dedup();
            let source = Source::Kernel(Kernel {
                debug_syms: false,
                ..Kernel::default()
            });
            let resolved = self
                .blazesym
                .symbolize(&source, Input::AbsAddr(&kernel_misses));
            let resolved = resolved.unwrap_or_default();
            for (i, address) in kernel_misses.iter().enumerate() {
                let symbols = resolved.get(i).map(to_symbols).unwrap_or_default();
                self.kernel.insert(*address, symbols);
            }
        }
        for (key, (fallback, mut offsets)) in by_file {
            offsets.sort_unstable();
            offsets.dedup();
            let Some(open) = self.open_path(&key, fallback.as_deref()) else {
                for offset in offsets {
                    self.user.insert((key.clone(), offset), Symbols::default());
                }
                continue;
            };
            let resolved = match self.fetched_debug_file(&key, fallback.as_deref(), &open) {
                // Symbols from a fetched debug file, which has the binary's virtual addresses but
                // not its file layout.
                Some((debug, layout)) => {
                    let addresses: Vec<u64> = offsets
                        .iter()
                        .map(|&o| layout.virtual_address(o).unwrap_or(u64::MAX))
                        .collect();
                    self.blazesym
                        .symbolize(
                            &Source::Elf(Elf::new(&debug)),
                            Input::VirtOffset(&addresses),
                        )
                        .unwrap_or_default()
                }
                None => self
                    .blazesym
                    .symbolize(&Source::Elf(Elf::new(&open)), Input::FileOffset(&offsets))
                    .unwrap_or_default(),
            };
            for (i, offset) in offsets.iter().enumerate() {
                let symbols = resolved.get(i).map(to_symbols).unwrap_or_default();
                self.user.insert((key.clone(), *offset), symbols);
            }
        }

        tables
            .wanted
            .iter()
            .map(|want| match want {
                Wanted::Kernel(address) => self.kernel.get(address).cloned().unwrap_or_default(),
                Wanted::File { key, offset, .. } => self
                    .user
                    .get(&(key.clone(), *offset))
                    .cloned()
                    .unwrap_or_default(),
                Wanted::Vdso(offset) => self.vdso_symbols(*offset),
                Wanted::Jit { image, address } => {
                    let pid = images[*image as usize].pid;
                    self.perf_maps
                        .entry(pid)
                        .or_insert_with(|| PerfMap::new(pid))
                        .lookup(*address)
                }
                Wanted::Nothing => Symbols::default(),
            })
            .collect()
    }

    fn vdso_symbols(&mut self, offset: u64) -> Symbols {
        let Some(start) = self.own_vdso else {
            return Symbols::default();
        };
        let source = Source::Process(bz::source::Process::new(std::process::id().into()));
        self.blazesym
            .symbolize_single(&source, Input::AbsAddr(start + offset))
            .map(|s| to_symbols(&s))
            .unwrap_or_default()
    }

    /// Where to open `key`'s file: its own path when that still leads to the mapped file (the
    /// common case, shared by every process, so blazesym parses each library once), else
    /// `fallback`. Cached per file.
    fn open_path(&mut self, key: &FileKey, fallback: Option<&str>) -> Option<String> {
        if let Some(path) = self.open_paths.get(key) {
            return path.clone();
        }
        let (dev, inode, path) = key;
        let same_file = std::fs::metadata(&**path).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt as _;
            let st_dev = m.dev();
            (u64::from(libc::major(st_dev)) << 32 | u64::from(libc::minor(st_dev))) == *dev
                && m.ino() == *inode
        });
        let open = if same_file {
            Some(path.to_string())
        } else {
            fallback.map(str::to_string)
        };
        // A fallback through /proc dies with its process: only the real path is worth caching.
        if same_file {
            self.open_paths.insert(key.clone(), open.clone());
        }
        open
    }

    /// A debug file from debuginfod for a binary with neither DWARF nor a symbol table.
    fn fetched_debug_file(
        &mut self,
        key: &FileKey,
        fallback: Option<&str>,
        open: &str,
    ) -> Option<(PathBuf, debuginfo::BinaryLayout)> {
        if !self.debuginfod.enabled() {
            return None;
        }
        let layout = debuginfo::BinaryLayout::read(Path::new(open))?;
        if layout.has_symbols {
            return None;
        }
        let build_id = self.build_id(key, fallback);
        let debug = self.debuginfod.debug_file(&build_id)?;
        Some((debug, layout))
    }

    /// Build-id of `key`'s file, cached per file.
    fn build_id(&mut self, key: &FileKey, fallback: Option<&str>) -> Vec<u8> {
        if let Some(id) = self.build_ids.get(key) {
            return id.clone().unwrap_or_default();
        }
        let Some(open) = self.open_path(key, fallback) else {
            return Vec::new();
        };
        let id = blazesym::helper::read_elf_build_id(&open)
            .ok()
            .flatten()
            .map(|id| id.to_vec());
        self.build_ids.insert(key.clone(), id.clone());
        id.unwrap_or_default()
    }
}

/// Where to open the mapping's file when its path does not lead to it: the file held open
/// since the process was first seen, else (while the process lives) `/proc/PID/map_files`.
fn map_files_path(image: &ProcessImage, map: &MapEntry) -> Option<String> {
    if map.pinned.is_some() {
        return Some(map.open_path());
    }
    (!image.maps_unavailable).then(|| {
        format!(
            "/proc/{}/map_files/{:x}-{:x}",
            image.pid, map.start, map.end
        )
    })
}

fn file_key(map: &MapEntry) -> FileKey {
    (map.dev, map.inode, map.path.clone())
}

/// What resolves one location.
enum Wanted {
    Kernel(u64),
    File {
        key: FileKey,
        /// Where to open the file if its path does not lead to it (another mount namespace, a
        /// deleted or replaced file): the mapping itself, through `/proc/PID/map_files`.
        fallback: Option<String>,
        offset: u64,
    },
    Vdso(u64),
    Jit {
        image: u32,
        address: u64,
    },
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
    /// The file behind each module (kernel modules have none), for build-ids.
    module_files: Vec<Option<(FileKey, Option<String>)>>,
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
                let mapping = self.mapping(image_index, image, map);
                let offset = lookup - map.start + map.file_offset;
                let wanted = match map.kind {
                    ModuleKind::File => Wanted::File {
                        key: file_key(map),
                        fallback: map_files_path(image, map),
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

    fn mapping(&mut self, image_index: u32, image: &ProcessImage, map: &MapEntry) -> u32 {
        if let Some(&i) = self.mapping_index.get(&(image_index, map.start)) {
            return i;
        }
        let module = match self.module_index.get(&file_key(map)) {
            Some(&m) => m,
            None => {
                self.modules.push(Module {
                    path: map.path.to_string(),
                    build_id: Vec::new(),
                    kind: map.kind as i32,
                });
                let m = self.modules.len() as u32 - 1;
                self.module_index.insert(file_key(map), m);
                let fallback = (map.kind == ModuleKind::File).then(|| map_files_path(image, map));
                self.module_files.push(
                    fallback
                        .is_some()
                        .then(|| (file_key(map), fallback.flatten())),
                );
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

fn to_symbols(symbolized: &Symbolized<'_>) -> Symbols {
    let Symbolized::Sym(sym) = symbolized else {
        return Symbols::default();
    };
    let frame = |name: &str, info: Option<&bz::CodeInfo<'_>>| SymbolFrame {
        name: name.into(),
        file: info.map(|info| {
            let path = match &info.dir {
                Some(dir) => dir.join(&info.file),
                None => Path::new(&info.file).to_path_buf(),
            };
            Arc::<str>::from(path.to_string_lossy().as_ref())
        }),
        line: info.and_then(|info| info.line).unwrap_or(0),
    };
    // blazesym lists inlined functions outermost first; locations list frames innermost first.
    let mut frames: Vec<SymbolFrame> = sym
        .inlined
        .iter()
        .rev()
        .map(|f| frame(&f.name, f.code_info.as_ref()))
        .collect();
    frames.push(frame(&sym.name, sym.code_info.as_deref()));
    frames.into()
}

/// A JIT runtime's `/tmp/perf-PID.map` (`START SIZE name` per line, hex). blazesym reads these
/// only for a live process through its `/proc` maps; amprof needs them after the process has
/// gone, so it reads the file itself.
struct PerfMap {
    pid: u32,
    entries: Vec<(u64, u64, Arc<str>)>,
    read_len: u64,
}

impl PerfMap {
    fn new(pid: u32) -> Self {
        let mut map = Self {
            pid,
            entries: Vec::new(),
            read_len: 0,
        };
        map.reload();
        map
    }

    fn path(&self) -> String {
        format!("/tmp/perf-{}.map", self.pid)
    }

    fn reload(&mut self) {
        let Ok(text) = std::fs::read_to_string(self.path()) else {
            return;
        };
        self.read_len = text.len() as u64;
        self.entries = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.splitn(3, ' ');
                let start = u64::from_str_radix(parts.next()?.trim_start_matches("0x"), 16).ok()?;
                let size = u64::from_str_radix(parts.next()?.trim_start_matches("0x"), 16).ok()?;
                Some((start, start.checked_add(size)?, parts.next()?.trim().into()))
            })
            .collect();
        // Later entries win (runtimes re-emit code at reused addresses).
        self.entries.reverse();
        self.entries.sort_by_key(|e| e.0);
    }

    fn find(&self, address: u64) -> Option<&Arc<str>> {
        let i = self.entries.partition_point(|e| e.0 <= address);
        let (start, end, name) = self.entries.get(i.checked_sub(1)?)?;
        (*start <= address && address < *end).then_some(name)
    }

    fn lookup(&mut self, address: u64) -> Symbols {
        if self.find(address).is_none() {
            // The runtime may have appended since the file was read.
            let grown = std::fs::metadata(self.path()).is_ok_and(|m| m.len() != self.read_len);
            if grown {
                self.reload();
            }
        }
        match self.find(address) {
            Some(name) => Arc::new([SymbolFrame {
                name: name.clone(),
                file: None,
                line: 0,
            }]),
            None => Symbols::default(),
        }
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
