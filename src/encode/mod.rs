//! The formats amprof writes, one module each, under `report` and `push` alike.
//!
//! Every format reads capture windows the same way: the samples a [`Selection`] keeps
//! ([`crate::capture::samples`]), named by [`frames`] so that every output calls a frame the
//! same. The formats `report` writes implement [`Encoder`]: windows go in one at a time, as the
//! capture is read (memory grows with what the format keeps, never with the capture), and the
//! result goes out at [`Encoder::finish`]. `push` builds its requests from the same modules:
//! [`pprof::ProfileBuilder`] for Datadog, [`otlp::RequestEncoder`] for OTLP.
//!
//! - [`folded`]: folded stacks, the input of flamegraph tools;
//! - [`flamegraph`]: an SVG drawn by inferno from the folded stacks;
//! - [`pprof`]: Google's profile.proto, built by Datadog's libdd-profiling;
//! - [`perf`]: perf.data, for Linux perf;
//! - [`firefox`]: the Firefox Profiler's processed profile (a timeline per thread);
//! - [`otlp`]: OpenTelemetry profiles requests.

pub mod firefox;
pub mod flamegraph;
pub mod folded;
pub mod frames;
pub mod otlp;
pub mod perf;
pub mod pprof;

use anyhow::Result;

use crate::capture::{Completeness, End, Selection, Window};

/// One output format being written.
pub trait Encoder {
    /// Takes in the samples of `window` that `selection` keeps (windows come in capture order).
    fn add(&mut self, window: &Window, selection: &Selection) -> Result<()>;
    /// Writes the result (to the output the encoder was made with); returns notes for
    /// standard error (printed unless `--quiet`).
    fn finish(self: Box<Self>, ending: &Ending<'_>) -> Result<Vec<String>>;
}

/// How the capture read ended, for the formats that say so.
#[derive(Clone, Copy, Debug)]
pub struct Ending<'a> {
    pub completeness: Completeness,
    /// The end record, when the capture was finalized.
    pub end: Option<&'a End>,
}
