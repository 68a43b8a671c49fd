#!/usr/bin/env bash
# The serving benchmark: the same sweep of concurrent streaming requests (exactly
# --gen-tokens tokens each, after a --prompt-tokens prompt) run on the engine in-process
# (`helixflow bench --streams`), then over HTTP against `helixflow serve` on this machine
# (`helixflow bench --serve`), and a table of both with the server's overhead per level.
#
# Then what the platform costs each request (authentication, quota admission, usage records)
# at 1,000 requests/s: on SQLite, and on PostgreSQL when HELIXFLOW_BENCH_POSTGRES names a
# database (e.g. postgres://postgres@127.0.0.1:5432/test).
#
#   benches/serving.sh [--streams 1,4,16,64] [--prompt-tokens 64] [--gen-tokens 128]
#                      [--requests-per-stream 1]
set -euo pipefail
cd "$(dirname "$0")/.."

streams=1,4,16,64 prompt_tokens=64 gen_tokens=128 requests=1
while [ $# -gt 0 ]; do
  case "$1" in
    --streams) streams=$2; shift 2 ;;
    --prompt-tokens) prompt_tokens=$2; shift 2 ;;
    --gen-tokens) gen_tokens=$2; shift 2 ;;
    --requests-per-stream) requests=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
# One seed for both runs: the same prompts (new ones each time the script runs).
workload=(--streams "$streams" --prompt-tokens "$prompt_tokens" --gen-tokens "$gen_tokens"
          --requests-per-stream "$requests" --seed "$(date +%s)" --json)

cargo build --release --quiet --bin helixflow
helixflow="${CARGO_TARGET_DIR:-target}/release/helixflow"
tmp=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# In-process first, while no server holds memory or cores.
echo "in-process sweep..." >&2
"$helixflow" bench "${workload[@]}" > "$tmp/in-process.json"

echo "starting helixflow serve..." >&2
"$helixflow" serve --no-tls --port 0 --grpc-port 0 --data-dir "$tmp" 2> "$tmp/serve.log" &
server=$!
url=
for _ in $(seq 600); do
  url=$(sed -n 's/^helixflow: serving on //p' "$tmp/serve.log")
  [ -n "$url" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/ready")" = 200 ] && break
  kill -0 "$server" 2>/dev/null || { cat "$tmp/serve.log" >&2; exit 1; }
  sleep 0.2
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/ready")" = 200 ] \
  || { echo "the server never became ready" >&2; cat "$tmp/serve.log" >&2; exit 1; }

echo "HTTP sweep against $url..." >&2
# The server runs on its default platform database: requests carry the first admin key, and
# pay for its authentication and usage records as any client's would.
"$helixflow" bench "${workload[@]}" --serve "$url" --api-key "$(cat "$tmp/admin-key")" \
  > "$tmp/http.json"
kill "$server" && wait "$server" 2>/dev/null || true
server=

python3 - "$tmp/in-process.json" "$tmp/http.json" <<'PY'
import json, sys
local, http = (json.load(open(path)) for path in sys.argv[1:3])
print(f"{http['model']}: {http['prompt_tokens']} prompt tokens, {http['gen_tokens']} generated, "
      f"{http['requests_per_stream']} request(s) per stream; in = in-process, http = over HTTP")
# (title, key, decimals, extra column: "ratio" of http / in, "delta" of http - in)
groups = [("output tok/s", "output_tokens_per_s", 1, "ratio"), ("req/s", "requests_per_s", 2, None),
          ("ttft p50 ms", "ttft_ms_p50", 1, "delta"), ("ttft p99 ms", "ttft_ms_p99", 1, "delta"),
          ("itl p50 ms", "itl_ms_p50", 1, None), ("itl p99 ms", "itl_ms_p99", 1, None)]
width = lambda extra: 8 * (3 if extra else 2) - 1
print(" " * 7 + "".join(f" {title:^{width(extra)}}" for title, _, _, extra in groups))
print(f"{'streams':>7}" + "".join(
    f" {'in':>7} {'http':>7}" + (f" {extra:>7}" if extra else "") for *_, extra in groups))
for a, b in zip(local["levels"], http["levels"]):
    row = f"{a['streams']:>7}"
    for _, key, decimals, extra in groups:
        row += f" {a[key]:>7.{decimals}f} {b[key]:>7.{decimals}f}"
        if extra == "ratio":
            row += f" {b[key] / a[key]:>7.3f}"
        elif extra == "delta":
            row += f" {b[key] - a[key]:>+7.1f}"
    print(row)
PY

echo >&2
DATABASE_URL= "$helixflow" bench --platform --rate 1000 --seconds 10
if [ -n "${HELIXFLOW_BENCH_POSTGRES:-}" ]; then
  DATABASE_URL="$HELIXFLOW_BENCH_POSTGRES" "$helixflow" bench --platform --rate 1000 --seconds 10
fi
