//! The fast tier: runs in seconds, without root or eBPF. It reads the committed captures of
//! `tests/data/` and captures built by the tests themselves, and checks every format against
//! golden outputs, the capture format's round trip, hostile captures, and the generated
//! documentation. Tools of `.ci/setup` are needed: Linux perf, which reads the perf.data of
//! off-CPU samples (`perf_offcpu`), the Firefox Profiler's loader (`firefox`), and gcc; and the
//! CPythons of the machine image (`python`: Debian's python3, pyenv's builds with their
//! headers). Without them those tests fail.
//!
//!     cargo test --lib --test fast
//!
//! `AMPROF_UPDATE=1 cargo test --test fast` rewrites the golden outputs and generated docs from
//! what amprof produces now: review the diff before committing it.

#[allow(dead_code, reason = "the helpers of both tiers: this one uses a few")]
#[path = "../support/util.rs"]
mod util;

#[path = "../support/firefox_reader.rs"]
mod firefox_reader;

#[path = "../support/pprof_reader.rs"]
mod pprof_reader;

mod captures;
mod diff;
mod docs;
mod firefox;
mod golden;
mod off_cpu_pprof;
mod off_cpu_text;
mod perf_offcpu;
mod push_otlp;
mod python;
mod roundtrip;
