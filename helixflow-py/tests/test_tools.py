"""Tool calling through the binding: `required` calls whose arguments validate, the same
calls streamed (id, type and name first, then the arguments) and awaited, tool results sent
back as messages, and bad tools refused naming their field."""

import asyncio
import json

import pytest

from helixflow import ChatCompletionMessageToolCall, InvalidRequestError

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 20}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
]


def check_calls(message) -> None:
    assert message.tool_calls, message
    for call in message.tool_calls:
        assert isinstance(call, ChatCompletionMessageToolCall)
        assert call.id.startswith("call_") and call.type == "function"
        assert call.function.name == "get_weather"
        args = json.loads(call.function.arguments)
        assert set(args) == {"city"} and isinstance(args["city"], str), args


def test_required_calls_validate(chat_engine):
    for seed in range(4):
        answer = chat_engine.chat(ASK, tools=TOOLS, tool_choice="required", temperature=1.0,
                                  seed=seed, max_tokens=200)
        assert answer.choices[0].finish_reason == "tool_calls"
        check_calls(answer.choices[0].message)


def test_streamed_and_awaited_calls_agree(chat_engine):
    options = dict(tools=TOOLS, tool_choice="required", temperature=1.0, seed=2, max_tokens=200)
    whole = chat_engine.chat(ASK, **options).choices[0].message
    calls = {}
    finish = None
    for chunk in chat_engine.chat(ASK, stream=True, **options):
        for choice in chunk.choices:
            for piece in choice.delta.tool_calls or []:
                if piece.id is not None:
                    assert piece.function.name and piece.function.arguments == ""
                    calls[piece.index] = [piece.function.name, ""]
                else:
                    calls[piece.index][1] += piece.function.arguments
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    expected = [[c.function.name, c.function.arguments] for c in whole.tool_calls]
    assert [calls[i] for i in sorted(calls)] == expected
    awaited = asyncio.run(chat_engine.achat(ASK, **options)).choices[0].message
    assert [[c.function.name, c.function.arguments] for c in awaited.tool_calls] == expected


def test_results_go_back_and_bad_tools_are_refused(chat_engine):
    first = chat_engine.chat(ASK, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=200)
    message = first.choices[0].message
    history = ASK + [message] + [
        {"role": "tool", "tool_call_id": c.id, "content": "21 degrees"} for c in message.tool_calls
    ]
    after = chat_engine.chat(history, tools=TOOLS, temperature=0, max_tokens=30)
    assert after.choices[0].message.content or after.choices[0].message.tool_calls
    with pytest.raises(InvalidRequestError, match="tools"):
        chat_engine.chat(ASK, tools=[{"type": "function", "function": {"name": "a b"}}])
    with pytest.raises(InvalidRequestError, match="tool_call_id"):
        chat_engine.chat(ASK + [{"role": "tool", "tool_call_id": "call_x", "content": "1"}], tools=TOOLS)
