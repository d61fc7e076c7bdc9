//! What amprof knows about the processes it samples: names and executable mappings, read from
//! `/proc` when a process is first seen, because `/proc/PID/maps` is gone once it exits.
//!
//! A *process image* is a pid between two execs: an exec replaces the address space, so it
//! starts a new image with mappings read afresh. Stacks refer to images, not pids.
//!
//! This runs on the sampling thread, so it reads only `/proc` (which a sampled process cannot
//! turn into a FIFO or a slow file system) and never opens a process's files: each mapped file
//! is pinned with an `O_PATH` handle ([`Pinned::mapping`]), which opens nothing, for the
//! unwinder and the symbolizer to open later on their own threads. What a process can make
//! large is capped: mappings kept per process and in all, pinned files.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;

use super::files::Pinned;
use crate::capture::format::ModuleKind;

pub type ImageId = u32;

/// A file as the kernel identifies it (device, inode), with the path it was mapped from, which
/// tells apart files on pseudo file systems that reuse inode numbers.
pub type FileKey = (u64, u64, Arc<str>);

/// A process between two execs.
#[derive(Debug)]
pub struct ProcessImage {
    pub id: ImageId,
    pub pid: u32,
    pub name: String,
    pub exe: String,
    pub first_seen_ns: u64,
    /// The user the process runs as (the owner of `/proc/PID`); its perf map must be its own.
    pub uid: u32,
    /// Executable mappings, sorted by start address.
    pub maps: Vec<MapEntry>,
    /// `/proc/PID/maps` could not be read: the process had exited already.
    pub maps_unavailable: bool,
}

impl ProcessImage {
    /// The mapping that contains `address`.
    pub fn find(&self, address: u64) -> Option<&MapEntry> {
        let i = self.maps.partition_point(|m| m.start <= address);
        let map = self.maps.get(i.checked_sub(1)?)?;
        (address < map.end).then_some(map)
    }
}

/// One executable mapping of a process.
#[derive(Clone, Debug)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
    /// Device and inode of the file: with the path, what identifies a file across processes.
    pub dev: u64,
    pub inode: u64,
    /// Path as in `/proc/PID/maps`, without a ` (deleted)` suffix; `[vdso]`, `[anon]`...
    pub path: Arc<str>,
    pub kind: ModuleKind,
    /// The mapped file, pinned from when the process was first seen (through
    /// `/proc/PID/map_files`, so even a container's file or a deleted binary): the process may
    /// be gone by the time its samples are unwound and symbolized. `None` for pseudo-files, and
    /// past [`MAX_PINNED_FILES`].
    pub pinned: Option<Arc<Pinned>>,
}

impl MapEntry {
    /// The file's identity, shared by every process that maps it.
    pub fn file_key(&self) -> FileKey {
        (self.dev, self.inode, Arc::clone(&self.path))
    }
}

struct Entry {
    image: Arc<ProcessImage>,
    last_window: u64,
    /// Re-reads of the mappings so far, and when the last one was. The first few are immediate
    /// (a process first seen in the dynamic loader maps its libraries in the next
    /// milliseconds); later ones are rate-limited (JIT runtimes map code all the time).
    rereads: u32,
    last_reread: Option<Instant>,
    /// One of the image's files could not be pinned: worth a re-read (see [`PIN_RETRIES`]).
    /// Kept here so that the per-sample check does not scan the mappings.
    unpinned: bool,
}

/// Re-reading a process's mappings because an address fell outside them happens at most this
/// often per process (JIT runtimes map new code all the time).
const REREAD_INTERVAL: Duration = Duration::from_millis(200);
/// Re-reads allowed at once before the rate limit applies.
const FREE_REREADS: u32 = 4;
/// Re-reads of a process for a file it maps that could not be pinned (the moment of an exec):
/// a file that never pins (over [`MAX_PINNED_FILES`], or hostile) costs no more than these.
const PIN_RETRIES: u32 = 8;

