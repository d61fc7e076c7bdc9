//! Unwind tables for the eBPF program: built from each binary's `.eh_frame`, loaded into BPF
//! maps, and kept in step with the processes being sampled.
//!
//! In DWARF mode the eBPF program walks user stacks itself wherever it has a table for the code
//! (see ebpf-src/README.md): only frame addresses then leave the kernel, and stacks are complete
//! at any depth. This module is the userspace half:
//!
//! - **Tables** ([`super::unwind_table`]) are built off the sampling thread by a [`Worker`], once
//!   per file (identified like the symbolizer's files, by device, inode and path), and copied
//!   into the `UNWIND_ROWS` array map, one run of rows per binary. A build that overstays
//!   [`BUILD_TIMEOUT`] gives the file up (hostile or huge); a file without usable `.eh_frame`
//!   gets no table. Either way its code is unwound as before, from the stack copy.
//! - **Processes**: when a process is first sampled (or its mappings change), its executable
//!   mappings whose binaries have tables go into the `MAPPINGS` array and `PROCESSES` points
//!   the process at them. Until then, and for code without a table (JIT code, a binary whose
//!   table is still building), the eBPF program copies the stack as `-g dwarf-copy` does.
//! - **Bounds**: both arrays have a fixed size, chosen at load time. Space is handed out in
//!   runs ([`Space`]); tables no live process uses are evicted, least recently used first,
//!   when a new one needs room, and a table that still does not fit is counted and left out.
//!   Space given back is reused only after [`REUSE_AFTER`], so that a sample being unwound
//!   while userspace updates a process never reads a run that has been handed to another.
//!   (A sample that reads a process's old mappings in that moment unwinds with the process's
//!   previous tables: right for everything still mapped.)

use std::{
    collections::BTreeMap,
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
    worker::{self, Worker},
};
use crate::capture::format::ModuleKind;

/// Longest a table may take to build before its file is given up. Generous: the largest
/// binaries (librustc_driver, libLLVM: hundreds of thousands of functions) take about a second.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(10);
/// Space given back (a process gone or changed, a table evicted) is reused after this: longer
/// than any in-flight sample takes to unwind.
const REUSE_AFTER: Duration = Duration::from_millis(100);
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

/// What the tables cost and did, for a window's summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableStats {
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
    Loaded(Loaded),
    /// No table can be had for it (counted once).
    Unusable,
    /// Built, but there was no room.
    NoRoom,
}

