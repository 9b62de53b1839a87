#!/usr/bin/env bash
# Benchmark (issue 19): `edgeforge serve` under a bounded load on 127.0.0.1 only.
#
# What it does:
#   1. Serves EXPORT_DIR (an export folder with manifest.json and a GGUF; default: the Q4_0 export that
#      benches/first-command.sh leaves, else runs recipes/smollm2-gptq-q4_0-quick.yaml to make one) with
#      `edgeforge serve --listen 127.0.0.1:0` (sandboxed, --max-queue $MAX_QUEUE, --threads $THREADS).
#   2. benches/serve_load.py with OpenAI's Python client: $REQUESTS streamed chat completions, $CONCURRENCY at
#      a time, at most $MAX_TOKENS tokens each; 429s are counted and retried. p50/p95 latency and TTFT,
#      tokens/s, each request completed exactly once, the server's counters equal to the client's, RSS of
#      the first 50 against the last 50 requests (stable within 10%).
#   3. With LLAMA=1 also llama.cpp's llama-server on the same GGUF under the same load (labelled; no RSS).
#   4. SIGTERM, then writes $REPORT_DIR/serve-load.{json,md}.
#
# How long (2 shared cores): ~2-4 minutes per server at the defaults.
#
# Usage: benches/serve-load.sh
#   EXPORT_DIR=path  REQUESTS=200  CONCURRENCY=8  MAX_TOKENS=32  MAX_QUEUE=4  THREADS=2  LLAMA=0
#   REPORT_DIR=reports/bench  CARGO_TARGET_DIR=~/.cache/edgeforge/target
# Not part of CI. Needs `pip install openai==3.63.0` (scripts/test.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/edgeforge/target}"
requests="${REQUESTS:-200}"; concurrency="${CONCURRENCY:-8}"; max_tokens="${MAX_TOKENS:-32}"
max_queue="${MAX_QUEUE:-4}"; threads="${THREADS:-2}"; report_dir="${REPORT_DIR:-reports/bench}"
work="$(mktemp -d)"; pids=()
# Servers this script started are stopped whatever happens (a failed start included).
trap 'for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
cargo build --release -p edgeforge-cli >&2
bin="$CARGO_TARGET_DIR/release/edgeforge"
dir="${EXPORT_DIR:-$HOME/.cache/edgeforge/bench/first-command/run}"
if [[ ! -f "$dir/manifest.json" ]]; then
  dir="$HOME/.cache/edgeforge/bench/serve-load/run"
  [[ -f "$dir/manifest.json" ]] || "$bin" run recipes/smollm2-gptq-q4_0-quick.yaml --out "$dir" >&2
fi
gguf="$(ls "$dir"/*.gguf | head -1)"

# Start a server command in the background, wait for its address; prints "PID ADDR".
wait_addr() { # log-file pattern
  for _ in $(seq 600); do
    if grep -q "$2" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "serve-load.sh: server did not start; log:" >&2; cat "$1" >&2; return 1
}

"$bin" serve "$dir" --listen 127.0.0.1:0 --threads "$threads" --max-queue "$max_queue" --max-tokens "$max_tokens" 2>"$work/serve.log" &
pid=$!; pids+=("$pid")
wait_addr "$work/serve.log" '"event":"listening"'
addr="$(grep '"event":"listening"' "$work/serve.log" | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["addr"])')"
python3 benches/serve_load.py "http://$addr/v1" edgeforge "$work/edgeforge.json" "$requests" "$concurrency" "$max_tokens" >&2
kill -TERM "$pid"; wait "$pid" || true
sandbox="$(grep '"event":"listening"' "$work/serve.log" | python3 -c 'import json,sys; print(json.dumps(json.loads(sys.stdin.readline())["sandbox"]))')"

runs=("$work/edgeforge.json")
if [[ "${LLAMA:-0}" == 1 ]]; then
  llama_bin="$(WITH_SERVER=1 scripts/build-llamacpp.sh)"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  "$llama_bin/llama-server" -m "$gguf" --host 127.0.0.1 --port "$port" -t "$threads" -c 2048 -np 1 >"$work/llama.log" 2>&1 &
  lpid=$!; pids+=("$lpid")
  wait_addr "$work/llama.log" 'listening on http'
  python3 benches/serve_load.py "http://127.0.0.1:$port/v1" llama-server "$work/llama.json" "$requests" "$concurrency" "$max_tokens" >&2
  kill -TERM "$lpid"; wait "$lpid" || true
  runs+=("$work/llama.json")
fi

mkdir -p "$report_dir"
python3 - "$report_dir" "$dir" "$sandbox" "$max_queue" "$threads" "${runs[@]}" <<'PY'
import json, sys, datetime
out_dir, export, sandbox, max_queue, threads, *runs = sys.argv[1:]
rows = [json.load(open(r)) for r in runs]
doc = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "export": export,
       "sandbox": json.loads(sandbox), "max_queue": int(max_queue), "threads": int(threads), "runs": rows}
json.dump(doc, open(f"{out_dir}/serve-load.json", "w"), indent=2)
md = [f"# edgeforge serve under load ({doc['date']})", "",
      f"Export `{export}`, {rows[0]['requests']} streamed chat completions, {rows[0]['concurrency']} at a time, "
      f"max_tokens {rows[0]['max_tokens']}, temperature 0.7, 127.0.0.1, --threads {threads}, --max-queue {max_queue} "
      f"(429s counted and retried after 0.25 s), sandbox {json.dumps(doc['sandbox'])}. benches/serve-load.sh.", "",
      "| server | p50 latency s | p95 latency s | TTFT p50 s | TTFT p95 s | tokens/s | 429s | each once | ids distinct | server counters = client | RSS first 50 → last 50 MiB |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- |"]
for r in rows:
    rss = f"{r['rss_first50_mib']:.1f} → {r['rss_last50_mib']:.1f} ({r['rss_change_pct']:+.1f}%)" if "rss_first50_mib" in r else "–"
    md.append(f"| {r['label']} | {r['latency_p50_s']:.2f} | {r['latency_p95_s']:.2f} | {r['ttft_p50_s']:.3f} | {r['ttft_p95_s']:.3f} | "
              f"{r['tokens_per_s']:.1f} | {r['queue_rejections_429']} | {r['completed_each_once']} | {r['response_ids_distinct']} | "
              f"{r.get('server_counts_match', '–')} | {rss} |")
open(f"{out_dir}/serve-load.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