/// True if one of `maps` (file mappings) has no pinned file.
fn has_unpinned_files(maps: &[MapEntry]) -> bool {
    maps.iter()
        .any(|m| m.kind == ModuleKind::File && m.pinned.is_none())
}
/// Executable mappings kept of one process: more than any real program has (the kernel allows
/// 65,530 mappings of any kind); beyond it, the rest of its code goes unnamed.
pub const MAX_MAPS_PER_PROCESS: usize = 16_384;
/// Executable mappings kept over all processes at once: bounds memory under thousands of
/// processes that each map many (about 100 bytes each).
pub const MAX_MAPS_TOTAL: usize = 1 << 20;
/// Files held pinned at once (each is a descriptor): every library of a busy machine fits.
pub const MAX_PINNED_FILES: usize = 16_384;
/// Longest line read from `/proc/PID/maps` (a path is at most 4096 bytes).
const MAX_MAPS_LINE: usize = 8192;

/// The images of the processes currently being sampled.
pub struct ProcessTable {
    proc_root: PathBuf,
    by_pid: FxHashMap<u32, Entry>,
    next_id: ImageId,
    /// Mapped files, pinned (shared by the processes mapping them). Only pins that succeeded
    /// are kept (see [`pin_files`]); `None` is kept only over [`MAX_PINNED_FILES`].
    files: FxHashMap<FileKey, Option<Arc<Pinned>>>,
    /// Executable mappings held by the images in `by_pid`.
    maps_held: usize,
    /// Mappings not kept (over the caps) since [`Self::take_maps_dropped`].
    maps_dropped: u64,
}

impl Default for ProcessTable {
    fn default() -> Self {
        Self::new("/proc")
    }
}

impl ProcessTable {
    /// A table reading processes from `proc_root` (`/proc`, or a fake one in tests and benches).
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
            by_pid: FxHashMap::default(),
            next_id: 0,
            files: FxHashMap::default(),
            maps_held: 0,
            maps_dropped: 0,
        }
    }

    /// The current image of `pid`, read from `/proc` if this is the first sample since it
    /// started or exec'd. `comm` names it if `/proc` cannot.
    pub fn image(&mut self, pid: u32, comm: &[u8; 16], time_ns: u64, window: u64) -> ImageId {
        if let Some(entry) = self.by_pid.get_mut(&pid) {
            entry.last_window = window;
            return entry.image.id;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let room = MAX_MAPS_TOTAL.saturating_sub(self.maps_held);
        let (mut image, dropped) = read_image(&self.proc_root, id, pid, comm, time_ns, room);
        self.maps_dropped += dropped;
        self.maps_held += image.maps.len();
        self.pin_files(pid, &mut image.maps);
        self.by_pid.insert(
            pid,
            Entry {
                unpinned: has_unpinned_files(&image.maps),
                image: Arc::new(image),
                last_window: window,
                rereads: 0,
                last_reread: None,
            },
        );
        id
    }

    /// `pid` exec'd: its next sample starts a new image.
    pub fn exec(&mut self, pid: u32) {
        if let Some(entry) = self.by_pid.remove(&pid) {
            self.maps_held -= entry.image.maps.len();
        }
    }

    /// Mappings not kept because a cap was reached, since the last call.
    pub fn take_maps_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.maps_dropped)
    }

    /// `pid`'s image, if it is current.
    pub fn get(&self, pid: u32) -> Option<&Arc<ProcessImage>> {
        self.by_pid.get(&pid).map(|e| &e.image)
    }

    /// Re-reads `pid`'s mappings if some of `addresses` fall outside them (a library loaded or
    /// code generated since they were read), or, the first [`PIN_RETRIES`] times, if one of its
    /// files could not be pinned (it exec'd as it was read), at most every [`REREAD_INTERVAL`].
    pub fn refresh_if_unmapped(&mut self, pid: u32, addresses: &[u64]) {
        let Some(entry) = self.by_pid.get_mut(&pid) else {
            return;
        };
        if entry.image.maps_unavailable
            || (entry.rereads >= FREE_REREADS
                && entry
                    .last_reread
                    .is_some_and(|t| t.elapsed() < REREAD_INTERVAL))
            || (addresses.iter().all(|&a| entry.image.find(a).is_some())
                && !(entry.unpinned && entry.rereads < PIN_RETRIES))
        {
            return;
        }
        entry.last_reread = Some(Instant::now());
        entry.rereads += 1;
        let held = entry.image.maps.len();
        let room = MAX_MAPS_TOTAL.saturating_sub(self.maps_held - held);
        let path = self.proc_root.join(pid.to_string()).join("maps");
        // A process that is exiting has already lost its address space: its maps read empty.
        // The mappings known stay (its samples still need them), instead of leaving every
        // stack of the image without a module.
        if let Some((mut maps, dropped)) = read_maps(&path, room).filter(|(m, _)| !m.is_empty()) {
            self.maps_dropped += dropped;
            self.maps_held = self.maps_held - held + maps.len();
            pin_files(&mut self.files, &self.proc_root, pid, &mut maps);
            let Some(entry) = self.by_pid.get_mut(&pid) else {
                return;
            };
            entry.unpinned = has_unpinned_files(&maps);
            let old = &entry.image;
            entry.image = Arc::new(ProcessImage {
                id: old.id,
                pid,
                name: old.name.clone(),
                exe: old.exe.clone(),
                first_seen_ns: old.first_seen_ns,
                uid: old.uid,
                maps,
                maps_unavailable: false,
            });
        }
    }

    /// Forgets processes not sampled since window `window` (they exited or went idle; if they
    /// come back, they are read again). Keeps memory bounded under process churn.
    pub fn prune(&mut self, window: u64) {
        let mut released = 0;
        self.by_pid.retain(|_, e| {
            let keep = e.last_window >= window;
            if !keep {
                released += e.image.maps.len();
            }
            keep
        });
        self.maps_held -= released;
        // Files pinned only by this table (no image left maps them) are closed; closed windows
        // still being symbolized hold their own references.
        self.files
            .retain(|_, file| file.as_ref().is_some_and(|f| Arc::strong_count(f) > 1));
    }

    fn pin_files(&mut self, pid: u32, maps: &mut [MapEntry]) {
        pin_files(&mut self.files, &self.proc_root, pid, maps);
    }

    /// True if `id` is the current image of some process.
    pub fn contains_image(&self, id: ImageId) -> bool {
        self.by_pid.values().any(|e| e.image.id == id)
    }

    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }
}

