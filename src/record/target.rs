//! What to profile: the whole system, existing processes, or a command amprof starts.

use std::{
    io::{Read as _, Write as _},
    os::fd::AsRawFd as _,
    process::{Child, Command},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow};

use crate::error::{Exit, coded};

/// Checks that every pid names a live process.
pub fn check_pids(pids: &[u32]) -> Result<()> {
    for &pid in pids {
        if !is_alive(pid) {
            return Err(coded(Exit::NoTarget, format!("no process with pid {pid}")));
        }
    }
    Ok(())
}

/// True while `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised comm, which may itself contain ") ".
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Starts `argv` so that it is a target from its very first instruction: the child reports its
/// pid and waits, in the gap between fork and exec, until `before_exec` (which makes the pid a
/// target in the kernel) has run.
pub fn spawn_gated(argv: &[String], before_exec: impl FnOnce(u32) -> Result<()>) -> Result<Child> {
    let program = argv.first().context("no command given")?;
    let (mut pid_reader, pid_writer) = std::io::pipe().context("cannot create a pipe")?;
    let (gate_reader, mut gate_writer) = std::io::pipe().context("cannot create a pipe")?;
    let (pid_w, gate_r) = (pid_writer.as_raw_fd(), gate_reader.as_raw_fd());
    let (pid_r, gate_w) = (pid_reader.as_raw_fd(), gate_writer.as_raw_fd());

    let mut command = Command::new(program);
    command.args(&argv[1..]);
    // SAFETY: the closure runs in the forked child and only makes async-signal-safe calls
    // (close, getpid, write, read).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            libc::close(pid_r);
            libc::close(gate_w);
            let pid = libc::getpid().to_ne_bytes();
            libc::write(pid_w, pid.as_ptr().cast(), pid.len());
            libc::close(pid_w);
            let mut go = 0u8;
            if libc::read(gate_r, (&raw mut go).cast(), 1) != 1 {
                // amprof gave up before it could profile us: do not run unprofiled.
                return Err(std::io::Error::from_raw_os_error(libc::ECANCELED));
            }
            libc::close(gate_r);
            Ok(())
        });
    }
    // `spawn` returns only once the child has exec'd, which it does only after the gate opens:
    // spawn on another thread, and open the gate from this one.
    let spawner = thread::spawn(move || command.spawn());

    let mut pid = [0u8; 4];
    let got_pid = loop {
        // The child writes its pid right after fork; if spawning fails before that, the thread
        // finishes and the pipe never fills.
        if spawner.is_finished() {
            break false;
        }
        let mut fd = libc::pollfd {
            fd: pid_r,
            events: libc::POLLIN,
            revents: 0,
        };
        if unsafe { libc::poll(&mut fd, 1, 20) } > 0 {
            break pid_reader.read_exact(&mut pid).is_ok();
        }
    };
    drop(pid_writer);
    drop(gate_reader);
    let gate = if got_pid {
        let pid = u32::from_ne_bytes(pid);
        before_exec(pid).map(|()| gate_writer.write_all(&[1]))
    } else {
        Ok(Ok(()))
    };
    // On any failure, closing the gate unopened makes the child exit without running.
    drop(gate_writer);
    let spawned = spawner
        .join()
        .map_err(|_| anyhow!("the thread starting the command panicked"))?;
    gate?.context("cannot start the command")?;
    spawned.map_err(|e| {
        let what = match e.kind() {
            std::io::ErrorKind::NotFound => "command not found".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        coded(Exit::NoTarget, format!("cannot run `{program}`: {what}"))
    })
}

/// The exit code of a finished command, as a shell reports it (128 + signal when killed).
pub fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.wrapping_add(signal as u8),
        (None, None) => 1,
    }
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}
