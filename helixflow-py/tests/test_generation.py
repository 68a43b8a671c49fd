"""Chat and text completions: streamed answers equal whole ones, the usage chunk, seeds, stop
strings, logprobs in both APIs' shapes, token-id prompts, and the result objects' JSON."""

import json
from typing import Any, Dict, List

import pytest

from helixflow import (
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    CompletionUsage,
    Stream,
)

COLORS = [{"role": "user", "content": "Name three primary colors."}]
PROMPT = "Once upon a time"


def streamed_text(chunks: List[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def usage_tuple(usage: CompletionUsage) -> tuple:
    return (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)


def test_streamed_chat_equals_the_whole_answer(chat_engine):
    whole = chat_engine.chat(COLORS, temperature=0, max_tokens=16)
    stream = chat_engine.chat(COLORS, temperature=0, max_tokens=16, stream=True)
    assert isinstance(stream, Stream)
    chunks = list(stream)
    assert len(chunks) >= 2
    assert streamed_text(chunks) == whole.choices[0].message.content
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(c.model == chat_engine.model for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.usage is None for c in chunks)  # no include_usage
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert all(f is None for f in finishes[:-1])
    assert list(stream) == []  # a finished stream stays finished


def test_streamed_completion_equals_the_whole_answer(chat_engine):
    whole = chat_engine.complete(PROMPT, temperature=0, max_tokens=16)
    assert isinstance(whole, Completion) and whole.object == "text_completion"
    assert whole.id.startswith("cmpl-")
    chunks = list(chat_engine.complete(PROMPT, temperature=0, max_tokens=16, stream=True))
    assert all(isinstance(c, Completion) for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == (
        whole.choices[0].finish_reason
    )
    assert all(c.usage is None for c in chunks)


def test_include_usage_adds_a_last_chunk_with_the_token_counts(chat_engine):
    whole = chat_engine.chat(COLORS, temperature=0, max_tokens=12)
    chunks = list(chat_engine.chat(COLORS, temperature=0, max_tokens=12, stream=True,
                                   stream_options={"include_usage": True}))
    *text_chunks, last = chunks
    assert last.choices == [] and last.usage is not None
    assert usage_tuple(last.usage) == usage_tuple(whole.usage)
    assert all(c.usage is None and c.choices for c in text_chunks)
    assert streamed_text(text_chunks) == whole.choices[0].message.content

    whole = chat_engine.complete(PROMPT, temperature=0, max_tokens=12)
    *text_chunks, last = chat_engine.complete(PROMPT, temperature=0, max_tokens=12, stream=True,
                                              stream_options={"include_usage": True})
    assert last.choices == [] and last.usage is not None
    assert usage_tuple(last.usage) == usage_tuple(whole.usage)
    assert all(c.usage is None for c in text_chunks)


def test_a_seed_reproduces_sampled_choices(chat_engine):
    options: Dict[str, Any] = dict(n=2, temperature=1, seed=7, max_tokens=16)
    first = chat_engine.chat(COLORS, **options)
    again = chat_engine.chat(COLORS, **options)
    assert [c.index for c in first.choices] == [0, 1]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert first.usage.completion_tokens == again.usage.completion_tokens


def test_a_stop_string_ends_the_answer_before_it(chat_engine, chat_golden):
    case = chat_golden["cases"][1]  # a short answer that ends by itself
    text = case["greedy_completion_text"]
    word = text.split()[2]
    expected = text[: text.index(word)]
    request = dict(temperature=0, max_tokens=len(case["greedy_completion_token_ids"]))
    for stop in (word, [word], ["never-generated-xyz", word]):
        cut = chat_engine.chat(case["messages"], stop=stop, **request)
        assert cut.choices[0].message.content == expected, stop
        assert cut.choices[0].finish_reason == "stop"
    chunks = list(chat_engine.chat(case["messages"], stop=word, stream=True, **request))
    assert streamed_text(chunks) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_chat_logprobs_have_one_entry_per_token_with_the_top_alternatives(chat_engine):
    answer = chat_engine.chat(COLORS, temperature=0, max_tokens=8, ignore_eos=True,
                              logprobs=True, top_logprobs=3)
    assert answer.usage.completion_tokens == 8
    content = answer.choices[0].logprobs.content
    assert len(content) == 8
    for entry in content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert entry.token == entry.top_logprobs[0].token
        assert entry.logprob == pytest.approx(values[0], abs=1e-6)
    if all(entry.bytes is not None for entry in content):
        raw = b"".join(bytes(entry.bytes) for entry in content)
        assert raw.decode("utf-8") == answer.choices[0].message.content

    streamed = chat_engine.chat(COLORS, temperature=0, max_tokens=8, ignore_eos=True,
                                logprobs=True, top_logprobs=3, stream=True)
    streamed_content = [e for c in streamed if c.choices and c.choices[0].logprobs
                        for e in c.choices[0].logprobs.content]
    assert [e.token for e in streamed_content] == [e.token for e in content]
    assert [e.logprob for e in streamed_content] == pytest.approx([e.logprob for e in content],
                                                                  abs=1e-4)

    plain = chat_engine.chat(COLORS, temperature=0, max_tokens=4, logprobs=True)
    assert all(e.top_logprobs == [] for e in plain.choices[0].logprobs.content)
    assert chat_engine.chat(COLORS, temperature=0, max_tokens=4).choices[0].logprobs is None


def test_completion_logprobs_have_the_legacy_shape(chat_engine):
    answer = chat_engine.complete(PROMPT, temperature=0, max_tokens=6, ignore_eos=True,
                                  logprobs=3)
    choice = answer.choices[0]
    logprobs = choice.logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == 6
    assert len(logprobs.top_logprobs) == len(logprobs.text_offset) == 6
    assert "".join(logprobs.tokens) == choice.text
    offset = 0
    for token, start in zip(logprobs.tokens, logprobs.text_offset):
        assert start == offset
        offset += len(token)
    for top, chosen in zip(logprobs.top_logprobs, logprobs.token_logprobs):
        assert len(top) == 3
        assert max(top.values()) == pytest.approx(chosen, abs=1e-6)  # greedy

    chunks = list(chat_engine.complete(PROMPT, temperature=0, max_tokens=6, ignore_eos=True,
                                       logprobs=3, stream=True))
    joined: Dict[str, list] = {k: [] for k in ("tokens", "token_logprobs", "top_logprobs",
                                               "text_offset")}
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].logprobs is not None:
            for key, values in chunk.choices[0].logprobs.to_dict().items():
                joined[key].extend(values)
    assert joined["tokens"] == logprobs.tokens
    assert joined["text_offset"] == logprobs.text_offset
    assert joined["token_logprobs"] == pytest.approx(logprobs.token_logprobs, abs=1e-4)
    assert [sorted(top) for top in joined["top_logprobs"]] == [
        sorted(top) for top in logprobs.top_logprobs
    ]


def test_a_prompt_may_be_token_ids(chat_engine):
    by_text = chat_engine.complete(PROMPT, temperature=0, max_tokens=5)
    by_ids = chat_engine.complete(chat_engine.tokenize(PROMPT), temperature=0, max_tokens=5)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == by_text.usage.prompt_tokens == len(
        chat_engine.tokenize(PROMPT)
    )


def test_ignore_eos_generates_exactly_max_tokens(chat_engine):
    answer = chat_engine.chat(COLORS, temperature=0, max_tokens=24, ignore_eos=True)
    assert answer.usage.completion_tokens == 24
    assert answer.choices[0].finish_reason == "length"
    newer_name = chat_engine.chat(COLORS, temperature=0, max_completion_tokens=3, max_tokens=9)
    assert newer_name.usage.completion_tokens <= 3


def test_results_round_trip_through_dicts_and_json(chat_engine):
    answer = chat_engine.chat(COLORS, temperature=0, max_tokens=6, logprobs=True, top_logprobs=2)
    data = answer.to_dict()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"]["content"] == answer.choices[0].message.content
    assert data["usage"]["completion_tokens"] == answer.usage.completion_tokens
    assert ChatCompletion.from_dict(data) == answer
    assert ChatCompletion.from_dict(json.loads(answer.to_json())) == answer
    assert json.loads(answer.to_json(indent=2)) == data

    chunk = next(iter(chat_engine.chat(COLORS, temperature=0, max_tokens=4, stream=True)))
    assert ChatCompletionChunk.from_dict(json.loads(chunk.to_json())) == chunk

    completion = chat_engine.complete(PROMPT, temperature=0, max_tokens=4, logprobs=2)
    assert Completion.from_dict(json.loads(completion.to_json())) == completion


def test_messages_may_hold_result_objects(chat_engine):
    answer = chat_engine.chat(COLORS, temperature=0, max_tokens=8)
    follow_up = {"role": "user", "content": "And three secondary ones?"}
    with_object = chat_engine.chat([*COLORS, answer.choices[0].message, follow_up],
                                   temperature=0, max_tokens=8)
    with_dict = chat_engine.chat([*COLORS, answer.choices[0].message.to_dict(), follow_up],
                                 temperature=0, max_tokens=8)
    assert with_object.choices[0].message.content == with_dict.choices[0].message.content
    assert with_object.usage.prompt_tokens > answer.usage.prompt_tokens
