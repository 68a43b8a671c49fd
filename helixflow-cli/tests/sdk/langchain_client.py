"""Drives a running `helixflow serve` with LangChain's `ChatOpenAI` (`langchain-openai`):
`bind_tools` (whole and streamed) and `with_structured_output` (JSON schema and function
calling), unchanged, as agent frameworks use them.

Usage: python langchain_client.py BASE_URL API_KEY. Prints one line per check.
"""

import sys

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from checks import check

base_url, api_key = sys.argv[1:3]
CHAT = "smollm2-135m-instruct"
llm = ChatOpenAI(base_url=base_url, api_key=api_key, model=CHAT, temperature=0, max_tokens=200,
                 max_retries=0, timeout=120)


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"It is sunny in {city}."


question = [HumanMessage("What is the weather in Paris?")]
bound = llm.bind_tools([get_weather], tool_choice="required")
message = bound.invoke(question)
calls = message.tool_calls
check("bind_tools", calls and calls[0]["name"] == "get_weather" and isinstance(calls[0]["args"].get("city"), str),
      message)

# Streamed, the chunks add up to the same calls.
total = None
for chunk in bound.stream(question):
    total = chunk if total is None else total + chunk
check("bind_tools streamed", [(c["name"], c["args"]) for c in total.tool_calls]
      == [(c["name"], c["args"]) for c in calls], total)

# The tool's result goes back as a ToolMessage.
result = get_weather.invoke(calls[0]["args"])
after = llm.bind_tools([get_weather]).invoke(
    question + [message, ToolMessage(result, tool_call_id=calls[0]["id"])])
check("after the tool", after.content or after.tool_calls, after)


class Person(BaseModel):
    """A person."""

    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=120)


for method in ("json_schema", "function_calling"):
    person = llm.with_structured_output(Person, method=method).invoke("Invent a person.")
    check(f"with_structured_output {method}", isinstance(person, Person), person)
print("all ok")
