//! `amprof report`: read a capture window by window, keep what the selection keeps, and write
//! one format: the summary ([`summary`]) or an encoder of [`crate::encode`].

pub mod summary;

use std::path::PathBuf;

use anyhow::Result;

use crate::{
    capture::{CaptureReader, Selection},
    encode::{
        Encoder, Ending, firefox::Firefox, flamegraph::Flamegraph, folded::Folded, perf::PerfFile,
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
    /// No notes on standard error.
    pub quiet: bool,
}

pub fn report(options: &ReportOptions) -> Result<()> {
    // A damaged or hostile capture is refused before any format starts on it, in the memory of
    // one window: every window is read and validated once (the reader bounds what they expand
    // to), then read again for the format.
    let mut check = CaptureReader::open(&options.input)?;
    while check.next_window()?.is_some() {}
    drop(check);
    let mut reader = CaptureReader::open(&options.input)?;
    let meta = reader.meta().clone();
    let event = options.selection.event;
    if event.includes_off_cpu() && meta.off_cpu_period_ns == 0 {
        // An empty off-CPU profile would read as "never blocked": say what is missing instead.
        return Err(usage(format!(
            "--event {}: the capture has no off-CPU samples: record with --off-cpu",
            event.name()
        )));
    }
    // Nothing appears at the output path unless the whole report is written.
    let mut output = Output::open(options.output.as_deref(), options.format.default_output())?;
    // Gzip goes with the name, as for the Firefox Profiler's own files; standard output stays
    // plain JSON (for jq, or a pipe into gzip).
    let gzip = options
        .output
        .as_deref()
        .map_or(options.format.default_output(), |path| path.to_str())
        .is_some_and(|name| name != "-" && name.ends_with(".gz"));
    let mut encoder: Box<dyn Encoder + '_> = match options.format {
        Format::Summary => Box::new(summary::SummaryReport::new(
            &meta,
            options.top,
            options.json,
            &mut output,
        )),
        Format::Folded => Box::new(Folded::new(event, meta.sample_period_ns(), &mut output)),
        Format::Flamegraph => Box::new(Flamegraph::new(&meta, event, &mut output)),
        Format::Pprof => Box::new(PprofFile::new(&meta, event, &mut output)?),
        Format::Perf => Box::new(PerfFile::new(&options.input, &meta, &mut output)?),
        Format::Firefox => Box::new(Firefox::new(&meta, event, gzip, &mut output)),
    };
    let mut selected = 0;
    while let Some(window) = reader.next_window()? {
        if options.selection.includes_window(&window) {
            selected += 1;
            encoder.add(&window, &options.selection)?;
        }
    }
    if selected == 0
        && let Some(error) = options.selection.no_window_error()
    {
        return Err(error);
    }
    let completeness = reader
        .completeness()
        .unwrap_or(crate::capture::Completeness::NotFinalized);
    let notes = encoder.finish(&Ending {
        completeness,
        end: reader.end(),
    })?;
    output.finish()?;
    if !options.quiet {
        for note in completeness.note().into_iter().chain(notes) {
            eprintln!("amprof: {note}");
        }
    }
    Ok(())
}
