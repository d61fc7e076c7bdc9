//! The root tier: everything that needs root, eBPF, the real kernel, Linux perf, Go's pprof or
//! the real receivers of pushes (the Datadog test agent, an OTLP receiver on the official
//! protos), installed by `.ci/setup`. One binary, so that the suite links once; the tests run
//! in parallel, but for those that need the machine to themselves
//! ([`util::require_root_alone`], in `tests/support/util.rs`). Without root every test here fails, saying so.
//!
//!     cargo test --test root                       # as root
//!     cargo test --test root -- unwind_symbols::   # one module

#[allow(
    dead_code,
    reason = "the reader of both tiers: not every field is checked here"
)]
#[path = "../support/firefox_reader.rs"]
mod firefox_reader;
#[path = "../support/pprof_reader.rs"]
mod pprof_reader;
#[allow(
    dead_code,
    reason = "the helpers of both tiers: not every one is used here"
)]
#[path = "../support/util.rs"]
mod util;

mod diff;
mod firefox;
mod hostile;
mod kernel_unwind;
mod off_cpu;
mod perf_export;
mod pprof_export;
mod push_datadog;
mod push_faults;
mod push_otlp;
mod push_otlp_off_cpu;
mod push_stream;
mod record;
mod reliability;
mod report;
mod unwind_symbols;
mod verifier;
