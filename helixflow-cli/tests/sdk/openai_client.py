"""Drives a running `helixflow serve` with the official OpenAI Python SDK.

Usage: python openai_client.py BASE_URL API_KEY GOLDEN_DIR. Exits non-zero on the first
mismatch; prints one line per check.
"""

import json
import math
import sys

import openai
from openai import OpenAI

from checks import check

base_url, api_key, golden_dir = sys.argv[1:4]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
CHAT, EMBED = "smollm2-135m-instruct", "all-minilm-l6-v2"
chat_golden = json.load(open(f"{golden_dir}/smollm2-chat.json"))
embed_golden = json.load(open(f"{golden_dir}/minilm-embeddings.json"))


# Greedy chat reproduces the reference texts.
for case in chat_golden["cases"]:
    n = len(case["greedy_completion_token_ids"])
    r = client.chat.completions.create(model=CHAT, messages=case["messages"], temperature=0, max_tokens=n)
    check("greedy chat", r.choices[0].message.content == case["greedy_completion_text"],
          repr(r.choices[0].message.content))
    check("usage", r.usage.completion_tokens == n and r.usage.prompt_tokens == len(case["prompt_token_ids"]))

messages = [{"role": "user", "content": "Name three primary colors."}]
whole = client.chat.completions.create(model=CHAT, messages=messages, temperature=0, max_tokens=16)

# Streaming with usage.
chunks = list(client.chat.completions.create(model=CHAT, messages=messages, temperature=0, max_tokens=16,
                                             stream=True, stream_options={"include_usage": True}))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check("stream text", text == whole.choices[0].message.content, repr(text))
check("stream usage", chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens)

# n, seed, logprobs.
kwargs = dict(model=CHAT, messages=messages, n=2, seed=7, temperature=1.0, max_tokens=10, logprobs=True, top_logprobs=2)
a, b = client.chat.completions.create(**kwargs), client.chat.completions.create(**kwargs)
check("n=2", len(a.choices) == 2)
check("seed", [c.message.content for c in a.choices] == [c.message.content for c in b.choices])
lp = a.choices[0].logprobs.content
check("logprobs", len(lp) > 0 and len(lp[0].top_logprobs) == 2 and lp[0].logprob <= 0)

# Stop strings.
words = whole.choices[0].message.content.split()
stopped = client.chat.completions.create(model=CHAT, messages=messages, temperature=0, max_tokens=16, stop=[words[1]])
check("stop", stopped.choices[0].finish_reason == "stop" and words[1] not in stopped.choices[0].message.content)

# Text completions.
c = client.completions.create(model=CHAT, prompt="The capital of France is", max_tokens=5, temperature=0)
check("completions", c.usage.completion_tokens == 5 and isinstance(c.choices[0].text, str))
lc = client.completions.create(model=CHAT, prompt="The capital of France is", max_tokens=5, temperature=0, logprobs=2)
legacy = lc.choices[0].logprobs
check("legacy logprobs", len(legacy.tokens) == 5 and "".join(legacy.tokens) == lc.choices[0].text
      and len(legacy.token_logprobs) == 5 and all(len(t) == 2 for t in legacy.top_logprobs)
      and legacy.text_offset[0] == 0, legacy)
streamed = [ch for ch in client.completions.create(model=CHAT, prompt="The capital of France is", max_tokens=5,
                                                   temperature=0, logprobs=2, stream=True)]
streamed_tokens = [t for ch in streamed if ch.choices and ch.choices[0].logprobs for t in ch.choices[0].logprobs.tokens]
check("legacy logprobs streamed", streamed_tokens == legacy.tokens, streamed_tokens)

# Embeddings, float and base64 (the SDK asks for base64 by default and decodes it).
inputs = [case["input"] for case in embed_golden["cases"]]
e = client.embeddings.create(model=EMBED, input=inputs)
for case, item in zip(embed_golden["cases"], e.data):
    want, got = case["embedding"], item.embedding
    cos = sum(x * y for x, y in zip(want, got)) / math.sqrt(sum(x * x for x in want) * sum(y * y for y in got))
    check("embedding cosine", cos >= 0.9999, cos)
