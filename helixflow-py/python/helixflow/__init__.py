"""HelixFlow's inference engine in-process: chat, text completion and embeddings with the same
engine, batching and outputs as the HelixFlow server, without a server.

    import helixflow

    engine = helixflow.Engine("smollm2-135m-instruct")
    answer = engine.chat([{"role": "user", "content": "Hello!"}], max_tokens=32)
    print(answer.choices[0].message.content)

Results are shaped like the OpenAI Python SDK's objects; errors are :class:`HelixFlowError`\\ s.
"""

from ._engine import DEFAULT_MODEL, AsyncStream, Engine, Stream
from ._errors import (
    ContextLengthError,
    EngineStoppedError,
    HelixFlowError,
    InternalError,
    InvalidRequestError,
    ModelLoadError,
    ModelNotFoundError,
    OverloadedError,
    ParameterTypeError,
)
from ._native import __version__
from ._types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageToolCall,
    ChatCompletionTokenLogprob,
    Choice,
    ChoiceDelta,
    ChoiceDeltaToolCall,
    ChoiceDeltaToolCallFunction,
    ChoiceLogprobs,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionUsage,
    EngineStats,
    Function,
    Logprobs,
    TopLogprob,
)

__all__ = [
    "DEFAULT_MODEL",
    "Engine",
    "Stream",
    "AsyncStream",
    "HelixFlowError",
    "ModelNotFoundError",
    "ModelLoadError",
    "InvalidRequestError",
    "ContextLengthError",
    "ParameterTypeError",
    "OverloadedError",
    "EngineStoppedError",
    "InternalError",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatCompletionMessageToolCall",
    "ChatCompletionTokenLogprob",
    "Choice",
    "ChoiceDelta",
    "ChoiceDeltaToolCall",
    "ChoiceDeltaToolCallFunction",
    "ChoiceLogprobs",
    "ChunkChoice",
    "Completion",
    "CompletionChoice",
    "CompletionUsage",
    "EngineStats",
    "Function",
    "Logprobs",
    "TopLogprob",
    "__version__",
]
