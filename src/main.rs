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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Record(args) => record(args),
        Command::Report(args) => report(args).map(|()| Exit::Success.code()),
        Command::Push(args) => push(args).map(|()| Exit::Success.code()),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("amprof: error: {error:#}");
            ExitCode::from(exit_of(&error).code())
        }
    }
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
        eprintln!(
            "amprof: pushed {} of {} windows to {} ({} KiB in {:.1} s)",
            summary.sent,
            summary.windows.len(),
            summary.destination,
            summary.bytes.div_ceil(1024),
            summary.seconds
        );
    }
    push::check_summary(&summary)
}
