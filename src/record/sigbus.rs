//! Surviving files that shrink while mapped.
//!
//! blazesym and the unwinder read binaries through memory mappings. A process that owns its
//! binary can truncate it while amprof has it mapped; touching a mapped page past the new end
//! of the file raises `SIGBUS` (`BUS_ADRERR`), which would kill amprof with the recording.
//! The handler installed here answers such a fault the way systemd's journal reader does: it
//! maps an anonymous zero page over the faulting page and returns, so the read sees zeros —
//! hostile bytes, which every parser amprof uses already treats as possibly malformed. Pages
//! replaced are counted ([`pages_replaced`]) and reported as a problem of the window.
//!
//! Any other `SIGBUS` (none is expected) restores the default action and is re-raised.

use std::sync::{
    Once,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

/// `si_code` of an access to a mapped page that the file no longer backs.
const BUS_ADRERR: libc::c_int = 2;

static INSTALL: Once = Once::new();
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);
static REPLACED: AtomicU64 = AtomicU64::new(0);

/// Installs the handler (once per process; later calls do nothing).
pub fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE_SIZE.store(page as usize, Ordering::Relaxed);
        }
        // SAFETY: a zeroed sigaction with our handler and SA_SIGINFO is valid.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        }
    });
}

/// Pages of mapped files replaced by zeros so far.
pub fn pages_replaced() -> u64 {
    REPLACED.load(Ordering::Relaxed)
}

extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // Only async-signal-safe calls below: mmap, signal, raise, atomics.
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let (code, address) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code == BUS_ADRERR && address != 0 {
        let page = address & !(PAGE_SIZE.load(Ordering::Relaxed) - 1);
        // SAFETY: replaces one page of a read-only file mapping (the faulting one) with
        // anonymous zeros; nothing else can be at that address.
        let mapped = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                PAGE_SIZE.load(Ordering::Relaxed),
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if mapped != libc::MAP_FAILED {
            REPLACED.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    // SAFETY: restoring the default action and re-raising is async-signal-safe.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn a_truncated_mapping_reads_as_zeros() {
        install();
        let path = std::env::temp_dir().join(format!("amprof-sigbus-{}", std::process::id()));
        let page = PAGE_SIZE.load(Ordering::Relaxed);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.write_all(&vec![7u8; 3 * page]).unwrap();
        let map = unsafe { memmap2::Mmap::map(&file).unwrap() };
        assert_eq!(map[2 * page], 7);
        file.set_len(page as u64).unwrap();
        let before = pages_replaced();
        // Past the new end: SIGBUS, answered with a zero page.
        assert_eq!(unsafe { std::ptr::read_volatile(&map[2 * page + 5]) }, 0);
        assert_eq!(map[0], 7);
        assert!(pages_replaced() > before);
        drop(map);
        let _ = std::fs::remove_file(&path);
    }
}
