//! Naming addresses: the half of symbolization that reads sampled processes' files, on a
//! [`super::worker::Worker`] thread so that no file can stall recording.
//!
//! [`Resolver::run`] answers a [`Job`]: the addresses of a window that earlier windows did not
//! already name, by file, plus kernel, vDSO and JIT addresses. Files reach blazesym in one of
//! two ways, decided per file from what amprof opened itself ([`Access`]):
//!
//! - **By path**, when only root controls the file and the directory it is in (owned by root,
//!   writable by no one else), its path still leads to the very inode mapped, and its debug
//!   links stay in directories amprof chose ([`elf::DebugLinks::confined`]): blazesym opens it
//!   and follows its `.gnu_debuglink`, `.dwp` and supplementary files as for any system
//!   library, and shares what it parsed across processes.
//! - **By descriptor** otherwise: blazesym gets `/proc/self/fd/N` of the file amprof opened
//!   (so a `.dwp` sibling cannot exist), and reads its DWARF only if the file names no other
//!   file; a file with debug links gets its ELF symbols only, plus a debug file amprof finds
//!   itself by build-id ([`debuginfo`]), checked.
//!
//! Build-ids are read here too, from notes owned by `GNU` only.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use blazesym::symbolize::{
    self as bz, Input, Symbolized,
    source::{Elf, Kernel, Source},
};
use rustc_hash::{FxHashMap, FxHashSet};

use super::{
    debuginfo::{self, Debuginfod},
    elf::{self, DEBUG_DIR, LoadSegment},
    files::{Pinned, SafeFile},
    perf_map::PerfMap,
    procs::FileKey,
};
use crate::capture::format::Problems;

/// One source-level frame: a function name, and its file and line when debug info has them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SymbolFrame {
    pub name: Arc<str>,
    pub file: Option<Arc<str>>,
    pub line: u32,
}

/// What an address symbolized to, innermost frame first; empty when unknown.
pub type Symbols = Arc<[SymbolFrame]>;

/// Longest name kept (a C++ template instance can be long; a hostile symbol table can hold
/// names of any length).
pub const MAX_NAME_BYTES: usize = 16 << 10;

/// A mapped file, as the sampling thread pinned it.
#[derive(Clone, Debug)]
pub struct FileRef {
    pub key: FileKey,
    pub pinned: Option<Arc<Pinned>>,
}

/// Addresses to name.
#[derive(Default)]
pub struct Job {
    pub kernel: Vec<u64>,
    /// Per file: the file offsets to name, and whether its build-id is wanted.
    pub files: Vec<(FileRef, Vec<u64>, bool)>,
    /// Per process (pid, uid): addresses in anonymous memory, for its perf map.
    pub jits: Vec<((u32, u32), Vec<u64>)>,
    /// Offsets in the vDSO.
    pub vdso: Vec<u64>,
}

impl Job {
    pub fn is_empty(&self) -> bool {
        self.kernel.is_empty()
            && self.files.is_empty()
            && self.jits.is_empty()
            && self.vdso.is_empty()
    }
}

/// The names of a [`Job`]'s addresses, in its order.
#[derive(Default)]
pub struct Answer {
    pub kernel: Vec<Symbols>,
    /// Per file: the symbols of its offsets, and its build-id (empty: unknown or not asked).
    pub files: Vec<(Vec<Symbols>, Vec<u8>)>,
    pub jits: Vec<Vec<Symbols>>,
    pub vdso: Vec<Symbols>,
    pub problems: Problems,
}

/// Shared with the writer, which abandons a resolver that overstays: the file it was working on
/// (to be skipped from then on), and those files.
#[derive(Clone, Default)]
pub struct StallWatch {
    pub current: Arc<Mutex<Option<FileKey>>>,
    pub stalled: Arc<Mutex<FxHashSet<FileKey>>>,
}

/// How blazesym reads a file (see the module documentation).
enum Access {
    Path(String),
    Descriptor { file: SafeFile, dwarf: bool },
}

impl Access {
    fn source(&self) -> Source<'static> {
        match self {
            Access::Path(path) => Source::Elf(Elf::new(path.as_str())),
            Access::Descriptor { file, dwarf } => {
                let mut elf = Elf::new(file.proc_path());
                elf.debug_syms = *dwarf;
                Source::Elf(elf)
            }
        }
    }
}

/// What is known of one file: how to symbolize it, its build-id.
struct FileState {
    /// `None`: it cannot be read (refused, or not ELF).
    access: Option<Access>,
    /// A separate debug file, for a binary without symbols of its own: its virtual addresses
    /// are the binary's, its file layout is not.
    debug: Option<(Access, Vec<LoadSegment>)>,
    build_id: Vec<u8>,
    /// Symbolized by a symbolizer of its own, dropped after each use (see [`KEEP_PARSED_UP_TO`]).
    transient: bool,
}

