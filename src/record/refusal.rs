//! What the kernel said when it refused one of amprof's eBPF programs or maps, in words.
//!
//! A refusal is one line: which program, and the kernel's reason as something a user can act on
//! ("too complex for this kernel's verifier", "this kernel lacks bpf_loop (5.17+)"). The
//! verifier's own log, often thousands of lines, goes to a file the line names, never to the
//! terminal. The reason is read from what the kernel said (the log, then the errno), never
//! guessed from the errno alone: the verifier answers EACCES and EPERM to programs it finds
//! unsafe, which is not a matter of privileges when amprof runs as root.

use std::{io::Write as _, path::PathBuf};

use aya::{EbpfError, maps::MapError, programs::ProgramError};

/// Why the kernel refused a program or map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The kernel's reason, in words (no trailing period).
    pub reason: String,
    /// Where the full verifier log was written, if there was one.
    pub log: Option<PathBuf>,
    /// The kernel said EPERM/EACCES without a verifier log, and amprof lacks root or the
    /// capabilities: a matter of privileges after all.
    pub privileges: bool,
}

impl Refusal {
    /// The refusal as a phrase after the program's name: "reason (verifier log: path)".
    pub fn phrase(&self) -> String {
        match &self.log {
            Some(path) => format!("{} (verifier log: {})", self.reason, path.display()),
            None => self.reason.clone(),
        }
    }
}

/// Helpers amprof's programs call that older kernels lack, by helper id (`enum bpf_func_id`),
/// with the kernel that added them: the verifier names a helper it lacks only by number.
const HELPERS: &[(u32, &str, &str)] = &[
    (67, "bpf_get_stack", "4.18"),
    (112, "bpf_probe_read_user", "5.5"),
    (113, "bpf_probe_read_kernel", "5.5"),
    (130, "bpf_ringbuf_output", "5.8"),
    (131, "bpf_ringbuf_reserve", "5.8"),
    (132, "bpf_ringbuf_submit", "5.8"),
    (158, "bpf_get_current_task_btf", "5.11"),
    (175, "bpf_task_pt_regs", "5.15"),
    (181, "bpf_loop", "5.17"),
];

/// Reads the refusal of program `program` from aya's error; a verifier log is written to a file.
pub fn program_refusal(program: &str, error: &ProgramError) -> Refusal {
    match error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let log_path = if log.trim().is_empty() {
                None
            } else {
                save_log(program, &log)
            };
            let mut refusal = classify(&log, io_error.raw_os_error());
            refusal.log = log_path;
            refusal
        }
        other => classify("", os_error(other)),
    }
}

/// The refusal of a map (at object load: maps are created first).
pub fn object_refusal(error: &EbpfError) -> Refusal {
    if let EbpfError::MapError(MapError::CreateError { name, io_error }) = error {
        let errno = io_error.raw_os_error();
        if name == "EVENTS" && errno == Some(libc::EINVAL) {
            return Refusal {
                reason: "needs Linux 5.8+ for the BPF ring buffer".into(),
                log: None,
                privileges: false,
            };
        }
        let mut refusal = classify("", errno);
        if !refusal.privileges {
            refusal.reason = format!("cannot create BPF map {name}: {io_error}");
        }
        return refusal;
    }
    let mut refusal = classify("", os_error(error));
    if !refusal.privileges {
        refusal.reason = error.to_string();
    }
    refusal
}

/// The first OS error in an error's chain.
fn os_error(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        cause = e.source();
    }
    None
}

