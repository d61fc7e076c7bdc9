//! JIT runtimes' perf maps (`/tmp/perf-PID.map`: `START SIZE name` per line, hex), which name
//! code in anonymous memory (`node --perf-basic-prof`, `python3 -X perf`).
//!
//! blazesym reads these only for a live process; amprof needs them after the process has gone,
//! so it reads them itself, as hostile input: the file must be a regular file reached without
//! symlinks ([`Pinned::path`]), owned by the process's user (or root), with one link (not a
//! hard link to someone else's file); it is read as a stream, from where the last read ended
//! (runtimes append), at most [`MAX_BYTES`] and [`MAX_ENTRIES`] in all; a malformed line is
//! skipped and counted, never the whole map lost.

use std::{path::Path, sync::Arc};

use super::files::{Pinned, SafeFile};

/// Bytes of one perf map read, at most (a long-running node writes tens of MB).
pub const MAX_BYTES: u64 = 64 << 20;
/// Entries kept of one perf map, at most.
pub const MAX_ENTRIES: usize = 1 << 20;
/// Longest line taken; longer ones are skipped (a name is a function's, not a novel).
pub const MAX_LINE: usize = 4096;
/// Bytes read at once.
const CHUNK: usize = 1 << 20;

/// One process's perf map, as read so far.
#[derive(Debug, Default)]
pub struct PerfMap {
    /// `(start, end, sequence, name)`, sorted by start then sequence: the latest entry for an
    /// address wins (runtimes re-emit code at reused addresses).
    entries: Vec<(u64, u64, u64, Arc<str>)>,
    /// The file read, by identity: another file at the path starts over.
    identity: Option<(u64, u64)>,
    /// Bytes consumed so far (whole lines).
    offset: u64,
    /// Lines skipped (malformed or past the caps) since the last [`Self::take_skipped`].
    skipped: u64,
    /// The bytes cap was reached: nothing more is read.
    full: bool,
}

impl PerfMap {
    /// Reads what `/tmp/perf-PID.map` (of process `pid`, running as `uid`) has gained since the
    /// last read; `Err` says why it was not read (it is then as if absent).
    pub fn refresh(&mut self, pid: u32, uid: u32) -> Result<(), String> {
        let path = format!("/tmp/perf-{pid}.map");
        let file = open(Path::new(&path), uid)?;
        let stat = *file.stat();
        let identity = (stat.dev, stat.ino);
        if self.identity != Some(identity) || stat.size < self.offset {
            // A new file, or one rewritten shorter: start over.
            *self = PerfMap {
                identity: Some(identity),
                skipped: self.skipped,
                ..PerfMap::default()
            };
        }
        let mut added = false;
        while !self.full && self.offset < stat.size {
            let want = CHUNK.min((MAX_BYTES - self.offset) as usize);
            if want == 0 {
                self.full = true;
                break;
            }
            let bytes = file
                .read_from(self.offset, want)
                .map_err(|e| format!("cannot read {path}: {e}"))?;
            if bytes.is_empty() {
                break;
            }
            // Whole lines only: a line still being written is read next time.
            let end = match bytes.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if bytes.len() >= MAX_LINE => bytes.len(), // one line too long: skip it
                None => break,
            };
            for line in bytes[..end].split(|&b| b == b'\n') {
                if line.is_empty() {
                    continue;
                }
                match parse_line(line) {
                    Some(_) if self.entries.len() >= MAX_ENTRIES => self.skipped += 1,
                    Some((start, end, name)) => {
                        let sequence = self.entries.len() as u64;
                        self.entries.push((start, end, sequence, name.into()));
                        added = true;
                    }
                    None => self.skipped += 1,
                }
            }
            self.offset += end as u64;
            if self.offset >= MAX_BYTES {
                self.full = true;
            }
        }
        if added {
            self.entries
                .sort_unstable_by_key(|&(start, _, sequence, _)| (start, sequence));
        }
        Ok(())
    }

    /// The name of the code at `address`, if an entry covers it.
    pub fn find(&self, address: u64) -> Option<&Arc<str>> {
        let i = self.entries.partition_point(|e| e.0 <= address);
        let (_, end, _, name) = self.entries.get(i.checked_sub(1)?)?;
        (address < *end).then_some(name)
    }

    /// Lines skipped since the last call.
    pub fn take_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.skipped)
    }

    /// Every byte this perf map may still grow to has been read.
    pub fn is_full(&self) -> bool {
        self.full
    }
}

