"""Errors: each mistake raises its own HelixFlowError subclass (which is also the matching
built-in exception), except an unknown keyword, which is a plain TypeError as for any function."""

import asyncio
import threading
import time

import pytest

import helixflow
from helixflow import (
    ContextLengthError,
    EngineStoppedError,
    HelixFlowError,
    InvalidRequestError,
    ModelLoadError,
    ModelNotFoundError,
    OverloadedError,
    ParameterTypeError,
)

HI = [{"role": "user", "content": "Hi!"}]
SMALL_KV = 64 << 20


def test_the_exception_hierarchy():
    errors = [getattr(helixflow, name) for name in helixflow.__all__ if name.endswith("Error")]
    assert len(errors) == 9
    for error in errors:
        assert issubclass(error, HelixFlowError), error
    assert issubclass(ModelNotFoundError, LookupError)
    assert issubclass(InvalidRequestError, ValueError)
    assert issubclass(ContextLengthError, InvalidRequestError)
    assert issubclass(ParameterTypeError, InvalidRequestError)
    assert issubclass(ParameterTypeError, TypeError)


def test_a_missing_model_file_is_not_found():
    with pytest.raises(ModelNotFoundError) as info:
        helixflow.Engine("/nonexistent/model.gguf")
    assert isinstance(info.value, LookupError)
    assert "/nonexistent/model.gguf" in str(info.value)


def test_an_unknown_model_id_is_refused():
    with pytest.raises(HelixFlowError):
        helixflow.Engine("smollm2-999m-instruct")


def test_a_malformed_model_file_does_not_load(tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"this is not a GGUF file" * 10)
    with pytest.raises(ModelLoadError):
        helixflow.Engine(path)


@pytest.mark.parametrize(
    "options, named",
    [
        (dict(temperature=5), "temperature"),
        (dict(max_tokens=0), "max_tokens"),
        (dict(n=0), r"\bn\b"),
        (dict(top_p=0), "top_p"),
        (dict(top_logprobs=3), "top_logprobs"),
        (dict(stop=[f"s{i}" for i in range(17)]), "stop"),  # HelixFlow allows 16
    ],
    ids=["temperature=5", "max_tokens=0", "n=0", "top_p=0", "top_logprobs-without-logprobs",
         "17-stop-strings"],
)
def test_out_of_range_values_are_invalid_requests(chat_engine, options, named):
    for stream in (False, True):
        with pytest.raises(InvalidRequestError, match=named) as info:
            result = chat_engine.chat(HI, stream=stream, **options)
            if stream:
                list(result)
        assert isinstance(info.value, ValueError)
        assert not isinstance(info.value, (ParameterTypeError, ContextLengthError))


def test_completion_values_are_checked_too(chat_engine):
    with pytest.raises(InvalidRequestError, match="temperature"):
        chat_engine.complete("Hi", temperature=-1)
    with pytest.raises(InvalidRequestError):
        chat_engine.complete("Hi", max_tokens=0)


def test_echo_is_refused_as_the_server_refuses_it(chat_engine):
    with pytest.raises(InvalidRequestError, match="echo"):
        chat_engine.complete("Hi", max_tokens=2, echo=True)


def test_an_empty_conversation_is_an_invalid_request(chat_engine):
    with pytest.raises(InvalidRequestError):
        chat_engine.chat([])


def test_a_prompt_beyond_the_context_is_a_context_length_error(chat_engine):
    context = chat_engine.context_length
    with pytest.raises(ContextLengthError):
        chat_engine.chat(HI, max_tokens=context)
    with pytest.raises(ContextLengthError):
        chat_engine.complete([chat_engine.tokenize("Hi")[0]] * context)


@pytest.mark.parametrize(
    "call",
    [
        lambda e: e.chat(HI, temperature="hot"),
        lambda e: e.chat("hi"),
        lambda e: e.chat(HI, max_tokens=1.5),
        lambda e: e.chat(HI, stop=[1]),
        lambda e: e.chat(HI, logprobs=1),
        lambda e: e.chat(HI, stream_options={"include_usage": "yes"}),
        lambda e: e.complete(42),
        lambda e: e.complete("Hi", echo="no"),
        lambda e: e.tokenize(b"bytes"),
        lambda e: e.detokenize("1 2 3"),
        lambda e: e.achat(HI, seed=1.5),
    ],
    ids=[
        "temperature", "messages", "max_tokens", "stop", "logprobs", "stream_options",
        "prompt", "echo", "tokenize", "detokenize", "achat",
    ],
)
def test_wrong_types_are_parameter_type_errors(chat_engine, call):
    with pytest.raises(ParameterTypeError) as info:
        call(chat_engine)
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, InvalidRequestError)


def test_an_unknown_keyword_is_a_plain_type_error(chat_engine):
    for call in (
        lambda: chat_engine.chat(HI, temprature=0),
        lambda: chat_engine.complete("Hi", top_logprobs=2),  # a chat-only option
        lambda: helixflow.Engine(max_num_seq=4),
    ):
        with pytest.raises(TypeError) as info:
            call()
        assert not isinstance(info.value, HelixFlowError)


def test_a_call_for_the_other_kind_of_model_is_an_invalid_request(chat_engine, embedding_engine):
    with pytest.raises(InvalidRequestError):
        chat_engine.embed("Hello")
    with pytest.raises(InvalidRequestError):
        embedding_engine.chat(HI)
    with pytest.raises(InvalidRequestError):
        embedding_engine.complete("Hello")


