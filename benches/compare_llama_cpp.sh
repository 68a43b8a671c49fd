#!/usr/bin/env bash
# HelixFlow against llama.cpp (llama-cpp-python) on the same GGUF files in the same run, as
# issue 7 asks: each round runs both engines one after the other (which goes first alternates
# from round to round), and the table gives the medians over the rounds, HelixFlow ÷ llama.cpp,
# and the issue's targets. A JSON summary with every sample is written too (its path is
# printed at the end).
#
#   benches/compare_llama_cpp.sh [--models q4_1,gemma3,llama1b-q4_k_m,...] [--figures FIGURES]
#       [--rounds 3] [--threads 2] [--prompt-tokens 500] [--short-prompt-tokens 37]
#       [--gen-tokens 128] [--streams 4,16] [--llama-avx2] [--llama-flash-attn]
#       [--block-products] [--out FILE.json]
#
#   --models   comma-separated, default all of:
#              q4_1            SmolLM2-135M-Instruct Q4_1, the default chat model (`helixflow
#                              models pull`);
#              q4_0, q8_0      copies of it requantised by llama.cpp's quantizer (the token
#                              embedding, tied to the output projection, keeps the original's
#                              type, so the copies differ only in the layers' weights);
#              gemma3          Gemma 3 270M Q4_K_M, the second built-in model;
#              llama1b-q4_k_m, llama1b-q8_0          a Llama-3.2-1B-shaped model and
#              qwen3-0.6b-q4_k_m, qwen3-0.6b-q8_0    a Qwen3-0.6B-shaped one, random weights
#                              written by benches/synthetic_models.py and quantised by
#                              llama.cpp's quantizer as llama.cpp's own tools would.
#              Made copies are kept in $HELIXFLOW_BENCH_CACHE/models (default
#              ~/.cache/helixflow-bench/models; delete them to remake them); the tensor types of
#              a copy are printed when it is made.
#   --figures  comma-separated, default all:
#              prefill      prefill rate of the --prompt-tokens prompt, evaluated as one batch
#                           into an empty cache (tokens / seconds of that forward pass);
#              decode-short decode rate of --gen-tokens greedy tokens, one per step, after the
#                           --short-prompt-tokens prompt (tokens / seconds of the steps, the
#                           prefill excluded);
#              decode-long  the same after the --prompt-tokens prompt;
#              aggregate    aggregate decode rate with N = each of --streams concurrent
#                           sequences of a --short-prompt-tokens prompt and --gen-tokens tokens
#                           each. HelixFlow's through its engine (`helixflow bench --streams N`,
#                           requests sent at once: every token after each request's first,
#                           divided by the time from the first request's first token to the
#                           last request's last token); llama.cpp's as llama-batched-bench
#                           measures it (`llama_cpp_bench.py batched`: N sequences in one
#                           context, one batch per step). The JSON also keeps all output tokens
#                           / the whole wall time, prefills included (`output_tokens_per_s`).
#   --threads  threads of both engines (HELIXFLOW_NUM_THREADS and RAYON_NUM_THREADS for
#              HelixFlow, n_threads and n_threads_batch for llama.cpp); a list such as 1,2
#              measures each in turn.
#   --rounds   rounds per model and thread count; each round is one measurement of each figure
#              per engine (after an untimed warm-up), in fresh processes.
#   --llama-avx2  llama.cpp built for AVX2 + FMA + F16C only (the build the golden outputs
#              came from), in its own cached environment, instead of this CPU's own ISA.
#   --llama-flash-attn  llama.cpp with flash attention (off by default, as llama-cpp-python's
#              default; llama-cli's "auto" turns it on on CPUs).
#   --block-products  HelixFlow with block-order matrix products (HELIXFLOW_BLOCK_PRODUCTS=1:
#              faster, but not llama.cpp's bits), as llama.cpp with flash attention is not
#              either. Off by default: HelixFlow reproduces llama.cpp's arithmetic.
#
# The targets (issue 23), for every model at 2 threads: decode ≥ 1.3× llama.cpp (after either
# prompt), prefill ≥ 1.5×, aggregate decode at 16 sequences ≥ 1.5× llama.cpp's batched decode
# at 16; and for the default model (issue 7) aggregate decode at 16 ≥ 4× llama.cpp's single
# stream. After the table, each figure is set against the machine's limits: decode against
# the memory read bandwidth measured in the same run (weight bytes each token reads × tokens
# per second), prefill in multiply-adds per cycle per thread (at the nominal clock of
# /proc/cpuinfo) against the 64 of one 512-bit (or two 256-bit) byte-dot instructions a cycle.
# A quick check: --models q4_1 --rounds 1 --prompt-tokens 64 --gen-tokens 16.
#
# llama-cpp-python==0.3.36 comes from benches/llama_cpp_venv.sh: built once into a cached
# virtual environment for this CPU's vector ISA (AVX2, or AVX-512 with VNNI), AMX off, as the
# architecture tests use it; LLAMA_CMAKE_ARGS changes the build.
set -euo pipefail
cd "$(dirname "$0")/.."