/// The reason in a verifier log (its last lines say why it stopped) and the errno.
pub fn classify(log: &str, errno: Option<i32>) -> Refusal {
    let refusal = |reason: String| Refusal {
        reason,
        log: None,
        privileges: false,
    };
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(id) = lines.iter().find_map(|l| unknown_helper(l)) {
        return refusal(match HELPERS.iter().find(|(known, ..)| *known == id) {
            Some((_, name, since)) => format!("this kernel lacks {name} ({since}+)"),
            None => format!("this kernel lacks BPF helper #{id}"),
        });
    }
    if lines
        .iter()
        .any(|l| l.contains("func_info doesn't match number of subprogs"))
    {
        return refusal("this kernel cannot verify BPF callbacks (bpf_loop, 5.17+)".into());
    }
    if errno == Some(libc::E2BIG)
        || lines
            .iter()
            .any(|l| l.starts_with("BPF program is too large"))
    {
        return refusal(format!(
            "too complex for this kernel's verifier ({})",
            processed(&lines).unwrap_or("it stopped at its instruction limit")
        ));
    }
    // The verifier's own reason: the last line before its statistics.
    if let Some(reason) = lines.iter().rev().find(|l| !is_statistics(l)) {
        return refusal(format!(
            "the verifier refused it: {}",
            crate::text::printable(reason)
        ));
    }
    let privileged = super::sampler::has_privileges();
    match errno {
        Some(libc::EPERM | libc::EACCES) if !privileged => Refusal {
            reason: super::sampler::PRIVILEGE_MESSAGE.into(),
            log: None,
            privileges: true,
        },
        Some(libc::EPERM | libc::EACCES) => refusal(format!(
            "the kernel said {} although amprof has root's privileges (kernel lockdown, a \
             security module or a seccomp filter; see dmesg)",
            std::io::Error::from_raw_os_error(errno.unwrap_or(libc::EPERM))
        )),
        Some(errno) => refusal(format!(
            "the kernel said {}",
            std::io::Error::from_raw_os_error(errno)
        )),
        None => refusal("the kernel refused it without a reason".into()),
    }
}

/// `invalid func unknown#181` (the helper's id) in a verifier log line.
fn unknown_helper(line: &str) -> Option<u32> {
    let rest = line.strip_prefix("invalid func unknown#")?;
    rest.trim().parse().ok()
}

/// The statistics the verifier prints after its reason.
fn is_statistics(line: &str) -> bool {
    ["verification time", "stack depth", "processed ", "func#"]
        .iter()
        .any(|prefix| line.starts_with(prefix))
}

/// "processed N insns ..." as "N instructions processed".
fn processed<'a>(lines: &[&'a str]) -> Option<&'a str> {
    let line = lines.iter().find(|l| l.starts_with("processed "))?;
    let end = line.find(" (limit").unwrap_or(line.len());
    Some(&line[..end])
}

/// Writes a verifier log to a new file that only root reads, and returns its path.
fn save_log(program: &str, log: &str) -> Option<PathBuf> {
    let mut file = tempfile::Builder::new()
        .prefix(&format!("amprof-verifier-{program}-"))
        .suffix(".log")
        .tempfile()
        .ok()?;
    file.write_all(log.as_bytes()).ok()?;
    let (_, path) = file.keep().ok()?;
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_helper_is_named_with_its_kernel() {
        let log = "Unrecognized arg#0 type PTR\ninvalid func unknown#181\nprocessed 12 insns (limit 1000000)";
        assert_eq!(
            classify(log, Some(libc::EINVAL)).reason,
            "this kernel lacks bpf_loop (5.17+)"
        );
        assert_eq!(
            classify("invalid func unknown#9999\n", Some(libc::EINVAL)).reason,
            "this kernel lacks BPF helper #9999"
        );
    }

    #[test]
    fn the_instruction_limit_is_too_complex() {
        let log = "...\nBPF program is too large. Processed 1000001 insn\nprocessed 1000001 insns (limit 1000000) max_states_per_insn 21 total_states 20500\n";
        assert_eq!(
            classify(log, Some(libc::E2BIG)).reason,
            "too complex for this kernel's verifier (processed 1000001 insns)"
        );
    }

    #[test]
    fn callbacks_on_an_old_kernel() {
        let log = "number of funcs in func_info doesn't match number of subprogs\nverification time 234 usec\nprocessed 0 insns (limit 1000000)";
        assert_eq!(
            classify(log, Some(libc::EINVAL)).reason,
            "this kernel cannot verify BPF callbacks (bpf_loop, 5.17+)"
        );
    }

    #[test]
    fn an_unsafe_program_is_not_a_privilege_problem() {
        // The verifier answers EACCES to an invalid access: its reason is what counts.
        let log = "R1 invalid mem access 'scalar'\nprocessed 112785 insns (limit 1000000)";
        let refusal = classify(log, Some(libc::EACCES));
        assert!(!refusal.privileges);
        assert_eq!(
            refusal.reason,
            "the verifier refused it: R1 invalid mem access 'scalar'"
        );
    }

    #[test]
    fn log_lines_are_escaped() {
        let refusal = classify("bad \x1b[2J line\n", Some(libc::EINVAL));
        assert!(!refusal.reason.contains('\x1b'), "{}", refusal.reason);
    }
}
