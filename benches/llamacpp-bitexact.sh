#!/usr/bin/env bash
# Op-by-op check (issue 14, item 3) that `--rounding llamacpp` computes what the pinned llama.cpp build
# computes, bit for bit: benches/tools/llama-dump.cpp (built here against that build's libllama) runs one
# perplexity batch (the first CTX tokens of wiki.test.raw, as llama-perplexity takes them) and writes every
# tensor llama.cpp computes; then the runtime's parity test (crates/edgeforge-runtime/src/parity.rs) feeds
# each op llama.cpp's own inputs and requires llama.cpp's output bits (RMS norm, every matmul, RoPE, flash
# attention, SwiGLU, the output head). It prints, per op, elements compared and elements that differ.
#
# Usage: benches/llamacpp-bitexact.sh [MODEL]   (default: the reference model)   CTX=512
# Needs ~1.2 GB in $BENCH_WORK for the dump. Not part of CI (it needs the llama.cpp build).
set -euo pipefail
cd "$(dirname "$0")/.."
ctx="${CTX:-512}"
work="${BENCH_WORK:-$HOME/.cache/edgeforge/bench}/bitexact"
model="${1:-$(bash scripts/fetch-model.sh)}"
bin="$(bash ../shared/scripts/build-llamacpp.sh)"
src="$(cd "$bin/../.." && pwd)"
mkdir -p "$work"
g++ -O2 -std=c++17 -I"$src/include" -I"$src/ggml/include" benches/tools/llama-dump.cpp -L"$bin" -lllama -lggml -lggml-base \
  -Wl,-rpath,"$bin" -o "$work/llama-dump"
rm -rf "$work/dump" && mkdir -p "$work/dump"
"$work/llama-dump" "$model" "$(cd .. && pwd)/shared/data/wiki.test.raw" "$ctx" "$work/dump" 2> "$work/llama-dump.log" \
  || { echo "llama-dump failed (log: $work/llama-dump.log)" >&2; exit 1; }
EDGEFORGE_LLAMA_DUMP="$work/dump" EDGEFORGE_TEST_MODEL="$model" \
  cargo test --release -p edgeforge-runtime --lib parity -- --nocapture 2>&1 | grep -E "elements|test result|panicked"