all_models=q4_1,q4_0,q8_0,gemma3,llama1b-q4_k_m,llama1b-q8_0,qwen3-0.6b-q4_k_m,qwen3-0.6b-q8_0
models=$all_models figures=prefill,decode-short,decode-long,aggregate rounds=3 threads=2
prompt_tokens=500 short_prompt_tokens=37 gen_tokens=128 streams=4,16 out= flash_attn=()
avx2=
while [ $# -gt 0 ]; do
  case "$1" in
    --models) models=$2; shift 2 ;;
    --figures) figures=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --prompt-tokens) prompt_tokens=$2; shift 2 ;;
    --short-prompt-tokens) short_prompt_tokens=$2; shift 2 ;;
    --gen-tokens) gen_tokens=$2; shift 2 ;;
    --streams) streams=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --llama-avx2) avx2=1; shift ;;
    --llama-flash-attn) flash_attn=(--flash-attn); shift ;;
    --block-products) export HELIXFLOW_BLOCK_PRODUCTS=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
for m in ${models//,/ }; do
  [[ ",$all_models," == *",$m,"* ]] || { echo "unknown model $m ($all_models)" >&2; exit 2; }
done
for f in ${figures//,/ }; do
  case "$f" in prefill|decode-short|decode-long|aggregate) ;;
    *) echo "unknown figure $f (prefill, decode-short, decode-long, aggregate)" >&2; exit 2 ;;
  esac
done
has() { [[ ",$figures," == *",$1,"* ]]; }

cache="${HELIXFLOW_BENCH_CACHE:-$HOME/.cache/helixflow-bench}"
if [ -n "$avx2" ]; then
  export HELIXFLOW_LLAMA_CPP_VENV="$cache/venv-avx2"
  export LLAMA_CMAKE_ARGS="${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DLLAVA_BUILD=OFF}"
fi
python=$(bash benches/llama_cpp_venv.sh)
llama=("$python" benches/llama_cpp_bench.py)

# HELIXFLOW_BENCH_PROFILE=debug runs the debug build: a check of the script's plumbing (CI's),
# whose figures mean nothing.
profile=${HELIXFLOW_BENCH_PROFILE:-release}
case "$profile" in
  release) cargo build --release --quiet --bin helixflow ;;
  debug) cargo build --quiet --bin helixflow ;;
  *) echo "HELIXFLOW_BENCH_PROFILE is release or debug" >&2; exit 2 ;;
esac
helixflow="${CARGO_TARGET_DIR:-target}/$profile/helixflow"
pulled() { "$helixflow" models pull "$1" | sed -n 's/.* is at //p'; }
original=$(pulled smollm2-135m-instruct)
[ -f "$original" ] || { echo "could not find the default chat model" >&2; exit 1; }

