//! Writing captures window by window (see the crash-safety notes in [`super`]).

use std::{
    collections::VecDeque,
    fs::{self, File},
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use tempfile::TempPath;

use super::{
    RecordKind, encode_record, file_header,
    format::{End, Meta, Window},
};
use crate::output;

/// Captures hold stacks of everything that ran, including command lines in process names and
/// paths: only their owner may read them.
const CAPTURE_MODE: u32 = 0o600;

pub struct CaptureWriter {
    path: PathBuf,
    file: File,
    /// The header and metadata record, the start of every rewrite.
    prologue: Vec<u8>,
    /// Ring mode: the encoded windows currently in the file, oldest first, and the capacity.
    ring: Option<(usize, VecDeque<Vec<u8>>)>,
    windows_written: u64,
    windows_evicted: u64,
    bytes: u64,
}

impl CaptureWriter {
    /// Creates the capture at `path` with its metadata. An existing file at `path` is kept as
    /// `path.old`, as perf does with perf.data. `keep` is the ring capacity (`None`: keep all).
    pub fn create(path: &Path, meta: &Meta, keep: Option<usize>) -> Result<Self> {
        output::check_output_path(path)?;
        let mut prologue = file_header().to_vec();
        prologue.extend_from_slice(&encode_record(RecordKind::Meta, meta));
        let file = write_new_file(path, &[&prologue])?;
        if let Ok(existing) = fs::symlink_metadata(path)
            && existing.is_file()
        {
            let old = old_path(path);
            fs::rename(path, &old)
                .with_context(|| format!("cannot move the existing {} aside", path.display()))?;
        }
        Ok(Self {
            bytes: prologue.len() as u64,
            path: path.to_path_buf(),
            file: file.rename_to(path)?,
            prologue,
            ring: keep.map(|n| (n.max(1), VecDeque::new())),
            windows_written: 0,
            windows_evicted: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn windows_evicted(&self) -> u64 {
        self.windows_evicted
    }

    /// Bytes in the file now.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends `window` and syncs it to disk; in ring mode, evicts the oldest window first when
    /// the ring is full. `window.evicted_before` is set here.
    pub fn write_window(&mut self, window: &mut Window) -> Result<()> {
        let evicting = self
            .ring
            .as_ref()
            .is_some_and(|(keep, kept)| kept.len() >= *keep);
        if evicting {
            self.windows_evicted += 1;
        }
        window.evicted_before = self.windows_evicted;
        let record = encode_record(RecordKind::Window, window);
        if evicting {
            let (_, kept) = self.ring.as_mut().expect("evicting implies a ring");
            kept.pop_front();
            kept.push_back(record);
            let mut parts: Vec<&[u8]> = vec![&self.prologue];
            parts.extend(kept.iter().map(Vec::as_slice));
            let bytes = parts.iter().map(|p| p.len() as u64).sum();
            self.file = write_new_file(&self.path, &parts)?.rename_to(&self.path)?;
            self.bytes = bytes;
        } else {
            self.append(&record)?;
            if let Some((_, kept)) = self.ring.as_mut() {
                kept.push_back(record);
            }
        }
        self.windows_written += 1;
        Ok(())
    }

    /// Writes the `End` record and syncs: the capture is complete.
    pub fn finish(mut self, end: &End) -> Result<()> {
        self.append(&encode_record(RecordKind::End, end))
    }

    fn append(&mut self, record: &[u8]) -> Result<()> {
        let written = self
            .file
            .write_all(record)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Leave no partial record behind, so the windows before it stay readable as they are.
            let _ = self.file.set_len(self.bytes);
            let what = if e.raw_os_error() == Some(libc::ENOSPC) {
                "the disk is full".to_string()
            } else {
                e.to_string()
            };
            return Err(anyhow::anyhow!(
                "cannot write to {}: {what} (the windows already written are kept)",
                self.path.display()
            ));
        }
        self.bytes += record.len() as u64;
        Ok(())
    }
}

/// A complete file written beside its final path, waiting to be renamed there (removed if
/// dropped before).
struct NewFile {
    temp: TempPath,
    file: File,
}

impl NewFile {
    fn rename_to(self, path: &Path) -> Result<File> {
        // On failure the temporary file goes with the error.
        self.temp
            .persist(path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot create {}", path.display()))?;
        if let Ok(dir) = File::open(output::parent_dir(path)) {
            let _ = dir.sync_all();
        }
        Ok(self.file)
    }
}

/// Writes `parts` to a new file beside `path`, under a random name (see
/// [`output::temp_file_beside`]): a first capture and each rewrite of a ring alike.
fn write_new_file(path: &Path, parts: &[&[u8]]) -> Result<NewFile> {
    let (mut file, temp) = output::temp_file_beside(path, CAPTURE_MODE)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let written = parts
        .iter()
        .try_for_each(|part| file.write_all(part))
        .and_then(|()| file.sync_data());
    if let Err(e) = written {
        // Dropping `temp` removes the file.
        let what = if e.raw_os_error() == Some(libc::ENOSPC) {
            "the disk is full".to_string()
        } else {
            e.to_string()
        };
        return Err(anyhow::anyhow!("cannot write {}: {what}", path.display()));
    }
    Ok(NewFile { temp, file })
}

fn old_path(path: &Path) -> PathBuf {
    let mut old = path.as_os_str().to_owned();
    old.push(".old");
    PathBuf::from(old)
}
