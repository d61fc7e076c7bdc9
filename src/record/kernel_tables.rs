//! Unwind tables for the eBPF program: built from each binary's `.eh_frame`, loaded into BPF
//! maps, and kept in step with the processes being sampled.
//!
//! In DWARF mode the eBPF program walks user stacks itself wherever it has a table for the code
//! (see ebpf-src/README.md): only frame addresses then leave the kernel, and stacks are complete
//! at any depth. This module is the userspace half:
//!
//! - **Tables** ([`super::unwind_table`]) are built off the sampling thread by a [`JobQueue`],
//!   once per file (identified like the symbolizer's files, by device, inode and path), and
//!   copied into the `UNWIND_ROWS` array map, one run of rows per binary. A build that
//!   overstays [`BUILD_TIMEOUT`] (from when the builder starts it) gives the file up (hostile
//!   or huge); a file without usable `.eh_frame` gets no table. Either way its code is unwound
//!   as before, from the stack copy.
//! - **Processes**: when a process is first sampled (or its mappings change), its executable
//!   mappings whose binaries have tables go into the `MAPPINGS` array and `PROCESSES` points
//!   the process at them. Until then, and for code without a table (JIT code, a binary whose
//!   table is still building), the eBPF program copies the stack as `-g dwarf-copy` does.
//! - **Bounds**: both arrays have a fixed size, chosen at load time. Where things go in them,
//!   and which table is evicted for a new one, is decided by a [`Room`] ([`room`], plain data
//!   and no map, so tested without root): tables no live process uses are evicted, least
//!   recently used first, when a new one needs room, and a table that still does not fit is
//!   counted and left out. Space given back is reused only after [`room::REUSE_AFTER`], so that
//!   a sample being unwound while userspace updates a process never reads a run that has been
//!   handed to another. (A sample that reads a process's old mappings in that moment unwinds
//!   with the process's previous tables: right for everything still mapped.) This module
//!   carries the decisions out: the writes to the BPF maps.

mod room;

use std::{
    ops::Range,
    os::fd::{AsFd as _, AsRawFd as _},
    sync::Arc,
    time::{Duration, Instant},
};

use amprof_abi::{ExecMapping, MAX_PROCESS_MAPPINGS, MAX_TABLE_ROWS, ProcessMappings, UnwindRow};
use anyhow::{Context as _, Result};
use aya::maps::{HashMap as BpfHashMap, MapData};
use rustc_hash::FxHashMap;
use serde::Serialize;

use super::{
    elf::{self, LoadSegment},
    files::Pinned,
    procs::{FileKey, ProcessImage},
    sampler::{TableMaps, TableSpace},
    unwind_table,
    worker::{self, Event, JobQueue},
};
use crate::capture::format::ModuleKind;
pub use room::Space;
use room::{Placed, Room};

/// Longest a table may take to build, from when the builder starts on it, before its file is
/// given up. Generous: the largest binaries (librustc_driver, libLLVM: hundreds of thousands of
/// functions) take about a second.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(10);
/// Default room for tables: 8 M rows (64 MiB of kernel memory) holds the tables of every
/// binary of a busy machine, a Rust build's librustc_driver included.
pub const DEFAULT_TABLE_ROWS: u32 = 8 << 20;
/// Room for executable mappings of processes with tables (32 bytes each): 64 Ki (2 MiB).
pub const DEFAULT_MAPPINGS: u32 = 64 << 10;

/// A `PROCESSES` value, as aya wants map values.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct ProcessValue(ProcessMappings);
// SAFETY: plain old data (two u32), any bit pattern valid.
unsafe impl aya::Pod for ProcessValue {}

/// What the kernel's tables hold now and what went wrong since the last take, for a window's
/// summary (not what building one table found: that is [`unwind_table::BuildStats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelTableStats {
    /// Tables loaded now, and their rows.
    pub tables: u64,
    pub rows: u64,
    /// Room for rows (fixed at start).
    pub row_capacity: u64,
    /// Binaries that got no table since the last take: no usable `.eh_frame`, a build that
    /// failed or overstayed, or a table too large.
    pub unusable: u64,
    /// Tables that did not fit in the room left, since the last take.
    pub no_room: u64,
    /// Processes whose mappings are in the kernel now.
    pub processes: u64,
}

