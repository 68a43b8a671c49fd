"""Results shaped like the OpenAI Python SDK's objects: the same attribute names and nesting
(``completion.choices[0].message.content``, ``completion.usage.prompt_tokens``), built from the
JSON the engine produces, with ``to_dict()`` and ``to_json()`` to get that JSON back."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional

__all__ = [
    "CompletionUsage",
    "TopLogprob",
    "ChatCompletionTokenLogprob",
    "ChoiceLogprobs",
    "Function",
    "ChatCompletionMessageToolCall",
    "ChatCompletionMessage",
    "Choice",
    "ChatCompletion",
    "ChoiceDeltaToolCallFunction",
    "ChoiceDeltaToolCall",
    "ChoiceDelta",
    "ChunkChoice",
    "ChatCompletionChunk",
    "Logprobs",
    "CompletionChoice",
    "Completion",
    "EngineStats",
]


class _Record:
    """Shared behaviour: construction from the engine's JSON, and back to a dict."""

    # Fields holding other records: name -> (record class, whether it is a list of them).
    _nested: ClassVar[Dict[str, Any]] = {}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Any:
        """Builds the object (and its nested objects) from a dict shaped like OpenAI's JSON;
        keys it does not know are ignored."""
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in data:
                continue
            value = data[f.name]
            nested = cls._nested.get(f.name)
            if nested is not None and value is not None:
                kind, many = nested
                value = [kind.from_dict(v) for v in value] if many else kind.from_dict(value)
            kwargs[f.name] = value
        return cls(**kwargs)

    def to_dict(self) -> Dict[str, Any]:
        """The object as plain dicts and lists, as the OpenAI API would send it."""
        return dataclasses.asdict(self)  # type: ignore[call-overload,no-any-return]

    def to_json(self, **kwargs: Any) -> str:
        """The object as JSON text; keyword arguments go to :func:`json.dumps`."""
        return json.dumps(self.to_dict(), **kwargs)


@dataclass
class CompletionUsage(_Record):
    """Token counts of a request."""

    prompt_tokens: int = 0
    """Tokens in the prompt."""
    completion_tokens: int = 0
    """Tokens generated, over all choices."""
    total_tokens: int = 0
    """The sum of both."""


@dataclass
class TopLogprob(_Record):
    """One of the most likely tokens at a position."""

    token: str = ""
    """The token's text."""
    logprob: float = 0.0
    """Its log-probability."""
    bytes: Optional[List[int]] = None
    """The token's UTF-8 bytes (a token may hold part of a character)."""


@dataclass
class ChatCompletionTokenLogprob(_Record):
    """The log-probability of one generated token, with the most likely alternatives."""

    token: str = ""
    """The token's text."""
    logprob: float = 0.0
    """Its log-probability."""
    bytes: Optional[List[int]] = None
    """The token's UTF-8 bytes."""
    top_logprobs: List[TopLogprob] = field(default_factory=list)
    """The ``top_logprobs`` most likely tokens at this position."""

    _nested: ClassVar[Dict[str, Any]] = {"top_logprobs": (TopLogprob, True)}


@dataclass
class ChoiceLogprobs(_Record):
    """The ``logprobs`` of a chat choice."""

    content: Optional[List[ChatCompletionTokenLogprob]] = None
    """One entry per generated token."""
    refusal: Optional[List[ChatCompletionTokenLogprob]] = None
    """Always ``None``."""

    _nested: ClassVar[Dict[str, Any]] = {"content": (ChatCompletionTokenLogprob, True)}


@dataclass
class Function(_Record):
    """The function a tool call calls."""

    name: str = ""
    """The function's name."""
    arguments: str = ""
    """Its arguments: a JSON object, as text."""


@dataclass
class ChatCompletionMessageToolCall(_Record):
    """A call of a function tool."""

    id: str = ""
    """The call's id (``call_...``), which the ``tool`` message answering it names."""
    type: str = "function"
    """Always ``function``."""
    function: Function = field(default_factory=Function)
    """The function called and its arguments."""

    _nested: ClassVar[Dict[str, Any]] = {"function": (Function, False)}


