#!/usr/bin/env bash
# Benchmark: `edgeforge eval perplexity` against llama.cpp's llama-perplexity on the same model, text and
# settings, side by side in one run (alternating, best of N rounds each, since the machine is shared).
# Writes reports/bench/perplexity-vs-llamacpp.{json,md}. Not part of CI (it builds llama.cpp).
# Usage: benches/perplexity-vs-llamacpp.sh [CHUNKS=25] [THREADS=2] [ROUNDS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
chunks="${1:-25}"; threads="${2:-2}"; rounds="${3:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/edgeforge/target}"
model="$(scripts/fetch-model.sh)"
llama_bin="$(scripts/build-llamacpp.sh)"
cargo build --release --locked -p edgeforge-cli >&2
edgeforge="$CARGO_TARGET_DIR/release/edgeforge"
text="$(cd .. && pwd)/shared/data/wiki.test.raw"
[[ -f "$text" ]] || { echo "bench: $text not found" >&2; exit 2; }
out=reports/bench; mkdir -p "$out"
log="$out/perplexity-vs-llamacpp.log"; : > "$log"

now() { date +%s.%N; }
for r in $(seq "$rounds"); do
  t0=$(now)
  "$llama_bin/llama-perplexity" -m "$model" -f "$text" -c 512 -b 512 -t "$threads" --chunks "$chunks" \
    > "$out/llama-$r.txt" 2>&1
  t1=$(now)
  "$edgeforge" eval perplexity --model "$model" --text "$text" --ctx 512 --batch 512 --chunks "$chunks" \
    --threads "$threads" --json > "$out/edgeforge-$r.json"
  t2=$(now)
  echo "round $r llama_wall_s $(echo "$t1 - $t0" | bc) edgeforge_wall_s $(echo "$t2 - $t1" | bc)" | tee -a "$log" >&2
done

python3 - "$out" "$rounds" "$chunks" "$threads" "$model" <<'PY'
import json, re, sys, pathlib, platform, subprocess
out, rounds, chunks, threads, model = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
walls = [l.split() for l in (out / "perplexity-vs-llamacpp.log").read_text().splitlines()]
llama_wall = [float(w[3]) for w in walls]; ours_wall = [float(w[5]) for w in walls]
llama_txt = (out / "llama-1.txt").read_text()
m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", llama_txt)
llama_ppl, llama_err = float(m.group(1)), float(m.group(2))
# llama-perplexity's own timing of the chunk loop: "prompt eval time = X ms / N tokens"
pe = re.search(r"prompt eval time =\s*([0-9.]+) ms /\s*([0-9]+) tokens", llama_txt)
ours = [json.loads((out / f"edgeforge-{r}.json").read_text()) for r in range(1, rounds + 1)]
best = min(ours, key=lambda o: o["seconds"])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
report = {
    "benchmark": "perplexity wiki.test.raw ctx 512",
    "chunks": chunks, "threads": threads, "rounds": rounds, "cpu": cpu, "model": model,
    "llama_cpp": {"perplexity": llama_ppl, "ppl_stderr": llama_err, "wall_seconds": llama_wall,
                  "best_wall_seconds": min(llama_wall),
                  "prompt_eval_ms": float(pe.group(1)) if pe else None, "prompt_eval_tokens": int(pe.group(2)) if pe else None},
    "edgeforge": {"perplexity": best["perplexity"], "ppl_stderr": best["ppl_stderr"], "wall_seconds": ours_wall,
                  "best_wall_seconds": min(ours_wall), "eval_seconds": [o["seconds"] for o in ours],
                  "tokens_per_second": best["tokens_per_second"], "load_seconds": best["load_seconds"]},
}
report["ppl_rel_diff_pct"] = 100 * (best["perplexity"] - llama_ppl) / llama_ppl
report["wall_ratio_edgeforge_over_llama"] = min(ours_wall) / min(llama_wall)
if pe:
    report["eval_ratio_edgeforge_over_llama"] = min(o["seconds"] for o in ours) / (float(pe.group(1)) / 1000)
(out / "perplexity-vs-llamacpp.json").write_text(json.dumps(report, indent=2) + "\n")
md = [f"# Perplexity benchmark: edgeforge vs llama.cpp ({chunks} chunks x 512, {threads} threads, best of {rounds})", "",
      f"CPU: {cpu}", "",
      "| tool | perplexity | wall s (best) | chunk-loop s |", "|---|---|---|---|",
      f"| llama.cpp llama-perplexity | {llama_ppl:.4f} ± {llama_err:.4f} | {min(llama_wall):.1f} | {float(pe.group(1))/1000 if pe else float('nan'):.1f} |",
      f"| edgeforge eval perplexity | {best['perplexity']:.4f} ± {best['ppl_stderr']:.4f} | {min(ours_wall):.1f} | {min(o['seconds'] for o in ours):.1f} |",
      "", f"Perplexity difference: {report['ppl_rel_diff_pct']:+.3f}%. Wall-time ratio edgeforge/llama.cpp: {report['wall_ratio_edgeforge_over_llama']:.2f}x"
      + (f"; chunk-loop ratio: {report['eval_ratio_edgeforge_over_llama']:.2f}x." if pe else ".")]
(out / "perplexity-vs-llamacpp.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
PY