/// A file's table, as far as it got.
enum Table {
    Building,
    /// In the rows map, where the [`Room`] says; the file's load segments, to place it in a
    /// process.
    Loaded(Arc<[LoadSegment]>),
    /// No table can be had for it (counted once).
    Unusable,
    /// Built, but there was no room.
    NoRoom,
}

/// A process as the kernel knows it.
struct Published {
    image: Arc<ProcessImage>,
    mappings: Range<u32>,
    files: Vec<FileKey>,
    /// Some tables it needs were still building at this generation: publish again once more
    /// have loaded.
    incomplete_at: Option<u64>,
}

/// A built table on its way from the worker.
struct Built {
    rows: Vec<UnwindRow>,
    segments: Arc<[LoadSegment]>,
}

/// Unwind tables in the kernel, for every process being sampled.
pub struct KernelTables {
    rows: SharedArray,
    mappings: SharedArray,
    processes: BpfHashMap<MapData, u32, ProcessValue>,
    /// Where tables and mappings go in `rows` and `mappings`, and what is evicted.
    room: Room<FileKey>,
    tables: FxHashMap<FileKey, Table>,
    /// Builds tables, each within [`BUILD_TIMEOUT`].
    builder: JobQueue<FileKey, Arc<Pinned>, Option<Built>>,
    /// The vDSO's rows (kept for good) and load segments.
    vdso: Option<(Range<u32>, Arc<[LoadSegment]>)>,
    published: FxHashMap<u32, Published>,
    /// Bumped each time a table loads.
    generation: u64,
    unusable: u64,
    no_room: u64,
}

impl KernelTables {
    /// Takes over the table maps and loads the vDSO's table (every process maps the same one).
    pub fn new(maps: TableMaps) -> Result<Self> {
        let TableMaps {
            rows,
            mappings,
            processes,
            space,
        } = maps;
        let processes = BpfHashMap::try_from(aya::maps::Map::HashMap(processes))
            .context("the PROCESSES map has an unexpected type")?;
        let mut tables = Self {
            rows: SharedArray::new(rows, size_of::<UnwindRow>(), space.rows),
            mappings: SharedArray::new(mappings, size_of::<ExecMapping>(), space.mappings),
            processes,
            room: Room::new(space.rows, space.mappings),
            tables: FxHashMap::default(),
            builder: JobQueue::new(
                "amprof-tables",
                BUILD_TIMEOUT,
                Arc::new(|| Box::new(|pinned: Arc<Pinned>| build_file(&pinned))),
            ),
            vdso: None,
            published: FxHashMap::default(),
            generation: 0,
            unusable: 0,
            no_room: 0,
        };
        if let Some(built) = super::unwind::own_vdso().and_then(|bytes| build_bytes(&bytes)) {
            tables.vdso = tables.load_for_good(built);
        }
        Ok(tables)
    }

