#!/usr/bin/env bash
# Size and speed of pruned models against the input, in the same run: every model is converted to F16 by
# llama.cpp's own llama-quantize (one format for all, so bytes and speed compare the architecture, not the
# storage), timed with llama-bench (prefill pp128, decode tg32; alternating rounds, best round per model),
# scored with llama-perplexity (which also proves llama.cpp loads the pruned file), and timed in edgeforge's
# runtime with `edgeforge eval latency`. Ratios are pruned / input from the same run. Not part of CI.
# Usage: benches/prune-speed.sh NAME=PRUNED.gguf [NAME=PRUNED.gguf ...]   (e.g. the GGUFs that
#        `edgeforge run recipes/smollm2-prune25.yaml` and `recipes/smollm2-depth3-distill.yaml` write)
# Env: CHUNKS (default 25), THREADS (default 2). Writes reports/bench/prune-speed.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 1 ]] || { sed -n 2,9p "$0" >&2; exit 2; }
chunks="${CHUNKS:-25}"; threads="${THREADS:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/edgeforge/target}"
model="$(scripts/fetch-model.sh)"
llama_bin="$(scripts/build-llamacpp.sh)"
cargo build --release --locked -p edgeforge-cli >&2
edgeforge="$CARGO_TARGET_DIR/release/edgeforge"
text="$(cd .. && pwd)/shared/data/wiki.test.raw"
[[ -f "$text" ]] || { echo "bench: $text not found" >&2; exit 2; }
work="${BENCH_WORK:-$HOME/.cache/edgeforge/bench/prune-speed}"; rm -rf "$work"; mkdir -p "$work"
out=reports/bench; mkdir -p "$out"

names=(input); declare -A src=([input]="$model")
for arg in "$@"; do
  name="${arg%%=*}"; path="${arg#*=}"
  [[ -f "$path" ]] || { echo "bench: $path not found" >&2; exit 2; }
  names+=("$name"); src[$name]="$path"
done
for name in "${names[@]}"; do
  "$llama_bin/llama-quantize" --allow-requantize "${src[$name]}" "$work/$name-f16.gguf" F16 > "$work/quantize-$name.log" 2>&1
  "$llama_bin/llama-perplexity" -m "$work/$name-f16.gguf" -f "$text" -c 512 -b 512 -t "$threads" --chunks "$chunks" > "$work/ppl-$name.txt" 2>&1
done
for round in 1 2 3; do
  for name in "${names[@]}"; do
    "$llama_bin/llama-bench" -m "$work/$name-f16.gguf" -p 128 -n 32 -t "$threads" -r 3 -o json > "$work/bench-$name-$round.json" 2> /dev/null
    "$edgeforge" eval latency --model "$work/$name-f16.gguf" --prompt-tokens 128 --gen-tokens 32 --repeats 3 --threads "$threads" --json > "$work/ours-$name-$round.json"
  done
done

python3 - "$work" "$out" "$chunks" "$threads" "${names[@]}" <<'PY'
import json, re, sys, pathlib
work, out, chunks, threads, names = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
rows = {}
for name in names:
    f16 = work / f"{name}-f16.gguf"
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", (work / f"ppl-{name}.txt").read_text())
    params = re.search(r"model params\s*=\s*([0-9.]+) ([MKB])", (work / f"ppl-{name}.txt").read_text())
    speed = {}
    for f in sorted(work.glob(f"bench-{name}-*.json")):
        for b in json.loads(f.read_text()):
            key = "llama_prefill" if b["n_prompt"] else "llama_decode"
            speed[key] = max(speed.get(key, 0.0), b["avg_ts"])
    for f in sorted(work.glob(f"ours-{name}-*.json")):
        r = json.loads(f.read_text())
        speed["ours_prefill"] = max(speed.get("ours_prefill", 0.0), r["prefill_tok_s"])
        speed["ours_decode"] = max(speed.get("ours_decode", 0.0), r["decode_tok_s"])
    rows[name] = {"f16_bytes": f16.stat().st_size, "llama_params": params.group(1) + params.group(2) if params else None,
                  "perplexity": float(m.group(1)) if m else None, "ppl_stderr": float(m.group(2)) if m else None, **speed}
base = rows["input"]
for r in rows.values():
    r["speedup"] = {k: r[k] / base[k] for k in ("llama_prefill", "llama_decode", "ours_prefill", "ours_decode") if k in r and base.get(k)}
(out / "prune-speed.json").write_text(json.dumps({"chunks": chunks, "threads": threads, "models": rows}, indent=2) + "\n")
md = ["# Pruned models: size and speed against the input (SmolLM2-135M-Instruct)\n",
      f"All models converted to F16 by llama-quantize; llama-perplexity on wiki.test.raw, ctx 512, {chunks} chunks; llama-bench pp128 / tg32 and "
      f"`edgeforge eval latency` (128 + 32 tokens), {threads} threads, 3 alternating rounds, best round per model. Speedups are against the input in the same run.\n",
      "| model | F16 bytes | perplexity (llama.cpp) | llama.cpp prefill tok/s (×) | llama.cpp decode tok/s (×) | edgeforge prefill tok/s (×) | edgeforge decode tok/s (×) |",
      "|---|---|---|---|---|---|---|"]
for k, r in rows.items():
    s = r["speedup"]
    ppl = f"{r['perplexity']:.4f} ± {r['ppl_stderr']:.4f}" if r["perplexity"] else "n/a"
    md.append(f"| {k} | {r['f16_bytes']:,} | {ppl} | {r.get('llama_prefill', 0):.1f} ({s.get('llama_prefill', 0):.3f}) | {r.get('llama_decode', 0):.1f} ({s.get('llama_decode', 0):.3f}) | "
              f"{r.get('ours_prefill', 0):.1f} ({s.get('ours_prefill', 0):.3f}) | {r.get('ours_decode', 0):.1f} ({s.get('ours_decode', 0):.3f}) |")
(out / "prune-speed.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
PY
