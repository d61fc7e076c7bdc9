//! What amprof knows about the processes it samples: names and executable mappings, read from
//! `/proc` when a process is first seen, because `/proc/PID/maps` is gone once it exits.
//!
//! A *process image* is a pid between two execs: an exec replaces the address space, so it
//! starts a new image with mappings read afresh. Stacks refer to images, not pids.

use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;

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
    /// The file, held open from when the process was first seen, when its path does not lead
    /// to it from amprof's mount namespace (a container's file, a deleted or replaced binary):
    /// the process may be gone by the time its samples are symbolized.
    pub pinned: Option<Arc<File>>,
}

impl MapEntry {
    /// The path that opens this mapping's file from amprof: the pinned file descriptor, or
    /// the path itself.
    pub fn open_path(&self) -> String {
        match &self.pinned {
            Some(file) => format!("/proc/self/fd/{}", file.as_raw_fd()),
            None => self.path.to_string(),
        }
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
}

/// Re-reading a process's mappings because an address fell outside them happens at most this
/// often per process (JIT runtimes map new code all the time).
const REREAD_INTERVAL: Duration = Duration::from_millis(200);
/// Re-reads allowed at once before the rate limit applies.
const FREE_REREADS: u32 = 4;

/// The images of the processes currently being sampled.
pub struct ProcessTable {
    proc_root: PathBuf,
    by_pid: FxHashMap<u32, Entry>,
    next_id: ImageId,
    /// Files whose path does not lead to them, held open (shared by the processes mapping
    /// them); `None` for files reachable by path.
    files: FxHashMap<FileKey, Option<Arc<File>>>,
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
        let mut image = read_image(&self.proc_root, id, pid, comm, time_ns);
        self.pin_unreachable_files(pid, &mut image.maps);
        self.by_pid.insert(
            pid,
            Entry {
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
        self.by_pid.remove(&pid);
    }

    /// `pid`'s image, if it is current.
    pub fn get(&self, pid: u32) -> Option<&Arc<ProcessImage>> {
        self.by_pid.get(&pid).map(|e| &e.image)
    }

    /// Re-reads `pid`'s mappings if some of `addresses` fall outside them (a library loaded or
    /// code generated since they were read), at most every [`REREAD_INTERVAL`].
    pub fn refresh_if_unmapped(&mut self, pid: u32, addresses: &[u64]) {
        let Some(entry) = self.by_pid.get_mut(&pid) else {
            return;
        };
        if entry.image.maps_unavailable
            || (entry.rereads >= FREE_REREADS
                && entry
                    .last_reread
                    .is_some_and(|t| t.elapsed() < REREAD_INTERVAL))
            || addresses.iter().all(|&a| entry.image.find(a).is_some())
        {
            return;
        }
        entry.last_reread = Some(Instant::now());
        entry.rereads += 1;
        if let Some(mut maps) = read_maps(&self.proc_root.join(pid.to_string()).join("maps")) {
            pin_unreachable_files(&mut self.files, &self.proc_root, pid, &mut maps);
            let Some(entry) = self.by_pid.get_mut(&pid) else {
                return;
            };
            let old = &entry.image;
            entry.image = Arc::new(ProcessImage {
                id: old.id,
                pid,
                name: old.name.clone(),
                exe: old.exe.clone(),
                first_seen_ns: old.first_seen_ns,
                maps,
                maps_unavailable: false,
            });
        }
    }

    /// Forgets processes not sampled since window `window` (they exited or went idle; if they
    /// come back, they are read again). Keeps memory bounded under process churn.
    pub fn prune(&mut self, window: u64) {
        self.by_pid.retain(|_, e| e.last_window >= window);
        // Files pinned only by this table (no image left maps them) are closed; closed windows
        // still being symbolized hold their own references.
        self.files
            .retain(|_, file| file.as_ref().is_none_or(|f| Arc::strong_count(f) > 1));
    }

    fn pin_unreachable_files(&mut self, pid: u32, maps: &mut [MapEntry]) {
        pin_unreachable_files(&mut self.files, &self.proc_root, pid, maps);
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

/// Pins the files of `maps` that their path does not lead to (see [`MapEntry::pinned`]).
fn pin_unreachable_files(
    files: &mut FxHashMap<FileKey, Option<Arc<File>>>,
    proc_root: &Path,
    pid: u32,
    maps: &mut [MapEntry],
) {
    for map in maps.iter_mut().filter(|m| m.kind == ModuleKind::File) {
        let key = (map.dev, map.inode, Arc::clone(&map.path));
        let pinned = files.entry(key).or_insert_with(|| {
            let reachable = std::fs::metadata(&*map.path).is_ok_and(|m| {
                let dev = m.dev();
                (u64::from(libc::major(dev)) << 32 | u64::from(libc::minor(dev))) == map.dev
                    && m.ino() == map.inode
            });
            if reachable {
                return None;
            }
            let through = proc_root
                .join(pid.to_string())
                .join("map_files")
                .join(format!("{:x}-{:x}", map.start, map.end));
            File::open(through).ok().map(Arc::new)
        });
        map.pinned = pinned.clone();
    }
}

fn read_image(
    proc_root: &Path,
    id: ImageId,
    pid: u32,
    comm: &[u8; 16],
    time_ns: u64,
) -> ProcessImage {
    let dir = proc_root.join(pid.to_string());
    let maps = read_maps(&dir.join("maps"));
    let name = std::fs::read_to_string(dir.join("comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_else(|_| comm_to_string(comm));
    let exe = std::fs::read_link(dir.join("exe"))
        .map(|p| {
            let p = p.to_string_lossy();
            p.strip_suffix(" (deleted)").unwrap_or(&p).to_string()
        })
        .unwrap_or_default();
    ProcessImage {
        id,
        pid,
        name,
        exe,
        first_seen_ns: time_ns,
        maps_unavailable: maps.is_none(),
        maps: maps.unwrap_or_default(),
    }
}

/// A NUL-padded `comm` as a string.
pub fn comm_to_string(comm: &[u8]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

/// The executable mappings in a `/proc/PID/maps` file, sorted; `None` if it cannot be read.
pub fn read_maps(path: &Path) -> Option<Vec<MapEntry>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut maps: Vec<MapEntry> = text.lines().filter_map(parse_maps_line).collect();
    maps.sort_by_key(|m| m.start);
    Some(maps)
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
    let path = rest.trim_start();
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
}
