"""Tool calling through a running `helixflow serve` with the official OpenAI Python SDK:
`required` and named calls whose arguments validate, the SDK's streaming helpers (which
accumulate the calls from their deltas), tool results sent back, and 400s for bad tools.

Usage: python openai_tools.py BASE_URL API_KEY. Prints one line per check.
"""

import json
import sys

import openai
from openai import OpenAI
from pydantic import BaseModel, Field

from checks import check

base_url, api_key = sys.argv[1:3]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
CHAT = "smollm2-135m-instruct"


class GetWeather(BaseModel):
    """The weather in a city."""

    city: str = Field(max_length=20)
    unit: str = Field(pattern="^(celsius|fahrenheit)$")


weather = openai.pydantic_function_tool(GetWeather, name="get_weather")
clock = {"type": "function", "function": {"name": "get_time", "description": "The time",
         "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 16}},
                        "required": ["zone"], "additionalProperties": False}}}
ask = [{"role": "user", "content": "What is the weather in Paris?"}]

# required: calls whose arguments validate, for several seeds.
for seed in range(5):
    r = client.chat.completions.create(model=CHAT, messages=ask, tools=[weather, clock],
                                       tool_choice="required", temperature=1.0, seed=seed,
                                       max_tokens=200)
    choice = r.choices[0]
    calls = choice.message.tool_calls or []
    check("required call", choice.finish_reason == "tool_calls" and calls, choice)
    for call in calls:
        args = json.loads(call.function.arguments)
        if call.function.name == "get_weather":
            GetWeather.model_validate(args)
        else:
            check("time args", call.function.name == "get_time" and isinstance(args["zone"], str), call)

# A named function, through parse(), which checks strict tools' arguments itself.
parsed = client.chat.completions.parse(
    model=CHAT, messages=ask, tools=[weather], temperature=0,
    tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=200)
call = parsed.choices[0].message.tool_calls[0]
check("named parse", isinstance(call.function.parsed_arguments, GetWeather), call)

# The SDK's stream helper accumulates the calls from their deltas.
with client.chat.completions.stream(model=CHAT, messages=ask, tools=[weather], temperature=1.0,
                                    seed=3, tool_choice="required", max_tokens=200) as stream:
    kinds = [event.type for event in stream]
    final = stream.get_final_completion()
streamed = final.choices[0].message.tool_calls
check("stream helper", streamed and isinstance(streamed[0].function.parsed_arguments, GetWeather)
      and "tool_calls.function.arguments.done" in kinds and final.choices[0].finish_reason == "tool_calls",
      (kinds, final))
whole = client.chat.completions.create(model=CHAT, messages=ask, tools=[weather], temperature=1.0,
                                       seed=3, tool_choice="required", max_tokens=200)
check("stream equals whole", [(c.function.name, c.function.arguments) for c in streamed]
      == [(c.function.name, c.function.arguments) for c in whole.choices[0].message.tool_calls])

# The results go back; the answer after them is text or more calls.
history = ask + [whole.choices[0].message.model_dump(exclude_none=True)] + [
    {"role": "tool", "tool_call_id": c.id, "content": '{"temperature": 21}'}
    for c in whole.choices[0].message.tool_calls]
after = client.chat.completions.create(model=CHAT, messages=history, tools=[weather], temperature=0,
                                       max_tokens=40)
check("after results", after.choices[0].message.content or after.choices[0].message.tool_calls)

# tool_choice none: a plain answer.
plain = client.chat.completions.create(model=CHAT, messages=ask, tools=[weather], tool_choice="none",
                                       temperature=0, max_tokens=8)
check("none", plain.choices[0].message.tool_calls is None and plain.choices[0].message.content)


def refused(field, **kwargs):
    try:
        client.chat.completions.create(model=CHAT, max_tokens=4, **kwargs)
    except openai.BadRequestError as e:
        return (e.body or {}).get("param") == field
    return False


check("bad tool 400", refused("tools", messages=ask, tools=[{"type": "function", "function": {"name": "a b"}}]))
check("unknown tool_choice 400", refused("tool_choice", messages=ask, tools=[weather],
      tool_choice={"type": "function", "function": {"name": "nope"}}))
check("stray tool message 400", refused("messages", tools=[weather], messages=ask + [
    {"role": "tool", "tool_call_id": "call_nope", "content": "1"}]))
print("all ok")
