//! `amprof push --to otlp`.

use anyhow::Result;
use clap::Args;

use super::Destination;

/// Settings of `--to otlp`.
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Otlp")]
pub struct OtlpArgs {}

/// The destination `args` describe.
pub fn destination(_args: &OtlpArgs) -> Result<Box<dyn Destination>> {
    Err(anyhow::anyhow!(
        "pushing to otlp is not available in this build yet"
    ))
}
