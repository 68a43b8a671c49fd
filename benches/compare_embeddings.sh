#!/usr/bin/env bash
# HelixFlow's embeddings against ONNX Runtime on the same model in the same run (issue 23):
# sentences per second of all-MiniLM-L6-v2 (the default embedding model) for batches of 1, 8
# and 32 copies of a short sentence and of a 256-token text, tokenisation included, each
# engine's median of --runs; their ratio; and where each sits against the machine's fp32
# limit (threads × nominal clock × 32 flops a cycle: two 256-bit fused multiply-adds, or one
# 512-bit one as Zen 4 runs them).
#
#   benches/compare_embeddings.sh [--threads 2] [--runs 5] [--out FILE.json]
#
# The peer is benches/embeddings_onnx.py: the encoder as an fp32 ONNX graph written from the
# model's safetensors, on onnxruntime (installed once into $HELIXFLOW_BENCH_CACHE/venv-onnx,
# default ~/.cache/helixflow-bench). It checks first that its embeddings are HelixFlow's (cosine
# ≥ 0.9999), so that both compute the same thing. (sentence-transformers on PyTorch's CPU wheel
# would be the other peer; that wheel is not on PyPI.)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=2 runs=5 out=
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
cache="${HELIXFLOW_BENCH_CACHE:-$HOME/.cache/helixflow-bench}"
venv="$cache/venv-onnx"
if ! "$venv/bin/python" -c 'import onnxruntime, onnx, numpy, tokenizers' 2>/dev/null; then
  echo "installing onnxruntime into $venv..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q onnxruntime==1.23.2 onnx==1.19.1 numpy tokenizers==0.23.3 >&2
fi
# HELIXFLOW_BENCH_PROFILE=debug runs the debug build: a check of the script's plumbing (CI's),
# whose figures mean nothing.
profile=${HELIXFLOW_BENCH_PROFILE:-release}
case "$profile" in
  release) cargo build --release --quiet --bin helixflow ;;
  debug) cargo build --quiet --bin helixflow ;;
  *) echo "HELIXFLOW_BENCH_PROFILE is release or debug" >&2; exit 2 ;;
esac
helixflow="${CARGO_TARGET_DIR:-target}/$profile/helixflow"
model=$("$helixflow" models pull all-minilm-l6-v2 | sed -n 's/.* is at //p')
[ -d "$model" ] || { echo "could not find the default embedding model" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export HELIXFLOW_NUM_THREADS=$threads RAYON_NUM_THREADS=$threads
mapfile -t texts < <("$venv/bin/python" benches/embeddings_onnx.py "$model" --texts)
"$helixflow" embed -m all-minilm-l6-v2 "${texts[@]}" > "$tmp/check.json"
"$helixflow" bench --embeddings --json --runs "$runs" > "$tmp/ours.json"
"$venv/bin/python" benches/embeddings_onnx.py "$model" "$tmp/theirs.json" --threads "$threads" \
  --runs "$runs" --check "$tmp/check.json"
[ -n "$out" ] || { mkdir -p "$cache/results"; out="$cache/results/embeddings-$(date +%Y%m%d-%H%M%S).json"; }
CPU_MHZ="$(grep -m1 '^cpu MHz' /proc/cpuinfo | sed 's/.*: //' || echo 0)" \
CPU_MODEL="$(grep -m1 '^model name' /proc/cpuinfo | sed 's/.*: //')" \
  python3 - "$tmp/ours.json" "$tmp/theirs.json" "$out" "$threads" <<'PY'
import json, os, sys
ours, theirs = (json.load(open(p)) for p in sys.argv[1:3])
out, threads = sys.argv[3], int(sys.argv[4])
mhz = float(os.environ["CPU_MHZ"] or 0)
limit = threads * mhz * 1e6 * 32 / 1e9  # GFLOP/s
print(f"all-MiniLM-L6-v2, {threads} threads, median of {ours['runs']} runs; ratio = HelixFlow /"
      f" ONNX Runtime {theirs['onnxruntime']} (cosine to HelixFlow {theirs['min_cosine_to_helixflow']:.6f})")
print(f"{'input':6} {'tokens':>6} {'batch':>5} {'HelixFlow/s':>12} {'ORT/s':>9} {'ratio':>6}"
      f" {'HF GFLOP/s':>10} {'of fp32 limit':>13}")
rows = []
for a, b in zip(ours["results"], theirs["results"]):
    assert (a["input"], a["batch"], a["tokens_per_input"]) == (b["input"], b["batch"], b["tokens_per_input"]), (a, b)
    ratio = a["sentences_per_s"] / b["sentences_per_s"]
    share = a["gflops"] / limit if limit else 0.0
    print(f"{a['input']:6} {a['tokens_per_input']:>6} {a['batch']:>5} {a['sentences_per_s']:>12.1f}"
          f" {b['sentences_per_s']:>9.1f} {ratio:>5.2f}x {a['gflops']:>10.1f} {share:>12.0%}")
    rows.append({**{k: a[k] for k in ("input", "tokens_per_input", "batch")},
                 "helixflow_sentences_per_s": a["sentences_per_s"],
                 "onnxruntime_sentences_per_s": b["sentences_per_s"], "ratio": ratio,
                 "helixflow_gflops": a["gflops"], "onnxruntime_gflops": b["gflops"],
                 "of_fp32_limit": share})
print(f"fp32 limit: {limit:.0f} GFLOP/s ({threads} threads x {mhz:.0f} MHz x 32; {os.environ['CPU_MODEL']})")
json.dump({"threads": threads, "fp32_limit_gflops": limit, "onnxruntime": theirs["onnxruntime"],
           "min_cosine": theirs["min_cosine_to_helixflow"], "results": rows}, open(out, "w"), indent=1)
print(f"summary: {out}")
PY
