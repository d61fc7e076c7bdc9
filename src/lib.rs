//! amprof, an on-demand eBPF CPU profiler for Linux.
//!
//! Data flows one way through the modules (see ARCHITECTURE.md):
//!
//! ```text
//! record (sampler → window → symbolize) ──▶ capture ──▶ encode ──▶ report | push
//! ```
//!
//! - [`record`]: the eBPF sampler, the aggregation of samples into time windows, symbolization
//!   of the profiled system's files (all of them hostile input).
//! - [`capture`]: the capture file format, its writer, its (defensive) reader, and selecting
//!   windows, processes and samples from it.
//! - [`encode`]: one module per output format: folded, flamegraph, pprof, perf.data, OTLP.
//! - [`report`]: `amprof report`, the summary and the formats written to files.
//! - [`push`]: `amprof push`, windows sent to Datadog or an OTLP endpoint, with retries.
//! - [`cli`]: the command line, its flags turned into the options of the layers above.
//! - [`error`], [`output`], [`text`]: exit codes, safe file creation, printable names.

// The docs are the developers' (`cargo doc --document-private-items`, checked in .ci/run with
// warnings denied): a public item's docs may name the private constant or type they rely on.
#![allow(rustdoc::private_intra_doc_links)]

pub mod capture;
pub mod cli;
pub mod encode;
pub mod error;
pub mod output;
pub mod push;
pub mod record;
pub mod report;
pub mod text;