/// Opens a perf map if it may be trusted with names of a process running as `uid`.
fn open(path: &Path, uid: u32) -> Result<SafeFile, String> {
    let pinned = Pinned::path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = pinned
        .open()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let stat = file.stat();
    // As perf checks: the process's own file (or root's); and not a hard link to another
    // file of root's, which a process could otherwise present as its map.
    if stat.uid != uid && stat.uid != 0 {
        return Err(format!(
            "{} belongs to user {}, not to the process's user {uid}",
            path.display(),
            stat.uid
        ));
    }
    if stat.nlink != 1 {
        return Err(format!("{} has {} hard links", path.display(), stat.nlink));
    }
    Ok(file)
}

/// One line: `START SIZE name` (hex numbers, optional `0x`), the name to the end of the line.
/// Invalid UTF-8 in the name is replaced, not fatal.
pub fn parse_line(line: &[u8]) -> Option<(u64, u64, String)> {
    if line.len() > MAX_LINE {
        return None;
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let hex = |field: &[u8]| {
        let field = std::str::from_utf8(field).ok()?;
        let digits = field.strip_prefix("0x").unwrap_or(field);
        u64::from_str_radix(digits, 16).ok()
    };
    let start = hex(parts.next()?)?;
    let size = hex(parts.next()?)?;
    let name = String::from_utf8_lossy(parts.next()?).trim().to_string();
    if name.is_empty() || size == 0 {
        return None;
    }
    Some((start, start.checked_add(size)?, name))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn parses_lines_and_rejects_malformed_ones() {
        assert_eq!(
            parse_line(b"7f00 20 LazyCompile:*hot app.js:1"),
            Some((0x7f00, 0x7f20, "LazyCompile:*hot app.js:1".into()))
        );
        assert_eq!(
            parse_line(b"0x10 0x8 py::f:/x.py"),
            Some((0x10, 0x18, "py::f:/x.py".into()))
        );
        // One bad byte costs that name a replacement character, not the line.
        assert_eq!(
            parse_line(b"10 8 caf\xe9"),
            Some((0x10, 0x18, "caf\u{fffd}".into()))
        );
        for bad in [
            &b"zz 8 x"[..],
            b"10",
            b"10 8",
            b"10 0 empty",
            b"ffffffffffffffff 2 wraps",
            b"",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
        assert_eq!(parse_line(&vec![b'1'; MAX_LINE + 1]), None);
    }

    #[test]
    fn reads_incrementally_and_the_latest_entry_wins() {
        // A pid no process has: the file is ours to write.
        let pid = 4_000_000_000u32 - std::process::id();
        let path = format!("/tmp/perf-{pid}.map");
        let _ = std::fs::remove_file(&path);
        let uid = unsafe { libc::geteuid() };
        let mut file = std::fs::File::create(&path).unwrap();
        writeln!(file, "1000 100 old").unwrap();
        writeln!(file, "garbage line").unwrap();
        write!(file, "2000 10 partial").unwrap(); // no newline yet
        let mut map = PerfMap::default();
        map.refresh(pid, uid).unwrap();
        assert_eq!(map.find(0x1050).map(|n| &**n), Some("old"));
        assert_eq!(map.find(0x2000), None, "a partial line waits");
        assert_eq!(map.take_skipped(), 1);
        writeln!(file).unwrap();
        writeln!(file, "1000 100 new").unwrap();
        map.refresh(pid, uid).unwrap();
        assert_eq!(map.find(0x2005).map(|n| &**n), Some("partial"));
        assert_eq!(map.find(0x1050).map(|n| &**n), Some("new"));
        assert_eq!(map.find(0x1100), None);
        // Someone else's file is not trusted with the process's names.
        assert!(map.refresh(pid, uid + 1).is_err() || uid == 0);
        std::fs::remove_file(&path).unwrap();
    }
}
