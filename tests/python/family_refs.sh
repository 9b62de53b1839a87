#!/usr/bin/env bash
# llama.cpp's perplexity of each tiny family model (tests/python/make_tiny_family.py) and of our GGUF export
# of it (`edgeforge convert --to gguf`), written to tests/fixtures/family_ppl.json with the llama.cpp version.
# The Rust tests (tests/tests/families.rs) score the same files with the same protocol and compare.
#
# Protocol (ours must match): wiki.test.raw, -c 128 -b 128 --chunks 4, F32 KV cache (the weights are F32;
# an F16 cache would add llama.cpp-only rounding), 2 threads.
#
# usage: tests/python/family_refs.sh   (needs python3 with gguf==0.19.0 and numpy, a built llama.cpp)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${LLAMA_CPP_BIN:-$HOME/.cache/edgeforge/llama.cpp/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin}"
REF="${EDGEFORGE_TEST_MODEL:-$HOME/.cache/edgeforge/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
TEXT="${EDGEFORGE_DATA:-../shared/data}/wiki.test.raw"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/edgeforge/target}"
cargo build --release --locked -p edgeforge-cli >&2
EF="$CARGO_TARGET_DIR/release/edgeforge"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
families=$(python3 tests/python/make_tiny_family.py "$REF" "$WORK")

ppl() {
  "$BIN/llama-perplexity" -m "$1" -f "$TEXT" -c 128 -b 128 --chunks 4 -t 2 -ctk f32 -ctv f32 2>&1 \
    | sed -n 's/.*Final estimate: PPL = \([0-9.]*\) .*/\1/p'
}

version=$("$BIN/llama-perplexity" --version 2>&1 | sed -n 's/^version: //p')
out=tests/fixtures/family_ppl.json
{
  echo "{"
  echo "  \"tool\": \"llama-perplexity $version\","
  echo "  \"protocol\": \"wiki.test.raw -c 128 -b 128 --chunks 4 -t 2 -ctk f32 -ctv f32\","
  echo "  \"generator\": \"tests/python/make_tiny_family.py (gguf $(python3 -c 'import gguf.gguf_writer, importlib.metadata as m; print(m.version("gguf"))'))\","
  echo "  \"families\": {"
  first=1
  for f in $families; do
    # general.name is the file stem, and llama.cpp gives Phi-3 chat tokens (absent here) special attributes
    # when the name contains "phi3": a neutral name.
    "$EF" convert "$WORK/$f.gguf" --to gguf --out "$WORK/export.gguf" --force >/dev/null
    file_ppl=$(ppl "$WORK/$f.gguf")
    export_ppl=$(ppl "$WORK/export.gguf")
    [[ -n "$file_ppl" && -n "$export_ppl" ]] || { echo "llama-perplexity failed on $f" >&2; exit 1; }
    [[ $first == 1 ]] || echo ","
    first=0
    printf '    "%s": { "file": %s, "export": %s }' "$f" "$file_ppl" "$export_ppl"
  done
  echo ""
  echo "  }"
  echo "}"
} > "$out"
cat "$out"
