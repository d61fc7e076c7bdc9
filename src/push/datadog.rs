//! `amprof push --to datadog`.

use anyhow::Result;
use clap::Args;

use super::Destination;

/// Settings of `--to datadog`.
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Datadog")]
pub struct DatadogArgs {}

/// The destination `args` describe.
pub fn destination(_args: &DatadogArgs) -> Result<Box<dyn Destination>> {
    Err(anyhow::anyhow!(
        "pushing to datadog is not available in this build yet"
    ))
}
