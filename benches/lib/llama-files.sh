# Sourced by benches: GGUF files of the reference model in other types, made with the pinned llama.cpp.
#
# make_file TYPE: $work/TYPE.gguf from $model with `llama-quantize --allow-requantize MODEL TYPE`, unless
# $work/TYPE.gguf.stamp (llama.cpp version, the input's bytes and sha256, the command) says it is current.
# Needs: $model, $work, $llama_bin, $llama_version, and log/die functions.
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
