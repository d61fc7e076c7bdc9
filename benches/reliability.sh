#!/usr/bin/env bash
# The long versions of tests/root/reliability.rs (CI runs them shortened): 200 kill -9s, 60 s at
# 999 Hz under load, 10 minutes of flight recording; then the capture-reader fuzzer for
# 10 minutes. As root: benches/reliability.sh
set -euo pipefail
cd "$(dirname "$0")/.."
AMPROF_LONG=1 cargo test --release --test reliability -- --nocapture --test-threads 1
nightly=$(sed -n 's/^channel = "\(.*\)"/\1/p' ebpf-src/rust-toolchain.toml)
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
cd fuzz && cargo +"$nightly" fuzz run capture_reader -- -max_total_time=600 -malloc_limit_mb=512 -timeout=10
