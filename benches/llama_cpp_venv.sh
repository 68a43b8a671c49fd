#!/usr/bin/env bash
# Installs llama.cpp's Python binding (llama-cpp-python 0.3.36, compiled here) with numpy and
# gguf into a cached virtual environment, and prints its interpreter. The architecture tests
# (helixflow-core/tests/architectures.rs, through HELIXFLOW_LLAMA_CPP_PYTHON) and benchmarks
# compare HelixFlow with it.
#
#   benches/llama_cpp_venv.sh            # $HELIXFLOW_BENCH_CACHE/venv-native (default cache
#                                        # ~/.cache/helixflow-bench)
#
# llama.cpp is built for this CPU's vector ISA without -march=native: AVX2, FMA and F16C,
# plus AVX-512 with VNNI where the CPU has them; AMX stays off, because several of our
# machines advertise it and kill the process on its first tile instruction. Only the
# libraries are built (no multimodal tools), which keeps a cold install to a few minutes.
# LLAMA_CMAKE_ARGS replaces the flags; HELIXFLOW_LLAMA_CPP_VENV the environment's place.
set -euo pipefail
cache="${HELIXFLOW_BENCH_CACHE:-$HOME/.cache/helixflow-bench}"
venv="${HELIXFLOW_LLAMA_CPP_VENV:-$cache/venv-native}"
if "$venv/bin/python" -c 'import llama_cpp, gguf, numpy' 2>/dev/null; then
  echo "$venv/bin/python"
  exit 0
fi
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
has() { [[ " $flags " == *" $1 "* ]]; }
isa="-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
if has avx512f && has avx512bw && has avx512vl && has avx512dq && has avx512_vnni; then
  isa="$isa -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON"
else
  isa="$isa -DGGML_AVX512=OFF"
fi
cmake_args="${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF $isa -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF}"
echo "installing llama-cpp-python==0.3.36 into $venv ($cmake_args; compiles llama.cpp)..." >&2
mkdir -p "$cache"
python3 -m venv "$venv"
CMAKE_ARGS="$cmake_args" "$venv/bin/pip" install -q --no-binary llama-cpp-python \
  llama-cpp-python==0.3.36 numpy gguf==0.19.0 >&2
echo "$venv/bin/python"
