//! `amprof report`: read a capture window by window, keep what the selection keeps, and write
//! one format: the summary ([`summary`]) or an encoder of [`crate::encode`]; with `--diff`, two
//! captures read the same way and compared ([`diff`]).

pub mod diff;
pub mod summary;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::{
    capture::{CaptureReader, Event, Selection, Window},
    encode::{
        Encoder, Ending,
        firefox::Firefox,
        flamegraph::Flamegraph,
        folded::Folded,
        perf::{KALLSYMS, Kernel, PerfFile},
        pprof::PprofFile,
    },
    error::usage,
    output::Output,
};

/// Output formats of `amprof report`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Capture metadata, windows, and top functions, for a terminal (or JSON).
    Summary,
    /// An interactive SVG flamegraph (inferno).
    Flamegraph,
    /// Folded stacks, one `frame;frame;... count` line per stack.
    Folded,
    /// perf.data, for `perf report`, `perf script`, hotspot and other perf tools.
    Perf,
    /// Gzipped pprof (profile.proto), for `go tool pprof` and pprof-speaking backends.
    Pprof,
    /// The Firefox Profiler's processed profile: a timeline per thread (gzipped if the name
    /// ends in `.gz`).
    Firefox,
}

impl Format {
    /// Every format, in the order `--help` lists them: the one table clap's values (`cli`) and
    /// the report's dispatch both come from.
    pub const ALL: [Format; 6] = [
        Format::Summary,
        Format::Flamegraph,
        Format::Folded,
        Format::Perf,
        Format::Pprof,
        Format::Firefox,
    ];

