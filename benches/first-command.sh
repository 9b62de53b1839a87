#!/usr/bin/env bash
# Benchmark (issue 15, item 6): the README's first command against llama.cpp's own Q4_0-sized quantizations
# of the same model, llama-perplexity judging every file, side by side in one run on this machine.
#
# What it does:
#   1. Builds edgeforge (untimed), then times `scripts/edgeforge run recipes/smollm2-gptq-q4_0-quick.yaml
#      --out $WORK/run` (wall seconds of the run alone; a fresh baseline cache so the input is evaluated too,
#      as on a new machine).
#   2. Peers from the same input (scripts/fetch-model.sh, Q4_1) with the pinned llama.cpp
#      (scripts/build-llamacpp.sh): its F16 dequantization, an importance matrix computed on F16 over
#      ../shared/data/wikitext-2-valid.tokens (IMATRIX_CHUNKS chunks of 512 tokens; the same calibration
#      text our recipe uses), and `llama-quantize --allow-requantize` Q4_0, Q4_0 with the imatrix, IQ4_NL
#      with the imatrix (timed too).
#   3. llama-perplexity on ../shared/data/wiki.test.raw, -c 512 -b 512 --chunks 25, for every file.
#   4. Writes $REPORT_DIR/first-command.{json,md}.
#
# How long (2 cores): ~6 min for our run, ~1 min per imatrix chunk batch of 8, ~40 s per perplexity.
# Usage: benches/first-command.sh   [IMATRIX_CHUNKS=32] [THREADS=2] [WORK=~/.cache/edgeforge/bench/first-command]
# Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${THREADS:-2}"
chunks="${IMATRIX_CHUNKS:-32}"
work="${WORK:-$HOME/.cache/edgeforge/bench/first-command}"
report_dir="${REPORT_DIR:-reports/bench}"
data="${EDGEFORGE_DATA:-../shared/data}"
mkdir -p "$work" "$report_dir"
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

model="$(scripts/fetch-model.sh | tail -n 1)"
bin="$(scripts/build-llamacpp.sh | tail -n 1)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/edgeforge/target}"
cargo build --release --locked -q -p edgeforge-cli >&2

seconds() { local t0; t0=$(date +%s.%N); "$@"; python3 -c "import sys,time; print(round(time.time() - float(sys.argv[1]), 1))" "$t0" >"$work/.last-seconds"; }

log "our run (README's first command)"
# A HOME of its own (the model and cargo's caches linked in), so no cached input evaluation shortens the run.
rm -rf "$work/run" "$work/home"
mkdir -p "$work/home/.cache/edgeforge"
ln -s "$(dirname "$model")" "$work/home/.cache/edgeforge/models"
seconds env HOME="$work/home" CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" \
  scripts/edgeforge run recipes/smollm2-gptq-q4_0-quick.yaml --out "$work/run" --threads "$threads" >"$work/run.log" 2>&1
