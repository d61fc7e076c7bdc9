//! `amprof report`: its flags, and the options they become.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};

use super::values::WindowRange;
use crate::{
    capture::{Event, Selection},
    report::{self, Format, ReportOptions},
};

/// Turn a capture into a summary, a flamegraph, folded stacks, perf.data or pprof; or compare two
/// captures (--diff).
#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  amprof report                                     summary of amprof.data
  amprof report --format flamegraph -o flame.svg    interactive SVG flamegraph
  amprof report --format folded --pid 1234 > out.folded
  amprof report --format perf -o perf.data          for perf report, perf script, hotspot
  amprof report --format pprof -o cpu.pprof         for go tool pprof
  amprof report --format firefox -o profile.json.gz timeline for the Firefox Profiler
  amprof report --window 2..4 --comm python3 --json  JSON summary of windows 2 to 4
  amprof report --diff before.data -i after.data    functions whose share changed most
  amprof report --diff before.data -i after.data --format flamegraph -o diff.svg
                                                    differential flamegraph: red grew, blue shrank
  amprof report --diff amprof.data --base-window 0..2 --window 3..5
                                                    two parts of one capture

Exit codes: see amprof --help.")]
pub struct ReportArgs {
    /// Capture file to read (with --diff: the new capture, "after").
    #[arg(short, long, value_name = "FILE", default_value = "amprof.data")]
    pub input: PathBuf,

    /// Compare with this capture, the base ("before"): as a summary of the functions whose share
    /// changed most, a differential flamegraph (red: grew, blue: shrank; normalised by each
    /// side's total), or folded `stack base new` lines (the base column normalised). --window,
    /// --pid and --comm select in the new capture, --base-* in this one.
    #[arg(long, value_name = "BASE")]
    pub diff: Option<PathBuf>,

    /// With --diff: windows of the base capture (default: --window).
    #[arg(long, value_name = "N|A..B", requires = "diff")]
    pub base_window: Option<WindowRange>,

    /// With --diff: processes of the base capture (default: --pid; an error if the base has
    /// none of those).
    #[arg(long, value_name = "PID", value_delimiter = ',', requires = "diff")]
    pub base_pid: Vec<u32>,

    /// With --diff: process names of the base capture (default: --comm).
    #[arg(long, value_name = "NAME", value_delimiter = ',', requires = "diff")]
    pub base_comm: Vec<String>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Summary)]
    pub format: Format,

    /// Where to write: a file, or - for standard output. Default: flamegraph.svg, perf.data,
    /// profile.pb.gz (pprof) and profile.json.gz (firefox) for those formats; standard output
    /// for summary and folded.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Only window N, or windows A..B (inclusive), by the index the summary shows.
    #[arg(long, value_name = "N|A..B")]
    pub window: Option<WindowRange>,

    /// Only these processes (comma-separated or repeated).
    #[arg(short, long, value_name = "PID", value_delimiter = ',')]
    pub pid: Vec<u32>,

    /// Only processes with these names (comma-separated or repeated).
    #[arg(short, long, value_name = "NAME", value_delimiter = ',')]
    pub comm: Vec<String>,

    /// Which samples: on-CPU, off-CPU (time blocked or waiting for a CPU; needs a capture
    /// recorded with --off-cpu), or wall (both, as time).
    #[arg(short, long, value_enum, default_value_t = Event::OnCpu)]
    pub event: Event,

    /// The summary as JSON.
    #[arg(long)]
    pub json: bool,

    /// Functions and processes listed in the summary (with --diff: functions in each list).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,

    /// No notes on standard error.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `--format` values: [`Format::ALL`], named and explained by [`Format`] itself.
impl ValueEnum for Format {
    fn value_variants<'a>() -> &'a [Self] {
        &Format::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()).help(self.help()))
    }
}

/// `--event` values: [`Event::ALL`], named and explained by [`Event`] itself.
impl ValueEnum for Event {
    fn value_variants<'a>() -> &'a [Self] {
        &Event::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()).help(self.help()))
    }
}

impl ReportArgs {
    /// The options `report` runs with.
    pub fn options(self) -> ReportOptions {
        let windows: Vec<_> = self.window.map(|w| w.0).into_iter().collect();
        let event = self.event;
        // A base flag not given selects as its new-side flag does.
        let pids_from_new_side = self.base_pid.is_empty();
        let base = self.diff.map(|input| report::diff::Base {
            input,
            pids_from_new_side,
            selection: Selection {
                windows: match self.base_window {
                    Some(w) => vec![w.0],
                    None => windows.clone(),
                },
                pids: if self.base_pid.is_empty() {
                    self.pid.clone()
                } else {
                    self.base_pid
                },
                comms: if self.base_comm.is_empty() {
                    self.comm.clone()
                } else {
                    self.base_comm
                },
                event,
            },
        });
        ReportOptions {
            input: self.input,
            format: self.format,
            output: self.output,
            selection: Selection {
                windows,
                pids: self.pid,
                comms: self.comm,
                event,
            },
            json: self.json,
            top: self.top,
            base,
        }
    }
}

/// Writes the report, then its notes on stderr (unless `--quiet`).
pub fn run(args: ReportArgs) -> Result<()> {
    let quiet = args.quiet;
    let notes = report::report(&args.options())?;
    if !quiet {
        for note in notes {
            eprintln!("amprof: {note}");
        }
    }
    Ok(())
}
