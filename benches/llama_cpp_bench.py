"""llama.cpp's side of benches/compare_llama_cpp.sh, run with the Python of the benchmark's
virtual environment (llama-cpp-python, see benches/llama_cpp_venv.sh).

  llama_cpp_bench.py bench GGUF [--prompts 500,37] [--gen-tokens 128] [--runs 1] [--threads 2]
                               [--flash-attn]
      Loads GGUF once and, for each prompt length, measures what `helixflow bench` measures:
      the prefill rate of the prompt (evaluated as one batch into an empty cache) and the
      decode rate of --gen-tokens greedy tokens after it (one token per step, each chosen by
      argmax of the last logits). After one untimed warm-up, every prompt length is run --runs
      times (fresh cache each time) and the medians are printed as one JSON object:
      {"engine": "llama.cpp", ..., "results": [{"prompt_tokens": 500,
       "prefill_tokens_per_s": ..., "decode_tokens_per_s": ...}, ...]}.
      The prompt is the same prose `helixflow bench` cuts its prompt from, tokenized by the
      GGUF's own tokenizer without BOS, so both engines see the same token ids. Batches of up
      to max(512, longest prompt) tokens; flash attention off (llama-cpp-python's default)
      unless --flash-attn.

  llama_cpp_bench.py batched GGUF [--streams 4,16] [--prompt-tokens 37] [--gen-tokens 128]
                                 [--threads 2] [--flash-attn]
      llama.cpp's own batched decode, as `llama-batched-bench` measures it: for each N of
      --streams, one context holding N sequences (n_seq_max = N, a KV buffer per sequence),
      the N prompts of --prompt-tokens tokens evaluated in one batch, then --gen-tokens steps
      that each decode one greedy token of every sequence in one batch. Prints one JSON
      object: {"engine": "llama.cpp", ..., "levels": [{"streams": N,
      "decode_tokens_per_s": N * gen / decode time, "output_tokens_per_s": N * gen / the whole
      time, prefill included}, ...]}.

  llama_cpp_bench.py quantize SRC DST TYPE [--threads 2] [--keep-embedding]
      Writes DST, SRC quantised by llama.cpp's quantizer to TYPE (q4_0, q4_1, q8_0, q4_k_m
      or q5_k_m; lossy when SRC is itself quantised, which does not matter for speed). With
      --keep-embedding the token embedding (which SmolLM2 ties to the output projection)
      keeps SRC's type, so the copies differ only in the layers' weights; without it,
      llama.cpp chooses as it does for any model. Prints DST's tensor types.

  llama_cpp_bench.py types GGUF
      Prints the number of tensors of each type and the type of the token embedding and output
      tensors, read from the GGUF header.

  llama_cpp_bench.py footprint GGUF
      Prints {"weight_bytes_per_token": ..., "macs_per_token": ...}: the bytes of the weight
      matrices one decoded token reads and their multiply-adds (attention's own excluded).

  llama_cpp_bench.py bandwidth [--threads 2]
      Prints the memory read bandwidth of that many threads, {"read_bytes_per_s": ...}.
"""

import argparse
import collections
import ctypes
import json
import logging
import os
import statistics
import struct
import sys
import time
from typing import BinaryIO

# ggml's type ids (ggml.h) of the formats these models use.
GGML_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0",
              10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 30: "BF16"}

# The text `helixflow bench` (helixflow-cli/src/commands/bench.rs) cuts its prompt from.
FILLER = (
    "The history of computing is a story of people who wanted to calculate faster and more "
    "reliably than they could by hand. Mechanical calculators, punched cards, vacuum tubes, "
    "transistors and integrated circuits each made machines smaller and cheaper. "
)