/// Files up to this size stay parsed in the long-lived symbolizer between windows. Larger ones,
/// and separate debug files (whose DWARF blazesym decompresses and keeps), are parsed afresh for
/// each window and let go at once: blazesym keeps a file's mapping (whose touched pages count
/// in amprof's RSS), its sorted symbol index and its decompressed sections for as long as the
/// symbolizer lives. During a cargo build, librustc_driver and libLLVM alone kept 30 MB of
/// symbol tables resident and libc's debug file 12 MB of DWARF; parsing them again costs about
/// 10 ms a window each.
const KEEP_PARSED_UP_TO: u64 = 4 << 20;

/// The resolver's state, on its worker thread.
pub struct Resolver {
    blazesym: bz::Symbolizer,
    inline: bool,
    files: FxHashMap<FileKey, FileState>,
    perf_maps: FxHashMap<u32, PerfMap>,
    debuginfod: Debuginfod,
    own_vdso: Option<u64>,
    watch: StallWatch,
}

/// Files whose state is kept; beyond, every cache starts again (and blazesym's with them).
const MAX_FILES: usize = 4096;

impl Resolver {
    pub fn new(inline: bool, watch: StallWatch) -> Self {
        let own_vdso = super::procs::read_maps(Path::new("/proc/self/maps"), usize::MAX)
            .and_then(|(maps, _)| {
                maps.into_iter()
                    .find(|m| m.kind == crate::capture::format::ModuleKind::Vdso)
            })
            .map(|m| m.start);
        Self {
            blazesym: new_blazesym(inline),
            inline,
            files: FxHashMap::default(),
            perf_maps: FxHashMap::default(),
            debuginfod: Debuginfod::from_env(),
            own_vdso,
            watch,
        }
    }