    /// Makes sure the kernel has `image`'s mappings for `pid`: called for every sample, cheap
    /// when nothing changed.
    pub fn publish(&mut self, pid: u32, image: &Arc<ProcessImage>) {
        // Tables that finished building are what makes an incomplete process due again.
        self.collect_built();
        if let Some(published) = self.published.get(&pid)
            && Arc::ptr_eq(&published.image, image)
            && published
                .incomplete_at
                .is_none_or(|at| at == self.generation)
        {
            return;
        }
        self.room.start_publication();
        let mut entries: Vec<ExecMapping> = Vec::new();
        let mut files = Vec::new();
        let mut incomplete = false;
        for map in &image.maps {
            if entries.len() >= MAX_PROCESS_MAPPINGS as usize {
                break;
            }
            let (rows, segments) = match map.kind {
                ModuleKind::File => {
                    let key = map.file_key();
                    match self.table(&key, map.pinned.as_ref()) {
                        Some(Ok(segments)) => {
                            let Some(rows) = self.room.use_table(&key) else {
                                continue;
                            };
                            files.push(key);
                            (rows, segments)
                        }
                        Some(Err(Pending)) => {
                            incomplete = true;
                            continue;
                        }
                        None => continue,
                    }
                }
                ModuleKind::Vdso => match &self.vdso {
                    Some((rows, segments)) => (rows.clone(), Arc::clone(segments)),
                    None => continue,
                },
                _ => continue,
            };
            let Some(bias) = elf::load_bias(&segments, map.start, map.file_offset) else {
                continue;
            };
            entries.push(ExecMapping {
                start: map.start,
                end: map.end,
                bias,
                first_row: rows.start,
                rows: rows.end - rows.start,
            });
        }
        // Mappings are sorted by start already (ProcessImage keeps them so); the eBPF search
        // relies on it.
        debug_assert!(entries.windows(2).all(|w| w[0].end <= w[1].start));
        let mappings = if entries.is_empty() {
            0..0
        } else {
            match self
                .room
                .take_mappings(entries.len() as u32, Instant::now())
            {
                Some(run) => {
                    self.mappings.write(run.start, &entries);
                    run
                }
                None => {
                    // No room for its mappings: the process is unwound from stack copies.
                    self.no_room += 1;
                    0..0
                }
            }
        };
        let result = if mappings.is_empty() {
            self.processes.remove(&pid).or(Ok(()))
        } else {
            self.processes.insert(
                pid,
                ProcessValue(ProcessMappings {
                    first: mappings.start,
                    len: mappings.end - mappings.start,
                }),
                0,
            )
        };
        if result.is_err() {
            // PROCESSES is full: this process is unwound from stack copies.
            self.room
                .give_back_mappings(mappings.clone(), Instant::now());
        }
        let published = Published {
            image: Arc::clone(image),
            mappings: if result.is_ok() { mappings } else { 0..0 },
            files,
            incomplete_at: incomplete.then_some(self.generation),
        };
        if let Some(old) = self.published.insert(pid, published) {
            self.release(old);
        }
    }

    /// Forgets the processes for which `keep` is false (gone, or not sampled lately).
    pub fn retain(&mut self, keep: impl Fn(u32, &Arc<ProcessImage>) -> bool) {
        let gone: Vec<u32> = self
            .published
            .iter()
            .filter(|(pid, p)| !keep(**pid, &p.image))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            if let Some(old) = self.published.remove(&pid) {
                let _ = self.processes.remove(&pid);
                self.release(old);
            }
        }
        self.collect_built();
    }

    /// The counts for a window's summary (the problem counts restart from zero).
    pub fn take_stats(&mut self) -> KernelTableStats {
        KernelTableStats {
            tables: self.room.tables() as u64,
            rows: self.room.rows_used(),
            row_capacity: u64::from(self.room.row_capacity()),
            unusable: std::mem::take(&mut self.unusable),
            no_room: std::mem::take(&mut self.no_room),
            processes: self
                .published
                .values()
                .filter(|p| !p.mappings.is_empty())
                .count() as u64,
        }
    }

    /// The load segments of `key` if its table is loaded (`Err(Pending)` while building,
    /// after asking for it); `None` if it has none.
    fn table(
        &mut self,
        key: &FileKey,
        pinned: Option<&Arc<Pinned>>,
    ) -> Option<Result<Arc<[LoadSegment]>, Pending>> {
        if !self.tables.contains_key(key) {
            let pinned = pinned?;
            self.tables.insert(key.clone(), Table::Building);
            self.builder.submit(key.clone(), Arc::clone(pinned));
        }
        match self.tables.get(key)? {
            Table::Loaded(segments) => Some(Ok(Arc::clone(segments))),
            Table::Building => Some(Err(Pending)),
            Table::Unusable | Table::NoRoom => None,
        }
    }

    /// Takes in the tables the builder finished, and gives up on a build that overstays.
    fn collect_built(&mut self) {
        while let Some(event) = self.builder.next_event() {
            let (key, table) = match event {
                Event::Done(key, Some(Some(built))) => match self.load(&key, built) {
                    Some(segments) => (key, Table::Loaded(segments)),
                    None => {
                        self.no_room += 1;
                        (key, Table::NoRoom)
                    }
                },
                // No usable `.eh_frame`, a build that failed or panicked, or one that
                // overstayed (the builder was replaced).
                Event::Done(key, _) | Event::Overstayed(key) => {
                    self.unusable += 1;
                    (key, Table::Unusable)
                }
                // Queued behind one that overstayed: submitted again, to the fresh builder,
                // when next asked for.
                Event::Untried(key) => {
                    self.tables.remove(&key);
                    continue;
                }
            };
            self.tables.insert(key, table);
            self.generation += 1;
        }
    }

    /// Copies `built` into the rows map where the room says, evicting unused tables if it
    /// needs the room; `None` if it does not fit.
    fn load(&mut self, key: &FileKey, built: Built) -> Option<Arc<[LoadSegment]>> {
        let len = table_len(&built)?;
        let Placed { rows, evicted } = self.room.place(key.clone(), len, Instant::now());
        for key in evicted {
            // Built again when next asked for.
            self.tables.remove(&key);
        }
        self.rows.write(rows?.start, &built.rows);
        Some(built.segments)
    }

    /// Copies `built` into the rows map for good (the vDSO's table, which every process uses).
    fn load_for_good(&mut self, built: Built) -> Option<(Range<u32>, Arc<[LoadSegment]>)> {
        let rows = self.room.keep(table_len(&built)?)?;
        self.rows.write(rows.start, &built.rows);
        Some((rows, built.segments))
    }

    /// Drops `old`'s claims: its mapping run and its tables' users.
    fn release(&mut self, old: Published) {
        let now = Instant::now();
        self.room.give_back_mappings(old.mappings, now);
        for key in &old.files {
            self.room.release_table(key, now);
        }
    }
}

