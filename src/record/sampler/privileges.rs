//! Whether this process may load and attach amprof's programs, and the one line (with exit
//! code 4) an unprivileged user gets instead of the kernel's EPERM.

use anyhow::Result;

use crate::error::{Exit, coded};

/// A permission failure from the kernel, as the one-line error with its own exit code.
pub(super) fn privilege_error(error: &(dyn std::error::Error + 'static)) -> Option<anyhow::Error> {
    if has_privileges() {
        // Root is refused for other reasons (lockdown, a security module): the error says.
        return None;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        {
            return Some(coded(Exit::NoPermission, PRIVILEGE_MESSAGE));
        }
        cause = e.source();
    }
    let text = error.to_string();
    (text.contains("Operation not permitted") || text.contains("Permission denied"))
        .then(|| coded(Exit::NoPermission, PRIVILEGE_MESSAGE))
}

pub const PRIVILEGE_MESSAGE: &str = "recording needs root, or the CAP_BPF and CAP_PERFMON capabilities (and CAP_SYSLOG for kernel symbols): run it with sudo";

/// Checks up front that this process may load eBPF programs, so that an unprivileged user gets
/// one clear line (and exit code 4) before anything starts.
pub fn check_privileges() -> Result<()> {
    if has_privileges() {
        Ok(())
    } else {
        Err(coded(Exit::NoPermission, PRIVILEGE_MESSAGE))
    }
}

/// Root, or the capabilities that load and attach amprof's programs.
pub fn has_privileges() -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
        })
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    has(CAP_BPF) && has(CAP_PERFMON)
}