# The models, each as name=path; copies are made once into the cache.
mkdir -p "$cache/models"
paths=()
for m in ${models//,/ }; do
  case "$m" in
    q4_1) path=$original ;;
    gemma3) path=$(pulled gemma-3-270m) ;;
    q4_0|q8_0)
      path="$cache/models/smollm2-135m-instruct-$m.gguf"
      if [ ! -f "$path" ]; then
        echo "requantising $(basename "$original") to $m with llama.cpp..." >&2
        "${llama[@]}" quantize "$original" "$path" "$m" --keep-embedding
      fi ;;
    *)
      shape=${m%-*} type=${m##*-} shape=${shape/llama1b/llama-1b}
      path="$cache/models/$shape-random-$type.gguf"
      if [ ! -f "$path" ]; then
        f16="$cache/models/$shape-random-f16.gguf"
        if [ ! -f "$f16" ]; then
          echo "writing a random-weight $shape model..." >&2
          "$python" benches/synthetic_models.py "$shape" "$f16.partial"
          mv "$f16.partial" "$f16"
        fi
        echo "quantising it to $type with llama.cpp..." >&2
        "${llama[@]}" quantize "$f16" "$path" "$type"
      fi ;;
  esac
  [ -f "$path" ] || { echo "could not find or make the model $m" >&2; exit 1; }
  paths+=("$m=$path")
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The prompt lengths llama.cpp runs: the long one, the short one or both.
llama_prompts=
if has prefill || has decode-long; then llama_prompts=$prompt_tokens; fi
if has decode-short || has aggregate; then
  llama_prompts=${llama_prompts:+$llama_prompts,}$short_prompt_tokens
fi
[ -n "$llama_prompts" ] || { echo "--figures selects nothing" >&2; exit 2; }

# One round of each engine on model $path with $t threads, into files named $at-*.json.
quiet() {  # runs "$@" with its stderr kept aside, shown only if it fails
  "$@" 2> "$at.stderr" || { cat "$at.stderr" >&2; return 1; }
}
ours() {
  if has prefill || has decode-long; then
    quiet "$helixflow" bench --json --model "$path" --runs 1 \
      --prompt-tokens "$prompt_tokens" --gen-tokens "$gen_tokens" > "$at-ours-long.json"
  fi
  if has decode-short; then
    quiet "$helixflow" bench --json --model "$path" --runs 1 \
      --prompt-tokens "$short_prompt_tokens" --gen-tokens "$gen_tokens" > "$at-ours-short.json"
  fi
  if has aggregate; then
    quiet "$helixflow" bench --json --model "$path" --streams "$streams" \
      --prompt-tokens "$short_prompt_tokens" --gen-tokens "$gen_tokens" --seed "$r" \
      > "$at-ours-streams.json"
  fi
}
theirs() {
  quiet "${llama[@]}" bench "$path" --threads "$t" --prompts "$llama_prompts" \
    --gen-tokens "$gen_tokens" ${flash_attn[@]+"${flash_attn[@]}"} > "$at-llama.json"
  if has aggregate; then
    quiet "${llama[@]}" batched "$path" --threads "$t" --streams "$streams" \
      --prompt-tokens "$short_prompt_tokens" --gen-tokens "$gen_tokens" \
      ${flash_attn[@]+"${flash_attn[@]}"} > "$at-llama-batched.json"
  fi
}

for t in ${threads//,/ }; do
  # HelixFlow's worker pool takes the first of these that is set (rayon the second).
  export HELIXFLOW_NUM_THREADS=$t RAYON_NUM_THREADS=$t
  for entry in "${paths[@]}"; do
    m=${entry%%=*} path=${entry#*=}
    for r in $(seq "$rounds"); do
      at="$tmp/t$t-$m-r$r"
      echo "threads $t, $m, round $r/$rounds..." >&2
      if [ $((r % 2)) = 1 ]; then ours; theirs; else theirs; ours; fi
    done
  done
done

# The machine's limits: read bandwidth per thread count, and what each model's token costs.
for t in ${threads//,/ }; do "${llama[@]}" bandwidth --threads "$t" > "$tmp/bandwidth-t$t.json"; done
for entry in "${paths[@]}"; do
  "${llama[@]}" footprint "${entry#*=}" > "$tmp/footprint-${entry%%=*}.json"
done
mhz=$(grep -m1 '^cpu MHz' /proc/cpuinfo | sed 's/.*: //' || true)

if [ -z "$out" ]; then
  mkdir -p "$cache/results"
  out="$cache/results/compare-$(date +%Y%m%d-%H%M%S).json"
fi
HELIXFLOW_COMMIT="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- || echo -dirty)" \
CPU_MODEL="$(grep -m1 '^model name' /proc/cpuinfo | sed 's/.*: //')" CPU_MHZ="${mhz:-0}" \
  python3 - "$tmp" "$out" "$models" "$figures" "$threads" "$rounds" "$prompt_tokens" \
  "$short_prompt_tokens" "$gen_tokens" "$streams" "${paths[@]}" <<'PY'
import json, os, statistics, sys

tmp, out, models, figures, threads, rounds = sys.argv[1:7]
prompt, short, gen = (int(x) for x in sys.argv[7:10])
streams = [int(n) for n in sys.argv[10].split(",")]
paths = dict(entry.split("=", 1) for entry in sys.argv[11:])
figures, rounds = figures.split(","), int(rounds)
mhz = float(os.environ["CPU_MHZ"] or 0)

def load(t, m, r, name):
    with open(os.path.join(tmp, f"t{t}-{m}-r{r}-{name}.json")) as f:
        return json.load(f)

def llama(t, m, r, prompt_tokens, key):
    results = load(t, m, r, "llama")["results"]
    return next(x[key] for x in results if x["prompt_tokens"] == prompt_tokens)

def level(t, m, r, n, key, engine="ours-streams"):
    return next(l[key] for l in load(t, m, r, engine)["levels"] if l["streams"] == n)

def extra(name):
    with open(os.path.join(tmp, f"{name}.json")) as f:
        return json.load(f)

# (figure, label, HelixFlow's sample, llama.cpp's sample, target ratio, for the default model
# only, what limits it: "bandwidth", "compute" or None)
rows = []
if "prefill" in figures:
    rows.append(("prefill", f"prefill {prompt} tok",
                 lambda t, m, r: load(t, m, r, "ours-long")["prefill_tokens_per_s"],
                 lambda t, m, r: llama(t, m, r, prompt, "prefill_tokens_per_s"), 1.5, False,
                 "compute"))
if "decode-short" in figures:
    rows.append(("decode_short", f"decode {gen} after {short}",
                 lambda t, m, r: load(t, m, r, "ours-short")["decode_tokens_per_s"],
                 lambda t, m, r: llama(t, m, r, short, "decode_tokens_per_s"), 1.3, False,
                 "bandwidth"))
if "decode-long" in figures:
    rows.append(("decode_long", f"decode {gen} after {prompt}",
                 lambda t, m, r: load(t, m, r, "ours-long")["decode_tokens_per_s"],
                 lambda t, m, r: llama(t, m, r, prompt, "decode_tokens_per_s"), 1.3, False,
                 "bandwidth"))
if "aggregate" in figures:
    for n in streams:
        for key, label in (("decode_tokens_per_s", f"agg decode x{n} seqs"),
                           ("output_tokens_per_s", f"  (all output x{n})")):
            target = 1.5 if n == 16 and key == "decode_tokens_per_s" else None
            rows.append((f"aggregate_{n}_{key.removesuffix('_tokens_per_s')}", label,
                         lambda t, m, r, n=n, key=key: level(t, m, r, n, key),
                         lambda t, m, r, n=n, key=key: level(t, m, r, n, key,
                                                             "llama-batched"),
                         target, False, "compute" if key.startswith("decode") else None))
    if 16 in streams:
        rows.append(("aggregate_16_vs_single", "agg x16 vs 1 llama seq",
                     lambda t, m, r: level(t, m, r, 16, "decode_tokens_per_s"),
                     lambda t, m, r: llama(t, m, r, short, "decode_tokens_per_s"), 4.0, True,
                     None))

first = load(threads.split(",")[0], models.split(",")[0], 1, "llama")
summary = {"helixflow_commit": os.environ["HELIXFLOW_COMMIT"], "cpu": os.environ["CPU_MODEL"],
           "cpu_mhz": mhz,
           "llama_cpp": {k: first[k] for k in ("llama_cpp_python", "n_batch", "flash_attn")},
           "block_products": os.environ.get("HELIXFLOW_BLOCK_PRODUCTS") == "1",
           "prompt_tokens": prompt, "short_prompt_tokens": short, "gen_tokens": gen,
           "streams": streams, "rounds": rounds, "models": {m: paths[m] for m in paths},
           "read_bytes_per_s": {t: extra(f"bandwidth-t{t}")["read_bytes_per_s"]
                                for t in threads.split(",")},
           "footprints": {m: extra(f"footprint-{m}") for m in paths},
           "targets_apply_to": "2 threads", "results": []}
print(f"medians of {rounds} round(s); ratio = HelixFlow / llama.cpp; aggregate rows compare "
      "with llama.cpp's batched decode of as many sequences")
print(f"{'model':18} {'thr':>3} {'figure':24} {'HelixFlow':>10} {'llama.cpp':>10} {'ratio':>7}"
      f" {'target':>7}  {'verdict':8} HelixFlow against the machine")
for t in threads.split(","):
    bandwidth = summary["read_bytes_per_s"][t]
    for m in models.split(","):
        fp = summary["footprints"][m]
        for key, label, ours, theirs, target, default_only, limit in rows:
            if default_only and m != "q4_1":
                continue
            a = [ours(t, m, r) for r in range(1, rounds + 1)]
            b = [theirs(t, m, r) for r in range(1, rounds + 1)]
            ratio = statistics.median(a) / statistics.median(b)
            applies = target is not None and t == "2"
            verdict = ("met" if ratio >= target else "NOT MET") if applies else ""
            shown = f"≥{target:.1f}x" if applies else ""
            against = {}
            if limit == "bandwidth":
                read = statistics.median(a) * fp["weight_bytes_per_token"]
                against = {"weight_read_bytes_per_s": read, "of_bandwidth": read / bandwidth}
                note = f"{read / 1e9:.1f} GB/s of weights, {read / bandwidth:.0%} of {bandwidth / 1e9:.1f}"
            elif limit == "compute":
                macs = statistics.median(a) * fp["macs_per_token"]
                per_cycle = macs / (int(t) * mhz * 1e6) if mhz else 0.0
                against = {"macs_per_s": macs, "macs_per_cycle_per_thread": per_cycle}
                note = f"{macs / 1e9:.0f} GMAC/s, {per_cycle:.1f} MAC/cycle/thread of 64"
            else:
                note = ""
            print(f"{m:18} {t:>3} {label:24} {statistics.median(a):10.1f}"
                  f" {statistics.median(b):10.1f} {ratio:6.2f}x {shown:>7}  {verdict:8} {note}")
            summary["results"].append({
                "model": m, "threads": int(t), "figure": key, "label": label.strip(),
                "helixflow_tokens_per_s": statistics.median(a),
                "llama_cpp_tokens_per_s": statistics.median(b), "ratio": ratio,
                "target_ratio": target if applies else None,
                "met": ratio >= target if applies else None,
                "helixflow_samples": a, "llama_cpp_samples": b, **against})
print(f"memory read bandwidth (measured): "
      + ", ".join(f"{t} threads {b / 1e9:.1f} GB/s" for t, b in summary["read_bytes_per_s"].items())
      + f"; nominal clock {mhz:.0f} MHz ({os.environ['CPU_MODEL']})")
with open(out, "w") as f:
    json.dump(summary, f, indent=1)
print(f"summary: {out}")
PY
