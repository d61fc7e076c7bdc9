//! The `amprof` binary: parse the command line, run the subcommand, turn errors into one line
//! and an exit code. Everything else lives in the library.

use std::process::ExitCode;

use amprof::{
    cli::{Cli, Command, PushArgs, PushTarget, RecordArgs, ReportArgs},
    error::{Exit, exit_of},
    push::{self, PushOptions},
    record::{self, RecordOptions},
    report::{self, ReportOptions, Selection},
};
use clap::Parser as _;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => error.exit(), // --help, --version
        Err(error) => {
            eprintln!("amprof: error: {}", one_line(&error));
            return ExitCode::from(Exit::Usage.code());
        }
    };
    let result = match cli.command {
        Command::Record(args) => record(args),
        Command::Report(args) => report(args).map(|()| Exit::Success.code()),
        Command::Push(args) => push(args).map(|()| Exit::Success.code()),
    };
    match result {
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

/// A command-line error on one line: clap's message and tips, without the usage block (the
/// message already names the flag; `--help` has the rest).
fn one_line(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let mut parts: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line.trim_start_matches("error: ").to_string());
        }
    }
    parts.join(" ")
}

/// Flags of one destination given with `--to` the other: an error, not silently ignored.
fn check_push_flags(args: &PushArgs) -> anyhow::Result<()> {
    let otlp = &args.otlp;
    let datadog = &args.datadog;
    let otlp_flags = [
        ("--endpoint", otlp.endpoint.is_some()),
        ("--protocol", otlp.protocol.is_some()),
        ("--insecure", otlp.insecure),
        ("--compression", otlp.compression.is_some()),
        ("--header", !otlp.headers.is_empty()),
        ("--ca-cert", otlp.ca_cert.is_some()),
    ];
    let datadog_flags = [
        ("--check", datadog.check),
        ("--agent-url", datadog.agent_url.is_some()),
        ("--agentless", datadog.agentless),
        ("--site", datadog.site.is_some()),
        ("--intake-url", datadog.intake_url.is_some()),
        ("--service", datadog.service.is_some()),
        ("--env", datadog.env.is_some()),
        ("--version", datadog.service_version.is_some()),
        ("--tag", !datadog.tags.is_empty()),
        ("--period", datadog.period.is_some()),
    ];
    let (misplaced, needs) = match args.to {
        PushTarget::Datadog => (&otlp_flags[..], "--to otlp"),
        PushTarget::Otlp => (&datadog_flags[..], "--to datadog"),
    };
    if let Some((flag, _)) = misplaced.iter().find(|(_, given)| *given) {
        return Err(amprof::error::usage(format!(
            "{flag} applies to {needs} only"
        )));
    }
    if args.output.is_some() && !args.dry_run {
        return Err(amprof::error::usage(
            "-o/--output is the directory of --dry-run: add --dry-run",
        ));
    }
    Ok(())
}

fn record(args: RecordArgs) -> anyhow::Result<u8> {
    let options = RecordOptions {
        output: args.output,
        frequency_hz: args.frequency,
        duration: args.duration,
        window: args.window,
        keep: args.keep,
        pids: args.pid,
        command: args.command,
        quiet: args.quiet,
        json: args.json,
        ring_bytes: args.buffer_size,
        call_graph: args.call_graph,
        stack_size: args.stack_size,
        inline: args.inline,
    };
    let summary = record::record(&options)?;
    eprintln!(
        "amprof: recorded {:.1} s on {} CPUs at {} Hz: {} samples ({} lost) in {} windows{} -> {} ({} KiB)",
        summary.seconds,
        summary.cpus,
        summary.frequency_hz,
        summary.samples,
        summary.lost,
        summary.windows - summary.windows_evicted.min(summary.windows),
        if summary.windows_evicted > 0 {
            format!(" ({} older evicted)", summary.windows_evicted)
        } else {
            String::new()
        },
        summary.output.display(),
        summary.bytes.div_ceil(1024),
    );
    let problems = summary.problems.phrases();
    if !problems.is_empty() && !options.quiet {
        eprintln!(
            "amprof: note: the profiled system's files: {} (never fatal; see `amprof report`)",
            problems.join(", ")
        );
    }
    if options.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(summary.command_exit_code.unwrap_or(Exit::Success.code()))
}

fn report(args: ReportArgs) -> anyhow::Result<()> {
    report::report(&ReportOptions {
        input: args.input,
        format: args.format,
        output: args.output,
        selection: Selection {
            windows: args.window.map(|w| w.0),
            pids: args.pid,
            comms: args.comm,
        },
        json: args.json,
        top: args.top,
        quiet: args.quiet,
    })
}

fn push(args: PushArgs) -> anyhow::Result<()> {
    check_push_flags(&args)?;
    // The flag, else the destination's standard setting (OTLP has one), else 10 s.
    let timeout = match args.timeout {
        Some(timeout) => timeout,
        None if args.to == PushTarget::Otlp => push::otlp::timeout_setting()?,
        None => std::time::Duration::from_secs(10),
    };
    if args.datadog.check {
        if args.to != PushTarget::Datadog {
            return Err(amprof::error::usage("--check works with --to datadog"));
        }
        return push::datadog::check(&args.datadog, timeout, args.json);
    }
    let options = PushOptions {
        input: args.input,
        selection: Selection {
            windows: None,
            pids: args.pid,
            comms: args.comm,
        },
        windows: args.windows,
        dry_run: if args.dry_run { args.output } else { None },
        timeout,
        retries: args.retries,
        json: args.json,
        quiet: args.quiet,
    };
    let mut destination = match args.to {
        PushTarget::Datadog => push::datadog::destination(&args.datadog)?,
        PushTarget::Otlp => push::otlp::destination(&args.otlp)?,
    };
    let summary = push::push(&options, destination.as_mut())?;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    if !options.quiet || summary.failed > 0 {
        let (verb, to) = match &options.dry_run {
            // Nothing went anywhere: say where the requests are, not where they would have gone.
            Some(dir) => (
                "wrote the requests of",
                format!("{} for {}", dir.display(), summary.destination),
            ),
            None => ("pushed", summary.destination.clone()),
        };
        eprintln!(
            "amprof: {verb} {} of {} windows to {to} ({} KiB in {:.1} s)",
            summary.sent,
            summary.windows.len(),
            summary.bytes.div_ceil(1024),
            summary.seconds
        );
    }
    push::check_summary(&summary)
}
