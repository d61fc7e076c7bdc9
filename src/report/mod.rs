//! `amprof report`: read a capture, select windows and processes, and write one format.
//!
//! Each format is a module of its own; they share the selection ([`Selection`]) and the way
//! frames are named ([`frames`]), so that every output agrees on what a stack is called.

pub mod flamegraph;
pub mod folded;
pub mod frames;
pub mod perf;
pub mod pprof;
pub mod summary;

use std::{
    io::{self, IsTerminal as _, Write},
    ops::RangeInclusive,
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::{Context as _, Result};

use crate::{
    capture::{
        CaptureReader, Completeness,
        format::{Stack, Window},
    },
    error::usage,
    output::AtomicOutput,
};

/// Which windows, processes and threads a report covers.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Window indices (as the summary lists them); `None`: all.
    pub windows: Option<RangeInclusive<u64>>,
    pub pids: Vec<u32>,
    /// Process names (`comm` of the main thread), matched exactly.
    pub comms: Vec<String>,
}

impl Selection {
    pub fn includes_window(&self, window: &Window) -> bool {
        self.windows
            .as_ref()
            .is_none_or(|r| r.contains(&window.index))
    }

    pub fn includes_stack(&self, window: &Window, stack: &Stack) -> bool {
        if self.pids.is_empty() && self.comms.is_empty() {
            return true;
        }
        let Some(process) = window.processes.get(stack.process as usize) else {
            return false;
        };
        (self.pids.is_empty() || self.pids.contains(&process.pid))
            && (self.comms.is_empty() || self.comms.contains(&process.name))
    }
}

/// A window range: `N` or `A..B` (inclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowRange(pub RangeInclusive<u64>);

impl FromStr for WindowRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let number = |t: &str| {
            t.trim()
                .parse::<u64>()
                .map_err(|_| format!("`{s}` is not a window number or range like 2..5"))
        };
        match s.split_once("..") {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b.trim_start_matches('='))?);
                if a > b {
                    return Err(format!("window range {s} is empty"));
                }
                Ok(Self(a..=b))
            }
            None => number(s).map(|n| Self(n..=n)),
        }
    }
}

/// Output formats of `amprof report`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Capture metadata, windows, and top functions, for a terminal (or JSON with --json).
    Summary,
    /// An interactive SVG flamegraph (inferno).
    Flamegraph,
    /// Folded stacks, one `frame;frame;... count` line per stack (for inferno, FlameGraph, speedscope).
    Folded,
    /// perf.data, for `perf report`, `perf script`, hotspot and other perf tools.
    Perf,
    /// Gzipped pprof (profile.proto), for `go tool pprof` and pprof-speaking backends.
    Pprof,
}

impl Format {
    /// Where the format goes without `-o`.
    fn default_output(self) -> Option<&'static str> {
        match self {
            Format::Summary | Format::Folded => None,
            Format::Flamegraph => Some("flamegraph.svg"),
            Format::Perf => Some("perf.data"),
            Format::Pprof => Some("profile.pb.gz"),
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
    pub json: bool,
    pub top: usize,
    pub quiet: bool,
}

/// The capture, opened, with the windows the selection keeps.
pub struct Loaded {
    pub reader: CaptureReader,
    pub windows: Vec<Window>,
}

/// Reads the selected windows of `input`.
pub fn load(input: &Path, selection: &Selection) -> Result<Loaded> {
    let mut reader = CaptureReader::open(input)?;
    let mut windows = Vec::new();
    while let Some(window) = reader.next_window()? {
        if selection.includes_window(&window) {
            windows.push(window);
        }
    }
    if let (Some(range), true) = (&selection.windows, windows.is_empty()) {
        return Err(usage(format!(
            "the capture has no window in {}..{}",
            range.start(),
            range.end()
        )));
    }
    Ok(Loaded { reader, windows })
}

/// A note for stderr about a capture that was not finalized.
pub fn completeness_note(reader: &CaptureReader) -> Option<String> {
    match reader.completeness()? {
        Completeness::Finalized => None,
        Completeness::NotFinalized => Some(
            "note: the capture was not finalized (recording killed, or still running); all its closed windows are read".into(),
        ),
        Completeness::Truncated { dropped_bytes } => Some(format!(
            "note: the capture ends in a partial record ({dropped_bytes} bytes, recording killed while writing); every complete window is read"
        )),
    }
}

pub fn report(options: &ReportOptions) -> Result<()> {
    // These formats stream the capture window by window themselves.
    if matches!(options.format, Format::Perf | Format::Pprof) {
        let mut output = Output::open(options.output.as_deref(), options.format.default_output())?;
        match options.format {
            Format::Perf => perf::write(options, &mut output)?,
            _ => pprof::write(options, &mut output)?,
        }
        return output.finish();
    }
    let loaded = load(&options.input, &options.selection)?;
    if !options.quiet
        && let Some(note) = completeness_note(&loaded.reader)
    {
        eprintln!("amprof: {note}");
    }
    let mut output = Output::open(options.output.as_deref(), options.format.default_output())?;
    match options.format {
        Format::Summary => {
            let summary = summary::Summary::build(&loaded, &options.selection, options.top);
            if options.json {
                crate::text::write_json(&mut output, &summary)?;
                writeln!(output)?;
            } else {
                summary.write_text(&mut output)?;
            }
        }
        Format::Folded => folded::write(&loaded.windows, &options.selection, &mut output)?,
        Format::Flamegraph => flamegraph::write(&loaded, &options.selection, &mut output)?,
        Format::Perf | Format::Pprof => unreachable!("handled above"),
    }
    output.finish()
}

/// Reports hold what the capture holds (command lines in process names, paths, the code that
/// ran): only their owner may read them, as only the capture's owner may read the capture.
pub const REPORT_MODE: u32 = 0o600;

/// Standard output, or a file made visible only once complete.
pub enum Output {
    Stdout(io::BufWriter<io::Stdout>),
    File(AtomicOutput),
}

impl Output {
    /// `path`, or `default` (a file name) when none is given, or stdout (`-`, or no default).
    /// Files are created [`REPORT_MODE`], under sudo for the invoking user.
    pub fn open(path: Option<&Path>, default: Option<&str>) -> Result<Self> {
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| default.map(PathBuf::from));
        match path {
            Some(p) if p.as_os_str() != "-" => {
                Ok(Self::File(AtomicOutput::create(&p, REPORT_MODE)?))
            }
            _ => Ok(Self::Stdout(io::BufWriter::new(io::stdout()))),
        }
    }

    /// True when writing to a terminal (binary formats refuse to).
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Stdout(_)) && io::stdout().is_terminal()
    }

    pub fn finish(self) -> Result<()> {
        match self {
            // A closed pipe (`| head`) ends amprof quietly: main handles it for every write.
            Self::Stdout(mut out) => out.flush().context("cannot write to standard output"),
            Self::File(file) => file.commit(),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Stdout(out) => out.write(buf),
            Self::File(file) => file.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Stdout(out) => out.flush(),
            Self::File(file) => file.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_window_ranges() {
        assert_eq!("3".parse::<WindowRange>().unwrap().0, 3..=3);
        assert_eq!("2..5".parse::<WindowRange>().unwrap().0, 2..=5);
        assert_eq!("2..=5".parse::<WindowRange>().unwrap().0, 2..=5);
        assert!("5..2".parse::<WindowRange>().is_err());
        assert!("x".parse::<WindowRange>().is_err());
        assert!("-1".parse::<WindowRange>().is_err());
    }
}
