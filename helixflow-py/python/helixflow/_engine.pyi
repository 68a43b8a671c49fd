"""The engine: a model loaded in this process, generating for any number of Python threads and
asyncio tasks at once (the engine batches them; the GIL is released while it works)."""

import os
from typing import (
    Any,
    Callable,
    Coroutine,
    Generator,
    Generic,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Type,
    TypedDict,
    TypeVar,
    Union,
    overload,
)

from typing_extensions import Unpack

from ._types import ChatCompletion, ChatCompletionChunk, Completion, EngineStats, _Record

__all__ = ["Engine", "Stream", "AsyncStream", "DEFAULT_MODEL"]

DEFAULT_MODEL: str
"""The chat model an :class:`Engine` loads when none is named."""

_T_co = TypeVar("_T_co", bound=_Record, covariant=True)

_Message = Union[Mapping[str, Any], _Record]
"""A message: an OpenAI-style ``{"role": ..., "content": ...}`` dict, or a result object such as
``completion.choices[0].message``."""

_Prompt = Union[str, Sequence[int]]
"""A raw prompt: text, or token ids."""

_Stop = Union[str, Sequence[str]]
"""One stop string or several."""

_LogitBias = Union[Mapping[int, float], Mapping[str, float]]
"""Token id (an int, or its decimal string) to a bias added to its logit."""

_Float32Array = Any
"""A ``numpy.ndarray`` of float32 (typed ``Any`` so that NumPy stays optional)."""

class _StreamOptions(TypedDict, total=False):
    """``stream_options`` of a streamed request."""

    include_usage: bool
    """Send a last chunk with no choices and the request's token counts."""

class _GenerationOptions(TypedDict, total=False):
    """Options of chat and text completions, as on the OpenAI API; every one may be left out."""

    stream_options: Optional[_StreamOptions]
    """``{"include_usage": True}`` adds a last chunk with the token counts."""
    temperature: Optional[float]
    """Sampling temperature, 0 (greedy) to 2."""
    top_p: Optional[float]
    """Nucleus sampling mass, (0, 1]."""
    top_k: Optional[int]
    """Sample among the k most likely tokens only."""
    min_p: Optional[float]
    """Drop tokens less likely than min_p times the most likely one."""
    frequency_penalty: Optional[float]
    """Penalty per previous occurrence of a token, -2 to 2."""
    presence_penalty: Optional[float]
    """Penalty for any previous occurrence of a token, -2 to 2."""
    repetition_penalty: Optional[float]
    """Divide the logits of previous tokens by this (1 = off)."""
    logit_bias: Optional[_LogitBias]
    """Token id to a bias added to its logit, -100 to 100."""
    seed: Optional[int]
    """The same seed and request give the same output."""
    stop: Optional[_Stop]
    """Up to 16 strings that end generation (not included in the output)."""
    max_tokens: Optional[int]
    """Most tokens to generate per choice (default: up to the context length)."""
    max_completion_tokens: Optional[int]
    """The newer name of ``max_tokens``; wins when both are given."""
    n: Optional[int]
    """Independent choices to generate (1..=16)."""
    ignore_eos: Optional[bool]
    """Keep generating past end-of-turn tokens (benchmarks)."""
    user: Optional[str]
    """Accepted and ignored, as OpenAI uses it for abuse monitoring."""
    response_format: Optional[Mapping[str, Any]]
    """Structured outputs as OpenAI takes them: ``{"type": "json_schema", "json_schema":
    {"name": ..., "schema": {...}}}`` or ``{"type": "json_object"}``."""
    structured_outputs: Optional[Mapping[str, Any]]
    """vLLM's structured outputs: one of ``json``, ``regex``, ``choice``, ``grammar`` (Lark)."""

class ChatOptions(_GenerationOptions, total=False):
    """Options of :meth:`Engine.chat` and :meth:`Engine.achat`."""

    logprobs: Optional[bool]
    """Report each generated token's log-probability."""
    top_logprobs: Optional[int]
    """With ``logprobs``, also the most likely alternatives at each position (0..=20)."""
    tools: Optional[Sequence[Mapping[str, Any]]]
    """Function tools the model may call: ``[{"type": "function", "function": {...}}]``."""
    tool_choice: Optional[Union[str, Mapping[str, Any]]]
    """``none``, ``auto`` (the default with tools), ``required``, or a named function."""
    parallel_tool_calls: Optional[bool]
    """Whether one answer may call several tools (default ``True``)."""
    chat_template_kwargs: Optional[Mapping[str, Any]]
    """More variables for the chat template, e.g. ``{"enable_thinking": False}``."""

class CompletionOptions(_GenerationOptions, total=False):
    """Options of :meth:`Engine.complete` and :meth:`Engine.acomplete`."""

    logprobs: Optional[int]
    """The legacy API's logprobs: alternatives to report per token (0..=20)."""
    echo: Optional[bool]
    """Echo the prompt (not supported: ``True`` is an :class:`InvalidRequestError`)."""

