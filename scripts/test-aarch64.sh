#!/usr/bin/env bash
# The aarch64 NEON kernels, really run: the runtime crate's lib tests (every kernel against the portable
# reference, on every ISA the CPU reports) and its tiny-model forward-pass tests, cross-compiled for
# aarch64-unknown-linux-gnu and run under QEMU user-mode emulation. `-cpu max` has NEON and dotprod (the
# NEON kernels run); `-cpu cortex-a72` has NEON without dotprod (detection must fall back to the portable
# integer kernels). Emulation checks results, not speed.
# Installs what it needs when missing (the rustup target; as root, Debian's cross gcc, arm64 libc and
# qemu-user). If that is impossible (not root, no network) it prints one line `SKIPPED: aarch64 NEON
# kernels (<reason>)` and exits 0, under CI=true too; once the toolchain is there, a failing test fails the
# script. Called by scripts/test.sh; uses the same CARGO_TARGET_DIR (the aarch64 build lives beside the
# host's, in its own subdirectory).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/edgeforge/target}"
TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu

skip() {
  echo "SKIPPED: aarch64 NEON kernels ($1)"
  exit 0
}

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  rustup target add "$TARGET" >&2 || skip "rustup target add $TARGET failed"
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null \
   || [[ ! -e $SYSROOT/lib/ld-linux-aarch64.so.1 ]]; then
  [[ $(id -u) -eq 0 ]] || skip "aarch64-linux-gnu-gcc/qemu-aarch64/arm64 libc missing and not root"
  { apt-get update -qq >&2 \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >&2; } \
    || skip "apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user failed"
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# onig-sys (the tokenizer's regex engine, through edgeforge-core) is C: cross-compiled by cc-rs.
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
cross_test() {
  local cpu=$1
  shift
  echo "test-aarch64.sh: qemu-aarch64 -cpu $cpu: $*" >&2
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu $cpu -L $SYSROOT" \
    cargo test --release --locked -p edgeforge-runtime --target "$TARGET" "$@"
}
cross_test max --lib --test reference
cross_test cortex-a72 --lib
