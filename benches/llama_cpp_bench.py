"""Prefill and decode throughput of llama.cpp (llama-cpp-python) on a GGUF, measured the way
`helixflow bench` measures HelixFlow: the median of several runs, greedy decoding, 2 threads.

Prints one JSON object: {"prefill_tokens_per_s": ..., "decode_tokens_per_s": ...}.
"""

import argparse
import json
import statistics
import time

import llama_cpp
import numpy as np

from llama_cpp import Llama


def last_argmax(llm: Llama) -> int:
    """Greedy choice from the logits of the last evaluated token."""
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return int(np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).argmax())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    llm = Llama(
        args.gguf,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_ctx=args.prompt_tokens + args.gen_tokens + 8,
        n_batch=max(512, args.prompt_tokens),
        verbose=False,
    )
    filler = (
        "The history of computing is a story of people who wanted to calculate faster and more "
        "reliably than they could by hand. Mechanical calculators, punched cards, vacuum tubes, "
        "transistors and integrated circuits each made machines smaller and cheaper. "
    )
    prompt = []
    while len(prompt) < args.prompt_tokens:
        prompt += llm.tokenize(filler.encode(), add_bos=False, special=False)
    prompt = prompt[: args.prompt_tokens]

    prefill, decode = [], []
    for _ in range(args.runs):
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        prefill.append(len(prompt) / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in range(args.gen_tokens):
            llm.eval([last_argmax(llm)])
        decode.append(args.gen_tokens / (time.perf_counter() - start))
    print(json.dumps({
        "engine": "llama.cpp",
        "prefill_tokens_per_s": statistics.median(prefill),
        "decode_tokens_per_s": statistics.median(decode),
    }))


if __name__ == "__main__":
    main()
