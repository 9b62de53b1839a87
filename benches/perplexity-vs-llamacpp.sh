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
llama_txts = [(out / f"llama-{r}.txt").read_text() for r in range(1, rounds + 1)]
llama_txt = llama_txts[0]
m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", llama_txt)
llama_ppl, llama_err = float(m.group(1)), float(m.group(2))
# llama-perplexity's log stamps each line with the elapsed time (minutes.seconds.ms.us): the chunk loop runs
# from the "seconds per pass" line (after the first chunk) to "Final estimate"; one pass is added back for the
# first chunk. The best round is reported.
def loop_seconds(txt):
    def stamp(pattern):
        m = re.search(r"^(\d+)\.(\d+)\.(\d+)\.\d+ I .*" + pattern, txt, re.M)
        return int(m.group(1)) * 60 + int(m.group(2)) + int(m.group(3)) / 1000 if m else None
    pass_s = re.search(r"([0-9.]+) seconds per pass", txt)
    t_first, t_final = stamp("seconds per pass"), stamp("Final estimate")
    if t_first is None or t_final is None or not pass_s:
        return None
    return t_final - t_first + float(pass_s.group(1))
loops = [x for x in map(loop_seconds, llama_txts) if x is not None]
llama_loop_s = min(loops) if loops else None
ours = [json.loads((out / f"edgeforge-{r}.json").read_text()) for r in range(1, rounds + 1)]
best = min(ours, key=lambda o: o["seconds"])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
report = {
    "benchmark": "perplexity wiki.test.raw ctx 512",
    "chunks": chunks, "threads": threads, "rounds": rounds, "cpu": cpu, "model": model,
    "llama_cpp": {"perplexity": llama_ppl, "ppl_stderr": llama_err, "wall_seconds": llama_wall,
                  "best_wall_seconds": min(llama_wall), "chunk_loop_seconds_estimate": llama_loop_s,
                  "tokens_per_second_wall": chunks * 512 / min(llama_wall)},
    "edgeforge": {"perplexity": best["perplexity"], "ppl_stderr": best["ppl_stderr"], "wall_seconds": ours_wall,
                  "best_wall_seconds": min(ours_wall), "eval_seconds": [o["seconds"] for o in ours],
                  "tokens_per_second": best["tokens_per_second"], "tokens_per_second_wall": chunks * 512 / min(ours_wall),
                  "load_seconds": best["load_seconds"]},
}
report["ppl_rel_diff_pct"] = 100 * (best["perplexity"] - llama_ppl) / llama_ppl
report["wall_ratio_edgeforge_over_llama"] = min(ours_wall) / min(llama_wall)
if llama_loop_s:
    report["eval_ratio_edgeforge_over_llama"] = min(o["seconds"] for o in ours) / llama_loop_s
(out / "perplexity-vs-llamacpp.json").write_text(json.dumps(report, indent=2) + "\n")
md = [f"# Perplexity benchmark: edgeforge vs llama.cpp ({chunks} chunks x 512, {threads} threads, best of {rounds})", "",
      f"CPU: {cpu}", "",
      "| tool | perplexity | wall s (best) | tokens/s (wall) | chunk loop s |", "|---|---|---|---|---|",
      f"| llama.cpp llama-perplexity | {llama_ppl:.4f} ± {llama_err:.4f} | {min(llama_wall):.1f} | {chunks*512/min(llama_wall):.0f} | {llama_loop_s or float('nan'):.1f} (from its log) |",
      f"| edgeforge eval perplexity | {best['perplexity']:.4f} ± {best['ppl_stderr']:.4f} | {min(ours_wall):.1f} | {chunks*512/min(ours_wall):.0f} | {min(o['seconds'] for o in ours):.1f} |",
      "", f"Perplexity difference: {report['ppl_rel_diff_pct']:+.3f}%. Wall-time ratio edgeforge/llama.cpp: {report['wall_ratio_edgeforge_over_llama']:.2f}x"
      + (f"; chunk-loop ratio: {report['eval_ratio_edgeforge_over_llama']:.2f}x." if llama_loop_s else "."),
      "", "Wall time covers the whole command (model load, tokenization, evaluation). Both tools ran alternately on the",
      "same machine in one run; it is shared, so compare the ratio, not the absolute seconds."]
(out / "perplexity-vs-llamacpp.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
PY
