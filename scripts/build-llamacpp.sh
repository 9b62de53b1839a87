#!/usr/bin/env bash
# Build llama.cpp, the tool our figures are checked against, from the llama-cpp-python sdist on PyPI
# (pinned, so figures stay comparable). Prints the folder holding llama-perplexity, llama-tokenize,
# llama-bench and llama-quantize. For benchmarks and checks only: edgeforge never needs it to run.
# Root: $LLAMA_ROOT, else ~/.cache/edgeforge/llama.cpp. About 12 minutes on 2 cores the first time.
# WITH_SERVER=1: build llama-server instead, in its own build folder (build-server/), and print that bin
# folder (benches/serve-load.sh LLAMA=1).
set -euo pipefail
readonly version=0.3.36
root="${LLAMA_ROOT:-$HOME/.cache/edgeforge/llama.cpp}"
src="$root/llama_cpp_python-$version/vendor/llama.cpp"
bin="$src/build/bin"
tools=(llama-perplexity llama-tokenize llama-bench llama-quantize llama-imatrix)
build="$src/build"
server=OFF
if [[ "${WITH_SERVER:-0}" == 1 ]]; then
  build="$src/build-server"; bin="$build/bin"; tools=(llama-server); server=ON
fi

have_all() { for t in "${tools[@]}"; do [[ -x "$bin/$t" ]] || return 1; done; }
if have_all; then echo "$bin"; exit 0; fi

command -v cmake >/dev/null || { apt-get update -qq >&2; apt-get install -y -qq cmake >&2; }
mkdir -p "$root/sdist"
sdist="$root/sdist/llama_cpp_python-$version.tar.gz"
if [[ ! -f "$sdist" ]]; then
  # pip reads the sdist's metadata with its build backend even for a download; without build isolation
  # that backend must already be installed (a fresh machine does not have it).
  python3 -m pip install --quiet --disable-pip-version-check scikit-build-core >&2
  python3 -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    -d "$root/sdist" "llama-cpp-python==$version" >&2
fi
[[ -d "$src" ]] || tar -xzf "$sdist" -C "$root"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER="$server" >&2
cmake --build "$build" -j"$(nproc)" --target "${tools[@]}" >&2
have_all || { echo "build-llamacpp: build finished but tools are missing in $bin" >&2; exit 1; }
echo "$bin"
