"""Tiny random-weight models of every architecture HelixFlow loads, and llama.cpp's greedy
tokens for them: the reference side of `helixflow-core/tests/architectures.rs`.

    python llama_cpp_reference.py OUT_DIR

Needs llama-cpp-python and gguf (the test set-up installs both, see `benches/llama_cpp_venv.sh`).
For each architecture it writes OUT_DIR/<arch>-f32.gguf with seeded random weights,
OUT_DIR/<arch>-q8_0.gguf requantised by llama.cpp's own quantizer, and OUT_DIR/<arch>-hf/, the
F32 weights as a Hugging Face folder (config.json, two safetensors shards and their index, a
word-level tokenizer.json, generation_config.json) in the layout llama.cpp's converter reads, runs llama.cpp on both
(plain CPU kernels: use_extra_bufts=False) and prints one JSON object: per file, the prompts
(plain-piece token ids, longer than any sliding window) and llama.cpp's greedy continuation of each, with
the smallest gap between the top two logits on the way and the logits after the first prompt. Weights are drawn again with the next
seed until that gap is comfortable, so that a correct implementation with other rounding gives
the same tokens, and until the continuations do not just repeat one token.
"""

import ctypes
import json
import os
import sys

import numpy as np

import gguf
import llama_cpp

VOCAB = 320  # <unk>, <s>, </s>, 256 byte tokens, the rest plain pieces
HIDDEN = 64
HEADS = 4
KV_HEADS = 2
FF = 128
LAYERS = 4
CONTEXT = 256
WINDOW = 8  # sliding window of the families that have one: shorter than the prompts
PROMPT_LEN = 40
GENERATE = 10
MIN_MARGIN = 0.02


def plain_cpu_kernels():
    """llama.cpp's plain CPU kernels: no repacked weights (other arithmetic), no AMX."""
    default = llama_cpp.llama_model_default_params

    def patched():
        params = default()
        params.use_extra_bufts = False
        return params

    llama_cpp.llama_model_default_params = patched
    llama_cpp.llama.llama_cpp.llama_model_default_params = patched


def vocabulary(writer):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    # Chat markers some families look up by name (Phi-3's `<|end|>`).
    specials = ["<|end|>", "<|endoftext|>", "<|user|>", "<|assistant|>"]
    tokens += specials + [f"piece{i}" for i in range(VOCAB - len(tokens) - len(specials))]
    types = [2, 3, 3] + [6] * 256 + [3] * len(specials) + [1] * (VOCAB - 259 - len(specials))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * VOCAB)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)


class Weights:
    def __init__(self, rng):
        self.rng = rng

    def matrix(self, rows, cols, gain=1.0):
        return (self.rng.standard_normal((rows, cols)) * gain / np.sqrt(cols)).astype(np.float32)

    def norm(self, width, around=1.0):
        return (around + 0.1 * self.rng.standard_normal(width)).astype(np.float32)

    def vector(self, width, gain=0.1):
        return (gain * self.rng.standard_normal(width)).astype(np.float32)


# Per architecture: its head width (where it differs from hidden / heads), what it adds, and
# the type of its Hugging Face folder's weights (F32 unless said; the GGUF's f32 weights are
# drawn exactly representable in it).
ARCHITECTURES = {
    # Wide enough for K-quants (rows of 256): more files, llama.cpp's Q4_K_M requantisation and
    # (every other quantised type HelixFlow has kernels for) Q5_K_M, Q5_1 and Q5_0.
    "llama": dict(head_dim=64, hidden=256, ff=512, kquant=True, more_quants=True),
    "qwen2": dict(head_dim=16, qkv_bias=True, dtype="BF16"),
    "qwen3": dict(head_dim=32, qk_norm=True),
    # 32 experts as wide as the model: a routing tie within an ulp that only llama.cpp's F32
    # router order (llamafile's sgemm for the prompt, ggml_vec_dot_f32 when decoding) decides
    # as llama.cpp does; and Q4_K_M, each expert taking fewer than eight prompt rows (the
    # tiled order for experts with eight or more does not match llama.cpp's yet).
    "qwen3moe": dict(head_dim=64, qk_norm=True, experts=(32, 2, 256), hidden=256, kquant=True),
    "gemma2": dict(head_dim=16, gemma=2),
    "gemma3": dict(head_dim=32, gemma=3, qk_norm=True),
    "phi3": dict(head_dim=16, fused=True, long_rope=True, dtype="F16"),
    "smollm3": dict(head_dim=16),
}