ours_s=$(cat "$work/.last-seconds")
ours=$(ls "$work"/run/*.gguf)

log "peers"
"$bin/llama-quantize" --allow-requantize "$model" "$work/F16.gguf" F16 >"$work/q-F16.log" 2>&1
seconds "$bin/llama-imatrix" -m "$work/F16.gguf" -f "$data/wikitext-2-valid.tokens" -c 512 -b 512 --chunks "$chunks" -t "$threads" -o "$work/imatrix.dat" >"$work/imatrix.log" 2>&1
imatrix_s=$(cat "$work/.last-seconds")
seconds "$bin/llama-quantize" --allow-requantize "$model" "$work/Q4_0.gguf" Q4_0 >"$work/q-Q4_0.log" 2>&1
q40_s=$(cat "$work/.last-seconds")
"$bin/llama-quantize" --allow-requantize --imatrix "$work/imatrix.dat" "$model" "$work/Q4_0-imat.gguf" Q4_0 >"$work/q-Q4_0-imat.log" 2>&1
"$bin/llama-quantize" --allow-requantize --imatrix "$work/imatrix.dat" "$model" "$work/IQ4_NL-imat.gguf" IQ4_NL >"$work/q-IQ4_NL-imat.log" 2>&1

rows=()
for entry in "input=$model" "F16=$work/F16.gguf" "edgeforge=$ours" "Q4_0=$work/Q4_0.gguf" "Q4_0-imat=$work/Q4_0-imat.gguf" "IQ4_NL-imat=$work/IQ4_NL-imat.gguf"; do
  name=${entry%%=*}; file=${entry#*=}
  log "llama-perplexity $name"
  "$bin/llama-perplexity" -m "$file" -f "$data/wiki.test.raw" -c 512 -b 512 --chunks 25 -t "$threads" >"$work/ppl-$name.log" 2>&1
  ppl=$(grep -o 'Final estimate: PPL = [0-9.]* +/- [0-9.]*' "$work/ppl-$name.log" | sed 's/Final estimate: PPL = //')
  rows+=("$name|$(stat -c %s "$file")|${ppl% +/- *}|${ppl#* +/- }")
done

python3 - "$report_dir" "$ours_s" "$imatrix_s" "$q40_s" "$chunks" "$threads" "$(git rev-parse --short HEAD)" "$("$bin/llama-perplexity" --version 2>&1 | grep -m1 version || true)" "${rows[@]}" <<'PY'
import json, sys
out, ours_s, imatrix_s, q40_s, chunks, threads, commit, llama = sys.argv[1:9]
rows = [dict(zip(["file", "bytes", "perplexity", "stderr"], r.split("|"))) for r in sys.argv[9:]]
for r in rows:
    r["bytes"] = int(r["bytes"]); r["perplexity"] = float(r["perplexity"]); r["stderr"] = float(r["stderr"])
d = {"commit": commit, "llama_cpp": llama, "threads": int(threads), "imatrix_chunks": int(chunks),
     "seconds": {"edgeforge_run": float(ours_s), "llama_imatrix": float(imatrix_s), "llama_quantize_q4_0": float(q40_s)}, "rows": rows}
ours = next(r for r in rows if r["file"] == "edgeforge")
peers = [r for r in rows if r["file"] in ("Q4_0", "Q4_0-imat", "IQ4_NL-imat")]
d["beats"] = {p["file"]: ours["perplexity"] < p["perplexity"] for p in peers}
json.dump(d, open(f"{out}/first-command.json", "w"), indent=1)
names = {"input": "input (Q4_1, the reference file)", "F16": "F16 (its dequantization)", "edgeforge": "**edgeforge: recipes/smollm2-gptq-q4_0-quick.yaml**",
         "Q4_0": "llama-quantize Q4_0", "Q4_0-imat": "llama-quantize Q4_0 + imatrix", "IQ4_NL-imat": "llama-quantize IQ4_NL + imatrix"}
with open(f"{out}/first-command.md", "w") as f:
    f.write("# The README's first command vs llama.cpp's own quantizations\n\n")
    f.write(f"Generated by benches/first-command.sh at {commit}, {threads} threads, llama.cpp {llama}. Every file scored by llama-perplexity "
            "on wiki.test.raw, -c 512 -b 512, 25 chunks. The imatrix: llama-imatrix on the F16 file over wikitext-2-valid.tokens, "
            f"{chunks} chunks of 512 (the text our recipe calibrates on).\n\n")
    f.write("| file | bytes | perplexity |\n|---|---:|---:|\n")
    for r in rows:
        f.write(f"| {names[r['file']]} | {r['bytes']:,} | {r['perplexity']:.4f} ± {r['stderr']:.4f} |\n")
    f.write(f"\nWall time: `edgeforge run` {float(ours_s):.0f} s (input evaluation, GPTQ, tune-scales, evaluation, export); llama-imatrix {float(imatrix_s):.0f} s + llama-quantize {float(q40_s):.1f} s.\n\n")
    for p in peers:
        f.write(f"- {'PASS' if d['beats'][p['file']] else 'FAIL'}: edgeforge {ours['perplexity']:.4f} below {names[p['file']]} {p['perplexity']:.4f}\n")
print(open(f"{out}/first-command.md").read())
PY
