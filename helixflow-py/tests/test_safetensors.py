"""A Hugging Face safetensors chat folder loads in the binding, as it is and quantised at load
(`quantize=`), and `quantize` on a model that is not such a folder is refused."""

import json
import random
import struct
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

import helixflow
from helixflow import HelixFlowError, InvalidRequestError

VOCAB = ["<unk>", "<s>", "</s>", "red", "green", "blue", "sky", "sea"]
HIDDEN, FF, HEADS, KV_HEADS, HEAD_DIM = 32, 64, 2, 1, 16


def write_safetensors(path: Path, tensors: Dict[str, Tuple[List[int], List[float]]]) -> None:
    """safetensors: an 8-byte header length, the JSON header, then the F32 data."""
    header, data = {}, bytearray()
    for name, (shape, values) in tensors.items():
        start = len(data)
        data += struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [start, len(data)]}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(data))


def tiny_llama_folder(path: Path) -> Path:
    """A one-layer Llama in the layout `transformers` saves, with seeded random weights."""
    rng = random.Random(7)

    def matrix(rows: int, cols: int, scale: float = 0.5) -> Tuple[List[int], List[float]]:
        return [rows, cols], [(rng.random() - 0.5) * scale for _ in range(rows * cols)]

    def ones(width: int) -> Tuple[List[int], List[float]]:
        return [width], [1.0] * width

    p = "model.layers.0"
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    write_safetensors(path / "model.safetensors", {
        "model.embed_tokens.weight": matrix(len(VOCAB), HIDDEN, 2.0),
        "model.norm.weight": ones(HIDDEN),
        "lm_head.weight": matrix(len(VOCAB), HIDDEN, 2.0),
        f"{p}.input_layernorm.weight": ones(HIDDEN),
        f"{p}.post_attention_layernorm.weight": ones(HIDDEN),
        f"{p}.self_attn.q_proj.weight": matrix(q, HIDDEN),
        f"{p}.self_attn.k_proj.weight": matrix(kv, HIDDEN),
        f"{p}.self_attn.v_proj.weight": matrix(kv, HIDDEN),
        f"{p}.self_attn.o_proj.weight": matrix(HIDDEN, q),
        f"{p}.mlp.gate_proj.weight": matrix(FF, HIDDEN),
        f"{p}.mlp.up_proj.weight": matrix(FF, HIDDEN),
        f"{p}.mlp.down_proj.weight": matrix(HIDDEN, FF),
    })
    (path / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": len(VOCAB),
        "hidden_size": HIDDEN, "intermediate_size": FF, "num_hidden_layers": 1,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64,
    }))
    special = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
               "special": True}
    (path / "tokenizer.json").write_text(json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "normalizer": None,
        "added_tokens": [dict(id=0, content="<unk>", **special),
                         dict(id=2, content="</s>", **special)],
        "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None, "decoder": None,
        "model": {"type": "WordLevel", "unk_token": "<unk>",
                  "vocab": {w: i for i, w in enumerate(VOCAB)}},
    }))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>",
        "chat_template": "{% for m in messages %}{{ m['content'] }} {% endfor %}",
    }))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama_folder(tmp_path_factory.mktemp("tiny-llama"))


def first_logprobs(folder: Path, quantize: Optional[str]) -> Dict[str, float]:
    options = {} if quantize is None else {"quantize": quantize}
    with helixflow.Engine(str(folder), **options) as engine:
        assert engine.kind == "chat" and engine.context_length == 64
        answer = engine.chat([{"role": "user", "content": "red sky"}], temperature=0,
                             max_tokens=3, logprobs=True, top_logprobs=len(VOCAB))
    assert answer.usage.prompt_tokens == 2
    assert answer.usage.completion_tokens >= 1
    first = answer.choices[0].logprobs.content[0]
    return {t.token: t.logprob for t in first.top_logprobs}


def test_a_safetensors_folder_loads_as_it_is_and_quantised(folder):
    exact = first_logprobs(folder, None)
    # Probabilities moved by the rounding of the weights (the option reached the loader),
    # little for Q8_0 (the model is still the same model), more for Q4_0's 4 bits.
    for quantize, within in [("q8_0", 0.5), ("q4_0", None)]:
        quantised = first_logprobs(folder, quantize)
        assert quantised.keys() == exact.keys(), quantize
        assert quantised != exact, f"{quantize}: the weights were not quantised"
        if within is not None:
            assert all(abs(quantised[t] - exact[t]) < within for t in exact), (quantised, exact)


def test_quantize_is_refused_where_it_cannot_apply(folder):
    with pytest.raises(InvalidRequestError, match="q2_k"):
        helixflow.Engine(str(folder), quantize="q2_k")
    # A GGUF is quantised already: the option is refused, not ignored.
    with pytest.raises(HelixFlowError, match="safetensors"):
        helixflow.Engine("smollm2-135m-instruct", quantize="q8_0")
