//! Reading captures, defensively: files come from other machines, other versions, crashes and
//! disks that filled up. Every problem is an error naming it (exit code 3), never a panic, and no
//! allocation is larger than the bytes the file actually has.

use std::{
    fs::File,
    io::{BufReader, Read},
    path::Path,
};

use anyhow::{Context as _, Result};
use prost::Message as _;

use super::{
    FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_RECORD_LEN, RECORD_HEADER_LEN, RecordKind,
    format::{End, Meta, Window},
};
use crate::error::bad_input;

/// How a capture ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completeness {
    /// It has its `End` record: the recording was finalized.
    Finalized,
    /// It stops cleanly after a window but has no `End` record: the recording was killed (or
    /// is still running).
    NotFinalized,
    /// Its last record is incomplete (the recording was killed while writing it); the record was
    /// dropped and every window before it read.
    Truncated { dropped_bytes: u64 },
}

/// Reads a capture window by window, so that memory does not grow with its length.
pub struct CaptureReader<R = BufReader<File>> {
    input: R,
    /// Bytes of the input not yet consumed.
    remaining: u64,
    meta: Meta,
    end: Option<End>,
    completeness: Option<Completeness>,
    windows_read: u64,
    last_index: Option<u64>,
}

impl CaptureReader {
    /// Opens the capture at `path` and reads its header and metadata.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| {
            let what = match e.kind() {
                std::io::ErrorKind::NotFound => "no such file".to_string(),
                std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                _ => e.to_string(),
            };
            bad_input(format!("cannot open capture {}: {what}", path.display()))
        })?;
        let metadata = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?;
        if metadata.is_dir() {
            return Err(bad_input(format!(
                "{} is a directory, not a capture",
                path.display()
            )));
        }
        Self::new(BufReader::new(file), metadata.len())
            .with_context(|| format!("reading capture {}", path.display()))
    }
}