@dataclass
class ChatCompletionMessage(_Record):
    """The assistant's message."""

    role: str = "assistant"
    """Always ``assistant``."""
    content: Optional[str] = None
    """The generated text (without thinking and tool calls)."""
    refusal: Optional[str] = None
    """Always ``None``: the engine does not refuse (present as in the OpenAI SDK)."""
    tool_calls: Optional[List[ChatCompletionMessageToolCall]] = None
    """The tools the answer called, with ``tools``."""
    reasoning_content: Optional[str] = None
    """The model's thinking (``<think>...</think>``), for models that think aloud."""
    function_call: Optional[Any] = None
    """Always ``None`` (the SDK's deprecated field)."""
    annotations: Optional[List[Any]] = None
    """Always ``None``."""
    audio: Optional[Any] = None
    """Always ``None``."""

    _nested: ClassVar[Dict[str, Any]] = {"tool_calls": (ChatCompletionMessageToolCall, True)}


@dataclass
class Choice(_Record):
    """One choice of a chat completion."""

    index: int = 0
    """Index of the choice (0..n)."""
    message: ChatCompletionMessage = field(default_factory=ChatCompletionMessage)
    """The assistant's message."""
    logprobs: Optional[ChoiceLogprobs] = None
    """Token log-probabilities, when requested."""
    finish_reason: str = "stop"
    """``stop`` (end of turn or a stop string), ``length`` (``max_tokens`` reached) or
    ``tool_calls`` (the answer called tools)."""

    _nested: ClassVar[Dict[str, Any]] = {
        "message": (ChatCompletionMessage, False),
        "logprobs": (ChoiceLogprobs, False),
    }


@dataclass
class ChatCompletion(_Record):
    """A chat completion (OpenAI's ``chat.completion`` object)."""

    id: str = ""
    """Unique id, ``chatcmpl-...``."""
    object: str = "chat.completion"
    """Always ``chat.completion``."""
    created: int = 0
    """Unix time of creation, in seconds."""
    model: str = ""
    """The model that answered."""
    system_fingerprint: Optional[str] = None
    """The build that produced the answer."""
    choices: List[Choice] = field(default_factory=list)
    """The choices, in index order."""
    usage: Optional[CompletionUsage] = None
    """Token counts."""
    service_tier: Optional[str] = None
    """Always ``None``."""

    _nested: ClassVar[Dict[str, Any]] = {
        "choices": (Choice, True),
        "usage": (CompletionUsage, False),
    }


@dataclass
class ChoiceDeltaToolCallFunction(_Record):
    """A piece of a streamed tool call's function."""

    name: Optional[str] = None
    """The function's name, in the call's first piece."""
    arguments: Optional[str] = None
    """A fragment of the arguments' text."""


@dataclass
class ChoiceDeltaToolCall(_Record):
    """A piece of a streamed tool call: the pieces with one ``index`` add up to the call."""

    index: int = 0
    """Which call of the choice."""
    id: Optional[str] = None
    """The call's id, in its first piece."""
    type: Optional[str] = None
    """``function``, in the first piece."""
    function: Optional[ChoiceDeltaToolCallFunction] = None
    """The function's name and a fragment of its arguments."""

    _nested: ClassVar[Dict[str, Any]] = {"function": (ChoiceDeltaToolCallFunction, False)}


@dataclass
class ChoiceDelta(_Record):
    """The new part of a streamed chat choice's message."""

    role: Optional[str] = None
    """``assistant`` in a choice's first chunk, ``None`` afterwards."""
    content: Optional[str] = None
    """New text, if any."""
    refusal: Optional[str] = None
    """Always ``None``."""
    tool_calls: Optional[List[ChoiceDeltaToolCall]] = None
    """Pieces of tool calls: a call's id, type and name first, then its arguments."""
    reasoning_content: Optional[str] = None
    """New thinking, for models that think aloud."""

    _nested: ClassVar[Dict[str, Any]] = {"tool_calls": (ChoiceDeltaToolCall, True)}


@dataclass
class ChunkChoice(_Record):
    """One choice's part of a streamed chat chunk."""

    index: int = 0
    """Index of the choice."""
    delta: ChoiceDelta = field(default_factory=ChoiceDelta)
    """The new part of the message."""
    logprobs: Optional[ChoiceLogprobs] = None
    """Log-probabilities of the tokens in this chunk, when requested."""
    finish_reason: Optional[str] = None
    """Set in the choice's last chunk."""

    _nested: ClassVar[Dict[str, Any]] = {
        "delta": (ChoiceDelta, False),
        "logprobs": (ChoiceLogprobs, False),
    }


