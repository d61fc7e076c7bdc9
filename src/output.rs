//! Creating output files safely: amprof runs as root, often under sudo, in directories it does
//! not own. Files are created fresh (never opened through a symlink, never truncated in place),
//! reach their final name by an atomic rename once complete, and belong to the invoking user.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt as _, fchown},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result};

/// Creates a new file at `path` with `mode`; fails if anything (a file, a symlink) is there.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    give_to_invoking_user(&file)?;
    Ok(file)
}

/// Under sudo, hands `file` to the user who ran sudo, so that they can read and delete what
/// they asked amprof to write.
pub fn give_to_invoking_user(file: &File) -> io::Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let id = |name| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    match (id("SUDO_UID"), id("SUDO_GID")) {
        (Some(uid), Some(gid)) if uid != 0 => fchown(file, Some(uid), Some(gid)),
        _ => Ok(()),
    }
}

/// A fresh name in `path`'s directory for a file that will be renamed to `path`.
pub fn temp_path_beside(path: &Path) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = path
        .file_name()
        .map_or_else(|| "amprof".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Checks that `path` can be an output file: not a directory, in a directory that exists.
pub fn check_output_path(path: &Path) -> Result<()> {
    if path.as_os_str().is_empty() {
        return Err(crate::error::usage("the output path is empty"));
    }
    if path.is_dir() {
        return Err(crate::error::usage(format!(
            "{} is a directory: give a file name",
            path.display()
        )));
    }
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(crate::error::usage(format!(
            "cannot write {}: directory {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// The directory `path` is in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An output that becomes visible at its final path only when complete: written to a temporary
/// file beside it, renamed over it by [`AtomicOutput::commit`]. Dropped without commit, the
/// temporary file is removed and nothing at `path` changes.
pub struct AtomicOutput {
    path: PathBuf,
    temp: PathBuf,
    file: Option<io::BufWriter<File>>,
}

impl AtomicOutput {
    pub fn create(path: &Path, mode: u32) -> Result<Self> {
        check_output_path(path)?;
        let temp = temp_path_beside(path);
        let file =
            create_new(&temp, mode).with_context(|| format!("cannot create {}", temp.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            temp,
            file: Some(io::BufWriter::with_capacity(1 << 16, file)),
        })
    }

    pub fn writer(&mut self) -> &mut io::BufWriter<File> {
        self.file.as_mut().expect("present until commit")
    }

    /// Flushes, syncs and renames the file to its final path.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("present until commit");
        let file = file
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        file.sync_all()
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        fs::rename(&self.temp, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(())
    }
}

impl Write for AtomicOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer().flush()
    }
}

impl Drop for AtomicOutput {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}
