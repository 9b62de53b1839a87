#!/usr/bin/env bash
# GPTQ Q4_0 from recipes/smollm2-gptq-q4_0.yaml against llama.cpp's own `llama-quantize ... Q4_0` of the
# same model: both files scored by llama-perplexity (same text, ctx, chunks, threads) and timed by
# llama-bench, so quality, size and speed are compared with the tool users trust. llama.cpp is built from
# the llama-cpp-python sdist on PyPI (scripts/build-llamacpp.sh). Not part of CI.
# Writes reports/bench/gptq-q4_0-vs-llama-quantize.{json,md}.
# Usage: benches/gptq-vs-llama-quantize.sh [CHUNKS=25] [THREADS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
chunks="${1:-25}"; threads="${2:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/edgeforge/target}"
model="$(scripts/fetch-model.sh)"
llama_bin="$(scripts/build-llamacpp.sh)"
cargo build --release --locked -p edgeforge-cli >&2
edgeforge="$CARGO_TARGET_DIR/release/edgeforge"
text="$(cd .. && pwd)/shared/data/wiki.test.raw"
[[ -f "$text" ]] || { echo "bench: $text not found" >&2; exit 2; }
export EDGEFORGE_DATA="${EDGEFORGE_DATA:-$(dirname "$text")}"
work="${BENCH_WORK:-$HOME/.cache/edgeforge/bench/gptq-q4_0}"; rm -rf "$work"; mkdir -p "$work"
out=reports/bench; mkdir -p "$out"

# The reference file is Q4_1: llama-quantize dequantizes it and rounds to Q4_0 (--allow-requantize), which
# is what edgeforge's recipe starts from as well.
"$llama_bin/llama-quantize" --allow-requantize "$model" "$work/llama-quantize-q4_0.gguf" Q4_0 > "$work/llama-quantize.log" 2>&1
t0=$(date +%s.%N)
"$edgeforge" run recipes/smollm2-gptq-q4_0.yaml --out "$work/edgeforge" --threads "$threads" > "$work/edgeforge-run.log" 2>&1
t1=$(date +%s.%N)
ours=("$work"/edgeforge/*.gguf)
[[ ${#ours[@]} -eq 1 ]] || { echo "bench: expected exactly one .gguf, found ${#ours[@]}" >&2; exit 1; }

file_of() {
  case $1 in
    input) echo "$model" ;; llama-quantize) echo "$work/llama-quantize-q4_0.gguf" ;; edgeforge-gptq) echo "${ours[0]}" ;;
  esac
}
for name in input llama-quantize edgeforge-gptq; do
  m="$(file_of $name)"
  "$llama_bin/llama-perplexity" -m "$m" -f "$text" -c 512 -b 512 -t "$threads" --chunks "$chunks" > "$work/ppl-$name.txt" 2>&1
  echo "$name $(stat -c %s "$m") $m" >> "$work/files.txt"
done
# Speed: the models alternate over rounds (the machine is shared) and each keeps its best round.
for round in 1 2 3; do
  for name in input llama-quantize edgeforge-gptq; do
    "$llama_bin/llama-bench" -m "$(file_of $name)" -p 512 -n 128 -t "$threads" -r 3 -o json > "$work/bench-$name-$round.json" 2> /dev/null
  done
done

python3 - "$work" "$out" "$chunks" "$threads" "$(echo "$t1 - $t0" | bc)" <<'PY'
import json, re, sys, pathlib
work, out, chunks, threads, run_s = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
rows = {}
for line in (work / "files.txt").read_text().splitlines():
    name, size, path = line.split(" ", 2)
    txt = (work / f"ppl-{name}.txt").read_text()
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", txt)
    speed = {}
    for f in sorted(work.glob(f"bench-{name}-*.json")):
        for b in json.loads(f.read_text()):
            key = "prefill" if b["n_prompt"] else "decode"
            speed[key] = max(speed.get(key, 0.0), b["avg_ts"])
    rows[name] = {"file": path, "bytes": int(size), "perplexity": float(m.group(1)), "ppl_stderr": float(m.group(2)),
                  "prefill_tok_s": speed.get("prefill"), "decode_tok_s": speed.get("decode")}
report = json.loads((work / "edgeforge" / "report.json").read_text())
base, q0, ours = rows["input"], rows["llama-quantize"], rows["edgeforge-gptq"]
result = {"benchmark": "GPTQ Q4_0 vs llama-quantize Q4_0, llama-perplexity wiki.test.raw ctx 512",
          "chunks": chunks, "threads": threads, "edgeforge_run_seconds": run_s,
          "gptq_pass_seconds": report["passes"][0]["seconds"], "gptq_pass_peak_rss_bytes": report["passes"][0]["peak_rss_bytes"],
          "models": rows,
          "ppl_increase_pct": {k: 100 * (v["perplexity"] / base["perplexity"] - 1) for k, v in rows.items()}}
(out / "gptq-q4_0-vs-llama-quantize.json").write_text(json.dumps(result, indent=2) + "\n")
md = [f"# GPTQ Q4_0 vs llama-quantize Q4_0 (SmolLM2-135M-Instruct)\n",
      f"llama-perplexity on wiki.test.raw, ctx 512, {chunks} chunks, {threads} threads; speed from llama-bench (pp512, tg128; 3 alternating rounds of 3 repeats, best round per model).",
      f"`edgeforge run recipes/smollm2-gptq-q4_0.yaml`: {run_s:.0f} s end to end, GPTQ pass {result['gptq_pass_seconds']:.0f} s, peak RSS {result['gptq_pass_peak_rss_bytes']/2**20:.0f} MiB.\n",
      "| model | file bytes | perplexity | vs input | prefill tok/s | decode tok/s |", "|---|---|---|---|---|---|"]
for k, v in rows.items():
    md.append(f"| {k} | {v['bytes']:,} | {v['perplexity']:.4f} ± {v['ppl_stderr']:.4f} | {result['ppl_increase_pct'][k]:+.2f}% | {v['prefill_tok_s']:.1f} | {v['decode_tok_s']:.1f} |")
md.append(f"\nGPTQ closes {100 * (q0['perplexity'] - ours['perplexity']) / (q0['perplexity'] - base['perplexity']):.0f}% of llama-quantize Q4_0's perplexity gap to the input model.")
(out / "gptq-q4_0-vs-llama-quantize.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
PY
