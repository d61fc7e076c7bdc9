//! The terminal summary (and its `--json` form): what was recorded, each window's counts, and
//! where the CPU went.
//!
//! A capture recorded with `--off-cpu` adds where the threads waited: an off-CPU section (text)
//! and the `off_cpu` object (JSON), whatever `--event` says, since a summary tells what the
//! capture holds; `--event off-cpu` leaves the on-CPU top lists out (their JSON arrays are then
//! empty). A capture without off-CPU samples gives exactly what it gave before: the off-CPU
//! columns, section and fields appear only with them.
//!
//! Off-CPU "self" time goes to the innermost *user* frame of a stack (the innermost frame of a
//! stack without user frames, e.g. a kernel thread's): a blocked thread's kernel frames end in
//! the scheduler, every one the same, so the innermost frame would rank `schedule` first and
//! say nothing. The kernel frames (which tell a futex from a read) still rank in the total
//! (self + children) list.
//!
//! The data flows one way: the [`Tally`] (`tally.rs`) counts each window as the capture is
//! read and, at the end, makes the [`Summary`] (`model.rs`, the JSON model), which
//! [`SummaryReport`] writes as JSON or as text (`text.rs`). `report --diff` reads its sides
//! through the same tally and takes every function's weight out of it ([`FunctionWeights`]).

use std::io::Write;

use anyhow::Result;

use crate::{
    capture::{Meta, Selection, format::Window},
    encode::{Encoder, Ending},
};

mod model;
mod tally;
mod text;

#[cfg(test)]
mod tests;

pub use model::{
    CaptureInfo, FunctionCount, FunctionTime, OffCpuSection, ProcessCount, ProcessTime, Summary,
    Totals, WindowInfo, WindowOffCpu,
};
pub use tally::{FunctionWeights, Tally, rfc3339, window_seconds};
pub(super) use text::module_label;

/// `report` (the default format): the summary, as text or `--json`.
pub struct SummaryReport<'o, W: Write> {
    tally: Tally,
    meta: Meta,
    top: usize,
    json: bool,
    out: &'o mut W,
}

impl<'o, W: Write> SummaryReport<'o, W> {
    pub fn new(meta: &Meta, top: usize, json: bool, out: &'o mut W) -> Self {
        Self {
            tally: Tally::default(),
            meta: meta.clone(),
            top,
            json,
            out,
        }
    }
}

impl<W: Write> Encoder for SummaryReport<'_, W> {
    fn add(&mut self, window: &Window, selection: &Selection) -> Result<()> {
        self.tally.add(&self.meta, window, selection);
        Ok(())
    }

    fn finish(self: Box<Self>, ending: &Ending<'_>) -> Result<Vec<String>> {
        let this = *self;
        let summary = this.tally.summary(&this.meta, ending, this.top);
        if this.json {
            crate::text::write_json(&mut *this.out, &summary)?;
            writeln!(this.out)?;
        } else {
            summary.write_text(this.out)?;
        }
        Ok(Vec::new())
    }
}

/// `part` as a share of `whole` (0 of nothing): the lists' percentages, and the diff's shares.
pub(super) fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}
