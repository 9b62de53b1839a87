#!/usr/bin/env bash
# Benchmark (issue 14): our runtime against llama.cpp on the same GGUF files, side by side.
#
# What it does:
#   1. Files: the reference model (scripts/fetch-model.sh, Q4_1) and its Q4_0, Q8_0, F16 and BF16 versions made
#      with the pinned llama.cpp's `llama-quantize --allow-requantize` (scripts/build-llamacpp.sh), plus our
#      GPTQ Q4_0 export when OURS_GGUF names it. Each made file is cached under $BENCH_WORK with a NAME.stamp
#      (llama.cpp version, the input's bytes and sha256, the command) and rebuilt only when the stamp changes.
#   2. Speed, in llama-bench's protocol on both sides: `llama-bench -m FILE -p $PP -n $TG -r $REPS -t T -o json`
#      and `edgeforge eval latency --model FILE -p $PP -n $TG -r $REPS --threads T --json` (each: one warm-up
#      run, then REPS repetitions, t/s as mean ± sd; tg from an empty context). For every file and thread
#      count the two tools run one after the other, over ROUNDS rounds (the order of the tools alternating
#      between rounds); the best mean of the rounds is kept for each (the machine is shared: best of N).
#   3. Peak RSS of each run: `/usr/bin/time -f %M` around llama-bench (its whole process, model mapped), and
#      our measurement's own figure (VmHWM reset after loading: the model, the KV cache of PP tokens and the
#      forward passes).
#   4. Writes $REPORT_DIR/runtime-vs-llamacpp.{json,md}: per file and thread count our t/s over llama.cpp's,
#      and issue 14's targets (tg >= 1.0x at 1 and 2 threads, pp >= 0.9x at 2 threads, RSS while decoding the
#      Q4_0 file <= 1.3x file size + KV cache), each PASS/FAIL from the parsed numbers.
#
# How long (2 shared cores): ~1 min per file, thread count and round for both tools at pp512/tg128/r3.
#
# Usage: benches/runtime-vs-llamacpp.sh
#   FILES="Q4_1 Q4_0 Q8_0 F16 BF16"   which files (Q4_1 = the reference model itself)
#   OURS_GGUF=path.gguf          also our GPTQ Q4_0 export (row "gptq-Q4_0")
#   THREADS_LIST="1 2"  ROUNDS=2  REPS=3  PP=512  TG=128
#   ROUNDING=fast                our --rounding (fast: llama.cpp's 8-bit activations for decode steps)
#   BENCH_WORK=~/.cache/edgeforge/bench/runtime   cache and work folder
#   REPORT_DIR=reports/bench     where the .json and .md go
#   CARGO_TARGET_DIR=~/.cache/edgeforge/target
# Not part of CI. Runs one benchmark process at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

files="${FILES:-Q4_1 Q4_0 Q8_0 F16 BF16}"
threads_list="${THREADS_LIST:-1 2}"
rounds="${ROUNDS:-2}"
reps="${REPS:-3}"
pp="${PP:-512}"
tg="${TG:-128}"
rounding="${ROUNDING:-fast}"
# Work and report folders, the model, llama.cpp and our CLI; make_file TYPE (cached by stamp).
source benches/lib/llama-files.sh
setup_llama_bench runtime-vs-llamacpp llama-bench

load_start="$(cut -d' ' -f1-3 /proc/loadavg)"

# results.tsv: file, path, threads, round, tool, pp t/s, pp sd, tg t/s, tg sd, peak RSS bytes, tg peak RSS bytes
results="$work/results.tsv"
: > "$results"

