#!/usr/bin/env bash
# Benchmark (issue 14, item 3): `edgeforge eval perplexity --rounding llamacpp` against llama-perplexity on
# quantized files made by llama-quantize, side by side in one run.
#
# What it does:
#   1. Files: the reference model (scripts/fetch-model.sh, Q4_1) and its Q4_0, Q5_1, Q6_K and Q4_K_M versions
#      made with the pinned llama.cpp's `llama-quantize --allow-requantize` (benches/lib/llama-files.sh,
#      cached by stamp). On SmolLM2 (n_embd 576, not a multiple of 256) llama-quantize gives the K-quant types
#      only to tensors whose rows are (ffn_down); the rest fall back to Q5_0/Q8_0, as llama.cpp decides.
#   2. For each file, one after the other: llama-perplexity on wiki.test.raw, ctx 512, CHUNKS chunks, THREADS
#      threads, with its defaults (f16 KV cache, flash attention auto: on) — the figure users see — and, for
#      reference, with an f32 KV cache and no flash attention (`-ctk f32 -ctv f32 -fa off`); then ours, `eval
#      perplexity --rounding llamacpp` (activations rounded as llama.cpp rounds them: q8_0/q8_1 blocks for the
#      32-element formats, q8_K for the K-quants, f16 for F16 weights; keys and values rounded to f16 as its
#      default cache holds them) and `--rounding exact` (our default float figure).
#   3. Writes $REPORT_DIR/rounding-vs-llamacpp.{json,md}: the four figures per file, the difference of ours
#      (llamacpp rounding) from llama-perplexity's default figure, and the target |difference| <= 0.05%.
#      Also, from the running perplexities both tools print, each chunk's mean negative log-likelihood, and the
#      standard deviation over chunks of two differences: ours (llamacpp rounding) minus llama.cpp's default,
#      and llama.cpp's own f32-KV/no-FA run minus its default. The second says how far the figure moves under
#      perturbations of f16-rounding size inside llama.cpp itself; sd / sqrt(chunks) is the noise floor of
#      the final figure under such perturbations (as a % of perplexity).
#
# How long (2 shared cores): about 3 minutes per file at 25 chunks.
#
# Usage: benches/rounding-vs-llamacpp.sh
#   FILES="Q4_1 Q4_0 Q5_1 Q6_K Q4_K_M"  CHUNKS=25  THREADS=2
#   BENCH_WORK=~/.cache/edgeforge/bench/runtime   (shares made files with runtime-vs-llamacpp.sh)
#   REPORT_DIR=reports/bench
# Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

files="${FILES:-Q4_1 Q4_0 Q5_1 Q6_K Q4_K_M}"
chunks="${CHUNKS:-25}"
threads="${THREADS:-2}"
# Work and report folders, the model, llama.cpp and our CLI; make_file TYPE (cached by stamp).
source benches/lib/llama-files.sh
setup_llama_bench rounding-vs-llamacpp llama-perplexity
text="$(cd .. && pwd)/shared/data/wiki.test.raw"
[[ -f $text ]] || die "$text not found (../shared/data)"

results="$work/rounding.tsv"
if [[ -z ${RENDER_ONLY:-} ]]; then
: > "$results"
llama_ppl() { # FILE EXTRA_ARGS... -> perplexity
  local f=$1; shift
  "$llama_bin/llama-perplexity" -m "$f" -f "$text" -c 512 -b 512 --chunks "$chunks" -t "$threads" "$@" > "$work/llama-ppl.txt" 2>&1 \
    || die "llama-perplexity failed on $f (log: $work/llama-ppl.txt)"
  # Running perplexities ("[1]13.0665,[2]21.4582,..."), one line, kept for the per-chunk comparison.
  grep -o '\[[0-9]*\][0-9.]*' "$work/llama-ppl.txt" | sed 's/^\[[0-9]*\]//' | paste -sd, - > "$work/llama-ppl.running"
  sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$work/llama-ppl.txt"
}
ours_ppl() { # FILE ROUNDING -> perplexity
  "$edgeforge" eval perplexity --model "$1" --text "$text" --ctx 512 --batch 512 --chunks "$chunks" --threads "$threads" --rounding "$2" --json 2> "$work/edgeforge-ppl.err" \
    | python3 -c 'import json, sys; r = json.load(sys.stdin); print(r["perplexity"]); print(",".join(map(str, r["running_perplexity"])), file=open(sys.argv[1], "w"))' "$work/edgeforge-ppl.running" || die "edgeforge eval perplexity failed on $1 (log: $work/edgeforge-ppl.err)"
}

for f in $files; do
  case $f in
    Q4_1) path=$model ;;
    *) make_file "$f"; path="$work/$f.gguf" ;;
  esac
  log "$f: llama-perplexity (f32 KV), llama-perplexity (defaults), edgeforge llamacpp, edgeforge exact"
  a="$(llama_ppl "$path" -ctk f32 -ctv f32 -fa off)"; ra="$(cat "$work/llama-ppl.running")"
  b="$(llama_ppl "$path")"; rb="$(cat "$work/llama-ppl.running")"
  c="$(ours_ppl "$path" llamacpp)"; rc="$(cat "$work/edgeforge-ppl.running")"
  d="$(ours_ppl "$path" exact)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$f" "$(stat -c %s "$path")" "$a" "$b" "$c" "$d" "$ra" "$rb" "$rc" >> "$results"
