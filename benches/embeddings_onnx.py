"""The embedding benchmark's peer: the same BERT sentence encoder on ONNX Runtime, for
benches/compare_embeddings.sh.

  embeddings_onnx.py MODEL_DIR OUT_JSON [--threads 2] [--runs 5] [--check HELIXFLOW_EMBED_JSON]
  embeddings_onnx.py MODEL_DIR --texts     (prints the short and the long text, a line each)

MODEL_DIR is a sentence-transformers folder of a BERT encoder with mean pooling and
normalisation (all-MiniLM-L6-v2, HelixFlow's default embedding model): config.json,
model.safetensors, tokenizer.json. The script writes the encoder as an fp32 ONNX graph (the
weights as they are, the operators of Hugging Face's BertModel: embeddings, LayerNorm,
self-attention with the padding mask, erf GELU, mean pooling, L2 normalisation), runs it on ONNX
Runtime's CPU provider with --threads intra-op threads and all graph optimisations, and times
what `helixflow bench --embeddings` times: batches of 1, 8 and 32 copies of its short sentence
and of its 256-token text, tokenised by the folder's tokenizer.json (Hugging Face's tokenizers,
as HelixFlow's), the tokenisation included. Writes one JSON object like the HelixFlow bench's.
With --check, the embeddings of both texts are compared with HelixFlow's (`helixflow embed`
output): a graph that computed something else would not be a peer.
"""

import argparse
import json
import os
import statistics
import struct
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

# The inputs of helixflow-cli/src/commands/bench/embeddings.rs.
SHORT = "The weather is lovely today and the park is full of people."
FILLER = (
    "The history of computing is a story of people who wanted to calculate faster and more "
    "reliably than they could by hand. Mechanical calculators, punched cards, vacuum tubes, "
    "transistors and integrated circuits each made machines smaller and cheaper. "
)
BATCHES = [1, 8, 32]


def read_safetensors(path):
    """Every tensor of a safetensors file, as numpy arrays."""
    kinds = {"F32": np.float32, "I64": np.int64, "F16": np.float16}
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=kinds[info["dtype"]])
        out[name] = array.reshape(info["shape"]).astype(np.float32, copy=False)
    return out


