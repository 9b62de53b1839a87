#!/usr/bin/env bash
# The test command from the README: fetch the reference model if it is not cached, then run every test
# (tiny models built by the tests, the real model against llama.cpp's figures, the bad-input catalogue).
# One profile (release) for tests and the binary, so dependencies compile once.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/edgeforge/target}"
# gguf-py, llama.cpp's own reader, checks our GGUF exports independently of our reader.
python3 -m pip install --quiet --disable-pip-version-check "gguf==0.19.0" >&2
# The NIR project's own reader (pulls h5py and numpy) checks our NIR exports: tests/python/check_nir.py.
python3 -m pip install --quiet --disable-pip-version-check "nir==1.0.8" >&2
# onnx (checker) and onnxruntime (CPU) run our ONNX exports; onnx 1.23.2 is the newest, and works with ORT 1.32.
python3 -m pip install --quiet --disable-pip-version-check "onnx==1.23.2" "onnxruntime==1.32.0" >&2
# Ray (head node + Jobs REST API) runs the sweep test's variants as Ray jobs: crates/edgeforge-cli/tests/sweep.rs.
python3 -m pip install --quiet --disable-pip-version-check "ray[default]==2.60.0" >&2
# OpenAI's official Python client talks to `edgeforge serve` (tests/python/openai_client.py, run by
# crates/edgeforge-cli/tests/serve.rs) and drives benches/serve-load.sh.
python3 -m pip install --quiet --disable-pip-version-check "openai==3.63.0" >&2
# The C bundle's microcontroller check (crates/edgeforge-export/tests/c_bundle.rs) cross-compiles for a Cortex-M7
# and runs it on QEMU's mps2-an500 board: Debian's arm-none-eabi toolchain, newlib and qemu-system-arm.
if ! command -v arm-none-eabi-gcc >/dev/null || ! command -v qemu-system-arm >/dev/null \
   || [[ ! -d /usr/lib/arm-none-eabi/newlib ]]; then
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm >&2
  else
    echo "test.sh: arm-none-eabi-gcc/qemu-system-arm missing and not root; the MCU test fails under CI=true" >&2
  fi
fi
EDGEFORGE_TEST_MODEL="$(scripts/fetch-model.sh)"
export EDGEFORGE_TEST_MODEL
if [[ ! -d ../shared/data ]]; then
  echo "test.sh: ../shared/data (the evaluation texts) is missing beside this checkout" >&2
  exit 2
fi
# The aarch64 NEON kernels under QEMU user-mode emulation (cross toolchain installed as root when missing;
# a named SKIPPED line when it cannot be): the runtime's lib tests and tiny-model tests, about 6 minutes cold.
scripts/test-aarch64.sh
cargo test --release --workspace --locked "$@"