f = client.embeddings.create(model=EMBED, input=inputs[0], encoding_format="float")
check("embedding float", abs(f.data[0].embedding[0] - e.data[0].embedding[0]) < 1e-6)

# Structured outputs: the SDK's parse() with a Pydantic model, whole and streamed.
from typing import List, Literal

from pydantic import BaseModel, Field


class Person(BaseModel):
    name: str = Field(max_length=24)
    age: int = Field(ge=0, le=120)
    colors: List[Literal["red", "green", "blue"]] = Field(max_length=3)


ask = [{"role": "user", "content": "Describe a person."}]
for seed in range(3):
    parsed = client.chat.completions.parse(model=CHAT, messages=ask, response_format=Person,
                                           temperature=1.0, seed=seed, max_tokens=300)
    person = parsed.choices[0].message.parsed
    check("parse", isinstance(person, Person), parsed.choices[0].message.content)
with client.chat.completions.stream(model=CHAT, messages=ask, response_format=Person,
                                    temperature=1.0, seed=1, max_tokens=300) as stream:
    final = stream.get_final_completion()
check("stream parse", isinstance(final.choices[0].message.parsed, Person)
      and final.choices[0].message.content == client.chat.completions.parse(
          model=CHAT, messages=ask, response_format=Person, temperature=1.0, seed=1,
          max_tokens=300).choices[0].message.content)
# vLLM's extension, through extra_body.
r = client.chat.completions.create(model=CHAT, messages=ask, max_tokens=8, temperature=1.0,
                                   extra_body={"structured_outputs": {"choice": ["alpha", "beta"]}})
check("structured_outputs choice", r.choices[0].message.content in ("alpha", "beta"), r.choices[0].message.content)

# Models.
# The served models come first, loaded; cached built-ins follow, loaded on first use.
listed = client.models.list().data
ids = [m.id for m in listed]
check("models", ids[:2] == [CHAT, EMBED] and listed[0].state == "loaded"
      and all(m.state == "available" for m in listed[2:]), ids)
check("model", client.models.retrieve(CHAT).id == CHAT)

# Errors.
def raises(kind, fn):
    try:
        fn()
    except kind:
        return True
    except Exception as other:  # noqa: BLE001
        print(f"  got {type(other).__name__}: {other}")
    return False

check("unknown model 404", raises(openai.NotFoundError, lambda: client.chat.completions.create(model="gpt-9", messages=messages)))
check("context 400", raises(openai.BadRequestError, lambda: client.chat.completions.create(model=CHAT, messages=messages, max_tokens=10**6)))
check("n 400", raises(openai.BadRequestError, lambda: client.chat.completions.create(model=CHAT, messages=messages, n=99)))
check("top_logprobs 400", raises(openai.BadRequestError, lambda: client.chat.completions.create(model=CHAT, messages=messages, logprobs=True, top_logprobs=21)))
check("wrong kind 404", raises(openai.NotFoundError, lambda: client.embeddings.create(model=CHAT, input="x")))
def too_large():
    try:
        client.embeddings.create(model=EMBED, input="x" * (5 << 20))
    except openai.APIStatusError as e:
        return e.status_code == 413
    return False
check("body 413", too_large())
# Fields HelixFlow does not honour are refused by name, never silently dropped.
def refused(field, **kwargs):
    try:
        client.chat.completions.create(model=CHAT, messages=messages, max_tokens=4, **kwargs)
    except openai.BadRequestError as e:
        return field in str(e) and (e.body or {}).get("param") == field
    return False
check("audio refused", refused("audio", audio={"voice": "alloy", "format": "wav"}))
check("unknown field refused", refused("frobnicate", extra_body={"frobnicate": 1}))
check("bad schema 400", refused("response_format", response_format={"type": "json_schema",
      "json_schema": {"name": "x", "schema": {"type": "frobnicate"}}}))

bad = OpenAI(base_url=base_url, api_key="wrong", max_retries=0)
check("key 401", raises(openai.AuthenticationError, lambda: bad.models.list()))
print("all ok")