/// The rows of `built`, if the eBPF side can take a table that long.
fn table_len(built: &Built) -> Option<u32> {
    let len = u32::try_from(built.rows.len()).ok()?;
    (len != 0 && len <= MAX_TABLE_ROWS).then_some(len)
}

/// A table still being built.
struct Pending;

/// Builds the table of a pinned file (on the builder thread).
fn build_file(pinned: &Pinned) -> Option<Built> {
    let file = pinned.open().ok()?;
    let map = file.map().ok()?;
    build_bytes(&map)
}

/// Builds the table of the ELF image in `data`. Its parser meets hostile bytes: a panic in it is
/// contained here too (the builder thread contains it as well; the vDSO is built on the caller's).
fn build_bytes(data: &[u8]) -> Option<Built> {
    worker::contained(|| {
        let table = unwind_table::build(data, MAX_TABLE_ROWS as usize)?;
        let object = object::File::parse(data).ok()?;
        Some(Built {
            rows: table.rows,
            segments: elf::load_segments(&object).into(),
        })
    })
    .flatten()
}

/// An array map shared with the kernel (`BPF_F_MMAPABLE`), written through a memory mapping of
/// just the pages being written, so that a table's rows never stay resident in amprof.
struct SharedArray {
    map: MapData,
    element: usize,
    len: u32,
}

impl SharedArray {
    fn new(map: MapData, element: usize, len: u32) -> Self {
        Self { map, element, len }
    }

    /// Writes `items` at `index` onwards. The caller owns that run of the array.
    fn write<T: Copy>(&self, index: u32, items: &[T]) {
        assert_eq!(size_of::<T>(), self.element, "element size");
        assert!(
            index as usize + items.len() <= self.len as usize,
            "run inside the array"
        );
        const CHUNK: usize = 1 << 20;
        let page = page_size();
        let bytes = unsafe {
            // SAFETY: T is plain data of `element` bytes; reading it as bytes is fine.
            std::slice::from_raw_parts(items.as_ptr().cast::<u8>(), size_of_val(items))
        };
        let mut offset = index as usize * self.element;
        for piece in bytes.chunks(CHUNK) {
            let start = offset & !(page - 1);
            let len = offset + piece.len() - start;
            // SAFETY: a shared mapping of the map's own pages, inside its size (checked above);
            // unmapped before returning. Failure is checked.
            unsafe {
                let base = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    self.map.fd().as_fd().as_raw_fd(),
                    start as libc::off_t,
                );
                if base == libc::MAP_FAILED {
                    // Cannot happen for a mappable array within its size; the rows just
                    // stay as they were (zeros: no unwinding through them).
                    return;
                }
                std::ptr::copy_nonoverlapping(
                    piece.as_ptr(),
                    base.cast::<u8>().add(offset - start),
                    piece.len(),
                );
                libc::munmap(base, len);
            }
            offset += piece.len();
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

impl TableSpace {
    /// The default room for tables.
    pub fn default_room() -> Self {
        Self {
            rows: DEFAULT_TABLE_ROWS,
            mappings: DEFAULT_MAPPINGS,
        }
    }
}