run_llama() {
  local name=$1 path=$2 t=$3 r=$4 out rss
  out="$(/usr/bin/time -f 'maxrss_kb %M' -o "$work/time.txt" "$llama_bin/llama-bench" -m "$path" -p "$pp" -n "$tg" -r "$reps" -t "$t" -o json 2> "$work/llama-bench.err")" \
    || die "llama-bench failed on $path (log: $work/llama-bench.err)"
  rss="$(awk '/maxrss_kb/ { print $2 * 1024 }' "$work/time.txt")"
  python3 - "$name" "$path" "$t" "$r" "$rss" "$out" >> "$results" <<'EOF'
import json, sys
name, path, t, r, rss, out = sys.argv[1:]
rows = json.loads(out)
pp = next(x for x in rows if x["n_prompt"] > 0 and x["n_gen"] == 0)
tg = next(x for x in rows if x["n_gen"] > 0 and x["n_prompt"] == 0)
print("\t".join(map(str, [name, path, t, r, "llama.cpp", pp["avg_ts"], pp["stddev_ts"], tg["avg_ts"], tg["stddev_ts"], rss, rss])))
EOF
}

run_ours() {
  local name=$1 path=$2 t=$3 r=$4 out
  out="$("$edgeforge" eval latency --model "$path" -p "$pp" -n "$tg" -r "$reps" --threads "$t" --rounding "$rounding" --json 2> "$work/edgeforge.err")" \
    || die "edgeforge eval latency failed on $path (log: $work/edgeforge.err)"
  python3 - "$name" "$path" "$t" "$r" "$out" >> "$results" <<'EOF'
import json, sys
name, path, t, r, out = sys.argv[1:]
x = json.loads(out)
print("\t".join(map(str, [name, path, t, r, "edgeforge", x["prefill_tok_s"], x["prefill_tok_s_sd"], x["decode_tok_s"], x["decode_tok_s_sd"], x["peak_rss_bytes"], x.get("tg_peak_rss_bytes") or x["peak_rss_bytes"]])))
EOF
}

declare -a rows=()
for f in $files; do
  case $f in
    Q4_1) rows+=("Q4_1 $model") ;;
    *) make_file "$f"; rows+=("$f $work/$f.gguf") ;;
  esac
done
if [[ -n ${OURS_GGUF:-} ]]; then
  [[ -f $OURS_GGUF ]] || die "OURS_GGUF=$OURS_GGUF is not a file"
  rows+=("gptq-Q4_0 $(cd "$(dirname "$OURS_GGUF")" && pwd)/$(basename "$OURS_GGUF")")
fi

for r in $(seq 1 "$rounds"); do
  for row in "${rows[@]}"; do
    read -r name path <<< "$row"
    for t in $threads_list; do
      log "round $r: $name, $t threads"
      if (( r % 2 == 1 )); then run_llama "$name" "$path" "$t" "$r"; run_ours "$name" "$path" "$t" "$r"
      else run_ours "$name" "$path" "$t" "$r"; run_llama "$name" "$path" "$t" "$r"; fi
    done
  done
done

python3 - "$results" "$report_dir" "$pp" "$tg" "$reps" "$rounds" "$rounding" "$llama_version" "$(git rev-parse --short HEAD)" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import json, os, sys
from collections import defaultdict
results, report_dir, pp, tg, reps, rounds, rounding, llama_version, commit, load_start, load_end = sys.argv[1:]
pp, tg = int(pp), int(tg)
best = defaultdict(dict)  # (file, threads) -> tool -> best row
paths = {}
for line in open(results):
    name, path, t, r, tool, pps, ppsd, tgs, tgsd, rss, tg_rss = line.rstrip("\n").split("\t")
    paths[name] = path
    row = {"pp_ts": float(pps), "pp_sd": float(ppsd), "tg_ts": float(tgs), "tg_sd": float(tgsd), "peak_rss_bytes": int(float(rss)), "tg_peak_rss_bytes": int(float(tg_rss))}
    b = best[(name, int(t))].get(tool)
    if b is None:
        best[(name, int(t))][tool] = dict(row, peak_rss_bytes=row["peak_rss_bytes"])
    else:
        # Best of the rounds for each rate; the smallest peak RSS.
        for k, sd in (("pp_ts", "pp_sd"), ("tg_ts", "tg_sd")):
            if row[k] > b[k]:
                b[k], b[sd] = row[k], row[sd]
        b["peak_rss_bytes"] = min(b["peak_rss_bytes"], row["peak_rss_bytes"])
        b["tg_peak_rss_bytes"] = min(b["tg_peak_rss_bytes"], row["tg_peak_rss_bytes"])
