"""Drives a running `helixflow serve` with the official `anthropic` Python SDK: messages whole
and streamed (the stream helper's text and final message), tools (tool_use blocks whose input
validates, the results sent back as tool_result blocks), count_tokens, and errors in
Anthropic's shape (unknown model, bad input, no key).

Usage: python anthropic_client.py BASE_URL API_KEY (BASE_URL ending in /v1, as for the OpenAI
SDK; the Anthropic SDK adds /v1 itself). Prints one line per check.
"""

import sys

import anthropic

from checks import check

base_url, api_key = sys.argv[1:3]
root = base_url.removesuffix("/v1")
client = anthropic.Anthropic(base_url=root, api_key=api_key, max_retries=0, timeout=120)
MODEL = "smollm2-135m-instruct"
# Newer SDKs no longer name the sampling fields; the API still takes them.
GREEDY = {"temperature": 0}


ask = [{"role": "user", "content": "Name three primary colors."}]
whole = client.messages.create(model=MODEL, max_tokens=16, messages=ask, extra_body=GREEDY,
                               system="Answer briefly.")
check("message", whole.type == "message" and whole.role == "assistant" and whole.content[0].type == "text"
      and whole.content[0].text and whole.stop_reason in ("end_turn", "max_tokens"), whole)
check("usage", whole.usage.input_tokens > 5 and 0 < whole.usage.output_tokens <= 16, whole.usage)

with client.messages.stream(model=MODEL, max_tokens=16, messages=ask, extra_body=GREEDY,
                            system="Answer briefly.") as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
check("stream text", text == whole.content[0].text, (text, whole.content[0].text))
check("stream final", final.stop_reason == whole.stop_reason
      and final.usage.output_tokens == whole.usage.output_tokens, final)

capped = client.messages.create(model=MODEL, max_tokens=3, messages=ask, extra_body=GREEDY)
check("max_tokens", capped.stop_reason == "max_tokens" and capped.usage.output_tokens == 3, capped)

tools = [{"name": "get_weather", "description": "The weather in a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                           "required": ["city"], "additionalProperties": False}}]
weather = [{"role": "user", "content": "What is the weather in Paris?"}]
called = client.messages.create(model=MODEL, max_tokens=200, messages=weather, tools=tools,
                                tool_choice={"type": "any", "disable_parallel_tool_use": True},
                                extra_body=GREEDY)
uses = [b for b in called.content if b.type == "tool_use"]
check("tool_use", called.stop_reason == "tool_use" and len(uses) == 1 and uses[0].name == "get_weather"
      and isinstance(uses[0].input.get("city"), str), called)

with client.messages.stream(model=MODEL, max_tokens=200, messages=weather, tools=tools,
                            tool_choice={"type": "tool", "name": "get_weather"}, extra_body=GREEDY) as stream:
    streamed = stream.get_final_message()
streamed_uses = [b for b in streamed.content if b.type == "tool_use"]
check("tool_use streamed", streamed.stop_reason == "tool_use"
      and [u.input for u in streamed_uses] == [u.input for u in uses], (streamed, called))

after = client.messages.create(model=MODEL, max_tokens=30, tools=tools, extra_body=GREEDY, messages=weather + [
    {"role": "assistant", "content": called.content},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "21 degrees"}]},
])
check("after tool_result", after.content, after)

count = client.messages.count_tokens(model=MODEL, messages=ask, system="Answer briefly.")
check("count_tokens", count.input_tokens == whole.usage.input_tokens, (count, whole.usage))


def fails(kind, status, **kwargs):
    try:
        client.messages.create(model=MODEL, max_tokens=4, messages=ask, **kwargs)
    except kind as e:
        body = e.body or {}
        return e.status_code == status and body.get("type") == "error" and body["error"]["message"]
    return False


check("unknown model 404", fails(anthropic.NotFoundError, 404, extra_body={"model": "claude-9"}))
check("bad input 400", fails(anthropic.BadRequestError, 400, extra_body={"temperature": "hot"}))
check("unknown field 400", fails(anthropic.BadRequestError, 400, extra_body={"frobnicate": 1}))
nokey = anthropic.Anthropic(base_url=root, api_key="wrong", max_retries=0)
try:
    nokey.messages.create(model=MODEL, max_tokens=4, messages=ask)
    check("key 401", False)
except anthropic.AuthenticationError as e:
    check("key 401", e.body["error"]["type"] == "authentication_error", e.body)
print("all ok")
