#!/usr/bin/env bash
# Runs `helixflow bench` and llama.cpp (llama-cpp-python) on the same GGUF in the same run,
# alternating, and prints both with the ratio. llama-cpp-python is installed into a cached
# virtual environment the first time (it compiles llama.cpp: several minutes).
#
# llama.cpp is built for AVX2 + FMA + F16C without AVX-512 (the machine class the project
# targets, and the build the golden outputs came from); set LLAMA_CMAKE_ARGS to change that.
#
#   benches/compare_llama_cpp.sh [--prompt-tokens N] [--gen-tokens N] [--rounds R]
set -euo pipefail
cd "$(dirname "$0")/.."

prompt_tokens=512 gen_tokens=128 rounds=2
while [ $# -gt 0 ]; do
  case "$1" in
    --prompt-tokens) prompt_tokens=$2; shift 2 ;;
    --gen-tokens) gen_tokens=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

venv="${HELIXFLOW_BENCH_VENV:-$HOME/.cache/helixflow-bench/venv-avx2}"
cmake_args="${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
  echo "installing llama-cpp-python==0.3.36 into $venv (compiles llama.cpp)..." >&2
  python3 -m venv "$venv"
  CMAKE_ARGS="$cmake_args" "$venv/bin/pip" install -q --no-binary llama-cpp-python \
    llama-cpp-python==0.3.36 numpy
fi

cargo build --release --quiet --bin helixflow
target="${CARGO_TARGET_DIR:-target}"
helixflow="$target/release/helixflow"
gguf=$("$helixflow" models pull smollm2-135m-instruct | sed -n 's/.* is at //p')

export RAYON_NUM_THREADS=2
for round in $(seq "$rounds"); do
  ours=$("$helixflow" bench --json --prompt-tokens "$prompt_tokens" --gen-tokens "$gen_tokens")
  theirs=$("$venv/bin/python" benches/llama_cpp_bench.py "$gguf" --prompt-tokens "$prompt_tokens" --gen-tokens "$gen_tokens")
  python3 - "$ours" "$theirs" "$round" <<'PY'
import json, sys
ours, theirs, round_ = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
for key, label in (("prefill_tokens_per_s", "prefill"), ("decode_tokens_per_s", "decode")):
    print(f"round {round_} {label:8s} helixflow {ours[key]:8.1f} tok/s   llama.cpp {theirs[key]:8.1f} tok/s   ratio {ours[key] / theirs[key]:.2f}x")
PY
done
