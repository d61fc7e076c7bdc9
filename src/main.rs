//! The `amprof` binary: parse the command line, run the command, turn errors into one line and
//! an exit code. Everything else lives in the library (`amprof::cli` and below).

use std::process::ExitCode;

use amprof::{
    cli,
    error::{Exit, exit_of},
};

fn main() -> ExitCode {
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
