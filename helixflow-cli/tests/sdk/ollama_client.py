"""Drives a running `helixflow serve` with the official `ollama` Python client: chat and
generate whole and streamed, `format` as a JSON schema, tools, options, embeddings, the model
listings, and errors (unknown model, bad input, no key).

Usage: python ollama_client.py BASE_URL API_KEY (BASE_URL ending in /v1, which is dropped:
Ollama's routes are at the root). Prints one line per check.
"""

import json
import sys
from datetime import datetime, timezone

import ollama

from checks import check

base_url, api_key = sys.argv[1:3]
host = base_url.removesuffix("/v1")
client = ollama.Client(host=host, headers={"Authorization": f"Bearer {api_key}"})
CHAT, EMBED = "smollm2-135m-instruct", "all-minilm-l6-v2"
GREEDY = {"temperature": 0, "num_predict": 16}


ask = [{"role": "user", "content": "Name three primary colors."}]
whole = client.chat(model=CHAT, messages=ask, options=GREEDY)
check("chat", whole.done and whole.message.role == "assistant" and whole.message.content
      and whole.done_reason in ("stop", "length"), whole)
check("counts", whole.prompt_eval_count > 5 and 0 < whole.eval_count <= 16
      and whole.total_duration >= whole.eval_duration > 0, whole)

parts = list(client.chat(model=CHAT, messages=ask, options=GREEDY, stream=True))
check("chat stream", "".join(p.message.content for p in parts) == whole.message.content
      and parts[-1].done and not any(p.done for p in parts[:-1])
      and parts[-1].eval_count == whole.eval_count, parts[-1])

generated = client.generate(model=CHAT, prompt="Name three primary colors.", options=GREEDY)
check("generate", generated.response == whole.message.content, generated)
streamed = "".join(p.response for p in client.generate(model=CHAT, prompt="The sky is", stream=True,
                                                        raw=True, options=GREEDY))
raw = client.generate(model=CHAT, prompt="The sky is", raw=True, options=GREEDY)
check("generate raw stream", streamed == raw.response and raw.response, (streamed, raw.response))

schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
          "age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["name", "age"], "additionalProperties": False}
person = client.chat(model=CHAT, messages=[{"role": "user", "content": "Invent a person."}],
                     format=schema, options={"temperature": 0, "num_predict": 200})
value = json.loads(person.message.content)
check("format schema", set(value) == {"name", "age"} and isinstance(value["age"], int), value)

tools = [{"type": "function", "function": {"name": "get_weather", "description": "The weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                         "required": ["city"], "additionalProperties": False}}}]
weather = [{"role": "user", "content": "What is the weather in Paris?"}]
called = client.chat(model=CHAT, messages=weather, tools=tools, options={"temperature": 0, "num_predict": 200})
calls = called.message.tool_calls or []
check("tools", calls and calls[0].function.name == "get_weather"
      and isinstance(calls[0].function.arguments.get("city"), str), called)
after = client.chat(model=CHAT, tools=tools, options=GREEDY, messages=weather + [
    called.message, {"role": "tool", "content": "21 degrees", "tool_name": "get_weather"}])
check("after tool", after.message.content or after.message.tool_calls, after)

embedded = client.embed(model=EMBED, input=["The weather is lovely today.", "Hello"])
check("embed", len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 384
      and embedded.prompt_eval_count > 2, embedded)
old = client.embeddings(model=EMBED, prompt="The weather is lovely today.")
check("embeddings", max(abs(a - b) for a, b in zip(old.embedding, embedded.embeddings[0])) < 1e-5)

names = sorted(m.model for m in client.list().models)
check("tags", {CHAT, EMBED} <= set(names), names)
loaded = client.ps().models
check("ps", sorted(m.model for m in loaded) == sorted([CHAT, EMBED])
      and all(m.size > 0 for m in loaded), loaded)
shown = client.show(CHAT)
check("show", "tools" in shown.capabilities and "<|im_start|>" in shown.template, shown)

statuses = [p.status for p in client.pull(CHAT, stream=True)]
check("pull", statuses and statuses[-1] == "success", statuses)
check("pull whole", client.pull(CHAT).status == "success")

# keep_alive: 0 unloads the model after the request; the next request loads it again, and
# a keep_alive of its own shows as the model's expiry.
unloaded = client.generate(model=CHAT, prompt="", keep_alive=0)
check("unload", unloaded.done_reason == "unload"
      and CHAT not in [m.model for m in client.ps().models], unloaded)
again = client.chat(model=CHAT, messages=ask, options=GREEDY, keep_alive="5m")
check("reload", again.message.content == whole.message.content, again)
expiry = [m.expires_at for m in client.ps().models if m.model == CHAT]
now = datetime.now(timezone.utc)
check("keep_alive expiry", expiry and 200 < (expiry[0] - now).total_seconds() < 400, expiry)
gone = client.embed(model=EMBED, input="bye", keep_alive=0)
check("embed keep_alive", gone.embeddings and EMBED not in [m.model for m in client.ps().models])


def fails(status, call):
    try:
        call()
    except ollama.ResponseError as e:
        return e.status_code == status and e.error
    return False


check("unknown model 404", fails(404, lambda: client.chat(model="nope", messages=ask)))
check("pull unknown 404", fails(404, lambda: client.pull("nope")))
check("bad option 400", fails(400, lambda: client.chat(model=CHAT, messages=ask, options={"mirostat": 2})))
nokey = ollama.Client(host=host)
check("no key 401", fails(401, lambda: nokey.chat(model=CHAT, messages=ask)))
print("all ok")
