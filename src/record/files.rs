//! Opening files on behalf of the processes amprof samples: the one way it is done.
//!
//! amprof runs as root and reads files that sampled processes choose: their binaries (through
//! their mappings), the debug files those binaries name, their perf maps under `/tmp`. A
//! process may put anything at those paths: a FIFO (whose `open` blocks forever), a device
//! (whose `open` has side effects), a symlink to a root-only file or to `/dev/zero`, a file it
//! holds a lease on (whose `open` blocks for the lease-break time), a file it truncates while
//! amprof reads it. So every such file is opened here, in two steps:
//!
//! 1. [`Pinned`]: an `O_PATH` descriptor, which opens nothing (no driver `open`, no FIFO wait, no
//!    lease break) and only names an inode: through `/proc/PID/map_files` for a mapping (exactly
//!    the mapped inode, in whatever mount namespace, even deleted), or a path resolved with
//!    `openat2` so that no symlink is followed ([`Pinned::path`]) or none leads outside a
//!    directory amprof chose ([`Pinned::beneath`]).
//! 2. [`Pinned::open`]: only a regular file is opened for reading, with `O_NONBLOCK` (a lease
//!    holder gets `EWOULDBLOCK` back instead of a stalled amprof), and checked to be the very
//!    inode that was pinned. Its bytes are then read through bounded readers
//!    ([`SafeFile::read_all`], [`SafeFile::read_from`]) or mapped ([`SafeFile::map`]), mappings
//!    being guarded against files that shrink ([`super::sigbus`]).
//!
//! Libraries that want a path (blazesym) get [`SafeFile::proc_path`], which reopens the file
//! amprof holds open, never the path the process chose.

use std::{
    ffi::CString,
    fmt,
    fs::File,
    io::{self, Read as _, Seek as _, SeekFrom},
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

/// A file as the kernel identifies it, with what trust decisions need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// Device, in the `major << 32 | minor` form of `/proc/PID/maps`.
    pub dev: u64,
    pub ino: u64,
    pub uid: u32,
    pub mode: u32,
    pub size: u64,
    pub nlink: u64,
}

impl FileStat {
    fn of(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is a valid descriptor and `st` a writable stat buffer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            dev: u64::from(libc::major(st.st_dev)) << 32 | u64::from(libc::minor(st.st_dev)),
            ino: st.st_ino,
            uid: st.st_uid,
            mode: st.st_mode,
            size: u64::try_from(st.st_size).unwrap_or(0),
            nlink: st.st_nlink,
        })
    }

    pub fn is_regular(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// Only root can change it: owned by root, not writable by its group or others. (A file or
    /// directory a sampled user cannot write cannot be swapped, truncated or leased by them.)
    pub fn root_controlled(&self) -> bool {
        self.uid == 0 && self.mode & 0o022 == 0
    }

    /// What kind of file it is, for messages.
    fn kind(&self) -> &'static str {
        match self.mode & libc::S_IFMT {
            libc::S_IFREG => "a regular file",
            libc::S_IFDIR => "a directory",
            libc::S_IFIFO => "a FIFO",
            libc::S_IFSOCK => "a socket",
            libc::S_IFCHR => "a character device",
            libc::S_IFBLK => "a block device",
            libc::S_IFLNK => "a symbolic link",
            _ => "not a regular file",
        }
    }
}

/// Why a file was not read.
#[derive(Debug)]
pub enum Refused {
    /// It could not be opened or read (gone, no permission, a symlink on its path, a lease
    /// held on it: `EWOULDBLOCK`).
    Io(io::Error),
    /// It is not a regular file (a FIFO, a device, a socket, a directory).
    NotRegular(&'static str),
    /// It is larger than what is read of such a file.
    TooLarge { size: u64, max: u64 },
    /// The inode opened is not the one pinned (it cannot be: a guard).
    Replaced,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Io(e) => write!(f, "{e}"),
            Refused::NotRegular(kind) => write!(f, "it is {kind}, not a regular file"),
            Refused::TooLarge { size, max } => {
                write!(
                    f,
                    "it has {size} bytes, more than the {max} read of such a file"
                )
            }
            Refused::Replaced => f.write_str("it changed while being opened"),
        }
    }
}

impl From<io::Error> for Refused {
    fn from(e: io::Error) -> Self {
        Refused::Io(e)
    }
}

