#!/usr/bin/env bash
# Soak and overload run of `helixflow serve` on loopback (issue 19's reliability suite):
# builds the release binary, starts the server on the default models with a fresh platform
# database, runs benches/soak.py against it (64 streams for --seconds with mixed lengths,
# dropped streams and invalid requests, then --burst requests at once), stops the server
# with SIGTERM and prints the driver's JSON summary: statuses, latency p50/p99, resident
# memory at start, peak and end, KV blocks still held, usage records against answers.
#
#   benches/soak.sh [--streams 64] [--seconds 600] [--burst 1000] [--debug]
#
# --debug runs the dev-profile binary (its dependencies and the core are optimised too) to
# spare a release build.
#
# Exits non-zero when a check fails (a 5xx other than a 503, a leaked block, a lost record).
set -euo pipefail
cd "$(dirname "$0")/.."
streams=64 seconds=600 burst=1000 profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --streams) streams=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --burst) burst=$2; shift 2 ;;
    --debug) profile=debug; shift ;;
    *) echo "usage: $0 [--streams N] [--seconds S] [--burst N] [--debug]" >&2; exit 2 ;;
  esac
done
if [ "$profile" = release ]; then
  cargo build --release --quiet --bin helixflow
else
  cargo build --quiet --bin helixflow
fi
target="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$target/$profile/helixflow"
data=$(mktemp -d)
log="$data/server.log"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
env -u DATABASE_URL -u DATABASE_TYPE "$bin" serve --no-tls --no-grpc --host 127.0.0.1 \
  --port "$port" --data-dir "$data" >"$log" 2>&1 &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.5
done
key=$(tr -d '\n' <"$data/admin-key")
status=0
python3 benches/soak.py --port "$port" --key "$key" --pid "$server" --data-dir "$data" \
  --helixflow "$bin" --streams "$streams" --seconds "$seconds" --burst "$burst" || status=$?
kill -TERM "$server"
wait "$server" || { echo "the server did not stop cleanly" >&2; status=1; }
grep -iE "panicked|error" "$log" | grep -v "refusing connections" | head -5 >&2 || true
exit "$status"
