//! `amprof report --format perf`: perf.data that Linux perf reads (perf report, perf script).

use anyhow::{Result, anyhow};

use super::{Output, ReportOptions};

/// Writes the selected windows of `options.input` to `out`.
pub fn write(_options: &ReportOptions, _out: &mut Output) -> Result<()> {
    Err(anyhow!("--format perf is not available in this build yet"))
}