def write_model(path, arch, spec, seed):
    rng = np.random.default_rng(seed)
    w = Weights(rng)
    hd = spec["head_dim"]
    hidden, ff = spec.get("hidden", HIDDEN), spec.get("ff", FF)
    qw, kvw = HEADS * hd, KV_HEADS * hd
    writer = gguf.GGUFWriter(path, arch)
    add_tensor = writer.add_tensor
    writer.add_tensor = lambda name, array: add_tensor(name, representable(array, spec.get("dtype", "F32")))
    writer.add_name(f"tiny {arch}")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(hidden)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_key_length(hd)
    writer.add_value_length(hd)
    writer.add_rope_dimension_count(hd)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    gemma = spec.get("gemma")
    if gemma:
        writer.add_sliding_window(WINDOW)
    if gemma == 2:
        writer.add_attn_logit_softcapping(2.0)  # low, so that the cap matters
        writer.add_final_logit_softcapping(20.0)
    if spec.get("long_rope"):
        writer.add_rope_scaling_orig_ctx_len(64)  # shorter than CONTEXT: the long factors
        writer.add_rope_scaling_attn_factors(1.19)
    if spec.get("experts"):
        count, used, width = spec["experts"]
        writer.add_expert_count(count)
        writer.add_expert_used_count(used)
        writer.add_expert_feed_forward_length(width)
    vocabulary(writer)

    # Embeddings large enough that the logits spread, tied for the Gemmas.
    # Gemma scales embeddings by sqrt(hidden) = 8: keep the residual stream near unit size,
    # and (the output being the embedding, tied) spread the logits with the final norm.
    embedding_gain = 0.125 if gemma else 1.0
    writer.add_tensor("token_embd.weight", (rng.standard_normal((VOCAB, hidden)) * embedding_gain).astype(np.float32))
    writer.add_tensor("output_norm.weight", w.norm(hidden, 4.0 if gemma else 1.0))
    if not gemma:
        writer.add_tensor("output.weight", w.matrix(VOCAB, hidden, gain=4.0))
    if spec.get("long_rope"):
        writer.add_tensor("rope_factors_long.weight", (1.0 + rng.random(hd // 2) * 3).astype(np.float32))
        writer.add_tensor("rope_factors_short.weight", (1.0 + rng.random(hd // 2) * 0.5).astype(np.float32))
    # Gemma stores RMSNorm weights as `1 + w` already in the GGUF; around 1 either way.
    for i in range(LAYERS):
        p = f"blk.{i}"
        writer.add_tensor(f"{p}.attn_norm.weight", w.norm(hidden))
        if spec.get("fused"):
            writer.add_tensor(f"{p}.attn_qkv.weight", np.concatenate([w.matrix(qw, hidden), w.matrix(kvw, hidden), w.matrix(kvw, hidden)]))
        else:
            writer.add_tensor(f"{p}.attn_q.weight", w.matrix(qw, hidden, gain=2.0))
            writer.add_tensor(f"{p}.attn_k.weight", w.matrix(kvw, hidden, gain=2.0))
            writer.add_tensor(f"{p}.attn_v.weight", w.matrix(kvw, hidden))
        if spec.get("qkv_bias"):
            writer.add_tensor(f"{p}.attn_q.bias", w.vector(qw))
            writer.add_tensor(f"{p}.attn_k.bias", w.vector(kvw))
            writer.add_tensor(f"{p}.attn_v.bias", w.vector(kvw))
        if spec.get("qk_norm"):
            writer.add_tensor(f"{p}.attn_q_norm.weight", w.norm(hd))
            writer.add_tensor(f"{p}.attn_k_norm.weight", w.norm(hd))
        writer.add_tensor(f"{p}.attn_output.weight", w.matrix(hidden, qw, gain=3.0))
        if gemma:
            # The blocks' normalised outputs outweigh the embedding they are added to.
            writer.add_tensor(f"{p}.post_attention_norm.weight", w.norm(hidden, 3.0))
            writer.add_tensor(f"{p}.post_ffw_norm.weight", w.norm(hidden, 3.0))
        writer.add_tensor(f"{p}.ffn_norm.weight", w.norm(hidden))
        if spec.get("experts"):
            count, used, width = spec["experts"]
            writer.add_tensor(f"{p}.ffn_gate_inp.weight", w.matrix(count, hidden, gain=3.0))
            writer.add_tensor(f"{p}.ffn_gate_exps.weight", np.stack([w.matrix(width, hidden) for _ in range(count)]))
            writer.add_tensor(f"{p}.ffn_up_exps.weight", np.stack([w.matrix(width, hidden) for _ in range(count)]))
            writer.add_tensor(f"{p}.ffn_down_exps.weight", np.stack([w.matrix(hidden, width, gain=3.0) for _ in range(count)]))
        elif spec.get("fused"):
            writer.add_tensor(f"{p}.ffn_up.weight", np.concatenate([w.matrix(ff, hidden), w.matrix(ff, hidden)]))
            writer.add_tensor(f"{p}.ffn_down.weight", w.matrix(hidden, ff, gain=3.0))
        else:
            writer.add_tensor(f"{p}.ffn_gate.weight", w.matrix(ff, hidden))
            writer.add_tensor(f"{p}.ffn_up.weight", w.matrix(ff, hidden))
            writer.add_tensor(f"{p}.ffn_down.weight", w.matrix(hidden, ff, gain=3.0))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# The Hugging Face model_type of each architecture, and what its config.json adds.
HF_MODEL_TYPES = {
    "llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen3moe": "qwen3_moe",
    "gemma2": "gemma2", "gemma3": "gemma3_text", "phi3": "phi3", "smollm3": "smollm3",
}


def hf_config(arch, spec, reader):
    """config.json for `arch`, from the GGUF's own numbers."""
    def field(key):
        f = reader.fields.get(f"{arch}.{key}")
        return None if f is None else f.contents()
    hd = spec["head_dim"]
    config = dict(
        model_type=HF_MODEL_TYPES[arch], architectures=["TinyForCausalLM"], vocab_size=VOCAB,
        hidden_size=spec.get("hidden", HIDDEN), intermediate_size=spec.get("ff", FF), num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=hd,
        rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=CONTEXT,
        tie_word_embeddings=bool(spec.get("gemma")),
    )
    if spec.get("gemma"):
        config.update(sliding_window=WINDOW, rope_local_base_freq=10000.0)
    if spec.get("gemma") == 2:
        config.update(attn_logit_softcapping=2.0, final_logit_softcapping=20.0)
    if spec.get("experts"):
        count, used, width = spec["experts"]
        config.update(num_experts=count, num_experts_per_tok=used, moe_intermediate_size=width,
                      norm_topk_prob=True)
    if spec.get("long_rope"):
        tensor = {t.name: t for t in reader.tensors}
        config.update(original_max_position_embeddings=field("rope.scaling.original_context_length"),
                      rope_scaling=dict(type="longrope", attention_factor=float(field("rope.scaling.attn_factor")),
                                        long_factor=[float(v) for v in tensor["rope_factors_long.weight"].data],
                                        short_factor=[float(v) for v in tensor["rope_factors_short.weight"].data]))
    if arch == "smollm3":
        config.update(no_rope_layers=[int((l + 1) % 4 != 0) for l in range(LAYERS)])
    return config


def hf_name(arch, spec, name):
    """The Hugging Face name of a GGUF tensor (None: it lives in config.json)."""
    gemma = spec.get("gemma")
    top = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
    if name in top:
        return top[name]
    if name.startswith("rope_factors"):
        return None
    _, layer, module, kind = name.split(".")
    hf = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
          "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_qkv": "self_attn.qkv_proj",
          "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
          "post_attention_norm": "post_attention_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
          "ffn_norm": "pre_feedforward_layernorm" if gemma else "post_attention_layernorm",
          "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.gate_up_proj" if spec.get("fused") else "mlp.up_proj",
          "ffn_down": "mlp.down_proj", "ffn_gate_inp": "mlp.gate"}[module]
    return f"model.layers.{layer}.{hf}.{kind}"


def representable(array, dtype):
    """`array` rounded to the nearest values of `dtype` (F32, F16 or BF16), as f32."""
    array = np.asarray(array, dtype=np.float32)
    if dtype == "F16":
        return array.astype(np.float16).astype(np.float32)
    if dtype == "BF16":
        bits = array.view(np.uint32).astype(np.uint64)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
        return bits.astype(np.uint32).view(np.float32)
    return array


def encode(array, dtype):
    """The little-endian bytes of f32 `array` (exactly representable) in `dtype`."""
    array = np.ascontiguousarray(array, dtype="<f4")
    if dtype == "F16":
        return array.astype("<f2").tobytes()
    if dtype == "BF16":
        return (array.view("<u4") >> 16).astype("<u2").tobytes()
    return array.tobytes()


def write_safetensors(path, tensors, dtype):
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, array in tensors.items():
        blob = encode(array, dtype)
        header[name] = dict(dtype=dtype, shape=list(array.shape), data_offsets=[offset, offset + len(blob)])
        offset += len(blob)
        blobs.append(blob)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


def write_hf_folder(gguf_path, out, arch, spec):
    """The GGUF's weights as a Hugging Face folder, undoing what llama.cpp's converter does:
    Llama-style query and key rows back in two halves per head, Gemma's norms without their
    `1 +`, experts one tensor each."""
    reader = gguf.GGUFReader(gguf_path)
    os.makedirs(out, exist_ok=True)
    shards = [{}, {}]
    for t in reader.tensors:
        array = np.array(t.data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)])
        name = None if t.name.endswith("_exps.weight") else hf_name(arch, spec, t.name)
        if name is None and not t.name.endswith("_exps.weight"):
            continue
        if arch in ("llama", "smollm3") and t.name.split(".")[-2] in ("attn_q", "attn_k"):
            heads = HEADS if t.name.split(".")[-2] == "attn_q" else KV_HEADS
            rows, cols = array.shape
            array = array.reshape(heads, rows // heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)
        if spec.get("gemma") and t.name.endswith("norm.weight"):
            array = array - np.float32(1.0)
        shard = shards[0 if t.name.startswith(("token_embd", "blk.0.", "blk.1.")) else 1]
        if t.name.endswith("_exps.weight"):
            proj = {"ffn_gate_exps": "gate_proj", "ffn_up_exps": "up_proj", "ffn_down_exps": "down_proj"}[t.name.split(".")[2]]
            layer = t.name.split(".")[1]
            for e in range(array.shape[0]):
                shard[f"model.layers.{layer}.mlp.experts.{e}.{proj}.weight"] = array[e]
        else:
            shard[name] = array
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-00002.safetensors"
        write_safetensors(os.path.join(out, file), shard, spec.get("dtype", "F32"))
        weight_map.update({name: file for name in shard})
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump(dict(metadata={}, weight_map=weight_map), f)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf_config(arch, spec, reader), f)
    tokens = list(reader.fields["tokenizer.ggml.tokens"].contents())
    specials = [dict(id=i, content=t, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
                for i, t in enumerate(tokens) if t.startswith("<|") or t in ("<unk>", "<s>", "</s>")]
    tokenizer = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": specials,
                 "normalizer": None, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None,
                 "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": False},
                 "model": {"type": "WordLevel", "vocab": {t: i for i, t in enumerate(tokens)}, "unk_token": "<unk>"}}
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tokenizer, f)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(dict(bos_token="<s>", eos_token="</s>", add_bos_token=False), f)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump(dict(eos_token_id=[2, tokens.index("<|end|>")]), f)


def requantize(src, dst, ftype=7):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype  # 7: Q8_0
    params.allow_requantize = True
    params.nthread = 2
    if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {src}")


def greedy(path, prompts):
    # Logits of the last position only, as in serving: llama.cpp then runs the last layer's
    # MLP on that row alone (with K-quants, in its single-row order).
    model = llama_cpp.Llama(path, n_ctx=CONTEXT, n_threads=2, n_threads_batch=2, n_batch=CONTEXT,
                            logits_all=False, verbose=False)
    outputs, margin, first = [], float("inf"), None
    for prompt in prompts:
        model.reset()
        model.eval(prompt)
        tokens = []
        for _ in range(GENERATE):
            # The one output row (llama-cpp-python keeps no scores without logits_all).
            logits = np.ctypeslib.as_array(model._ctx.get_logits(), shape=(VOCAB,)).copy()
            if first is None:
                first = [float(v) for v in logits]
            top = np.argsort(-logits)[:2]
            margin = min(margin, float(logits[top[0]] - logits[top[1]]))
            tokens.append(int(top[0]))
            model.eval([int(top[0])])
        outputs.append(tokens)
    return outputs, margin, first


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    plain_cpu_kernels()
    only = set(sys.argv[2:])
    cases = []
    for arch, spec in ARCHITECTURES.items():
        if only and arch not in only:
            continue
        rng = np.random.default_rng(1000)
        prompts = [rng.integers(263, VOCAB, PROMPT_LEN).tolist(), rng.integers(263, VOCAB, PROMPT_LEN // 2 + 3).tolist()]
        for seed in range(40):
            f32 = os.path.join(out_dir, f"{arch}-f32.gguf")
            write_model(f32, arch, spec, seed)
            q8 = os.path.join(out_dir, f"{arch}-q8_0.gguf")
            requantize(f32, q8)
            files = [f32, q8]
            if spec.get("kquant"):
                files.append(os.path.join(out_dir, f"{arch}-q4_k_m.gguf"))
                requantize(f32, files[-1], ftype=15)  # 15: Q4_K_M (Q4_K and Q6_K)
            if spec.get("more_quants"):
                # 17: Q5_K_M (Q5_K and Q6_K); 9: Q5_1 and 8: Q5_0 (output Q6_K).
                for name, ftype in (("q5_k_m", 17), ("q5_1", 9), ("q5_0", 8)):
                    files.append(os.path.join(out_dir, f"{arch}-{name}.gguf"))
                    requantize(f32, files[-1], ftype=ftype)
            results = [(path,) + greedy(path, prompts) for path in files]
            # Clear winners, and a continuation that moves (not one token repeated).
            lively = all(len(set(t)) >= GENERATE // 3 for _, tokens, _, _ in results for t in tokens)
            if lively and all(margin >= MIN_MARGIN for _, _, margin, _ in results):
                break
            print(f"{arch}: seed {seed} has a near-tie or repeats itself, drawing again", file=sys.stderr)
        else:
            raise RuntimeError(f"{arch}: no seed gave top-two gaps of {MIN_MARGIN}")
        hf = os.path.join(out_dir, f"{arch}-hf")
        write_hf_folder(results[0][0], hf, arch, spec)
        for path, tokens, margin, first in results:
            cases.append(dict(architecture=arch, file=path, seed=seed, prompts=prompts,
                              tokens=tokens, min_margin=margin, hf_folder=hf, first_logits=first))
    # The vector width llama.cpp was built for: its F32 products add up lane by lane.
    system = llama_cpp.llama_print_system_info().decode()
    ggml_build = "avx512" if "AVX512 = 1" in system else "avx2"
    json.dump(dict(cases=cases, ggml_build=ggml_build), sys.stdout)


if __name__ == "__main__":
    main()