done
fi

python3 - "$results" "$report_dir" "$chunks" "$threads" "$llama_version" "$(git rev-parse --short HEAD)" <<'EOF'
import json, math, os, statistics, sys
results, report_dir, chunks, threads, llama_version, commit = sys.argv[1:]
rows = []
for line in open(results):
    f, size, a, b, c, d, ra, rb, rc = line.rstrip("\n").split("\t")
    a, b, c, d = float(a), float(b), float(c), float(d)
    # Each chunk's mean NLL from the running perplexities: k·ln P_k − (k−1)·ln P_(k−1).
    nll = lambda running: [k * math.log(p) - (k - 1) * math.log(q) for k, (p, q) in enumerate(zip(running, [1.0] + running[:-1]), 1)]
    na, nb, nc = (nll([float(x) for x in r.split(",")]) for r in (ra, rb, rc))
    sd = lambda x, y: statistics.stdev(u - v for u, v in zip(x, y))
    ours_sd, llama_sd = sd(nc, nb), sd(na, nb)
    # llama-perplexity prints the running figures to 4 decimals: how many of ours print the same.
    same = sum(float(x) == float(f"{float(y):.4f}") for x, y in zip(rb.split(","), rc.split(",")))
    rows.append({"running_equal": same, "running_chunks": len(rb.split(",")), "file": f, "bytes": int(size), "llama_f32_kv": a, "llama_default": b, "edgeforge_llamacpp": c, "edgeforge_exact": d,
                 "diff_pct": 100 * (c - b) / b, "exact_diff_pct": 100 * (d - b) / b, "pass": abs(100 * (c - b) / b) <= 0.05,
                 "per_chunk_nll_diff_sd": {"edgeforge_llamacpp_vs_llama_default": ours_sd, "llama_f32_kv_vs_llama_default": llama_sd},
                 "noise_floor_pct": 100 * math.expm1(llama_sd / math.sqrt(len(nb)))})
protocol = f"wiki.test.raw, ctx 512, {chunks} chunks, {threads} threads"
report = {"protocol": protocol, "llama_cpp": llama_version, "edgeforge_commit": commit, "target": "|edgeforge --rounding llamacpp - llama-perplexity (defaults)| <= 0.05%", "rows": rows}
with open(os.path.join(report_dir, "rounding-vs-llamacpp.json"), "w") as fh:
    json.dump(report, fh, indent=2)
md = ["# Perplexity with llama.cpp's activation rounding vs llama-perplexity", "",
      f"{protocol}; llama.cpp {llama_version}; edgeforge {commit}. Files made by `llama-quantize --allow-requantize` from the reference model "
      "(Q4_1 is the reference model itself). llama-perplexity with its defaults (f16 KV cache, flash attention on: the comparison) and, "
      "for reference, with an f32 KV cache and no flash attention (`-ctk f32 -ctv f32 -fa off`). Differences are from llama.cpp's default figure. "
      "Produced by benches/rounding-vs-llamacpp.sh.", "",
      "Per chunk: each chunk's mean negative log-likelihood (nats) from the running perplexities both tools print; the columns give the standard "
      "deviation over chunks of ours minus llama.cpp's default, and of llama.cpp's own f32-KV/no-FA run minus its default. The noise floor is "
      "the latter divided by sqrt(chunks), as a % of perplexity: how far the final figure moves, one sd, when llama.cpp itself changes its "
      "arithmetic at the f16-rounding level.", "",
      "Running figures equal: of the running perplexities llama-perplexity prints after each chunk (4 decimals), how many ours print the same.", "",
      "| file | MiB | llama.cpp (f32 KV, no FA) | llama.cpp (defaults) | edgeforge `--rounding llamacpp` | difference | running figures equal | edgeforge exact (default) | target <= 0.05% | per-chunk sd, ours − llama.cpp | per-chunk sd, llama.cpp f32 KV − defaults | noise floor |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
for r in rows:
    md.append(f"| {r['file']} | {r['bytes'] / 2**20:.1f} | {r['llama_f32_kv']:.4f} | {r['llama_default']:.4f} | {r['edgeforge_llamacpp']:.4f} | {r['diff_pct']:+.3f}% | {r['running_equal']}/{r['running_chunks']} | {r['edgeforge_exact']:.4f} ({r['exact_diff_pct']:+.2f}%) | {'PASS' if r['pass'] else 'FAIL'} | {r['per_chunk_nll_diff_sd']['edgeforge_llamacpp_vs_llama_default']:.2e} | {r['per_chunk_nll_diff_sd']['llama_f32_kv_vs_llama_default']:.2e} | {r['noise_floor_pct']:.3f}% |")
with open(os.path.join(report_dir, "rounding-vs-llamacpp.md"), "w") as fh:
    fh.write("\n".join(md) + "\n")
print("\n".join(md))
EOF