@dataclass
class ChatCompletionChunk(_Record):
    """A streamed piece of a chat completion (OpenAI's ``chat.completion.chunk``)."""

    id: str = ""
    """The same id in every chunk of a completion."""
    object: str = "chat.completion.chunk"
    """Always ``chat.completion.chunk``."""
    created: int = 0
    """Unix time of creation, in seconds."""
    model: str = ""
    """The model that answers."""
    system_fingerprint: Optional[str] = None
    """The build that produced the answer."""
    choices: List[ChunkChoice] = field(default_factory=list)
    """Usually one choice; none in the usage chunk."""
    usage: Optional[CompletionUsage] = None
    """Token counts, in the last chunk when ``stream_options={"include_usage": True}``."""
    service_tier: Optional[str] = None
    """Always ``None``."""

    _nested: ClassVar[Dict[str, Any]] = {
        "choices": (ChunkChoice, True),
        "usage": (CompletionUsage, False),
    }


@dataclass
class Logprobs(_Record):
    """The legacy ``logprobs`` of a text completion: parallel lists, one entry per token."""

    tokens: List[str] = field(default_factory=list)
    """Each token's text."""
    token_logprobs: List[float] = field(default_factory=list)
    """Each token's log-probability."""
    top_logprobs: List[Dict[str, float]] = field(default_factory=list)
    """Each position's most likely tokens, text to log-probability."""
    text_offset: List[int] = field(default_factory=list)
    """Where each token starts in the completion text, in characters."""


@dataclass
class CompletionChoice(_Record):
    """One choice of a text completion (or its part of a streamed chunk)."""

    index: int = 0
    """Index of the choice."""
    text: str = ""
    """The generated text (the new text, in a streamed chunk)."""
    logprobs: Optional[Logprobs] = None
    """Token log-probabilities, when requested."""
    finish_reason: Optional[str] = None
    """``stop`` or ``length``; in a stream, set in the choice's last chunk only."""

    _nested: ClassVar[Dict[str, Any]] = {"logprobs": (Logprobs, False)}


@dataclass
class Completion(_Record):
    """A text completion (OpenAI's ``text_completion`` object); streamed chunks have the same
    shape, each choice holding new text."""

    id: str = ""
    """Unique id, ``cmpl-...``."""
    object: str = "text_completion"
    """Always ``text_completion``."""
    created: int = 0
    """Unix time of creation, in seconds."""
    model: str = ""
    """The model that answered."""
    system_fingerprint: Optional[str] = None
    """The build that produced the answer."""
    choices: List[CompletionChoice] = field(default_factory=list)
    """The choices, in index order."""
    usage: Optional[CompletionUsage] = None
    """Token counts (in a stream, only in the usage chunk)."""

    _nested: ClassVar[Dict[str, Any]] = {
        "choices": (CompletionChoice, True),
        "usage": (CompletionUsage, False),
    }


@dataclass
class EngineStats(_Record):
    """A snapshot of the engine's queue, batch, KV cache and counters."""

    waiting_requests: int = 0
    """Requests waiting to be admitted."""
    running_requests: int = 0
    """Requests admitted and not finished."""
    running_seqs: int = 0
    """Sequences (choices) running."""
    kv_blocks_total: int = 0
    """KV blocks the memory budget allows."""
    kv_blocks_used: int = 0
    """KV blocks held by running sequences."""
    kv_blocks_free: int = 0
    """KV blocks free, counting cached blocks no sequence uses."""
    kv_blocks_cached: int = 0
    """KV blocks held by the prefix cache."""
    kv_blocks_evictable: int = 0
    """Cached blocks no sequence uses."""
    prefix_cache_hits: int = 0
    """Prompt blocks reused from the prefix cache so far."""
    steps: int = 0
    """Engine steps run so far."""
    tokens_computed: int = 0
    """Tokens computed (prompt and generated) over all steps."""
    tokens_generated: int = 0
    """Tokens generated over all steps."""
    prefill_tokens: int = 0
    """Prompt tokens computed over all steps."""
    last_batch_seqs: int = 0
    """Sequences in the last step's batch."""
    last_batch_tokens: int = 0
    """Tokens in the last step's batch."""
    max_batch_seqs: int = 0
    """The most sequences any step has batched together."""
    preemptions: int = 0
    """Times a request was preempted for lack of KV blocks."""
    finished_requests: int = 0
    """Requests finished."""
    cancelled_requests: int = 0
    """Requests cancelled by their caller."""