class Stream(Generic[_T_co]):
    """The chunks of a streamed generation, as they are generated.

    Iterate over it (``for chunk in stream``). Breaking out of the loop, :meth:`close`, leaving
    a ``with`` block, KeyboardInterrupt or dropping the stream cancels the generation and frees
    its memory in the engine.
    """

    def __init__(self, generation: Any, kind: Type[_T_co]) -> None:
        """Wraps a native generation; streams come from :meth:`Engine.chat` and
        :meth:`Engine.complete` with ``stream=True``."""
    def __iter__(self) -> "Stream[_T_co]":
        """The stream itself."""
    def __next__(self) -> _T_co:
        """The next chunk, waiting (with the GIL released) until the engine produces it."""
    def close(self) -> None:
        """Cancels the generation (if it is still running) and frees its memory."""
    def __enter__(self) -> "Stream[_T_co]":
        """The stream itself; leaving the block closes it."""
    def __exit__(self, *exc: object) -> None:
        """Closes the stream."""
    def __del__(self) -> None:
        """Dropping the stream closes it."""

class AsyncStream(Generic[_T_co]):
    """The chunks of a streamed generation for asyncio: ``async for chunk in stream``.

    The generation starts at the first iteration. Breaking out of the loop (once the stream
    is dropped), :meth:`aclose`, ``async with``, or cancelling the task cancels it. Awaiting the
    stream returns the stream itself, so ``await engine.achat(..., stream=True)`` works too.
    """

    def __init__(self, submit: Callable[[], Any], kind: Type[_T_co]) -> None:
        """Wraps a submission that starts at the first iteration; streams come from
        :meth:`Engine.achat` and :meth:`Engine.acomplete` with ``stream=True``."""
    def __await__(self) -> Generator[Any, None, "AsyncStream[_T_co]"]:
        """Awaiting the stream gives the stream itself."""
    def __aiter__(self) -> "AsyncStream[_T_co]":
        """The stream itself."""
    async def __anext__(self) -> _T_co:
        """The next chunk, starting the generation on the first call."""
    async def aclose(self) -> None:
        """Cancels the generation (if it is still running) and frees its memory."""
    async def __aenter__(self) -> "AsyncStream[_T_co]":
        """The stream itself; leaving the block closes it."""
    async def __aexit__(self, *exc: object) -> None:
        """Closes the stream."""
    def __del__(self) -> None:
        """Dropping a started stream cancels its generation."""

