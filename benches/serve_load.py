"""Bounded load test of an OpenAI-compatible server (benches/serve-load.sh runs it).

Usage: serve_load.py BASE_URL LABEL OUT_JSON [REQUESTS CONCURRENCY MAX_TOKENS]
REQUESTS streamed chat completions (default 200), CONCURRENCY at a time (default 8), each with a distinct
prompt naming its index; a request refused with 429 is counted and retried after 0.25 s (the same
index: it must still complete exactly once). Measures per request the end-to-end latency, the time to the
first token and the completion tokens (the usage in the last chunk), and after each completion the server's
RSS from /metrics (edgeforge only). Checks: every index completed exactly once, the response ids are
distinct, and (edgeforge) the server's own counters moved by exactly the client's counts. Stops by itself.
"""
import json
import statistics
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai

base, label, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
n_req = int(sys.argv[4]) if len(sys.argv) > 4 else 200
conc = int(sys.argv[5]) if len(sys.argv) > 5 else 8
max_tokens = int(sys.argv[6]) if len(sys.argv) > 6 else 32
root = base.rsplit("/v1", 1)[0]
client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=300)
model = client.models.list().data[0].id
lock = threading.Lock()
rejections = 0


def metrics():
    try:
        text = urllib.request.urlopen(root + "/metrics", timeout=10).read().decode()
    except Exception:
        return None
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def one(i):
    global rejections
    msgs = [{"role": "user", "content": f"Request {i}: write one sentence about the number {i}."}]
    while True:
        t0 = time.perf_counter()
        try:
            stream = client.chat.completions.create(model=model, messages=msgs, max_tokens=max_tokens, temperature=0.7, seed=i, stream=True, stream_options={"include_usage": True})
            ttft, ids, usage, finish, pieces = None, set(), None, None, 0
            for chunk in stream:
                ids.add(chunk.id)
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces += 1
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
                if getattr(chunk, "usage", None):
                    usage = chunk.usage
            latency = time.perf_counter() - t0
            break
        except openai.RateLimitError:
            with lock:
                rejections += 1
            time.sleep(0.25)
    m = metrics()
    rss = m.get("edgeforge_serve_resident_memory_bytes") if m else None
    # The usage of the last chunk; a server that sends none is counted one token per content chunk.
    tokens = usage.completion_tokens if usage else pieces
    return {"index": i, "latency_s": latency, "ttft_s": ttft, "completion_tokens": tokens, "ids": sorted(ids), "finish": finish, "rss_bytes": rss, "done_at": time.perf_counter()}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))]


before = metrics()
t_start = time.perf_counter()
with ThreadPoolExecutor(conc) as pool:
    results = list(pool.map(one, range(n_req)))
wall = time.perf_counter() - t_start
after = metrics()

results.sort(key=lambda r: r["done_at"])
indices = sorted(r["index"] for r in results)
all_ids = [i for r in results for i in r["ids"]]
tokens = sum(r["completion_tokens"] or 0 for r in results)
lat = [r["latency_s"] for r in results]
ttft = [r["ttft_s"] for r in results if r["ttft_s"] is not None]
out = {
    "label": label, "model": model, "requests": n_req, "concurrency": conc, "max_tokens": max_tokens,
    "wall_s": wall, "completion_tokens": tokens, "tokens_per_s": tokens / wall,
    "latency_p50_s": pct(lat, 50), "latency_p95_s": pct(lat, 95), "ttft_p50_s": pct(ttft, 50), "ttft_p95_s": pct(ttft, 95),
    "queue_rejections_429": rejections,
    "completed_each_once": indices == list(range(n_req)),
    "response_ids_distinct": len(all_ids) == len(set(all_ids)) == n_req,
    "every_response_finished": all(r["finish"] in ("stop", "length") for r in results),
}
if before and after:
    key = 'edgeforge_serve_requests_total{endpoint="/v1/chat/completions",status="200"}'
    key429 = 'edgeforge_serve_requests_total{endpoint="/v1/chat/completions",status="429"}'
    out["server_200_delta"] = after.get(key, 0) - before.get(key, 0)
    out["server_429_delta"] = after.get(key429, 0) - before.get(key429, 0)
    out["server_tokens_delta"] = after["edgeforge_serve_completion_tokens_total"] - before["edgeforge_serve_completion_tokens_total"]
    out["server_counts_match"] = out["server_200_delta"] == n_req and out["server_429_delta"] == rejections and out["server_tokens_delta"] == tokens
    first = [r["rss_bytes"] for r in results[:50] if r["rss_bytes"]]
    last = [r["rss_bytes"] for r in results[-50:] if r["rss_bytes"]]
    if first and last:
        out["rss_first50_mib"] = statistics.mean(first) / 2**20
        out["rss_last50_mib"] = statistics.mean(last) / 2**20
        out["rss_change_pct"] = 100 * (out["rss_last50_mib"] - out["rss_first50_mib"]) / out["rss_first50_mib"]
        out["rss_stable_within_10pct"] = abs(out["rss_change_pct"]) <= 10
json.dump(out, open(out_path, "w"), indent=2)
print(json.dumps(out))