impl<R: Read> CaptureReader<R> {
    /// Reads a capture of `len` bytes from `input`.
    pub fn new(mut input: R, len: u64) -> Result<Self> {
        let mut header = [0u8; HEADER_LEN];
        if len < HEADER_LEN as u64 {
            return Err(bad_input(if len == 0 {
                "the file is empty: not an amprof capture".to_string()
            } else {
                "the file is too short to be an amprof capture".to_string()
            }));
        }
        input
            .read_exact(&mut header)
            .map_err(|e| bad_input(format!("cannot read the header: {e}")))?;
        if &header[..8] != MAGIC {
            return Err(bad_input(if header.starts_with(b"PERFILE2") {
                "this is a perf.data file, not an amprof capture".to_string()
            } else {
                "not an amprof capture (wrong magic bytes)".to_string()
            }));
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if version == 0 || version > FORMAT_VERSION {
            return Err(bad_input(format!(
                "capture format version {version} is not supported: this amprof reads versions up to {FORMAT_VERSION}; a newer amprof wrote it"
            )));
        }
        let mut reader = Self {
            input,
            remaining: len - HEADER_LEN as u64,
            meta: Meta::default(),
            end: None,
            completeness: None,
            windows_read: 0,
            last_index: None,
        };
        match reader.next_record()? {
            Some((RecordKind::Meta, payload)) => {
                reader.meta = Meta::decode(payload.as_slice())
                    .map_err(|e| bad_input(format!("the metadata record is corrupt: {e}")))?;
            }
            Some((kind, _)) => {
                return Err(bad_input(format!(
                    "the first record is {kind:?}, not the metadata: the capture is corrupt"
                )));
            }
            None => {
                return Err(bad_input(
                    "the capture has no metadata: recording was killed before it started",
                ));
            }
        }
        if reader.meta.window_ns == 0 {
            return Err(bad_input(
                "the metadata says windows are 0 ns long: corrupt",
            ));
        }
        Ok(reader)
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The `End` record, once [`Self::next_window`] has returned `None`.
    pub fn end(&self) -> Option<&End> {
        self.end.as_ref()
    }

    /// How the capture ends, once [`Self::next_window`] has returned `None`.
    pub fn completeness(&self) -> Option<Completeness> {
        self.completeness
    }

    /// The next window, or `None` after the last.
    pub fn next_window(&mut self) -> Result<Option<Window>> {
        if self.completeness.is_some() {
            return Ok(None);
        }
        match self.next_record()? {
            Some((RecordKind::Window, payload)) => {
                let window = Window::decode(payload.as_slice()).map_err(|e| {
                    bad_input(format!(
                        "window record {} is corrupt: {e}",
                        self.windows_read + 1
                    ))
                })?;
                validate_window(&window)?;
                if let Some(last) = self.last_index
                    && window.index <= last
                {
                    return Err(bad_input(format!(
                        "window {} follows window {last}: the capture is corrupt",
                        window.index
                    )));
                }
                self.last_index = Some(window.index);
                self.windows_read += 1;
                Ok(Some(window))
            }
            Some((RecordKind::End, payload)) => {
                self.end = Some(
                    End::decode(payload.as_slice())
                        .map_err(|e| bad_input(format!("the end record is corrupt: {e}")))?,
                );
                if self.remaining != 0 {
                    return Err(bad_input(format!(
                        "{} bytes follow the end record: the capture is corrupt",
                        self.remaining
                    )));
                }
                self.completeness = Some(Completeness::Finalized);
                Ok(None)
            }
            Some((RecordKind::Meta, _)) => Err(bad_input(
                "a second metadata record: the capture is corrupt",
            )),
            None => Ok(None),
        }
    }

    /// Reads every remaining window.
    pub fn read_all(&mut self) -> Result<Vec<Window>> {
        let mut windows = Vec::new();
        while let Some(window) = self.next_window()? {
            windows.push(window);
        }
        Ok(windows)
    }

    /// The next record, or `None` at the end of the input (setting `completeness`).
    fn next_record(&mut self) -> Result<Option<(RecordKind, Vec<u8>)>> {
        if self.remaining == 0 {
            self.completeness = Some(Completeness::NotFinalized);
            return Ok(None);
        }
        if self.remaining < RECORD_HEADER_LEN as u64 {
            return Ok(self.truncated(self.remaining));
        }
        let mut header = [0u8; RECORD_HEADER_LEN];
        self.input
            .read_exact(&mut header)
            .map_err(|e| bad_input(format!("cannot read a record: {e}")))?;
        self.remaining -= RECORD_HEADER_LEN as u64;
        let field = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let (len, kind, crc) = (field(0), field(4), field(8));
        let Some(kind) = RecordKind::from_u32(kind) else {
            return Err(bad_input(format!(
                "unknown record kind {kind}: the capture is corrupt"
            )));
        };
        if len > MAX_RECORD_LEN {
            return Err(bad_input(format!(
                "a record claims {len} bytes, more than any capture holds: the capture is corrupt"
            )));
        }
        if u64::from(len) > self.remaining {
            // Only the last record can run past the end of the file: a cut-off write.
            return Ok(self.truncated(self.remaining + RECORD_HEADER_LEN as u64));
        }
        // `len` is at most the bytes left in the file, so this allocation is bounded by the file.
        let mut payload = vec![0u8; len as usize];
        self.input
            .read_exact(&mut payload)
            .map_err(|e| bad_input(format!("cannot read a record: {e}")))?;
        self.remaining -= u64::from(len);
        if crc32fast::hash(&payload) != crc {
            if self.remaining == 0 && kind != RecordKind::Meta {
                // A torn final write (power loss): treat like a cut-off record.
                return Ok(self.truncated(u64::from(len) + RECORD_HEADER_LEN as u64));
            }
            return Err(bad_input(format!(
                "a {kind:?} record fails its checksum: the capture is corrupt"
            )));
        }
        Ok(Some((kind, payload)))
    }

    fn truncated(&mut self, dropped_bytes: u64) -> Option<(RecordKind, Vec<u8>)> {
        self.remaining = 0;
        self.completeness = Some(Completeness::Truncated { dropped_bytes });
        None
    }
}

/// Checks the cross-references of a window, so that code reading it may index without checks
/// failing at run time: every index in range, columns of equal length.
fn validate_window(w: &Window) -> Result<()> {
    let corrupt = |what: &str| Err(bad_input(format!("window {} is corrupt: {what}", w.index)));
    if w.end_ns < w.start_ns {
        return corrupt("it ends before it starts");
    }
    let n = w.sample_time_deltas.len();
    if w.sample_tids.len() != n || w.sample_cpus.len() != n || w.sample_stacks.len() != n {
        return corrupt("sample columns of different lengths");
    }
    let (processes, modules, mappings, functions, locations, stacks) = (
        w.processes.len(),
        w.modules.len(),
        w.mappings.len(),
        w.functions.len(),
        w.locations.len(),
        w.stacks.len(),
    );
    if w.threads.iter().any(|t| t.process as usize >= processes) {
        return corrupt("a thread of an unknown process");
    }
    if w.mappings
        .iter()
        .any(|m| m.process as usize >= processes || m.module as usize >= modules || m.end < m.start)
    {
        return corrupt("a mapping of an unknown process or module");
    }
    for location in &w.locations {
        if location.mapping as usize > mappings || location.kernel_module as usize > modules {
            return corrupt("a location in an unknown mapping");
        }
        if location
            .lines
            .iter()
            .any(|l| l.function as usize >= functions)
        {
            return corrupt("a location naming an unknown function");
        }
    }
    for stack in &w.stacks {
        if stack.process as usize >= processes
            || stack.kernel_frames as usize > stack.locations.len()
            || stack.locations.iter().any(|&l| l as usize >= locations)
        {
            return corrupt("a stack referring to unknown entries");
        }
    }
    let mut counts = vec![0u64; stacks];
    for &stack in &w.sample_stacks {
        match counts.get_mut(stack as usize) {
            Some(count) => *count += 1,
            None => return corrupt("a sample of an unknown stack"),
        }
    }
    if w.stacks.iter().zip(&counts).any(|(s, &n)| s.count != n) {
        return corrupt("stack counts that disagree with the samples");
    }
    let mut time = w.start_ns;
    for &delta in &w.sample_time_deltas {
        time = match time.checked_add(delta) {
            Some(t) if t < w.end_ns.max(w.start_ns + 1) => t,
            _ => return corrupt("a sample outside the window"),
        };
    }
    Ok(())
}