def test_an_unknown_token_id_is_an_invalid_request(chat_engine):
    with pytest.raises(InvalidRequestError):
        chat_engine.detokenize([10**9])


def test_an_unknown_prompt_id_is_refused_without_harming_other_requests(chat_engine):
    with chat_engine.complete("Once upon a time", max_tokens=16, ignore_eos=True, stream=True) as healthy:
        next(healthy)
        with pytest.raises(InvalidRequestError, match="vocabulary"):
            chat_engine.complete([5, 10**9], max_tokens=2)
        rest = list(healthy)
    assert rest[-1].choices[0].finish_reason == "length"


def test_a_refused_async_stream_stays_over(chat_engine):
    async def main() -> None:
        stream = chat_engine.achat(HI, stream=True, max_tokens=0)
        with pytest.raises(InvalidRequestError):
            await stream.__anext__()
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()

    asyncio.run(main())


def test_any_mapping_or_sequence_is_accepted_where_dicts_and_lists_are(chat_engine):
    from collections import deque
    from types import MappingProxyType

    messages = [MappingProxyType({"role": "user", "content": "Name three primary colors."})]
    answer = chat_engine.chat(messages, max_tokens=4, temperature=0, stop=deque(["zzz"]),
                              logit_bias=MappingProxyType({}))
    assert answer.choices[0].message.content
    assert answer.choices[0].message.refusal is None  # the SDK's fields are all there


@pytest.mark.parametrize(
    "options, error",
    [
        (dict(max_num_seqs=0), InvalidRequestError),
        (dict(kv_cache_fraction=1.5), InvalidRequestError),
        (dict(max_num_seqs="x"), ParameterTypeError),
        (dict(kv_cache_bytes=1.5), ParameterTypeError),
    ],
    ids=["max_num_seqs=0", "kv_cache_fraction=1.5", "max_num_seqs=x", "kv_cache_bytes=1.5"],
)
def test_bad_engine_options_are_refused(options, error):
    with pytest.raises(error):
        helixflow.Engine(**options)


def test_a_full_queue_refuses_requests_at_once():
    with helixflow.Engine(queue_capacity=2, max_num_seqs=1, kv_cache_bytes=SMALL_KV) as engine:
        accepted, refused = [], 0
        for _ in range(40):
            try:
                accepted.append(engine.chat(HI, max_tokens=8, stream=True))
            except OverloadedError as e:
                assert "overloaded" in str(e)
                refused += 1
        assert refused > 0, "nothing was refused"
        # One running, two waiting, two in the queue at most.
        assert len(accepted) <= 5, len(accepted)
        for stream in accepted:
            assert any(chunk.choices[0].finish_reason for chunk in stream)


def test_a_closed_engine_refuses_every_call():
    engine = helixflow.Engine(kv_cache_bytes=SMALL_KV)
    engine.close()
    with pytest.raises(EngineStoppedError):
        engine.chat(HI, max_tokens=2)
    with pytest.raises(EngineStoppedError):
        list(engine.chat(HI, max_tokens=2, stream=True))
    with pytest.raises(EngineStoppedError):
        engine.complete("Hi", max_tokens=2)
    with pytest.raises(EngineStoppedError):
        asyncio.run(engine.achat(HI, max_tokens=2))

    with helixflow.Engine("all-minilm-l6-v2") as embedder:
        assert len(embedder.embed("Hi")) == 1
    with pytest.raises(EngineStoppedError):
        embedder.embed("Hi")


def test_closing_lets_running_requests_finish():
    engine = helixflow.Engine(kv_cache_bytes=SMALL_KV)
    outcome = []

    def ask() -> None:
        try:
            outcome.append(engine.chat(HI, max_tokens=64, ignore_eos=True))
        except HelixFlowError as e:
            outcome.append(e)

    worker = threading.Thread(target=ask)
    worker.start()
    deadline = time.perf_counter() + 10
    while engine.stats().running_requests == 0 and time.perf_counter() < deadline:
        time.sleep(0.001)
    engine.close()
    worker.join()
    [answer] = outcome
    assert not isinstance(answer, HelixFlowError), answer
    assert answer.usage.completion_tokens == 64
    with pytest.raises(EngineStoppedError):
        engine.chat(HI, max_tokens=2)


def test_the_limits_every_front_end_applies_hold_here_too(chat_engine, embedding_engine):
    """Issue 19: the same checks as over HTTP and gRPC, from the core."""
    with pytest.raises(InvalidRequestError, match="role"):
        chat_engine.chat([{"role": "wizard", "content": "Hi"}])
    with pytest.raises(ContextLengthError):
        chat_engine.chat(HI, max_tokens=2**64 - 1)
    with pytest.raises(InvalidRequestError, match="top_k"):
        chat_engine.chat(HI, max_tokens=2, top_k=0)
    with pytest.raises(InvalidRequestError, match="bytes"):
        chat_engine.complete("x" * (3 << 20), max_tokens=1)
    long = "Every text is checked against the model's limit. " * 60
    with pytest.raises(InvalidRequestError, match="truncat"):
        embedding_engine.embed([long])
    assert len(embedding_engine.embed([long], truncate=True)[0]) == 384
    with pytest.raises(InvalidRequestError, match="2048"):
        embedding_engine.embed(["hi"] * 2049)
