#!/usr/bin/env bash
# The side-by-side benchmark (see benches/compare.py and BENCHMARKS.md): installs the peers a
# fresh machine lacks (Linux perf, bpftrace, BCC from Debian; samply and inferno from
# crates.io), builds amprof in release mode, and runs the comparison. As root:
#
#   benches/compare.sh                      3 runs, 30 s recordings at 99 and 999 Hz
#   benches/compare.sh --runs 1 --duration 10 --frequencies 99
#
# Arguments are passed to compare.py; results also go to target/compare.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for p in linux-perf bpftrace bpfcc-tools gcc; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
command -v samply >/dev/null || cargo install --locked samply
command -v inferno-flamegraph >/dev/null || cargo install --locked inferno
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked
exec python3 benches/compare.py --json target/compare.json --markdown target/compare.md "$@"