struct Loaded {
    rows: Range<u32>,
    segments: Arc<[LoadSegment]>,
    /// Processes whose published mappings use this table...
    users: u32,
    /// ...and since when none has (eviction waits for samples in flight to be done with it).
    unused_since: Option<Instant>,
    /// When it was last published, for eviction.
    last_used: u64,
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
    row_space: Space,
    mapping_space: Space,
    tables: FxHashMap<FileKey, Table>,
    /// Files submitted to the current builder, oldest first: answers come in this order.
    in_flight: Vec<FileKey>,
    /// When the oldest file in flight got the builder to itself (its build's start, at the
    /// latest): the timeout counts from there, not from a wait in the queue behind others.
    head_since: Instant,
    builder: Worker<Arc<Pinned>, Option<Built>>,
    vdso: Option<Loaded>,
    published: FxHashMap<u32, Published>,
    /// Bumped each time a table loads.
    generation: u64,
    /// Counts publications, as a clock for least-recently-used eviction.
    clock: u64,
    /// Runs of `MAPPINGS` given back, reusable once old enough.
    returned: Vec<(Instant, Range<u32>)>,
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
            row_space: Space::new(space.rows),
            mapping_space: Space::new(space.mappings),
            tables: FxHashMap::default(),
            in_flight: Vec::new(),
            head_since: Instant::now(),
            builder: Worker::start(
                "amprof-tables",
                Arc::new(|| Box::new(|pinned: Arc<Pinned>| build_file(&pinned))),
            ),
            vdso: None,
            published: FxHashMap::default(),
            generation: 0,
            clock: 0,
            returned: Vec::new(),
            unusable: 0,
            no_room: 0,
        };
        if let Some(built) = super::unwind::own_vdso().and_then(|bytes| build_bytes(&bytes)) {
            tables.vdso = tables.load(built);
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
        self.clock += 1;
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
                    let clock = self.clock;
                    match self.table(&key, map.pinned.as_ref()) {
                        Some(Ok(loaded)) => {
                            loaded.last_used = clock;
                            loaded.users += 1;
                            loaded.unused_since = None;
                            files.push(key);
                            (loaded.rows.clone(), Arc::clone(&loaded.segments))
                        }
                        Some(Err(Pending)) => {
                            incomplete = true;
                            continue;
                        }
                        None => continue,
                    }
                }
                ModuleKind::Vdso => match &self.vdso {
                    Some(vdso) => (vdso.rows.clone(), Arc::clone(&vdso.segments)),
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
            match self.mapping_space.take(entries.len() as u32) {
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
            self.give_back(mappings.clone());
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
    pub fn take_stats(&mut self) -> TableStats {
        let loaded = || {
            self.tables.values().filter_map(|t| match t {
                Table::Loaded(l) => Some(l),
                _ => None,
            })
        };
        TableStats {
            tables: loaded().count() as u64,
            rows: loaded()
                .chain(self.vdso.as_ref())
                .map(|l| u64::from(l.rows.end - l.rows.start))
                .sum(),
            row_capacity: u64::from(self.row_space.capacity),
            unusable: std::mem::take(&mut self.unusable),
            no_room: std::mem::take(&mut self.no_room),
            processes: self
                .published
                .values()
                .filter(|p| !p.mappings.is_empty())
                .count() as u64,
        }
    }

    /// The table of `key` if loaded (`Err(Pending)` while building, after asking for it);
    /// `None` if it has none.
    fn table(
        &mut self,
        key: &FileKey,
        pinned: Option<&Arc<Pinned>>,
    ) -> Option<Result<&mut Loaded, Pending>> {
        if !self.tables.contains_key(key) {
            let pinned = pinned?;
            self.tables.insert(key.clone(), Table::Building);
            if self.in_flight.is_empty() {
                self.head_since = Instant::now();
            }
            self.in_flight.push(key.clone());
            self.builder.submit(Arc::clone(pinned));
        }
        match self.tables.get_mut(key)? {
            Table::Loaded(loaded) => Some(Ok(loaded)),
            Table::Building => Some(Err(Pending)),
            Table::Unusable | Table::NoRoom => None,
        }
    }

    /// Takes in the tables the builder finished, and gives up on a build that overstays.
    fn collect_built(&mut self) {
        self.reuse_returned();
        while let Some(answer) = self.builder.try_answer() {
            if self.in_flight.is_empty() {
                break;
            }
            let key = self.in_flight.remove(0);
            self.head_since = Instant::now();
            let table = match answer.flatten() {
                Some(built) => match self.load(built) {
                    Some(loaded) => Table::Loaded(loaded),
                    None => {
                        self.no_room += 1;
                        Table::NoRoom
                    }
                },
                None => {
                    self.unusable += 1;
                    Table::Unusable
                }
            };
            self.tables.insert(key, table);
            self.generation += 1;
        }
        let stalled = !self.in_flight.is_empty() && self.head_since.elapsed() > BUILD_TIMEOUT;
        if stalled {
            // The builder is stuck on its current file: give that one up, and hand the files
            // queued behind it to a fresh builder when they are next asked for.
            let stuck = self.in_flight.remove(0);
            self.tables.insert(stuck, Table::Unusable);
            self.unusable += 1;
            self.generation += 1;
            self.builder.restart();
            for key in std::mem::take(&mut self.in_flight) {
                self.tables.remove(&key);
            }
        }
    }

    /// Copies `built` into the rows map, evicting unused tables if it needs the room.
    fn load(&mut self, built: Built) -> Option<Loaded> {
        let len = u32::try_from(built.rows.len()).ok()?;
        if len == 0 || len > MAX_TABLE_ROWS {
            return None;
        }
        let run = loop {
            if let Some(run) = self.row_space.take(len) {
                break run;
            }
            if !self.evict_one() {
                return None;
            }
        };
        self.rows.write(run.start, &built.rows);
        Some(Loaded {
            rows: run,
            segments: built.segments,
            users: 0,
            unused_since: Some(Instant::now()),
            last_used: self.clock,
        })
    }

    /// Evicts the least recently used table no process uses; false if there is none.
    fn evict_one(&mut self) -> bool {
        let victim = self
            .tables
            .iter()
            .filter_map(|(key, t)| match t {
                Table::Loaded(l) if l.unused_since.is_some_and(|t| t.elapsed() >= REUSE_AFTER) => {
                    Some((l.last_used, key.clone()))
                }
                _ => None,
            })
            .min_by_key(|(used, _)| *used)
            .map(|(_, key)| key);
        let Some(key) = victim else {
            return false;
        };
        if let Some(Table::Loaded(loaded)) = self.tables.remove(&key) {
            // Unused for longer than any sample takes to unwind: its rows are free at once.
            self.row_space.give(loaded.rows);
        }
        true
    }

    /// Drops `old`'s claims: its mapping run and its tables' users.
    fn release(&mut self, old: Published) {
        self.give_back(old.mappings);
        for key in &old.files {
            if let Some(Table::Loaded(loaded)) = self.tables.get_mut(key) {
                loaded.users = loaded.users.saturating_sub(1);
                if loaded.users == 0 {
                    loaded.unused_since = Some(Instant::now());
                }
            }
        }
    }

    /// Gives a run of `MAPPINGS` back, for reuse once samples in flight are done with it.
    fn give_back(&mut self, run: Range<u32>) {
        if !run.is_empty() {
            self.returned.push((Instant::now(), run));
        }
    }

    fn reuse_returned(&mut self) {
        if self.returned.is_empty() {
            return;
        }
        let now = Instant::now();
        let (old, young): (Vec<_>, Vec<_>) = std::mem::take(&mut self.returned)
            .into_iter()
            .partition(|(at, _)| now.duration_since(*at) >= REUSE_AFTER);
        self.returned = young;
        for (_, run) in old {
            self.mapping_space.give(run);
        }
    }
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

/// Runs of a fixed-size array handed out and given back: first fit, adjacent free runs merged.
#[derive(Debug)]
pub struct Space {
    capacity: u32,
    /// Free runs, by start: start -> end.
    free: BTreeMap<u32, u32>,
}

impl Space {
    pub fn new(capacity: u32) -> Self {
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Self { capacity, free }
    }

    /// A run of `len` entries, if there is room.
    pub fn take(&mut self, len: u32) -> Option<Range<u32>> {
        let (&start, &end) = self.free.iter().find(|&(&s, &e)| e - s >= len)?;
        self.free.remove(&start);
        if end - start > len {
            self.free.insert(start + len, end);
        }
        Some(start..start + len)
    }

    /// Gives `run` back.
    pub fn give(&mut self, run: Range<u32>) {
        if run.is_empty() {
            return;
        }
        let (mut start, mut end) = (run.start, run.end);
        if let Some((&s, &e)) = self.free.range(..start).next_back()
            && e == start
        {
            self.free.remove(&s);
            start = s;
        }
        if let Some(&e) = self.free.get(&end) {
            self.free.remove(&end);
            end = e;
        }
        self.free.insert(start, end);
    }

    /// Entries free.
    pub fn free(&self) -> u32 {
        self.free.iter().map(|(s, e)| e - s).sum()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_hands_out_runs_and_merges_what_comes_back() {
        let mut space = Space::new(100);
        let a = space.take(30).unwrap();
        let b = space.take(30).unwrap();
        let c = space.take(40).unwrap();
        assert_eq!((a.clone(), b.clone(), c.clone()), (0..30, 30..60, 60..100));
        assert_eq!(space.take(1), None);
        space.give(b);
        assert_eq!(space.take(31), None, "only 30 free in one run");
        space.give(a);
        assert_eq!(space.free(), 60);
        assert_eq!(space.take(60), Some(0..60), "merged with its neighbour");
        space.give(0..60);
        space.give(c);
        assert_eq!(space.free(), 100);
        assert_eq!(
            space.take(100),
            Some(0..100),
            "all merged back into one run"
        );
    }
}