/// A handle on an inode that opens nothing (`O_PATH`): holding it keeps the file (even a
/// deleted one, even in another mount namespace) reachable until it is read.
#[derive(Debug)]
pub struct Pinned {
    fd: OwnedFd,
}

impl Pinned {
    /// The file process `pid` maps at `[start, end)`, through `/proc/PID/map_files` (in
    /// `proc_root`): a magic link to exactly the mapped inode.
    pub fn mapping(proc_root: &Path, pid: u32, start: u64, end: u64) -> io::Result<Self> {
        let path = proc_root
            .join(pid.to_string())
            .join("map_files")
            .join(format!("{start:x}-{end:x}"));
        // O_PATH follows the magic link to the mapped file without opening it.
        Self::open_path_flags(&path, libc::O_PATH | libc::O_CLOEXEC)
    }

    /// `path`, resolved without following any symbolic link (nor `/proc` magic link) on it.
    pub fn path(path: &Path) -> io::Result<Self> {
        openat2(
            libc::AT_FDCWD,
            path,
            libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
        )
        .or_else(|e| match e.raw_os_error() {
            // Kernels before 5.6: no symlink as the last component at least.
            Some(libc::ENOSYS) => {
                Self::open_path_flags(path, libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW)
                    .map(|p| p.fd)
            }
            _ => Err(e),
        })
        .map(|fd| Self { fd })
    }

    /// `relative` inside directory `dir`: symlinks are followed only while they stay inside
    /// `dir` (debug directories are full of `.build-id` symlinks), never to outside it.
    pub fn beneath(dir: &Path, relative: &Path) -> io::Result<Self> {
        let dir = Self::path(dir)?;
        if !dir.stat()?.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        openat2(
            dir.fd.as_raw_fd(),
            relative,
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
        )
        .map(|fd| Self { fd })
    }

