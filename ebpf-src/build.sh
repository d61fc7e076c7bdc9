#!/usr/bin/env bash
# Rebuilds the committed eBPF object ebpf-src/amprof.bpf.o from ebpf-src/program and ebpf-src/abi.
#
#   ebpf-src/build.sh            rebuild and replace amprof.bpf.o
#   ebpf-src/build.sh --check    rebuild into a temporary file and fail unless its code, map and
#                                BTF sections equal the committed object's (CI runs this)
#   ebpf-src/build.sh --install  first install the toolchain (pinned nightly + rust-src, bpf-linker)
#
# The toolchain: the nightly pinned in rust-toolchain.toml (LLVM 22) and bpf-linker 0.13 linked
# against the LLVM 22 that the stable toolchain ships (plain `cargo install bpf-linker` wants a
# system LLVM 23, which Debian does not have). Neither is needed to build amprof itself.
set -euo pipefail
shopt -s inherit_errexit  # a failed build inside $(build) must stop the script
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
nightly=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)

install_toolchain() {
  rustup toolchain install "$nightly" --profile minimal --component rust-src
  if ! command -v bpf-linker >/dev/null || ! bpf-linker --version 2>/dev/null | grep -q '0\.13\.'; then
    local lib llvm
    lib=$(rustc +stable --print sysroot)/lib
    llvm=$(cd "$lib" && ls libLLVM-*.so | head -n1)
    llvm=${llvm#lib}; llvm=${llvm%.so}
    RUSTFLAGS="-L $lib -l dylib=$llvm -C link-arg=-Wl,-rpath,$lib" \
      cargo +stable install bpf-linker --version 0.13.0 --locked \
        --no-default-features --features llvm-22,no-llvm-linking
  fi
}

build() {
  # --remap-path-prefix keeps this machine's paths out of the debug info, so that the object is
  # the same wherever it is built.
  RUSTFLAGS="-C debuginfo=2 -C link-arg=--btf --remap-path-prefix=$here=/amprof/ebpf-src --remap-path-prefix=$HOME/.cargo=/cargo --remap-path-prefix=$(rustc +"$nightly" --print sysroot)=/rustc" \
    cargo +"$nightly" build --quiet --release -Z build-std=core \
      --target bpfel-unknown-none -p amprof-ebpf
  echo "$here/target/bpfel-unknown-none/release/amprof"
}

# Prints one line per section that matters, with the hash of its contents.
sections() {
  python3 - "$1" <<'PY'
import hashlib, struct, sys
data = open(sys.argv[1], "rb").read()
shoff, = struct.unpack_from("<Q", data, 0x28)
shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
def sh(i):
    return struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
names = sh(shstrndx)
def name(off):
    start = names[4] + off
    return data[start:data.index(b"\0", start)].decode()
for i in range(shnum):
    n, typ, flags, addr, off, size = sh(i)[:6]
    nm = name(n)
    # code (programs), maps, license and BTF; not .BTF.ext or DWARF, which carry line info
    if nm in (".BTF", "maps", ".maps", "license") or nm.startswith(("perf_event", "tracepoint", ".text")):
        print(nm, size, hashlib.sha256(data[off:off + size]).hexdigest())
PY
}

case "${1:-}" in
  --install) install_toolchain; shift; exec "$here/build.sh" "$@" ;;
  --check)
    built=$(build)
    if diff <(sections amprof.bpf.o) <(sections "$built"); then
      echo "ebpf-src: amprof.bpf.o matches its source"
    else
      echo "ebpf-src: amprof.bpf.o is stale: run ebpf-src/build.sh and commit the result" >&2
      exit 1
    fi ;;
  "") built=$(build); cp "$built" amprof.bpf.o; echo "ebpf-src: wrote amprof.bpf.o"; sections amprof.bpf.o ;;
  *) echo "usage: $0 [--install] [--check]" >&2; exit 2 ;;
esac
