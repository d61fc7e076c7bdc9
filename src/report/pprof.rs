//! `amprof report --format pprof`: gzipped pprof (profile.proto), for go tool pprof and friends.

use anyhow::{Result, anyhow};

use super::{Output, ReportOptions};

/// Writes the selected windows of `options.input` to `out`.
pub fn write(_options: &ReportOptions, _out: &mut Output) -> Result<()> {
    Err(anyhow!("--format pprof is not available in this build yet"))
}