/// Pins the file of each of `maps` (see [`MapEntry::pinned`]), once per file.
fn pin_files(
    files: &mut FxHashMap<FileKey, Option<Arc<Pinned>>>,
    proc_root: &Path,
    pid: u32,
    maps: &mut [MapEntry],
) {
    for map in maps.iter_mut().filter(|m| m.kind == ModuleKind::File) {
        let key = map.file_key();
        let pinned = match files.get(&key) {
            Some(pinned) => pinned.clone(),
            None if files.len() >= MAX_PINNED_FILES => None,
            None => {
                // A failure is not remembered: it is often a moment, not the file (the process
                // exec'd or exited between reading its maps and the open, as `sh -c 'exec
                // prog'` does as recording starts), and remembered it would leave every
                // process mapping that file (libc) unnamed and unwalked for the whole
                // recording. The next image or re-read mapping it tries again: one open each.
                let pinned = Pinned::mapping(proc_root, pid, map.start, map.end)
                    .ok()
                    .map(Arc::new);
                if pinned.is_some() {
                    files.insert(key, pinned.clone());
                }
                pinned
            }
        };
        map.pinned = pinned;
    }
}

fn read_image(
    proc_root: &Path,
    id: ImageId,
    pid: u32,
    comm: &[u8; 16],
    time_ns: u64,
    room: usize,
) -> (ProcessImage, u64) {
    let dir = proc_root.join(pid.to_string());
    let maps = read_maps(&dir.join("maps"), room);
    // `comm` is at most 16 bytes; read a little more, never a whole file.
    let name = File::open(dir.join("comm"))
        .and_then(|f| {
            let mut bytes = Vec::with_capacity(32);
            f.take(64).read_to_end(&mut bytes).map(|_| bytes)
        })
        .map(|bytes| {
            let text = String::from_utf8_lossy(&bytes);
            text.trim_end_matches('\n').to_string()
        })
        .unwrap_or_else(|_| comm_to_string(comm));
    let exe = std::fs::read_link(dir.join("exe"))
        .map(|p| {
            let p = p.to_string_lossy();
            p.strip_suffix(" (deleted)").unwrap_or(&p).to_string()
        })
        .unwrap_or_default();
    // /proc/PID belongs to the process's effective user (root when it is not dumpable).
    let uid = std::fs::metadata(&dir).map_or(0, |m| m.uid());
    let dropped = maps.as_ref().map_or(0, |(_, d)| *d);
    let image = ProcessImage {
        id,
        pid,
        name,
        exe,
        first_seen_ns: time_ns,
        uid,
        maps_unavailable: maps.is_none(),
        maps: maps.map(|(m, _)| m).unwrap_or_default(),
    };
    (image, dropped)
}