# KV cache of llama-family models: layers x 2 x kv width x tokens x 4 bytes (f32 in our runtime).
kv_bytes = 30 * 2 * 192 * max(pp, tg) * 4
out_rows, targets = [], []
for (name, t), tools in sorted(best.items()):
    ours, ref = tools.get("edgeforge"), tools.get("llama.cpp")
    if not ours or not ref:
        continue
    r = {"file": name, "path": paths[name], "file_bytes": os.path.getsize(paths[name]), "threads": t, "edgeforge": ours, "llama.cpp": ref,
         "pp_ratio": ours["pp_ts"] / ref["pp_ts"], "tg_ratio": ours["tg_ts"] / ref["tg_ts"]}
    out_rows.append(r)
    targets.append({"what": f"tg{tg} {name} {t} threads >= 1.0x llama.cpp", "value": r["tg_ratio"], "pass": r["tg_ratio"] >= 1.0})
    if t == 2:
        targets.append({"what": f"pp{pp} {name} 2 threads >= 0.9x llama.cpp", "value": r["pp_ratio"], "pass": r["pp_ratio"] >= 0.9})
    if name == "Q4_0" and t == 1:
        limit = 1.3 * r["file_bytes"] + kv_bytes
        targets.append({"what": f"peak RSS decoding Q4_0 (tg) <= 1.3 x file + KV cache ({limit / 2**20:.1f} MiB)", "value": ours["tg_peak_rss_bytes"] / 2**20, "pass": ours["tg_peak_rss_bytes"] <= limit})
report = {"protocol": f"pp{pp}, tg{tg}, {reps} repetitions per run, best of {rounds} alternating rounds", "rounding": rounding,
          "load_average_start": load_start, "load_average_end": load_end,
          "llama_cpp": llama_version, "edgeforge_commit": commit, "rows": out_rows, "targets": targets}
with open(os.path.join(report_dir, "runtime-vs-llamacpp.json"), "w") as fh:
    json.dump(report, fh, indent=2)
md = [f"# edgeforge runtime vs llama.cpp (llama-bench protocol)", "",
      f"{report['protocol']}; llama.cpp {llama_version}; edgeforge {commit}, `--rounding {rounding}`. t/s as mean ± sd of the repetitions of the best round. "
      "Peak RSS: llama-bench's whole process (`/usr/bin/time`), edgeforge's measurement (VmHWM reset after loading). Produced by benches/runtime-vs-llamacpp.sh.", "",
      f"Machine load average (1, 5, 15 min) at the start: {load_start}; at the end: {load_end} (2 cores: above 2, every figure is perturbed).", "",
      "| file | MiB | threads | test | edgeforge t/s | llama.cpp t/s | ratio | edgeforge RSS MiB | llama.cpp RSS MiB |",
      "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
for r in out_rows:
    o, l = r["edgeforge"], r["llama.cpp"]
    for test, k, sd, ratio in ((f"pp{pp}", "pp_ts", "pp_sd", r["pp_ratio"]), (f"tg{tg}", "tg_ts", "tg_sd", r["tg_ratio"])):
        md.append(f"| {r['file']} | {r['file_bytes'] / 2**20:.1f} | {r['threads']} | {test} | {o[k]:.2f} ± {o[sd]:.2f} | {l[k]:.2f} ± {l[sd]:.2f} | {ratio:.3f}x | {o['peak_rss_bytes'] / 2**20:.1f} | {l['peak_rss_bytes'] / 2**20:.1f} |")
md += ["", "## Targets (issue 14)", "", "| target | value | |", "| --- | ---: | --- |"]
for t in targets:
    md.append(f"| {t['what']} | {t['value']:.3f} | {'PASS' if t['pass'] else 'FAIL'} |")
with open(os.path.join(report_dir, "runtime-vs-llamacpp.md"), "w") as fh:
    fh.write("\n".join(md) + "\n")
print("\n".join(md))
EOF
