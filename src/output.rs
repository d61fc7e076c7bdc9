//! Creating output files safely: amprof runs as root, often under sudo, in directories it does
//! not own, such as /tmp. Files are created fresh (never opened through a symlink, never
//! truncated in place) under a random temporary name that nobody can plant in advance, reach
//! their final name by an atomic rename once complete, and belong to the invoking user.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, fchown},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use tempfile::TempPath;

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

/// Creates the directory `path` and its missing parents, mode 0700, under sudo for the invoking
/// user (each directory created, not those that were there).
pub fn create_dirs(path: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = path
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && fs::symlink_metadata(p).is_err())
        .collect();
    for dir in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            // Made meanwhile by someone else: theirs, not ours to give away.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => continue,
            Err(e) => return Err(e),
        }
        let handle = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir)?;
        give_to_invoking_user(&handle)?;
    }
    Ok(())
}

/// Random characters in a temporary file's name: 62^12, about 71 bits.
const TEMP_RANDOM_CHARS: usize = 12;

/// A new file beside `path` (in its directory), to be renamed to `path` once complete: created as
/// [`create_new`] does, under a random name `.NAME.RANDOM.tmp`, so that nobody can know the name
/// in advance and plant a file or symlink there (a name found taken is passed over for
/// another). The file is removed when the returned [`TempPath`] is dropped, unless persisted.
pub fn temp_file_beside(path: &Path, mode: u32) -> io::Result<(File, TempPath)> {
    let mut name = path
        .file_name()
        .map_or_else(|| "amprof".into(), |n| n.to_string_lossy().into_owned());
    // Room for the dots and the random part in a 255-byte name.
    if name.len() > 200 {
        let mut end = 200;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    let prefix = format!(".{name}.");
    // tempfile's own errors name the random path; an error of the system's is clearer.
    let mut os_error = None;
    tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .rand_bytes(TEMP_RANDOM_CHARS)
        .make_in(parent_dir(path), |temp| {
            create_new(temp, mode).inspect_err(|e| os_error = e.raw_os_error())
        })
        .map(|temp| temp.into_parts())
        .map_err(|e| os_error.map_or(e, io::Error::from_raw_os_error))
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
/// file beside it ([`temp_file_beside`]), renamed over it by [`AtomicOutput::commit`]. Dropped
/// without commit, the temporary file is removed and nothing at `path` changes.
pub struct AtomicOutput {
    path: PathBuf,
    /// Removes the temporary file when dropped, unless it was renamed.
    temp: Option<TempPath>,
    file: Option<io::BufWriter<File>>,
}

impl AtomicOutput {
    pub fn create(path: &Path, mode: u32) -> Result<Self> {
        check_output_path(path)?;
        let (file, temp) = temp_file_beside(path, mode)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            temp: Some(temp),
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
        let temp = self.temp.take().expect("present until commit");
        // On failure the temporary file goes with the error.
        temp.persist(&self.path)
            .map_err(|e| e.error)
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

/// Reports hold what the capture holds (command lines in process names, paths, the code that
/// ran): only their owner may read them, as only the capture's owner may read the capture.
pub const REPORT_MODE: u32 = 0o600;

/// Where a format goes: standard output, or a file made visible only once complete.
pub enum Output {
    Stdout(io::BufWriter<io::Stdout>),
    File(AtomicOutput),
}

impl Output {
    /// `path`, or `default` (a file name) when none is given, or stdout (`-`, or no default).
    /// Files are created [`REPORT_MODE`], under sudo for the invoking user.
    pub fn open(path: Option<&Path>, default: Option<&str>) -> Result<Self> {
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| default.map(PathBuf::from));
        match path {
            Some(p) if p.as_os_str() != "-" => {
                Ok(Self::File(AtomicOutput::create(&p, REPORT_MODE)?))
            }
            _ => Ok(Self::Stdout(io::BufWriter::new(io::stdout()))),
        }
    }

    /// True when writing to a terminal (binary formats refuse to).
    pub fn is_terminal(&self) -> bool {
        use std::io::IsTerminal as _;
        matches!(self, Self::Stdout(_)) && io::stdout().is_terminal()
    }

    /// Flushes standard output, or makes the file visible at its path.
    pub fn finish(self) -> Result<()> {
        match self {
            // A closed pipe (`| head`) ends amprof quietly: main handles it for every write.
            Self::Stdout(mut out) => out.flush().context("cannot write to standard output"),
            Self::File(file) => file.commit(),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Stdout(out) => out.write(buf),
            Self::File(file) => file.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Stdout(out) => out.flush(),
            Self::File(file) => file.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, os::unix::fs::PermissionsExt as _};

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("amprof-output-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The random part of a temporary file's name.
    fn random_part(temp: &Path, prefix: &str) -> String {
        let name = temp.file_name().unwrap().to_str().unwrap();
        name.strip_prefix(prefix)
            .and_then(|n| n.strip_suffix(".tmp"))
            .unwrap_or_else(|| panic!("{name} is not {prefix}RANDOM.tmp"))
            .to_string()
    }

    #[test]
    fn temporary_names_are_unpredictable() {
        let dir = scratch("random");
        let target = dir.join("out.svg");
        let mut seen = HashSet::new();
        for _ in 0..50 {
            let (_file, temp) = temp_file_beside(&target, 0o600).unwrap();
            assert_eq!(temp.parent(), Some(dir.as_path()), "beside the output");
            let random = random_part(&temp, ".out.svg.");
            assert_eq!(random.len(), TEMP_RANDOM_CHARS);
            assert!(
                random.chars().all(|c| c.is_ascii_alphanumeric()),
                "{random}"
            );
            assert!(seen.insert(random), "a name came twice");
            let mode = fs::metadata(&temp).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Each was removed when its TempPath was dropped.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        // A long name keeps the random part within the 255 bytes of a file name.
        let long = dir.join("é".repeat(120));
        let (_file, temp) = temp_file_beside(&long, 0o600).unwrap();
        assert!(temp.file_name().unwrap().len() <= 255);
        drop(temp);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn directories_are_created_private_with_their_parents() {
        let dir = scratch("dirs");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let deep = dir.join("a/b/c");
        create_dirs(&deep).unwrap();
        for path in [dir.join("a"), dir.join("a/b"), deep.clone()] {
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", path.display());
        }
        // Existing directories are left as they are.
        create_dirs(&deep).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_ne!(mode & 0o777, 0o700);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// What a local user could plant, knowing amprof's former names (`.NAME.PID.N.tmp`): files
    /// and symlinks to a file of root's. None of it matters.
    #[test]
    fn names_planted_in_advance_change_nothing() {
        let dir = scratch("planted");
        let victim = dir.join("victim");
        fs::write(&victim, "precious").unwrap();
        let target = dir.join("out.svg");
        let pid = std::process::id();
        let mut planted = Vec::new();
        for n in 0..64 {
            let path = dir.join(format!(".out.svg.{pid}.{n}.tmp"));
            if n % 2 == 0 {
                std::os::unix::fs::symlink(&victim, &path).unwrap();
            } else {
                fs::write(&path, "planted").unwrap();
            }
            planted.push(path);
        }
        for round in 0..3 {
            let mut out = AtomicOutput::create(&target, 0o600).unwrap();
            write!(out, "report {round}").unwrap();
            out.commit().unwrap();
            assert_eq!(
                fs::read_to_string(&target).unwrap(),
                format!("report {round}")
            );
        }
        // Dropped without commit: nothing appears, nothing is left behind.
        let mut out = AtomicOutput::create(&target, 0o600).unwrap();
        write!(out, "never").unwrap();
        drop(out);
        assert_eq!(fs::read_to_string(&target).unwrap(), "report 2");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        for path in &planted {
            assert!(
                fs::symlink_metadata(path).is_ok(),
                "{} is still there",
                path.display()
            );
        }
        let entries = fs::read_dir(&dir).unwrap().count();
        assert_eq!(
            entries,
            planted.len() + 2,
            "only the output and the victim added"
        );
        let meta = fs::symlink_metadata(&target).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }
}
