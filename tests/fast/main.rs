//! The fast tier: runs in seconds, without root, eBPF or anything `.ci/setup` installs. It
//! reads the committed captures of `tests/data/` and captures built by the tests themselves,
//! and checks every format against golden outputs, the capture format's round trip, hostile
//! captures, and the generated documentation.
//!
//!     cargo test --lib --test fast
//!
//! `AMPROF_UPDATE=1 cargo test --test fast` rewrites the golden outputs and generated docs from
//! what amprof produces now: review the diff before committing it.

#[allow(dead_code, reason = "the helpers of both tiers: this one uses a few")]
#[path = "../support/util.rs"]
mod util;

mod captures;
mod docs;
mod golden;
mod off_cpu;
mod roundtrip;
