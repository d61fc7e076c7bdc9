//! The `amprof` binary: parse the command line, run the command, turn errors into one line and
//! an exit code. Everything else lives in the library (`amprof::cli` and below).

use std::process::ExitCode;

use amprof::{
    cli,
    error::{Exit, exit_of},
};

fn main() -> ExitCode {
    // Buffers of 128 KiB and more get mappings of their own, returned to the system when freed:
    // building an unwind table grows vectors to tens of MB for a moment, and glibc's adaptive
    // threshold would otherwise keep that memory in an arena for the rest of the recording.
    // SAFETY: called before any other thread exists; it only sets a malloc parameter.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10) };
    let cli = match cli::parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => error.exit(), // --help, --version
        Err(error) => {
            eprintln!("amprof: error: {}", cli::one_line(&error));
            return ExitCode::from(Exit::Usage.code());
        }
    };
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        // A reader that stops early (`amprof report --format folded | head`) closes the pipe;
        // that is its choice, not our failure: stop quietly, as cat and ripgrep do.
        Err(error) if is_broken_pipe(&error) => ExitCode::from(Exit::Success.code()),
        Err(error) => {
            eprintln!("amprof: error: {error:#}");
            ExitCode::from(exit_of(&error).code())
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