/// A NUL-padded `comm` as a string.
pub fn comm_to_string(comm: &[u8]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

/// The executable mappings in a `/proc/PID/maps` file, sorted, at most
/// [`MAX_MAPS_PER_PROCESS`] and `room` of them, with how many were left out; `None` if it
/// cannot be read. Read line by line: memory follows the executable mappings kept, not the
/// file's size.
pub fn read_maps(path: &Path, room: usize) -> Option<(Vec<MapEntry>, u64)> {
    let file = File::open(path).ok()?;
    let limit = room.min(MAX_MAPS_PER_PROCESS);
    let mut reader = BufReader::new(file);
    let mut maps: Vec<MapEntry> = Vec::new();
    let mut dropped = 0u64;
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_MAPS_LINE as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => break,
            Ok(_) => {}
            // A process that exits while being read: what was read is what it had.
            Err(_) if !maps.is_empty() => break,
            Err(_) => return None,
        }
        if line.last() != Some(&b'\n') && line.len() >= MAX_MAPS_LINE {
            // Longer than any real line: skip the rest of it.
            let _ = reader.skip_until(b'\n');
        }
        let Some(entry) = parse_maps_line(&String::from_utf8_lossy(&line)) else {
            continue;
        };
        if maps.len() >= limit {
            dropped += 1;
            continue;
        }
        maps.push(entry);
    }
    maps.sort_by_key(|m| m.start);
    Some((maps, dropped))
}

