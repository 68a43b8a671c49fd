"""Structured outputs through the binding: OpenAI's response_format and vLLM's
structured_outputs hold the answer to its grammar, whole, streamed and awaited; a bad schema
is an InvalidRequestError naming the field."""

import asyncio
import json

import pytest

from helixflow import InvalidRequestError

ASK = [{"role": "user", "content": "Describe a person."}]
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}


def check_person(text: str) -> None:
    person = json.loads(text)
    assert set(person) == {"name", "age"}, text
    assert isinstance(person["name"], str) and len(person["name"]) <= 24, text
    assert isinstance(person["age"], int) and 0 <= person["age"] <= 120, text


def test_a_json_schema_holds_for_every_seed(chat_engine):
    for seed in range(5):
        answer = chat_engine.chat(ASK, response_format=FORMAT, temperature=1.0, seed=seed, max_tokens=200)
        assert answer.choices[0].finish_reason == "stop"
        check_person(answer.choices[0].message.content)


def test_streamed_and_awaited_answers_agree(chat_engine):
    options = dict(response_format=FORMAT, temperature=1.0, seed=3, max_tokens=200)
    whole = chat_engine.chat(ASK, **options).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in chat_engine.chat(ASK, stream=True, **options)
                       if c.choices)
    awaited = asyncio.run(chat_engine.achat(ASK, **options)).choices[0].message.content
    check_person(whole)
    assert streamed == whole == awaited


def test_vllm_structured_outputs_on_completions_too(chat_engine):
    answer = chat_engine.complete("The answer is", structured_outputs={"regex": "[0-9]{2}"}, max_tokens=8)
    text = answer.choices[0].text
    assert len(text) == 2 and text.isdigit(), text


@pytest.mark.parametrize("options", [
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "frobnicate"}}}},
    {"response_format": {"type": "yaml"}},
    {"structured_outputs": {"regex": "(unclosed"}},
])
def test_a_bad_grammar_is_an_invalid_request_naming_its_field(chat_engine, options):
    with pytest.raises(InvalidRequestError, match=next(iter(options))):
        chat_engine.chat(ASK, max_tokens=4, **options)
