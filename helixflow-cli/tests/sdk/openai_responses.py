"""Drives a running `helixflow serve` with the official OpenAI Python SDK's Responses API:
responses.create whole and streamed (the raw events and the stream helper's final response),
instructions, max_output_tokens (an incomplete response), text.format as a JSON schema (parsed
into a pydantic model), function tools (calls whose arguments validate, their outputs sent
back through previous_response_id), stored responses (retrieve; store=False keeps none), and
errors in OpenAI's shape (unknown model, bad input, unknown response, no key).

Usage: python openai_responses.py BASE_URL API_KEY. Prints one line per check.
"""

import json
import sys

import openai
import pydantic

from checks import check

base_url, api_key = sys.argv[1:3]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
MODEL = "smollm2-135m-instruct"

whole = client.responses.create(model=MODEL, input="Name three primary colors.",
                                instructions="Answer briefly.", temperature=0, max_output_tokens=100)
check("create", whole.object == "response" and whole.id.startswith("resp_")
      and whole.status == "completed" and whole.output[0].type == "message"
      and whole.output_text, whole)
check("usage", whole.usage.input_tokens > 5 and 0 < whole.usage.output_tokens <= 100
      and whole.usage.total_tokens == whole.usage.input_tokens + whole.usage.output_tokens, whole.usage)
check("echo", whole.instructions == "Answer briefly." and whole.max_output_tokens == 100
      and whole.model == MODEL and whole.store, whole)

capped = client.responses.create(model=MODEL, input="Count to one hundred.", temperature=0,
                                 max_output_tokens=3)
check("incomplete", capped.status == "incomplete"
      and capped.incomplete_details.reason == "max_output_tokens"
      and capped.usage.output_tokens == 3, capped)

events = list(client.responses.create(model=MODEL, input="Name three primary colors.",
                                      instructions="Answer briefly.", temperature=0,
                                      max_output_tokens=100, stream=True))
kinds = [e.type for e in events]
check("stream events", kinds[:2] == ["response.created", "response.in_progress"]
      and kinds[-1] == whole.status.join(["response.", ""])
      and "response.output_text.delta" in kinds and "response.output_item.done" in kinds, kinds)
check("stream numbering", [e.sequence_number for e in events] == list(range(len(events))))
deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
check("stream text", deltas == whole.output_text, (deltas, whole.output_text))

with client.responses.stream(model=MODEL, input="Name three primary colors.",
                             instructions="Answer briefly.", temperature=0,
                             max_output_tokens=100) as stream:
    for _ in stream:
        pass
    final = stream.get_final_response()
check("stream helper", final.output_text == whole.output_text
      and final.usage.output_tokens == whole.usage.output_tokens, final)
kept = client.responses.retrieve(final.id)
check("retrieve streamed", kept.id == final.id and kept.output_text == final.output_text, kept)


class Person(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str = pydantic.Field(max_length=20)
    age: int = pydantic.Field(ge=0, le=120)


person = client.responses.parse(model=MODEL, input="Invent a person.", text_format=Person,
                                temperature=0, max_output_tokens=200)
check("text.format", isinstance(person.output_parsed, Person), person)

tools = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                         "required": ["city"], "additionalProperties": False}, "strict": True}]
called = client.responses.create(model=MODEL, input="What is the weather in Paris?", tools=tools,
                                 tool_choice="required", temperature=0, max_output_tokens=200)
calls = [item for item in called.output if item.type == "function_call"]
check("function call", calls and calls[0].name == "get_weather"
      and isinstance(json.loads(calls[0].arguments).get("city"), str), called)
after = client.responses.create(model=MODEL, previous_response_id=called.id, tools=tools,
                                input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                                        "output": "21 degrees and sunny"}],
                                temperature=0, max_output_tokens=40)
check("previous_response_id", after.previous_response_id == called.id and after.output
      and after.usage.input_tokens > called.usage.input_tokens, after)

with client.responses.stream(model=MODEL, input="What is the weather in Paris?", tools=tools,
                             tool_choice="required", temperature=0, max_output_tokens=200) as stream:
    arguments = "".join(e.delta for e in stream if e.type == "response.function_call_arguments.delta")
    streamed = stream.get_final_response()
streamed_calls = [item for item in streamed.output if item.type == "function_call"]
check("streamed call", streamed_calls and streamed_calls[0].arguments == arguments
      and json.loads(arguments) == json.loads(calls[0].arguments), streamed)

unstored = client.responses.create(model=MODEL, input="Hi", store=False, max_output_tokens=4)


def fails(status, call):
    try:
        call()
    except openai.APIStatusError as e:
        return e.status_code == status and e.body and e.body.get("message")
    return False


check("store=False keeps nothing", fails(404, lambda: client.responses.retrieve(unstored.id)))
check("unknown response 404", fails(404, lambda: client.responses.retrieve("resp_nope")))
check("unknown previous 404", fails(404, lambda: client.responses.create(
    model=MODEL, input="Hi", previous_response_id="resp_nope")))
check("unknown model 404", fails(404, lambda: client.responses.create(model="nope", input="Hi")))
check("bad input 400", fails(400, lambda: client.responses.create(
    model=MODEL, input=[{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}])))
check("unhonoured field 400", fails(400, lambda: client.responses.create(
    model=MODEL, input="Hi", reasoning={"effort": "high"})))
nokey = openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0)
check("no key 401", fails(401, lambda: nokey.responses.create(model=MODEL, input="Hi")))
print("all ok")