/// Parses one line of `/proc/PID/maps`, keeping executable mappings only:
/// `start-end perms offset major:minor inode   path`.
pub fn parse_maps_line(line: &str) -> Option<MapEntry> {
    let mut rest = line;
    let mut field = || {
        rest = rest.trim_start();
        let end = rest.find(' ').unwrap_or(rest.len());
        let (f, r) = rest.split_at(end);
        rest = r;
        f
    };
    let (range, perms, offset, dev, inode) = (field(), field(), field(), field(), field());
    if perms.as_bytes().get(2) != Some(&b'x') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    let path = rest.trim_start().trim_end_matches('\n');
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let kind = if path == "[vdso]" {
        ModuleKind::Vdso
    } else if path.starts_with('/') {
        ModuleKind::File
    } else {
        ModuleKind::Anonymous
    };
    let path: Arc<str> = match kind {
        ModuleKind::Anonymous if path.is_empty() => "[anon]".into(),
        _ => path.into(),
    };
    Some(MapEntry {
        start: hex(start)?,
        end: hex(end)?,
        file_offset: hex(offset)?,
        dev: (hex(major)? << 32) | hex(minor)?,
        inode: inode.parse().ok()?,
        path,
        kind,
        pinned: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let libc = parse_maps_line(
            "7f2c1a228000-7f2c1a3a2000 r-xp 00028000 fe:01 1054155                    /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .unwrap();
        assert_eq!(libc.start, 0x7f2c1a228000);
        assert_eq!(libc.end, 0x7f2c1a3a2000);
        assert_eq!(libc.file_offset, 0x28000);
        assert_eq!(libc.dev, (0xfe << 32) | 1);
        assert_eq!(libc.inode, 1054155);
        assert_eq!(&*libc.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(libc.kind, ModuleKind::File);

        let spaced =
            parse_maps_line("1000-2000 r-xp 0 08:01 12 /tmp/my dir/a.out (deleted)").unwrap();
        assert_eq!(&*spaced.path, "/tmp/my dir/a.out");

        let vdso =
            parse_maps_line("7ffd5b1f0000-7ffd5b1f2000 r-xp 00000000 00:00 0 [vdso]").unwrap();
        assert_eq!(vdso.kind, ModuleKind::Vdso);
        let jit = parse_maps_line("7f0000000000-7f0000001000 rwxp 00000000 00:00 0 ").unwrap();
        assert_eq!((jit.kind, &*jit.path), (ModuleKind::Anonymous, "[anon]"));

        assert!(parse_maps_line("55d0a000-55d0b000 r--p 00000000 fe:01 2 /bin/true").is_none());
        assert!(parse_maps_line("garbage").is_none());
    }

    #[test]
    fn finds_the_mapping_of_an_address() {
        let map = |start, end| MapEntry {
            start,
            end,
            file_offset: 0,
            dev: 0,
            inode: 0,
            path: "/x".into(),
            kind: ModuleKind::File,
            pinned: None,
        };
        let image = ProcessImage {
            id: 0,
            pid: 1,
            name: String::new(),
            exe: String::new(),
            first_seen_ns: 0,
            uid: 0,
            maps: vec![map(0x1000, 0x2000), map(0x3000, 0x4000)],
            maps_unavailable: false,
        };
        assert_eq!(image.find(0x1000).map(|m| m.start), Some(0x1000));
        assert_eq!(image.find(0x1fff).map(|m| m.start), Some(0x1000));
        assert!(image.find(0x2000).is_none());
        assert!(image.find(0xfff).is_none());
        assert_eq!(image.find(0x3abc).map(|m| m.start), Some(0x3000));
        assert!(image.find(0x4000).is_none());
    }

    /// A file that could not be pinned once (its process exec'd or exited in between) is
    /// pinned when the next process mapping it is seen: the failure is not remembered.
    #[test]
    fn a_failed_pin_is_tried_again_by_the_next_process() {
        let root = tempfile::tempdir().unwrap();
        let line = "1000-2000 r-xp 00000000 fe:01 7 /lib/libc.so.6\n";
        for pid in ["42", "43"] {
            let dir = root.path().join(pid);
            std::fs::create_dir_all(dir.join("map_files")).unwrap();
            std::fs::write(dir.join("maps"), line).unwrap();
            std::fs::write(dir.join("comm"), "app\n").unwrap();
        }
        // 42's mapping is gone by the time it is pinned; 43's is there.
        std::fs::write(root.path().join("43/map_files/1000-2000"), "ELF").unwrap();
        let mut table = ProcessTable::new(root.path());
        table.image(42, &[0; 16], 0, 0);
        assert!(table.get(42).unwrap().maps[0].pinned.is_none());
        table.image(43, &[0; 16], 0, 0);
        assert!(table.get(43).unwrap().maps[0].pinned.is_some());
        // 42's own image pins it at its next sample, though its addresses are all mapped.
        std::fs::write(root.path().join("42/map_files/1000-2000"), "ELF").unwrap();
        table.refresh_if_unmapped(42, &[0x1010]);
        assert!(table.get(42).unwrap().maps[0].pinned.is_some());
    }

    /// Re-reading the maps of a process that has begun to exit (they read empty) keeps the
    /// mappings known; a re-read that finds more takes them.
    #[test]
    fn an_exiting_process_keeps_its_mappings() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("42");
        std::fs::create_dir(&dir).unwrap();
        let line = |range: &str, path: &str| format!("{range} r-xp 00000000 fe:01 7 {path}\n");
        std::fs::write(dir.join("maps"), line("1000-2000", "/bin/app")).unwrap();
        std::fs::write(dir.join("comm"), "app\n").unwrap();
        let mut table = ProcessTable::new(root.path());
        table.image(42, &[0; 16], 0, 0);
        std::fs::write(dir.join("maps"), "").unwrap();
        table.refresh_if_unmapped(42, &[0x9000]);
        let paths = |table: &ProcessTable| -> Vec<String> {
            table
                .get(42)
                .unwrap()
                .maps
                .iter()
                .map(|m| m.path.to_string())
                .collect()
        };
        assert_eq!(paths(&table), ["/bin/app"]);
        let both = line("1000-2000", "/bin/app") + &line("9000-a000", "/lib/libx.so");
        std::fs::write(dir.join("maps"), both).unwrap();
        table.refresh_if_unmapped(42, &[0x9000]);
        assert_eq!(paths(&table), ["/bin/app", "/lib/libx.so"]);
    }
}