    /// Names the addresses of `job`.
    pub fn run(&mut self, job: Job) -> Answer {
        if self.files.len() > MAX_FILES {
            self.files.clear();
            self.perf_maps.clear();
            self.blazesym = new_blazesym(self.inline);
        }
        let mut answer = Answer::default();
        if !job.kernel.is_empty() {
            let source = Source::Kernel(Kernel {
                debug_syms: false,
                ..Kernel::default()
            });
            let resolved = self
                .blazesym
                .symbolize(&source, Input::AbsAddr(&job.kernel))
                .unwrap_or_default();
            answer.kernel = (0..job.kernel.len())
                .map(|i| resolved.get(i).map(to_symbols).unwrap_or_default())
                .collect();
        }
        for (file, offsets, want_build_id) in &job.files {
            let stalled = self
                .watch
                .stalled
                .lock()
                .is_ok_and(|s| s.contains(&file.key));
            if stalled {
                answer
                    .files
                    .push((vec![Symbols::default(); offsets.len()], Vec::new()));
                continue;
            }
            if let Ok(mut current) = self.watch.current.lock() {
                *current = Some(file.key.clone());
            }
            let symbols = self.file_symbols(file, offsets, &mut answer.problems);
            let build_id = if *want_build_id {
                self.files
                    .get(&file.key)
                    .map(|s| s.build_id.clone())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            answer.files.push((symbols, build_id));
        }
        if let Ok(mut current) = self.watch.current.lock() {
            *current = None;
        }
        for ((pid, uid), addresses) in &job.jits {
            let map = self.perf_maps.entry(*pid).or_default();
            // Once per job: what the runtime appended since the last window.
            if !map.is_full() && map.refresh(*pid, *uid).is_err() {
                // No perf map (the common case for code that is not JIT output), or one that is
                // not trusted: no names.
            }
            answer.problems.perf_map_lines_skipped += map.take_skipped();
            answer.jits.push(
                addresses
                    .iter()
                    .map(|&address| match map.find(address) {
                        Some(name) => Arc::new([SymbolFrame {
                            name: Arc::clone(name),
                            file: None,
                            line: 0,
                        }]) as Symbols,
                        None => Symbols::default(),
                    })
                    .collect(),
            );
        }
        answer.vdso = job.vdso.iter().map(|&o| self.vdso_symbols(o)).collect();
        answer.problems.files_refused += self.debuginfod.take_refused();
        answer
    }

    /// The symbols of `offsets` in `file`.
    fn file_symbols(
        &mut self,
        file: &FileRef,
        offsets: &[u64],
        problems: &mut Problems,
    ) -> Vec<Symbols> {
        if !self.files.contains_key(&file.key) {
            let state = self.file_state(file, problems);
            self.files.insert(file.key.clone(), state);
        }
        let state = &self.files[&file.key];
        let transient = state.transient.then(|| new_blazesym(self.inline));
        let symbolizer = transient.as_ref().unwrap_or(&self.blazesym);
        let resolved = match (&state.debug, &state.access) {
            (Some((debug, layout)), _) => {
                let addresses: Vec<u64> = offsets
                    .iter()
                    .map(|&o| elf::virtual_address(layout, o).unwrap_or(u64::MAX))
                    .collect();
                symbolizer
                    .symbolize(&debug.source(), Input::VirtOffset(&addresses))
                    .unwrap_or_default()
            }
            (None, Some(access)) => symbolizer
                .symbolize(&access.source(), Input::FileOffset(offsets))
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        (0..offsets.len())
            .map(|i| resolved.get(i).map(to_symbols).unwrap_or_default())
            .collect()
    }

    /// Opens `file` the one safe way and decides how blazesym may read it.
    fn file_state(&mut self, file: &FileRef, problems: &mut Problems) -> FileState {
        let unreadable = FileState {
            access: None,
            debug: None,
            build_id: Vec::new(),
            transient: false,
        };
        let Some(opened) = file.pinned.as_ref().map(|p| p.open()) else {
            return unreadable;
        };
        let opened = match opened {
            Ok(opened) => opened,
            Err(_) => {
                problems.files_refused += 1;
                return unreadable;
            }
        };
        let Some(facts) = opened.map().ok().and_then(|map| elf::facts(&map)) else {
            problems.files_refused += 1;
            return unreadable;
        };
        let build_id = facts.build_id.clone().unwrap_or_default();
        let size = opened.stat().size;
        let access = if root_controlled_at_path(&opened, &file.key.2) && facts.links.confined() {
            Access::Path(file.key.2.to_string())
        } else {
            Access::Descriptor {
                file: opened,
                dwarf: !facts.links.any(),
            }
        };
        let debug = if facts.has_symbols || build_id.is_empty() {
            None
        } else {
            debuginfo::from_debug_dir(&build_id)
                .or_else(|| self.debuginfod.debug_file(&build_id))
                .map(|debug| {
                    let dwarf = debug.facts.links.confined();
                    (
                        Access::Descriptor {
                            file: debug.file,
                            dwarf,
                        },
                        facts.segments.clone(),
                    )
                })
        };
        FileState {
            transient: debug.is_some() || size > KEEP_PARSED_UP_TO,
            access: Some(access),
            debug,
            build_id,
        }
    }

    fn vdso_symbols(&mut self, offset: u64) -> Symbols {
        let Some(start) = self.own_vdso else {
            return Symbols::default();
        };
        let mut own = bz::source::Process::new(std::process::id().into());
        // Only our vDSO is looked up: never a perf map (anyone can create
        // /tmp/perf-<amprof's pid>.map) nor debug files.
        own.perf_map = false;
        own.debug_syms = false;
        let source = Source::Process(own);
        self.blazesym
            .symbolize_single(&source, Input::AbsAddr(start + offset))
            .map(|s| to_symbols(&s))
            .unwrap_or_default()
    }
}

fn new_blazesym(inline: bool) -> bz::Symbolizer {
    bz::Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(inline)
        .enable_demangling(true)
        // Debug links are looked up here and beside the binary only (see `Access`).
        .set_debug_dirs(Some([DEBUG_DIR]))
        .build()
}

/// True if only root can change `file` and the directory `path` names it in, and `path` still
/// leads to `file` without a symlink: then whatever blazesym finds beside it is root's too.
fn root_controlled_at_path(file: &SafeFile, path: &str) -> bool {
    let path = Path::new(path);
    let stat = file.stat();
    let same = Pinned::path(path)
        .and_then(|p| p.stat())
        .is_ok_and(|s| (s.dev, s.ino) == (stat.dev, stat.ino));
    let dir_controlled = path
        .parent()
        .and_then(|dir| Pinned::path(dir).ok())
        .and_then(|dir| dir.stat().ok())
        .is_some_and(|dir| dir.root_controlled());
    stat.root_controlled() && same && dir_controlled
}

pub fn to_symbols(symbolized: &Symbolized<'_>) -> Symbols {
    let Symbolized::Sym(sym) = symbolized else {
        return Symbols::default();
    };
    let frame = |name: &str, info: Option<&bz::CodeInfo<'_>>| SymbolFrame {
        name: bounded(name).into(),
        file: info.map(|info| {
            let path = match &info.dir {
                Some(dir) => dir.join(&info.file),
                None => Path::new(&info.file).to_path_buf(),
            };
            Arc::<str>::from(bounded(&path.to_string_lossy()))
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

/// `name`, cut to [`MAX_NAME_BYTES`] (on a character boundary).
fn bounded(name: &str) -> &str {
    if name.len() <= MAX_NAME_BYTES {
        return name;
    }
    let mut end = MAX_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}