def bench(args: argparse.Namespace) -> None:
    """Prefill and decode rates of each prompt length; see the module's docstring."""
    import llama_cpp
    import numpy as np

    prompts = sorted({int(n) for n in args.prompts.split(",")}, reverse=True)
    if not prompts or min(prompts) < 1 or args.gen_tokens < 1 or args.runs < 1:
        sys.exit("--prompts, --gen-tokens and --runs must be at least 1")
    n_batch = max(512, prompts[0])
    llm = llama_cpp.Llama(
        args.gguf,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_ctx=prompts[0] + args.gen_tokens + 8,
        n_batch=n_batch,
        n_ubatch=n_batch,
        flash_attn=args.flash_attn,
        verbose=False,
    )

    def last_argmax() -> int:
        """Greedy choice from the logits of the last evaluated token."""
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).argmax())

    filler = llm.tokenize(FILLER.encode(), add_bos=False, special=False)
    text = filler * (prompts[0] // len(filler) + 1)

    def run(prompt_tokens: int, gen_tokens: int) -> tuple[float, float]:
        """One prefill of `prompt_tokens` then `gen_tokens` decode steps: both rates."""
        prompt = text[:prompt_tokens]
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        prefill = prompt_tokens / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(gen_tokens):
            llm.eval([last_argmax()])
        return prefill, gen_tokens / (time.perf_counter() - start)

    run(min(prompts[-1], 8), 2)  # pages the weights in and sizes the buffers
    results = []
    for prompt_tokens in prompts:
        prefill, decode = zip(*(run(prompt_tokens, args.gen_tokens) for _ in range(args.runs)))
        results.append({
            "prompt_tokens": prompt_tokens,
            "prefill_tokens_per_s": statistics.median(prefill),
            "decode_tokens_per_s": statistics.median(decode),
        })
    print(json.dumps({
        "engine": "llama.cpp",
        "llama_cpp_python": llama_cpp.__version__,
        "model": args.gguf,
        "threads": args.threads,
        "n_batch": n_batch,
        "flash_attn": args.flash_attn,
        "gen_tokens": args.gen_tokens,
        "runs": args.runs,
        "results": results,
    }))


def batched(args: argparse.Namespace) -> None:
    """llama.cpp's batched decode; see the module's docstring."""
    import llama_cpp
    import numpy as np

    levels = [int(n) for n in args.streams.split(",")]
    if min(levels) < 1 or args.prompt_tokens < 1 or args.gen_tokens < 1:
        sys.exit("--streams, --prompt-tokens and --gen-tokens must be at least 1")
    llm = llama_cpp.Llama(args.gguf, n_threads=args.threads, n_threads_batch=args.threads,
                          n_ctx=args.prompt_tokens + 8, verbose=False)
    filler = llm.tokenize(FILLER.encode(), add_bos=False, special=False)
    prompt = (filler * (args.prompt_tokens // len(filler) + 1))[:args.prompt_tokens]
    n_vocab = llm.n_vocab()
    results = []
    for n in [min(levels)] + levels:  # the first, untimed, pages the weights in
        per_sequence = args.prompt_tokens + args.gen_tokens + 8
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n * per_sequence
        params.n_batch = params.n_ubatch = max(512, n * args.prompt_tokens)
        params.n_seq_max = n
        params.kv_unified = False  # llama.cpp's advice for sequences without a shared prefix
        params.n_threads = params.n_threads_batch = args.threads
        params.flash_attn_type = 1 if args.flash_attn else 0
        ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not ctx:
            sys.exit(f"llama.cpp could not make a context for {n} sequences")
        batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)

        def decode(entries):
            """One llama_decode of (token, position, sequence, wants logits) entries."""
            batch.n_tokens = len(entries)
            for i, (token, pos, seq, logits) in enumerate(entries):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
                batch.seq_id[i][0], batch.logits[i] = seq, logits
            if llama_cpp.llama_decode(ctx, batch) != 0:
                sys.exit("llama_decode failed")

        def argmax(i):
            ptr = llama_cpp.llama_get_logits_ith(ctx, i)
            return int(np.ctypeslib.as_array(ptr, shape=(n_vocab,)).argmax())

        start = time.perf_counter()
        decode([(t, p, s, p == len(prompt) - 1)
                for s in range(n) for p, t in enumerate(prompt)])
        last = [argmax((s + 1) * len(prompt) - 1) for s in range(n)]
        decode_start = time.perf_counter()
        for step in range(args.gen_tokens):
            decode([(last[s], len(prompt) + step, s, True) for s in range(n)])
            last = [argmax(s) for s in range(n)]
        end = time.perf_counter()
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
        results.append({"streams": n,
                        "decode_tokens_per_s": n * args.gen_tokens / (end - decode_start),
                        "output_tokens_per_s": n * args.gen_tokens / (end - start)})
    print(json.dumps({
        "engine": "llama.cpp",
        "llama_cpp_python": llama_cpp.__version__,
        "model": args.gguf,
        "threads": args.threads,
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "flash_attn": args.flash_attn,
        "levels": results[1:],
    }))


# ggml's (values, bytes) per block of each type.
BLOCK_SIZES = {"F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q4_0": (32, 18), "Q4_1": (32, 20),
               "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34), "Q2_K": (256, 84),
               "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210)}


def read_tensor_types(path: str) -> dict[str, str]:
    """Each tensor's name and type, from a GGUF file's header."""
    return {name: kind for name, (kind, _) in read_tensors(path).items()}


def read_tensors(path: str) -> dict[str, tuple[str, list[int]]]:
    """Each tensor's name, type and dimensions (GGUF order, the row width first), from a GGUF
    file's header."""

    def read(f: BinaryIO, fmt: str):
        size = struct.calcsize(fmt)
        return struct.unpack("<" + fmt, f.read(size))[0]

    def string(f: BinaryIO) -> str:
        return f.read(read(f, "Q")).decode("utf-8", "replace")

    scalars = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q",
               11: "q", 12: "d"}

    def skip_value(f: BinaryIO, kind: int) -> None:
        if kind == 8:
            f.seek(read(f, "Q"), os.SEEK_CUR)
        elif kind == 9:
            item, count = read(f, "I"), read(f, "Q")
            if item in scalars:
                f.seek(count * struct.calcsize(scalars[item]), os.SEEK_CUR)
            else:
                for _ in range(count):
                    skip_value(f, item)
        else:
            f.seek(struct.calcsize(scalars[kind]), os.SEEK_CUR)

    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        read(f, "I")  # version
        n_tensors, n_kv = read(f, "Q"), read(f, "Q")
        for _ in range(n_kv):
            string(f)
            skip_value(f, read(f, "I"))
        types = {}
        for _ in range(n_tensors):
            name = string(f)
            dims = [read(f, "Q") for _ in range(read(f, "I"))]
            kind = read(f, "I")
            read(f, "Q")  # offset
            types[name] = (GGML_TYPES.get(kind, f"type {kind}"), dims)
    return types


def footprint(path: str) -> dict:
    """What one decoded token costs at least: the bytes of every weight matrix it reads (the
    output projection, or the token embedding where tied to it, but not an untied embedding,
    of which a token reads one row) and the multiply-adds of those matrices."""
    tensors = read_tensors(path)
    weight_bytes = macs = 0
    for name, (kind, dims) in tensors.items():
        if len(dims) < 2 or (name == "token_embd.weight" and "output.weight" in tensors):
            continue
        values = 1
        for d in dims:
            values *= d
        per_block, block_bytes = BLOCK_SIZES[kind]
        weight_bytes += values // per_block * block_bytes
        macs += values
    return {"weight_bytes_per_token": weight_bytes, "macs_per_token": macs}


def bandwidth(args: argparse.Namespace) -> None:
    """Read bandwidth of --threads threads summing their parts of a 2 GiB array (the best of
    five passes), as JSON {"read_bytes_per_s": ...}: what bounds a decode step that reads
    every weight once."""
    import concurrent.futures
    import numpy as np

    data = np.ones(2 << 27, dtype=np.uint64)  # 2 GiB
    parts = np.array_split(data, args.threads)
    best = float("inf")
    with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
        for _ in range(6):
            start = time.perf_counter()
            list(pool.map(np.sum, parts))  # numpy's reductions run without the GIL
            best = min(best, time.perf_counter() - start)
    print(json.dumps({"threads": args.threads, "read_bytes_per_s": data.nbytes / best}))


def describe_types(path: str) -> str:
    """One line: the count of tensors per type, and the embedding's and output's types."""
    types = read_tensor_types(path)
    counts = collections.Counter(types.values())
    per_type = ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
    output = types.get("output.weight", "tied to token_embd")
    return (f"{os.path.basename(path)}: {per_type}; token_embd {types.get('token_embd.weight')}, "
            f"output {output}")


# llama.cpp's file types (llama.h's llama_ftype) that `quantize` makes.
QUANTIZE_TYPES = {"q4_0": 2, "q4_1": 3, "q8_0": 7, "q4_k_m": 15, "q5_k_m": 17}


def quantize(args: argparse.Namespace) -> None:
    """Requantises a GGUF with llama.cpp; see the module's docstring."""
    import llama_cpp

    # llama.cpp logs a line per tensor; keep its errors only.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    ggml_ids = {name: kind for kind, name in GGML_TYPES.items()}
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTIZE_TYPES[args.type]
    params.allow_requantize = True
    params.nthread = args.threads
    if args.keep_embedding:
        # Tied embeddings are quantised as the output tensor: pin both to the source's type.
        embedding = read_tensor_types(args.src)["token_embd.weight"]
        params.token_embedding_type = ggml_ids[embedding]
        params.output_tensor_type = ggml_ids[embedding]
    partial = args.dst + ".partial"
    status = llama_cpp.llama_model_quantize(args.src.encode(), partial.encode(),
                                            ctypes.byref(params))
    if status != 0:
        sys.exit(f"llama_model_quantize failed ({status})")
    os.replace(partial, args.dst)
    print(describe_types(args.dst))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="prefill and decode rates (JSON)")
    b.add_argument("gguf")
    b.add_argument("--prompts", default="500,37", help="prompt lengths, comma-separated")
    b.add_argument("--gen-tokens", type=int, default=128)
    b.add_argument("--runs", type=int, default=1, help="runs per prompt length; the median")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--flash-attn", action="store_true", help="llama.cpp's flash attention")
    b.set_defaults(func=bench)
    bb = sub.add_parser("batched", help="llama.cpp's batched decode (JSON)")
    bb.add_argument("gguf")
    bb.add_argument("--streams", default="4,16", help="sequences per batch, comma-separated")
    bb.add_argument("--prompt-tokens", type=int, default=37)
    bb.add_argument("--gen-tokens", type=int, default=128)
    bb.add_argument("--threads", type=int, default=2)
    bb.add_argument("--flash-attn", action="store_true", help="llama.cpp's flash attention")
    bb.set_defaults(func=batched)
    q = sub.add_parser("quantize", help="requantise a GGUF with llama.cpp's quantizer")
    q.add_argument("src")
    q.add_argument("dst")
    q.add_argument("type", choices=list(QUANTIZE_TYPES))
    q.add_argument("--threads", type=int, default=2)
    q.add_argument("--keep-embedding", action="store_true",
                   help="keep the token embedding's (and tied output's) type")
    q.set_defaults(func=quantize)
    t = sub.add_parser("types", help="tensor types of a GGUF")
    t.add_argument("gguf")
    t.set_defaults(func=lambda a: print(describe_types(a.gguf)))
    fp = sub.add_parser("footprint", help="weight bytes and multiply-adds per token (JSON)")
    fp.add_argument("gguf")
    fp.set_defaults(func=lambda a: print(json.dumps(footprint(a.gguf))))
    bw = sub.add_parser("bandwidth", help="memory read bandwidth (JSON)")
    bw.add_argument("--threads", type=int, default=2)
    bw.set_defaults(func=bandwidth)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
