# Sourced by the benches that compare with llama.cpp on GGUF files of the reference model.
#
# setup_llama_bench NAME TOOL: defines log and die (messages prefixed with NAME), makes $work
# (BENCH_WORK, default ~/.cache/edgeforge/bench/runtime: made files are shared between benches) and
# $report_dir (REPORT_DIR, default reports/bench), fetches the reference model ($model), builds the pinned
# llama.cpp ($llama_bin, checked to hold TOOL; $llama_version) and our CLI ($edgeforge).
setup_llama_bench() {
  local name=$1 tool=$2
  bench_name=$name
  log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
  die() { echo "$bench_name: $*" >&2; exit 1; }
  report_dir="${REPORT_DIR:-reports/bench}"
  mkdir -p "${BENCH_WORK:-$HOME/.cache/edgeforge/bench/runtime}" "$report_dir"
  work="$(cd "${BENCH_WORK:-$HOME/.cache/edgeforge/bench/runtime}" && pwd)"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/edgeforge/target}"
  model="$(scripts/fetch-model.sh | tail -n 1)"
  [[ -f $model ]] || die "scripts/fetch-model.sh did not print a model file (got '$model')"
  llama_bin="$(scripts/build-llamacpp.sh | tail -n 1)"
  [[ -x $llama_bin/$tool ]] || die "no $tool in '$llama_bin'"
  llama_version="$("$llama_bin/$tool" --version 2>&1 | grep -m1 version || true)"
  cargo build --release --locked -q -p edgeforge-cli >&2
  edgeforge="$CARGO_TARGET_DIR/release/edgeforge"
}

# make_file TYPE: $work/TYPE.gguf from $model with `llama-quantize --allow-requantize MODEL TYPE`, unless
# $work/TYPE.gguf.stamp (llama.cpp version, the input's bytes and sha256, the command) says it is current.
make_file() {
  local type=$1 out="$work/$1.gguf" want
  want="llama.cpp: $llama_version; input: $(basename "$model") $(stat -c %s "$model") $(sha256sum "$model" | cut -d' ' -f1); command: llama-quantize --allow-requantize MODEL $type"
  if [[ -f $out && -f $out.stamp && "$(cat "$out.stamp")" == "$want" ]]; then
    log "cached  $type.gguf"
    return 0
  fi
  log "making  $type.gguf"
  "$llama_bin/llama-quantize" --allow-requantize "$model" "$out.tmp" "$type" > "$work/$type.log" 2>&1 || { rm -f "$out.tmp"; die "llama-quantize $type failed (log: $work/$type.log)"; }
  mv "$out.tmp" "$out"
  printf '%s\n' "$want" > "$out.stamp"
}
