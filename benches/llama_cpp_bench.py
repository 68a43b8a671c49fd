"""llama.cpp's side of benches/compare_llama_cpp.sh, run with the Python of the benchmark's
virtual environment (llama-cpp-python built for AVX2).

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

  llama_cpp_bench.py quantize SRC DST TYPE [--threads 2]
      Writes DST, SRC requantised by llama.cpp's quantizer to TYPE (q4_0, q4_1 or q8_0; lossy
      when SRC is itself quantised, which does not matter for speed). The token embedding
      (which SmolLM2 ties to the output projection) keeps SRC's type, so the copies differ only
      in the layers' weights. Prints DST's tensor types.

  llama_cpp_bench.py types GGUF
      Prints the number of tensors of each type and the type of the token embedding and output
      tensors, read from the GGUF header.
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


def read_tensor_types(path: str) -> dict[str, str]:
    """Each tensor's name and type, from a GGUF file's header."""

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
            f.seek(8 * read(f, "I"), os.SEEK_CUR)  # dimensions
            kind = read(f, "I")
            read(f, "Q")  # offset
            types[name] = GGML_TYPES.get(kind, f"type {kind}")
    return types


def describe_types(path: str) -> str:
    """One line: the count of tensors per type, and the embedding's and output's types."""
    types = read_tensor_types(path)
    counts = collections.Counter(types.values())
    per_type = ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
    output = types.get("output.weight", "tied to token_embd")
    return (f"{os.path.basename(path)}: {per_type}; token_embd {types.get('token_embd.weight')}, "
            f"output {output}")


def quantize(args: argparse.Namespace) -> None:
    """Requantises a GGUF with llama.cpp; see the module's docstring."""
    import llama_cpp

    # llama.cpp logs a line per tensor; keep its errors only.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    ftypes = {"q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
              "q4_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1,
              "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}
    ggml_ids = {name: kind for kind, name in GGML_TYPES.items()}
    embedding = read_tensor_types(args.src)["token_embd.weight"]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[args.type]
    params.allow_requantize = True
    params.nthread = args.threads
    # Tied embeddings are quantised as the output tensor: pin both to the source's type.
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
    q = sub.add_parser("quantize", help="requantise a GGUF with llama.cpp's quantizer")
    q.add_argument("src")
    q.add_argument("dst")
    q.add_argument("type", choices=["q4_0", "q4_1", "q8_0"])
    q.add_argument("--threads", type=int, default=2)
    q.set_defaults(func=quantize)
    t = sub.add_parser("types", help="tensor types of a GGUF")
    t.add_argument("gguf")
    t.set_defaults(func=lambda a: print(describe_types(a.gguf)))
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
