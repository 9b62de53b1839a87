#!/usr/bin/env bash
# Op-by-op check (issue 14, item 3) that `--rounding llamacpp` computes what the pinned llama.cpp build
# computes, bit for bit. benches/tools/llama-dump.cpp, built here against that build's libllama, runs a batch
# and writes every tensor llama.cpp computes; the runtime's parity test (crates/edgeforge-runtime/src/parity.rs)
# then feeds each op llama.cpp's own inputs and counts the output elements whose bits differ from llama.cpp's
# (RMS norm, every matmul, RoPE, flash attention, SwiGLU, the output head). Two dumps per file:
#   batch   the first CTX tokens of wiki.test.raw, as llama-perplexity takes them (one perplexity chunk);
#   decode  a 100-token batch, then the next token on its own (llama.cpp's one-row flash-attention kernel and
#           one-token matmuls; over 101 keys, below the 512 from which llama.cpp splits one query's keys
#           across threads, a split not reproduced).
# Files: the reference model (Q4_1) and its Q4_0, Q5_1, Q6_K and Q4_K_M versions made by llama-quantize
# (benches/lib/llama-files.sh, shared with the other llama.cpp benches).
# Writes $REPORT_DIR/llamacpp-bitexact.{md,json}: per file, dump and op, elements compared and elements that differ.
#
# Usage: benches/llamacpp-bitexact.sh [MODEL]   (one file instead of the five)
#   FILES="Q4_1 Q4_0 Q5_1 Q6_K Q4_K_M"  CTX=512  BENCH_WORK  REPORT_DIR
# About 1.3 GB of dumps in $BENCH_WORK/bitexact; a minute per file. Not part of CI (it needs the llama.cpp build).
set -euo pipefail
cd "$(dirname "$0")/.."
ctx="${CTX:-512}"
source benches/lib/llama-files.sh
setup_llama_bench llamacpp-bitexact llama-perplexity
src="$(cd "$llama_bin/../.." && pwd)"
dumps="$work/bitexact"
mkdir -p "$dumps"
g++ -O2 -std=c++17 -I"$src/include" -I"$src/ggml/include" benches/tools/llama-dump.cpp -L"$llama_bin" -lllama -lggml -lggml-base \
  -Wl,-rpath,"$llama_bin" -o "$dumps/llama-dump"
text="$(cd .. && pwd)/shared/data/wiki.test.raw"
[[ -f $text ]] || die "$text not found (../shared/data)"

if [[ $# -ge 1 ]]; then
  files=("$1")
else
  files=()
  for f in ${FILES:-Q4_1 Q4_0 Q5_1 Q6_K Q4_K_M}; do
    case $f in
      Q4_1) files+=("$model") ;;
      *) make_file "$f"; files+=("$work/$f.gguf") ;;
    esac
  done
fi

results="$dumps/results.tsv"
: > "$results"
status=0
for path in "${files[@]}"; do
  name="$(basename "$path" .gguf)"
  for run in "batch $ctx" "decode 100 1"; do
    set -- $run
    dir="$dumps/$1"
    rm -rf "$dir" && mkdir -p "$dir/decode"
    log "$name: $1 (llama-dump, then the parity test)"
    "$dumps/llama-dump" "$path" "$text" "$2" "$dir" ${3:-} 2> "$dumps/llama-dump.log" \
      || die "llama-dump failed on $path (log: $dumps/llama-dump.log)"
    EDGEFORGE_LLAMA_DUMP="$dir" EDGEFORGE_TEST_MODEL="$path" \
      cargo test --release --locked -q -p edgeforge-runtime --lib parity -- --nocapture > "$dumps/parity.log" 2>&1 || status=1
    # "decode step:" starts the decode step's table; the batch of a decode dump is not reported twice.
    awk -v f="$name" -v run="$1" '
      /^decode step:/ { step = 1; next }
      / elements, / { if (run == "batch" || step) { sub(/^ +/, ""); split($0, a, ": "); op = a[1]; n = a[2]; sub(/ elements.*/, "", n); d = a[2]; sub(/.*elements, +/, "", d); sub(/ differ.*/, "", d); print f "\t" run "\t" op "\t" n "\t" d } }' \
      "$dumps/parity.log" >> "$results"
    grep -q " elements, " "$dumps/parity.log" || die "the parity test printed no table (log: $dumps/parity.log)"
  done
done

python3 - "$results" "$report_dir" "$ctx" "$llama_version" "$(git rev-parse --short HEAD)" <<'PY'
import json, os, sys
results, report_dir, ctx, llama_version, commit = sys.argv[1:]
rows = []
for line in open(results):
    f, run, op, n, d = line.rstrip("\n").split("\t")
    rows.append({"file": f, "dump": run, "op": op, "elements": int(n), "differ": int(d)})
files = list(dict.fromkeys(r["file"] for r in rows))
exact = {f: all(r["differ"] == 0 for r in rows if r["file"] == f) for f in files}
report = {"llama_cpp": llama_version, "edgeforge_commit": commit, "batch_tokens": int(ctx), "rows": rows, "bit_exact": exact}
with open(os.path.join(report_dir, "llamacpp-bitexact.json"), "w") as fh:
    json.dump(report, fh, indent=2)
ops = list(dict.fromkeys(r["op"] for r in rows))
md = ["# `--rounding llamacpp` against llama.cpp's own tensors, op by op", "",
      f"llama.cpp {llama_version}; edgeforge {commit}. Produced by benches/llamacpp-bitexact.sh: llama.cpp computes a batch (the first {ctx} "
      "tokens of wiki.test.raw, one perplexity chunk) and, separately, a decode step (one token after a 100-token batch); every tensor it "
      "computes is dumped (benches/tools/llama-dump.cpp) and each op of ours is fed llama.cpp's inputs for it "
      "(crates/edgeforge-runtime/src/parity.rs). Each cell: output elements whose bits differ from llama.cpp's / elements compared, "
      "over the 30 layers.", ""]
md.append("| file | dump | " + " | ".join(ops) + " | bit-exact |")
md.append("| --- | --- | " + " | ".join("---:" for _ in ops) + " | --- |")
for f in files:
    for run in ("batch", "decode"):
        cells = {r["op"]: r for r in rows if r["file"] == f and r["dump"] == run}
        if not cells:
            continue
        ok = all(c["differ"] == 0 for c in cells.values())
        md.append(f"| {f} | {run} | " + " | ".join(f"{cells[o]['differ']} / {cells[o]['elements']}" if o in cells else "" for o in ops) + f" | {'yes' if ok else 'NO'} |")
with open(os.path.join(report_dir, "llamacpp-bitexact.md"), "w") as fh:
    fh.write("\n".join(md) + "\n")
print("\n".join(md))
PY
exit $status
