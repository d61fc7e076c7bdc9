//! amprof, an on-demand eBPF CPU profiler for Linux.
//!
//! Data flows one way through the modules:
//!
//! ```text
//! record (sampler → window → symbolize) ──▶ capture ──▶ report (summary, folded, flamegraph)
//! ```
//!
//! - [`record`]: the eBPF sampler, the aggregation of samples into time windows, symbolization.
//! - [`capture`]: the capture file format, its writer and its (defensive) reader.
//! - [`report`]: selecting windows and processes, and one module per output format.
//! - [`push`]: sending windows to Datadog or an OTLP endpoint, with retries and a summary.
//! - [`cli`], [`error`], [`output`]: the command line, exit codes, and safe file creation.
//! - [`text`]: names and other text from elsewhere, made safe to print.

pub mod capture;
pub mod cli;
pub mod error;
pub mod output;
pub mod push;
pub mod record;
pub mod report;
pub mod text;
