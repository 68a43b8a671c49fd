"""Random-weight models of the shapes people download, for benches/compare_llama_cpp.sh: the
weights need not be trained to be timed.

  synthetic_models.py SHAPE OUT.gguf

Writes OUT.gguf (F16 weights, seeded, scaled by 1/sqrt(width) so that activations stay near
unit size) with a SentencePiece vocabulary of the shape's size (byte tokens and plain pieces),
so that both engines tokenize the benchmark's prompt the same way. The benchmark then has
llama.cpp's quantizer turn it into Q4_K_M or Q8_0. Run with the Python of
benches/llama_cpp_venv.sh (numpy and gguf).

Shapes (hyper-parameters as the released models' config.json give them):
  llama-1b    Llama-3.2-1B: hidden 2048, 16 layers, 32 query / 8 key-value heads of 64,
              feed-forward 8192, vocabulary 128256, embeddings tied to the output.
  qwen3-0.6b  Qwen3-0.6B: hidden 1024, 28 layers, 16 query / 8 key-value heads of 128 (wider
              than hidden / heads), q/k norms, feed-forward 3072, vocabulary 151936, tied.
"""

import sys

import numpy as np

import gguf

SHAPES = {
    "llama-1b": dict(arch="llama", hidden=2048, layers=16, heads=32, kv_heads=8, head_dim=64,
                     ff=8192, vocab=128256, rope_base=500000.0, qk_norm=False),
    "qwen3-0.6b": dict(arch="qwen3", hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128,
                       ff=3072, vocab=151936, rope_base=1000000.0, qk_norm=True),
}
CONTEXT = 8192


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in SHAPES:
        sys.exit(f"usage: synthetic_models.py {{{','.join(SHAPES)}}} OUT.gguf")
    name, out = sys.argv[1], sys.argv[2]
    s = SHAPES[name]
    rng = np.random.default_rng(23)
    hidden, hd, vocab = s["hidden"], s["head_dim"], s["vocab"]

    def matrix(rows: int, cols: int) -> np.ndarray:
        values = rng.standard_normal((rows, cols), dtype=np.float32)
        values *= 1.0 / np.sqrt(cols)
        return values.astype(np.float16)

    def norm(width: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(width)).astype(np.float32)

    w = gguf.GGUFWriter(out, s["arch"])
    w.add_name(f"random {name}")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(hidden)
    w.add_block_count(s["layers"])
    w.add_feed_forward_length(s["ff"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(hd)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(s["rope_base"])
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"piece{i}" for i in range(vocab - len(tokens))]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * vocab)
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (vocab - 259))
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)

    w.add_tensor("token_embd.weight", matrix(vocab, hidden))  # tied: also the output
    w.add_tensor("output_norm.weight", norm(hidden))
    q, kv = s["heads"] * hd, s["kv_heads"] * hd
    for i in range(s["layers"]):
        p = f"blk.{i}"
        w.add_tensor(f"{p}.attn_norm.weight", norm(hidden))
        w.add_tensor(f"{p}.attn_q.weight", matrix(q, hidden))
        w.add_tensor(f"{p}.attn_k.weight", matrix(kv, hidden))
        w.add_tensor(f"{p}.attn_v.weight", matrix(kv, hidden))
        if s["qk_norm"]:
            w.add_tensor(f"{p}.attn_q_norm.weight", norm(hd))
            w.add_tensor(f"{p}.attn_k_norm.weight", norm(hd))
        w.add_tensor(f"{p}.attn_output.weight", matrix(hidden, q))
        w.add_tensor(f"{p}.ffn_norm.weight", norm(hidden))
        w.add_tensor(f"{p}.ffn_gate.weight", matrix(s["ff"], hidden))
        w.add_tensor(f"{p}.ffn_up.weight", matrix(s["ff"], hidden))
        w.add_tensor(f"{p}.ffn_down.weight", matrix(hidden, s["ff"]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