    /// What it is, as `--help` says it.
    pub fn help(self) -> &'static str {
        match self {
            Format::Summary => {
                "Capture metadata, windows, and top functions, for a terminal (or JSON with --json)"
            }
            Format::Flamegraph => "An interactive SVG flamegraph (inferno)",
            Format::Folded => {
                "Folded stacks, one `frame;frame;... count` line per stack (for inferno, \
                 FlameGraph, speedscope)"
            }
            Format::Perf => {
                "perf.data, for `perf report`, `perf script`, hotspot and other perf tools"
            }
            Format::Pprof => {
                "Gzipped pprof (profile.proto), for `go tool pprof` and pprof-speaking backends"
            }
            Format::Firefox => {
                "The Firefox Profiler (profiler.firefox.com, or `samply load`): a timeline per \
                 thread, markers for CPUs, windows and off-CPU waits; gzipped when the name ends \
                 in .gz"
            }
        }
    }

    /// The name `--format` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Summary => "summary",
            Format::Flamegraph => "flamegraph",
            Format::Folded => "folded",
            Format::Perf => "perf",
            Format::Pprof => "pprof",
            Format::Firefox => "firefox",
        }
    }

    /// Where the format goes without `-o`: `None` for standard output.
    pub fn default_output(self) -> Option<&'static str> {
        match self {
            Format::Summary | Format::Folded => None,
            Format::Flamegraph => Some("flamegraph.svg"),
            Format::Perf => Some("perf.data"),
            Format::Pprof => Some("profile.pb.gz"),
            Format::Firefox => Some("profile.json.gz"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ReportOptions {
    pub input: PathBuf,
    pub format: Format,
    /// `None`: the format's default; `-`: stdout.
    pub output: Option<PathBuf>,
    pub selection: Selection,
    /// The summary as JSON.
    pub json: bool,
    /// Functions and processes the summary lists.
    pub top: usize,
    /// `--diff`: the capture to compare `input` with, and what of it to read.
    pub base: Option<diff::Base>,
}

/// Writes the report, and returns the notes for the user (an unfinished capture, what the
/// format could not show), for `cli` to print.
pub fn report(options: &ReportOptions) -> Result<Vec<String>> {
    if let Some(base) = &options.base {
        return diff::report(options, base);
    }
    // The one pass that validates the capture also finds what perf.data needs of the kernel:
    // the first window with kernel frames (usually the first window).
    let mut kernel_window: Option<Window> = None;
    let wants_kernel = options.format == Format::Perf;
    let mut reader = open_capture(
        &options.input,
        options.selection.event,
        "the capture",
        &mut |window| {
            if wants_kernel
                && kernel_window.is_none()
                && window.stacks.iter().any(|s| s.kernel_frames > 0)
            {
                kernel_window = Some(window.clone());
            }
        },
    )?;
    let meta = reader.meta().clone();
    let event = options.selection.event;
    // Nothing appears at the output path unless the whole report is written.
    let mut output = Output::open(options.output.as_deref(), options.format.default_output())?;
    // Gzip goes with the name, as for the Firefox Profiler's own files; standard output stays
    // plain JSON (for jq, or a pipe into gzip).
    let gzip = options
        .output
        .as_deref()
        .or(options.format.default_output().map(Path::new))
        .and_then(Path::extension)
        .is_some_and(|extension| extension.eq_ignore_ascii_case("gz"));
    let mut encoder: Box<dyn Encoder + '_> = match options.format {
        Format::Summary => Box::new(summary::SummaryReport::new(
            &meta,
            options.top,
            options.json,
            &mut output,
        )),
        Format::Folded => Box::new(Folded::new(event, meta.sample_period_ns(), &mut output)),
        Format::Flamegraph => Box::new(Flamegraph::new(&meta, event, &mut output)),
        Format::Pprof => {
            if output.is_terminal() {
                return Err(usage(
                    "pprof is binary: give -o FILE or redirect standard output",
                ));
            }
            Box::new(PprofFile::new(&meta, event, &mut output)?)
        }
        Format::Perf => {
            let Output::File(file) = &mut output else {
                return Err(usage(
                    "perf.data cannot go to standard output (perf needs a seekable file): give -o FILE",
                ));
            };
            let kernel = Kernel::check(kernel_window.as_ref(), Path::new(KALLSYMS));
            Box::new(PerfFile::new(&meta, event, kernel, file.writer()))
        }
        Format::Firefox => Box::new(Firefox::new(&meta, event, gzip, &mut output)),
    };
    each_selected_window(&mut reader, &options.selection, "the capture", |window| {
        encoder.add(window, &options.selection)
    })?;
    let completeness = reader
        .completeness()
        .unwrap_or(crate::capture::Completeness::NotFinalized);
    let notes = encoder.finish(&Ending {
        completeness,
        end: reader.end(),
    })?;
    output.finish()?;
    Ok(completeness.note().into_iter().chain(notes).collect())
}

/// Opens the capture at `path` for a report of `event`'s samples. `what` names the capture in
/// errors (`the capture`, `the base capture`).
///
/// A damaged or hostile capture is refused before any format starts on it, in the memory of one
/// window: every window is read and validated once (the reader bounds what they expand to),
/// then the capture is opened again for the format.
/// `inspect` sees every window of that pass (what a format needs before it starts).
fn open_capture(
    path: &Path,
    event: Event,
    what: &str,
    inspect: &mut dyn FnMut(&Window),
) -> Result<CaptureReader> {
    let mut check = CaptureReader::open(path)?;
    while let Some(window) = check.next_window()? {
        inspect(&window);
    }
    drop(check);
    let reader = CaptureReader::open(path)?;
    if event.includes_off_cpu() && reader.meta().off_cpu_period_ns == 0 {
        // An empty off-CPU profile would read as "never blocked": say what is missing instead.
        return Err(usage(format!(
            "--event {}: {what} has no off-CPU samples: record with --off-cpu",
            event.name()
        )));
    }
    Ok(reader)
}

/// Calls `each` with every window of `reader` that `selection` keeps, in capture order, one
/// window in memory at a time; a usage error if windows were asked for and none is there.
fn each_selected_window(
    reader: &mut CaptureReader,
    selection: &Selection,
    what: &str,
    mut each: impl FnMut(&Window) -> Result<()>,
) -> Result<()> {
    let mut selected = 0;
    while let Some(window) = reader.next_window()? {
        if selection.includes_window(&window) {
            selected += 1;
            each(&window)?;
        }
    }
    match selection.no_window_error(what) {
        Some(error) if selected == 0 => Err(error),
        _ => Ok(()),
    }
}