def build_graph(weights, config):
    """The encoder, mean pooling and normalisation as an ONNX graph."""
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head = hidden // heads
    eps = config["layer_norm_eps"]
    nodes, inits = [], []
    counter = [0]

    def name(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(value, prefix="c"):
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def node(op, inputs, **attrs):
        out = name(op)
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def linear(x, prefix):
        w = const(weights[f"{prefix}.weight"].T.copy(), "w")
        return node("Add", [node("MatMul", [x, w]), const(weights[f"{prefix}.bias"], "b")])

    def layer_norm(x, prefix):
        return node("LayerNormalization",
                    [x, const(weights[f"{prefix}.weight"]), const(weights[f"{prefix}.bias"])],
                    axis=-1, epsilon=eps)

    ids, mask = "input_ids", "attention_mask"
    # Embeddings: words, positions 0..S, token type 0.
    seq = node("Gather", [node("Shape", [ids]), const(np.array(1, dtype=np.int64))], axis=0)
    positions = node("Range", [const(np.array(0, dtype=np.int64)), seq,
                               const(np.array(1, dtype=np.int64))])
    x = node("Gather", [const(weights["embeddings.word_embeddings.weight"]), ids], axis=0)
    x = node("Add", [x, node("Gather", [const(weights["embeddings.position_embeddings.weight"]),
                                         positions], axis=0)])
    x = node("Add", [x, const(weights["embeddings.token_type_embeddings.weight"][0])])
    x = layer_norm(x, "embeddings.LayerNorm")
    # The additive mask: 0 where attended, the most negative float where padding.
    maskf = node("Cast", [mask], to=TensorProto.FLOAT)
    bias = node("Mul", [node("Sub", [const(np.float32(1.0)), maskf]),
                        const(np.float32(np.finfo(np.float32).min))])
    bias = node("Unsqueeze", [bias, const(np.array([1, 2], dtype=np.int64))])
    split_heads = const(np.array([0, 0, heads, head], dtype=np.int64))
    merge_heads = const(np.array([0, 0, hidden], dtype=np.int64))
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"

        def heads_of(t, perm):
            return node("Transpose", [node("Reshape", [t, split_heads])], perm=perm)

        q = heads_of(linear(x, f"{p}.attention.self.query"), [0, 2, 1, 3])
        k = heads_of(linear(x, f"{p}.attention.self.key"), [0, 2, 3, 1])
        v = heads_of(linear(x, f"{p}.attention.self.value"), [0, 2, 1, 3])
        scores = node("Mul", [node("MatMul", [q, k]), const(np.float32(1.0 / np.sqrt(head)))])
        probs = node("Softmax", [node("Add", [scores, bias])], axis=-1)
        context = node("Transpose", [node("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        context = node("Reshape", [context, merge_heads])
        attended = linear(context, f"{p}.attention.output.dense")
        x = layer_norm(node("Add", [attended, x]), f"{p}.attention.output.LayerNorm")
        inner = linear(x, f"{p}.intermediate.dense")
        erf = node("Erf", [node("Mul", [inner, const(np.float32(1.0 / np.sqrt(2.0)))])])
        gelu = node("Mul", [node("Mul", [inner, const(np.float32(0.5))]),
                            node("Add", [erf, const(np.float32(1.0))])])
        x = layer_norm(node("Add", [linear(gelu, f"{p}.output.dense"), x]),
                       f"{p}.output.LayerNorm")
    # Mean over the attended tokens, then L2 normalisation.
    m = node("Unsqueeze", [maskf, const(np.array([2], dtype=np.int64))])
    summed = node("ReduceSum", [node("Mul", [x, m]), const(np.array([1], dtype=np.int64))],
                  keepdims=0)
    count = node("ReduceSum", [m, const(np.array([1], dtype=np.int64))], keepdims=0)
    mean = node("Div", [summed, node("Max", [count, const(np.float32(1e-9))])])
    norm = node("ReduceL2", [mean], axes=[1], keepdims=1)  # axes an attribute until opset 18
    out = node("Div", [mean, node("Max", [norm, const(np.float32(1e-12))])])
    nodes.append(helper.make_node("Identity", [out], ["embeddings"]))
    graph = helper.make_graph(
        nodes, "sentence_encoder",
        [helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info(mask, TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", hidden])],
        inits)
    # IR version 8 (ONNX 1.10+), which every ONNX Runtime of the last years reads.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def flops(config, n):
    """As the HelixFlow bench counts them: the matrices' and attention's multiply-adds, twice."""
    h, i = config["hidden_size"], config["intermediate_size"]
    macs = 4 * n * h * h + 2 * n * h * i + 2 * n * n * h
    return 2.0 * macs * config["num_hidden_layers"]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--texts", action="store_true", help="print the two texts and stop")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--check", help="`helixflow embed` JSON of the short and the long text")
    args = ap.parse_args()

    with open(os.path.join(args.model_dir, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(args.model_dir, "sentence_bert_config.json")) as f:
        max_len = json.load(f).get("max_seq_length", 512)
    tokenizer = Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_len)
    long_tokens = min(256, max_len)
    long_text = ""
    while len(tokenizer.encode(long_text).ids) < long_tokens:
        long_text += FILLER
    if args.texts:
        print(SHORT)
        print(long_text)
        return
    if not args.out:
        sys.exit("OUT_JSON is required")
    model = build_graph(read_safetensors(os.path.join(args.model_dir, "model.safetensors")),
                        config)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])

    def embed(texts):
        encodings = tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = 1
        return session.run(None, {"input_ids": ids, "attention_mask": mask})[0], width

    embed([SHORT])  # warm-up
    agreement = None
    if args.check:
        with open(args.check) as f:
            theirs = [np.array(d["embedding"], dtype=np.float32) for d in json.load(f)["data"]]
        ours, _ = embed([SHORT, long_text])
        agreement = min(float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
                        for a, b in zip(ours, theirs))
        if agreement < 0.9999:
            sys.exit(f"ONNX Runtime's embeddings differ from HelixFlow's (cosine {agreement})")
    results = []
    for kind, text in (("short", SHORT), ("long", long_text)):
        for batch in BATCHES:
            rates, tokens = [], 0
            for _ in range(args.runs):
                start = time.perf_counter()
                _, tokens = embed([text] * batch)
                rates.append(batch / (time.perf_counter() - start))
            sentences = statistics.median(rates)
            results.append({"input": kind, "tokens_per_input": tokens, "batch": batch,
                            "sentences_per_s": sentences, "tokens_per_s": sentences * tokens,
                            "gflops": sentences * flops(config, tokens) / 1e9})
    with open(args.out, "w") as f:
        json.dump({"engine": "onnxruntime", "onnxruntime": ort.__version__,
                   "threads": args.threads, "runs": args.runs,
                   "min_cosine_to_helixflow": agreement, "results": results}, f)


if __name__ == "__main__":
    main()
