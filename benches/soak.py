#!/usr/bin/env python3
"""Soak and overload driver for a running `helixflow serve` (plain HTTP, loopback only).

Phase 1 (soak): `--streams` clients, each looping for `--seconds`: streamed and whole chat
and text completions of mixed lengths, embeddings, some streams dropped mid-way (client
disconnects) and some invalid requests (expected 400s).
Phase 2 (overload): `--burst` requests sent at once (short completions).

It samples the server's resident memory (`--pid`) every second and, at the end, reads the
engine's stats (KV blocks still held by sequences) and compares what the server answered
with the usage records in its database (`--data-dir`, read with `helixflow usage`).
Prints one JSON object; exits 1 when a check fails (a 5xx other than a 503, a leaked KV
block, a missing usage record). Standard library only.
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"


class Tally:
    def __init__(self):
        self.statuses = {}
        self.latencies = []  # whole-request seconds, for answered requests
        self.ttfts = []
        self.completed = 0  # 200s read to the end (expect a usage record, not cancelled)
        self.dropped = 0  # streams dropped mid-way (expect a cancelled record)
        self.embedded = 0  # 200 embeddings (expect a record)
        self.errors = []  # unexpected outcomes

    def status(self, code):
        self.statuses[code] = self.statuses.get(code, 0) + 1


async def request(host, port, key, method, path, body=None, drop_after=None, timeout=300):
    """One HTTP/1.1 exchange. Returns (status, body text, seconds to first body byte)."""
    # Whole answers (a batch of embeddings) come as one line: allow long ones.
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, limit=64 << 20), 30
    )
    try:
        data = json.dumps(body).encode() if body is not None else b""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + data)
        await writer.drain()
        start = time.monotonic()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        status = int(status_line.split()[1])
        while (await asyncio.wait_for(reader.readline(), timeout)) not in (b"\r\n", b""):
            pass
        first = None
        chunks = []
        lines = 0
        while True:
            line = await asyncio.wait_for(reader.readline(), timeout)
            if not line:
                break
            if first is None:
                first = time.monotonic() - start
            chunks.append(line)
            if line.startswith(b"data: "):
                lines += 1
                if drop_after is not None and lines >= drop_after:
                    return status, "DROPPED", first
        return status, b"".join(chunks).decode(errors="replace"), first
    finally:
        writer.close()


def chat_body(max_tokens, stream):
    words = random.choice(["Hi!", "Tell me about the sea.", "Count to twenty.", "x " * 200])
    body = {
        "model": CHAT,
        "messages": [{"role": "user", "content": words}],
        "max_tokens": max_tokens,
        "temperature": random.choice([0, 0.7, 1.2]),
        "ignore_eos": True,
    }
    if stream:
        body["stream"] = True
    return body


async def one_request(args, tally, kind):
    host, port, key = args.host, args.port, args.key
    started = time.monotonic()
    try:
        if kind == "invalid":
            body = random.choice([
                {"model": CHAT, "messages": [{"role": "wizard", "content": "x"}]},
                {"model": CHAT, "prompt": "x", "max_tokens": 2**64 - 1},
                {"model": CHAT, "prompt": "x", "top_k": 0},
                {"model": "nope", "prompt": "x"},
            ])
            path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
            status, _, _ = await request(host, port, key, "POST", path, body)
            tally.status(status)
            if status not in (400, 404):
                tally.errors.append(f"invalid request answered {status}")
            return
        if kind == "embed":
            texts = ["The weather is lovely today."] * random.randint(1, 64)
            status, _, _ = await request(host, port, key, "POST", "/v1/embeddings",
                                         {"model": EMBED, "input": texts})
            tally.status(status)
            if status == 200:
                tally.embedded += 1
            elif status != 503:
                tally.errors.append(f"embeddings answered {status}")
            return
        max_tokens = random.choice([4, 16, 64, 160])
        stream = kind in ("stream", "drop")
        drop_after = random.randint(2, 4) if kind == "drop" else None
        if random.random() < 0.5:
            body, path = chat_body(max_tokens, stream), "/v1/chat/completions"
        else:
            body = {"model": CHAT, "prompt": "Once upon a time", "max_tokens": max_tokens,
                    "ignore_eos": True, "stream": stream}
            path = "/v1/completions"
        status, text, first = await request(host, port, key, "POST", path, body,
                                            drop_after=drop_after)
        tally.status(status)
        if status == 200:
            if text == "DROPPED":
                tally.dropped += 1
            else:
                tally.completed += 1
                tally.latencies.append(time.monotonic() - started)
                if first is not None and stream:
                    tally.ttfts.append(first)
                if stream and "[DONE]" not in text:
                    tally.errors.append("a stream ended without [DONE]")
                # An error event, not a token whose text happens to be "error".
                if 'data: {"error"' in text:
                    tally.errors.append(f"an error event in a 200 stream: {text[-300:]}")
        elif status >= 500 and status != 503:
            tally.errors.append(f"{path} answered {status}: {text[:300]}")
    except Exception as e:  # a connection error is a failure of the server
        tally.errors.append(f"{kind}: {type(e).__name__}: {e}")


async def soak(args, tally):
    deadline = time.monotonic() + args.seconds
    kinds = ["stream"] * 4 + ["whole"] * 3 + ["drop"] * 2 + ["embed", "invalid"]

    async def client():
        while time.monotonic() < deadline:
            await one_request(args, tally, random.choice(kinds))

    await asyncio.gather(*(client() for _ in range(args.streams)))


async def burst(args, tally):
    await asyncio.gather(*(one_request(args, tally, "whole") for _ in range(args.burst)))


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


async def sample_rss(pid, samples, stop):
    while not stop.is_set():
        value = rss_kib(pid)
        if value is not None:
            samples.append(value)
        try:
            await asyncio.wait_for(stop.wait(), 1)
        except asyncio.TimeoutError:
            pass


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)


async def stats(args):
    status, text, _ = await request(args.host, args.port, args.key, "GET", "/v1/admin/stats")
    return json.loads(text) if status == 200 else {"status": status}


def usage_records(args):
    out = subprocess.run(
        [args.helixflow, "usage", "--records", "--json", "--limit", "1000000",
         "--data-dir", args.data_dir],
        capture_output=True, text=True, check=True,
        env={k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_TYPE")},
    )
    return json.loads(out.stdout)


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--helixflow", required=True)
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--burst", type=int, default=1000)
    args = p.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("the soak only targets loopback")
    random.seed(1)

    samples, stop = [], asyncio.Event()
    sampler = asyncio.create_task(sample_rss(args.pid, samples, stop))
    rss_start = rss_kib(args.pid)
    soak_tally, burst_tally = Tally(), Tally()
    t0 = time.monotonic()
    await soak(args, soak_tally)
    rss_after_soak = rss_kib(args.pid)
    t1 = time.monotonic()
    await burst(args, burst_tally)
    t2 = time.monotonic()
    await asyncio.sleep(3)  # the last usage records are written within a second
    rss_end = rss_kib(args.pid)
    stop.set()
    await sampler
    engine = await stats(args)
    records = usage_records(args)

    def engines(stats):
        return stats.get("engines") or stats.get("models") or []

    leaked = None
    try:
        leaked = sum(e["kv_blocks_used"] for e in engines(engine))
    except (KeyError, TypeError):
        pass
    answered_ok = sum(t.completed + t.embedded for t in (soak_tally, burst_tally))
    dropped = soak_tally.dropped + burst_tally.dropped
    records_ok = sum(1 for r in records if r["status"] == 200 and not r["cancelled"])
    records_cancelled = sum(1 for r in records if r["cancelled"])
    records_5xx = sum(1 for r in records if r["status"] >= 500)
    statuses = {}
    for t in (soak_tally, burst_tally):
        for k, v in t.statuses.items():
            statuses[str(k)] = statuses.get(str(k), 0) + v
    errors = soak_tally.errors + burst_tally.errors
    summary = {
        "soak": {
            "streams": args.streams, "seconds": round(t1 - t0, 1),
            "requests": sum(soak_tally.statuses.values()),
            "statuses": {str(k): v for k, v in sorted(soak_tally.statuses.items())},
            "latency_ms_p50": percentile(soak_tally.latencies, 0.5),
            "latency_ms_p99": percentile(soak_tally.latencies, 0.99),
            "ttft_ms_p50": percentile(soak_tally.ttfts, 0.5),
            "ttft_ms_p99": percentile(soak_tally.ttfts, 0.99),
            "dropped_streams": soak_tally.dropped,
        },
        "burst": {
            "requests": args.burst, "seconds": round(t2 - t1, 1),
            "statuses": {str(k): v for k, v in sorted(burst_tally.statuses.items())},
            "latency_ms_p50": percentile(burst_tally.latencies, 0.5),
            "latency_ms_p99": percentile(burst_tally.latencies, 0.99),
        },
        "rss_mib": {
            "start": rss_start and round(rss_start / 1024),
            "peak": samples and round(max(samples) / 1024),
            "after_soak": rss_after_soak and round(rss_after_soak / 1024),
            "end": rss_end and round(rss_end / 1024),
        },
        "kv_blocks_leaked": leaked,
        "usage": {
            "answered_200": answered_ok, "records_200": records_ok,
            "dropped_streams": dropped, "records_cancelled": records_cancelled,
            "records_5xx": records_5xx, "records": len(records),
        },
        "unexpected": errors[:20],
        "unexpected_count": len(errors),
    }
    print(json.dumps(summary, indent=2))
    # Every admitted request leaves exactly one record: a dropped stream that had already
    # finished is a 200 record rather than a cancelled one.
    ok = (
        not errors
        and leaked == 0
        and records_ok + records_cancelled == answered_ok + dropped
        and records_ok >= answered_ok
        and not any(int(s) >= 500 and int(s) != 503 for s in statuses)
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    asyncio.run(main())
