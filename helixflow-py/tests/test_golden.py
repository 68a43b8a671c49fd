"""Every golden reference reproduced through the binding: greedy chat answers, first-step
logprobs, tokenization both ways, and embeddings (as lists and as NumPy arrays)."""

import math
from typing import Any, Dict, Sequence

import pytest

import helixflow

END_OF_TURN = 2  # `<|im_end|>`, the last id of the golden answers that stop by themselves
LOGPROB_TOLERANCE = 1e-2  # what the golden README promises between llama.cpp and us
MIN_COSINE = 0.9999


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = math.fsum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(math.fsum(x * x for x in a) * math.fsum(y * y for y in b))


def test_the_engines_are_the_default_models(chat_engine, embedding_engine, embedding_golden):
    assert (chat_engine.model, chat_engine.kind) == ("smollm2-135m-instruct", "chat")
    assert chat_engine.context_length is not None and chat_engine.context_length > 0
    assert chat_engine.dimension is None
    assert (embedding_engine.model, embedding_engine.kind) == ("all-minilm-l6-v2", "embedding")
    assert embedding_engine.dimension == len(embedding_golden["cases"][0]["embedding"])
    assert embedding_engine.context_length is None
    assert helixflow.DEFAULT_MODEL == chat_engine.model


def test_greedy_chat_reproduces_the_reference(chat_engine, chat_case: Dict[str, Any]):
    expected_ids = chat_case["greedy_completion_token_ids"]
    max_tokens = len(expected_ids)
    answer = chat_engine.chat(chat_case["messages"], temperature=0, max_tokens=max_tokens)
    assert answer.object == "chat.completion"
    assert answer.model == chat_engine.model
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == chat_case["greedy_completion_text"]
    assert choice.finish_reason == ("stop" if expected_ids[-1] == END_OF_TURN else "length")
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == len(chat_case["prompt_token_ids"])
    assert answer.usage.completion_tokens == max_tokens
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + max_tokens


def test_the_rendered_prompt_tokenizes_to_the_reference(chat_engine, chat_case):
    assert chat_engine.tokenize(chat_case["prompt"]) == chat_case["prompt_token_ids"]


def test_first_step_logprobs_match_the_reference(chat_engine, chat_case):
    answer = chat_engine.chat(
        chat_case["messages"], temperature=0, max_tokens=1, logprobs=True, top_logprobs=5
    )
    first = answer.choices[0].logprobs.content[0]
    expected = chat_case["first_step_top5_logprobs"]  # [token id, logprob], most likely first
    assert first.token == chat_engine.detokenize([expected[0][0]])
    assert first.logprob == pytest.approx(expected[0][1], abs=LOGPROB_TOLERANCE)
    got = sorted((t.logprob for t in first.top_logprobs), reverse=True)
    assert got == pytest.approx([lp for _, lp in expected], abs=LOGPROB_TOLERANCE)


def test_tokenization_matches_the_reference(chat_engine, token_case):
    text = token_case["text"]
    assert chat_engine.tokenize(text) == token_case["ids_special_parsed"]
    assert chat_engine.tokenize(text, special=False) == token_case["ids_special_as_text"]
    assert chat_engine.detokenize(token_case["ids_special_as_text"], skip_special=True) == text
    assert chat_engine.detokenize(token_case["ids_special_parsed"]) == text


def test_embedding_tokens_match_the_reference(embedding_engine, embedding_case):
    assert embedding_engine.tokenize(embedding_case["input"]) == embedding_case["token_ids"]


def test_each_embedding_matches_the_reference(embedding_engine, embedding_case):
    [vector] = embedding_engine.embed(embedding_case["input"])
    assert len(vector) == embedding_engine.dimension
    assert all(isinstance(x, float) for x in vector)
    assert cosine(vector, embedding_case["embedding"]) >= MIN_COSINE


def test_a_batch_of_embeddings_matches_the_reference(embedding_engine, embedding_golden):
    cases = embedding_golden["cases"]
    vectors = embedding_engine.embed([c["input"] for c in cases])
    assert len(vectors) == len(cases)
    for vector, case in zip(vectors, cases):
        assert cosine(vector, case["embedding"]) >= MIN_COSINE, case["input"]


def test_numpy_embeddings_match_the_reference(embedding_engine, embedding_golden):
    numpy = pytest.importorskip("numpy")
    cases = embedding_golden["cases"]
    texts = [c["input"] for c in cases]
    array = embedding_engine.embed(texts, as_numpy=True)
    assert isinstance(array, numpy.ndarray)
    assert array.shape == (len(cases), embedding_engine.dimension)
    assert array.dtype == numpy.float32
    for row, case in zip(array, cases):
        assert cosine(row.tolist(), case["embedding"]) >= MIN_COSINE, case["input"]
    numpy.testing.assert_allclose(array, embedding_engine.embed(texts), rtol=0, atol=1e-6)


def test_golden_files_hold_every_case(chat_golden, embedding_golden):
    # Guards the parametrisation: an empty or renamed list would silently test nothing.
    assert len(chat_golden["cases"]) >= 6
    assert len(chat_golden["tokenization"]) >= 8
    assert len(embedding_golden["cases"]) >= 6