class Engine:
    """A model loaded in this process, with the engine that runs it.

    ``model`` is a built-in id (``smollm2-135m-instruct``, ``all-minilm-l6-v2``), a Hugging Face
    id (``org/name`` or ``org/name:file.gguf``) or a path to a ``.gguf`` file, a Hugging Face
    safetensors chat folder or an embedding model folder; built-in models are downloaded into
    ``$HELIXFLOW_HOME`` on first use. Chat
    models (GGUF) get :meth:`chat` and :meth:`complete`, embedding models :meth:`embed`.

    One engine serves any number of threads and asyncio tasks: their requests are batched
    together, and the GIL is released while the engine works. Use it as a context manager, or
    call :meth:`close`, to stop it.
    """

    def __init__(
        self,
        model: Union[str, "os.PathLike[str]"] = ...,
        *,
        max_num_seqs: Optional[int] = ...,
        max_batched_tokens: Optional[int] = ...,
        queue_capacity: Optional[int] = ...,
        block_size: Optional[int] = ...,
        kv_cache_bytes: Optional[int] = ...,
        kv_cache_fraction: Optional[float] = ...,
        quantize: Optional[Literal["q8_0", "q4_0"]] = ...,
    ) -> None:
        """Loads ``model`` (default :data:`DEFAULT_MODEL`) and starts its engine.

        ``max_num_seqs``: sequences batched at once (64); ``max_batched_tokens``: tokens per
        step (512); ``queue_capacity``: requests that may wait (256); ``block_size``: positions
        per KV block (16); the KV cache's memory as ``kv_cache_bytes`` (1 GiB) or
        ``kv_cache_fraction`` of the machine's memory; ``quantize`` (``"q8_0"`` or ``"q4_0"``)
        quantises a safetensors chat folder's matrices as it loads.
        """
    @property
    def model(self) -> str:
        """The model's id, as responses report it."""
    @property
    def kind(self) -> Literal["chat", "embedding"]:
        """``chat`` or ``embedding``."""
    @property
    def context_length(self) -> Optional[int]:
        """The chat model's context, in tokens (``None`` for embedding models)."""
    @property
    def dimension(self) -> Optional[int]:
        """The embedding model's vector length (``None`` for chat models)."""

    # chat: stream=False (or left out) -> ChatCompletion; stream=True -> Stream of chunks.
    @overload
    def chat(
        self, messages: Sequence[_Message], *, stream: Optional[Literal[False]] = ..., **options: Unpack[ChatOptions]
    ) -> ChatCompletion:
        """Answers a conversation (OpenAI ``messages``) as a :class:`ChatCompletion`."""
    @overload
    def chat(
        self, messages: Sequence[_Message], *, stream: Literal[True], **options: Unpack[ChatOptions]
    ) -> Stream[ChatCompletionChunk]:
        """Answers a conversation as a :class:`Stream` of :class:`ChatCompletionChunk`."""
    @overload
    def chat(
        self, messages: Sequence[_Message], *, stream: bool, **options: Unpack[ChatOptions]
    ) -> Union[ChatCompletion, Stream[ChatCompletionChunk]]:
        """Answers a conversation, streamed or not as ``stream`` says."""

    # complete: as chat, for raw prompts; logprobs is the legacy count of alternatives.
    @overload
    def complete(
        self, prompt: _Prompt, *, stream: Optional[Literal[False]] = ..., **options: Unpack[CompletionOptions]
    ) -> Completion:
        """Continues a raw prompt (text or token ids) as a :class:`Completion`."""
    @overload
    def complete(
        self, prompt: _Prompt, *, stream: Literal[True], **options: Unpack[CompletionOptions]
    ) -> Stream[Completion]:
        """Continues a raw prompt as a :class:`Stream` of :class:`Completion` chunks."""
    @overload
    def complete(
        self, prompt: _Prompt, *, stream: bool, **options: Unpack[CompletionOptions]
    ) -> Union[Completion, Stream[Completion]]:
        """Continues a raw prompt, streamed or not as ``stream`` says."""

    # achat: chat for asyncio; cancelling the task cancels the generation.
    @overload
    def achat(
        self, messages: Sequence[_Message], *, stream: Optional[Literal[False]] = ..., **options: Unpack[ChatOptions]
    ) -> Coroutine[Any, Any, ChatCompletion]:
        """``await engine.achat(...)``: :meth:`chat` for asyncio; cancelling the task cancels it."""
    @overload
    def achat(
        self, messages: Sequence[_Message], *, stream: Literal[True], **options: Unpack[ChatOptions]
    ) -> AsyncStream[ChatCompletionChunk]:
        """``async for chunk in engine.achat(..., stream=True)``: a streamed chat for asyncio."""
    @overload
    def achat(
        self, messages: Sequence[_Message], *, stream: bool, **options: Unpack[ChatOptions]
    ) -> Union[Coroutine[Any, Any, ChatCompletion], AsyncStream[ChatCompletionChunk]]:
        """A chat for asyncio, streamed or not as ``stream`` says."""

    # acomplete: complete for asyncio, as achat is to chat.
    @overload
    def acomplete(
        self, prompt: _Prompt, *, stream: Optional[Literal[False]] = ..., **options: Unpack[CompletionOptions]
    ) -> Coroutine[Any, Any, Completion]:
        """``await engine.acomplete(...)``: :meth:`complete` for asyncio."""
    @overload
    def acomplete(
        self, prompt: _Prompt, *, stream: Literal[True], **options: Unpack[CompletionOptions]
    ) -> AsyncStream[Completion]:
        """``async for chunk in engine.acomplete(..., stream=True)``: a streamed completion for asyncio."""
    @overload
    def acomplete(
        self, prompt: _Prompt, *, stream: bool, **options: Unpack[CompletionOptions]
    ) -> Union[Coroutine[Any, Any, Completion], AsyncStream[Completion]]:
        """A text completion for asyncio, streamed or not as ``stream`` says."""

    @overload
    def embed(
        self,
        texts: Union[str, Sequence[str]],
        *,
        as_numpy: Literal[False] = ...,
        truncate: bool = ...,
    ) -> List[List[float]]:
        """Embeds each text: a list of vectors (lists of floats), one per text, in order; a
        single string gives a list of one vector."""
    @overload
    def embed(
        self, texts: Union[str, Sequence[str]], *, as_numpy: Literal[True], truncate: bool = ...
    ) -> _Float32Array:
        """Embeds each text as a float32 NumPy array of shape ``(len(texts), dimension)``
        (NumPy must be installed)."""
    @overload
    def embed(
        self, texts: Union[str, Sequence[str]], *, as_numpy: bool, truncate: bool = ...
    ) -> Union[List[List[float]], _Float32Array]:
        """Embeds each text, as lists or as a NumPy array as ``as_numpy`` says."""
    def tokenize(self, text: str, *, special: bool = ...) -> List[int]:
        """The token ids of ``text`` as the engine would feed them: with ``special`` (the
        default), special tokens written in the text are recognised and the model's own are
        added (a chat model's BOS when it wants one, an embedding model's ``[CLS]``/``[SEP]``)."""
    def detokenize(self, ids: Sequence[int], *, skip_special: bool = ...) -> str:
        """The text of token ids; ``skip_special`` leaves special tokens out."""
    def stats(self) -> EngineStats:
        """The engine's queue, batch, KV cache and counters now (all zero for embedding
        models, which have no engine loop)."""
    def close(self) -> None:
        """Stops accepting requests; requests running finish first. Later calls raise
        :class:`EngineStoppedError`."""
    def __enter__(self) -> "Engine":
        """The engine itself; leaving the block closes it."""
    def __exit__(self, *exc: object) -> None:
        """Closes the engine."""