    fn open_path_flags(path: &Path, flags: libc::c_int) -> io::Result<Self> {
        let c_path = c_path(path)?;
        // SAFETY: a valid NUL-terminated path; the result is checked.
        let fd = unsafe { libc::open(c_path.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn stat(&self) -> io::Result<FileStat> {
        FileStat::of(self.fd.as_fd())
    }

    /// Opens the pinned file for reading if it is a regular file, without blocking.
    pub fn open(&self) -> Result<SafeFile, Refused> {
        let stat = self.stat()?;
        if !stat.is_regular() {
            return Err(Refused::NotRegular(stat.kind()));
        }
        let reopen = CString::new(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
            .expect("no NUL in a number");
        // SAFETY: a valid NUL-terminated path; the result is checked. O_NONBLOCK: a lease on
        // the file answers EWOULDBLOCK instead of stalling; it means nothing for reads of a
        // regular file.
        let fd = unsafe {
            libc::open(
                reopen.as_ptr(),
                libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Refused::Io(io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let opened = FileStat::of(file.as_fd())?;
        if (opened.dev, opened.ino) != (stat.dev, stat.ino) || !opened.is_regular() {
            return Err(Refused::Replaced);
        }
        Ok(SafeFile { file, stat: opened })
    }
}

/// `openat2(dirfd, path, O_PATH | O_CLOEXEC, resolve)`.
fn openat2(dirfd: libc::c_int, path: &Path, resolve: u64) -> io::Result<OwnedFd> {
    let c_path = c_path(path)?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: valid path and `open_how` of the size passed; the result is checked.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            c_path.as_ptr(),
            &raw const how,
            size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// A regular file open for reading, as [`Pinned::open`] checked it.
#[derive(Debug)]
pub struct SafeFile {
    file: File,
    stat: FileStat,
}

impl SafeFile {
    pub fn stat(&self) -> &FileStat {
        &self.stat
    }

    /// The whole file, if it has at most `max` bytes (however much it claims or grows to).
    pub fn read_all(&self, max: u64) -> Result<Vec<u8>, Refused> {
        if self.stat.size > max {
            return Err(Refused::TooLarge {
                size: self.stat.size,
                max,
            });
        }
        let mut bytes = Vec::with_capacity(self.stat.size as usize);
        (&self.file)
            .take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(Refused::Io)?;
        if bytes.len() as u64 > max {
            return Err(Refused::TooLarge {
                size: bytes.len() as u64,
                max,
            });
        }
        Ok(bytes)
    }

    /// Up to `max` bytes from `offset` (fewer at the end of the file).
    pub fn read_from(&self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let mut file = &self.file;
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        file.take(max as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// A read-only mapping of the file. A file that shrinks while mapped does not kill amprof:
    /// [`super::sigbus`] turns the pages gone into zeros.
    pub fn map(&self) -> io::Result<memmap2::Mmap> {
        super::sigbus::install();
        // SAFETY: read-only; a file changed underneath yields wrong bytes, which every parser
        // here treats as hostile input anyway, and a shrunk one zeros (see above).
        unsafe { memmap2::Mmap::map(&self.file) }
    }

    /// A path that opens this very file again (for libraries that only take paths), valid
    /// while `self` is open.
    pub fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.file.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("amprof-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn opens_regular_files_and_refuses_the_rest() {
        let dir = scratch("kinds");
        let file = dir.join("file");
        std::fs::write(&file, b"0123456789").unwrap();
        let opened = Pinned::path(&file).unwrap().open().unwrap();
        assert_eq!(opened.read_all(10).unwrap(), b"0123456789");
        assert!(matches!(
            opened.read_all(9),
            Err(Refused::TooLarge { size: 10, max: 9 })
        ));
        assert_eq!(opened.read_from(4, 3).unwrap(), b"456");

        // A FIFO: pinning and refusing it must not block.
        let fifo = dir.join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            Pinned::path(&fifo).unwrap().open(),
            Err(Refused::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            Pinned::path(&dir).unwrap().open(),
            Err(Refused::NotRegular("a directory"))
        ));
        let null = Pinned::path(Path::new("/dev/null")).unwrap();
        assert!(matches!(
            null.open(),
            Err(Refused::NotRegular("a character device"))
        ));
    }

    #[test]
    fn never_follows_symlinks_on_a_path() {
        let dir = scratch("links");
        std::fs::write(dir.join("target"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.join("target"), dir.join("link")).unwrap();
        std::os::unix::fs::symlink(&dir, dir.join("dirlink")).unwrap();
        assert!(Pinned::path(&dir.join("link")).is_err());
        assert!(Pinned::path(&dir.join("dirlink").join("target")).is_err());
        assert!(Pinned::path(&dir.join("target")).is_ok());
    }

    #[test]
    fn stays_beneath_its_directory() {
        let dir = scratch("beneath");
        let debug = dir.join("debug");
        std::fs::create_dir_all(debug.join(".build-id/ab")).unwrap();
        std::fs::write(debug.join("real.debug"), b"elf").unwrap();
        std::fs::write(dir.join("outside"), b"secret").unwrap();
        // A relative symlink inside the directory is fine; one leading out is not.
        std::os::unix::fs::symlink("../../real.debug", debug.join(".build-id/ab/in.debug"))
            .unwrap();
        std::os::unix::fs::symlink("../../../outside", debug.join(".build-id/ab/out.debug"))
            .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", debug.join(".build-id/ab/abs.debug")).unwrap();
        let inside = Pinned::beneath(&debug, Path::new(".build-id/ab/in.debug")).unwrap();
        assert_eq!(inside.open().unwrap().read_all(100).unwrap(), b"elf");
        for escape in [
            ".build-id/ab/out.debug",
            ".build-id/ab/abs.debug",
            "../outside",
        ] {
            assert!(
                Pinned::beneath(&debug, Path::new(escape)).is_err(),
                "{escape} escapes"
            );
        }
    }

    #[test]
    fn knows_who_controls_a_file() {
        let dir = scratch("owner");
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let stat = Pinned::path(&file).unwrap().stat().unwrap();
        assert_eq!(stat.root_controlled(), stat.uid == 0);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(
            !Pinned::path(&file)
                .unwrap()
                .stat()
                .unwrap()
                .root_controlled()
        );
    }

    #[test]
    fn a_pinned_mapping_is_the_mapped_file() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let Some(line) = maps
            .lines()
            .find(|l| l.contains(" r-xp ") && l.contains('/'))
        else {
            return;
        };
        let range = line.split_whitespace().next().unwrap();
        let (start, end) = range.split_once('-').unwrap();
        let (start, end) = (
            u64::from_str_radix(start, 16).unwrap(),
            u64::from_str_radix(end, 16).unwrap(),
        );
        match Pinned::mapping(Path::new("/proc"), std::process::id(), start, end) {
            Ok(pinned) => assert!(pinned.open().unwrap().stat().is_regular()),
            // map_files needs CAP_SYS_ADMIN: the fast tier may run unprivileged.
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
        }
    }
}
