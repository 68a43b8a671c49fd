"""The engine: a model loaded in this process, generating for any number of Python threads and
asyncio tasks at once (the engine batches them; the GIL is released while it works)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from typing import Any, Callable, Dict, Generic, List, Optional, Sequence, Type, TypeVar, Union

from . import _native
from ._errors import HelixFlowError, InvalidRequestError, ParameterTypeError
from ._types import (
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    EngineStats,
    _Record,
)

__all__ = ["Engine", "Stream", "AsyncStream", "DEFAULT_MODEL"]

DEFAULT_MODEL = "smollm2-135m-instruct"
"""The chat model an :class:`Engine` loads when none is named."""

T = TypeVar("T", bound=_Record)

# Generation options common to chat and text completions: name -> accepted types.
_NUMBER = (int, float)
_COMMON_OPTIONS: Dict[str, tuple] = {
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "top_k": (int,),
    "min_p": _NUMBER,
    "frequency_penalty": _NUMBER,
    "presence_penalty": _NUMBER,
    "repetition_penalty": _NUMBER,
    "logit_bias": (Mapping,),
    "seed": (int,),
    "stop": (str, Sequence),
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "n": (int,),
    "ignore_eos": (bool,),
    "user": (str,),
    # Structured outputs: OpenAI's response_format, or vLLM's structured_outputs.
    "response_format": (Mapping,),
    "structured_outputs": (Mapping,),
}
_STREAM_OPTIONS = {"stream": (bool,), "stream_options": (Mapping,)}
_CHAT_OPTIONS = {
    **_COMMON_OPTIONS,
    **_STREAM_OPTIONS,
    "logprobs": (bool,),
    "top_logprobs": (int,),
    # Tool calling, as OpenAI's chat API has it, and variables for the chat template.
    "tools": (Sequence,),
    "tool_choice": (str, Mapping),
    "parallel_tool_calls": (bool,),
    "chat_template_kwargs": (Mapping,),
}
_COMPLETION_OPTIONS = {**_COMMON_OPTIONS, **_STREAM_OPTIONS, "logprobs": (int,), "echo": (bool,)}
_ENGINE_OPTIONS = {
    "max_num_seqs": (int,),
    "max_batched_tokens": (int,),
    "queue_capacity": (int,),
    "block_size": (int,),
    "kv_cache_bytes": (int,),
    "kv_cache_fraction": _NUMBER,
    "quantize": (str,),
}


def _type_name(types: tuple) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "a boolean",
             Mapping: "a dict", Sequence: "a list"}
    if types == _NUMBER:
        return "a number"
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _check(call: str, allowed: Dict[str, tuple], options: Dict[str, Any]) -> Dict[str, Any]:
    """The options that are set, after checking each name and type; unknown names are a
    TypeError as for any Python function, wrong types a :class:`ParameterTypeError`."""
    checked = {}
    for name, value in options.items():
        types = allowed.get(name)
        if types is None:
            raise TypeError(f"{call}() got an unexpected keyword argument {name!r}")
        if value is None:
            continue
        # bool is an int in Python; only options that are booleans accept it.
        wrong_bool = isinstance(value, bool) and bool not in types
        if wrong_bool or not isinstance(value, types):
            raise ParameterTypeError(
                f"{name} must be {_type_name(types)}, got {type(value).__name__}"
            )
        checked[name] = value
    return checked


def _count(name: str, value: Any) -> Any:
    """A count handed to the native side as is: it must fit an unsigned 64-bit integer."""
    if isinstance(value, int) and not 0 <= value < 2**64:
        raise InvalidRequestError(f"{name} must be a non-negative integer, got {value}")
    return value


def _split_stream(options: Dict[str, Any]) -> tuple:
    """Takes ``stream`` and ``stream_options`` out of the options."""
    stream = options.pop("stream", False)
    stream_options = options.pop("stream_options", None) or {}
    unknown = set(stream_options) - {"include_usage"}
    if unknown:
        raise ParameterTypeError(f"stream_options has unknown keys: {sorted(unknown)}")
    include_usage = stream_options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise ParameterTypeError("stream_options['include_usage'] must be a boolean")
    return stream, include_usage


def _options_json(options: Dict[str, Any]) -> str:
    options.pop("user", None)  # accepted and ignored, as OpenAI uses it for abuse monitoring
    stop = options.get("stop")
    if stop is not None and not isinstance(stop, str):
        if isinstance(stop, bytes) or not all(isinstance(s, str) for s in stop):
            raise ParameterTypeError("stop must be a string or a list of strings")
        options["stop"] = list(stop)
    for name in ("response_format", "structured_outputs"):
        if name in options:
            options[name] = dict(options[name])
    bias = options.get("logit_bias")
    if bias is not None:
        for token, value in bias.items():
            if isinstance(token, bool) or not isinstance(token, (int, str)):
                raise ParameterTypeError("logit_bias keys must be token ids")
            if isinstance(value, bool) or not isinstance(value, _NUMBER):
                raise ParameterTypeError("logit_bias values must be numbers")
        options["logit_bias"] = {str(k): v for k, v in bias.items()}
    try:
        return json.dumps(options, default=_to_jsonable)
    except ValueError as e:
        raise ParameterTypeError(f"the options cannot be encoded as JSON: {e}") from None


def _token_ids(name: str, ids: Any) -> Optional[List[int]]:
    """``ids`` as a list of token ids, or ``None`` if it is not a sequence of integers;
    integers that cannot be token ids are an :class:`InvalidRequestError`."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        return None
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return None
    for i in ids:
        if not 0 <= i < 2**32:
            raise InvalidRequestError(f"{name}: {i} is not a token id")
    return list(ids)


def _to_jsonable(value: Any) -> Any:
    """Lets messages hold HelixFlow's own result objects (``completion.choices[0].message``)
    and any mapping or sequence, not only dicts and lists."""
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    raise ParameterTypeError(f"{type(value).__name__} is not JSON")


def _messages_json(messages: Any) -> str:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ParameterTypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    try:
        return json.dumps(list(messages), default=_to_jsonable)
    except ValueError as e:  # e.g. NaN is fine for json, circular references are not
        raise ParameterTypeError(f"messages cannot be encoded as JSON: {e}") from None


class Stream(Generic[T]):
    """The chunks of a streamed generation, as they are generated.

    Iterate over it (``for chunk in stream``). Breaking out of the loop, :meth:`close`, leaving
    a ``with`` block, KeyboardInterrupt or dropping the stream cancels the generation and frees
    its memory in the engine.
    """

    def __init__(self, generation: Any, kind: Type[T]) -> None:
        self._generation: Optional[Any] = generation
        self._kind = kind

    def __iter__(self) -> "Stream[T]":
        return self

    def __next__(self) -> T:
        generation = self._generation  # once: another thread may close the stream meanwhile
        if generation is None:
            raise StopIteration
        chunk = generation.next_chunk()  # waits with the GIL released
        if chunk is None:
            self._generation = None
            raise StopIteration
        return self._kind.from_dict(json.loads(chunk))  # type: ignore[no-any-return]

    def close(self) -> None:
        """Cancels the generation (if it is still running) and frees its memory."""
        generation, self._generation = self._generation, None
        if generation is not None:
            generation.cancel()

    def __enter__(self) -> "Stream[T]":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


_END = object()


class AsyncStream(Generic[T]):
    """The chunks of a streamed generation for asyncio: ``async for chunk in stream``.

    The generation starts at the first iteration. Breaking out of the loop (once the stream
    is dropped), :meth:`aclose`, ``async with``, or cancelling the task cancels it. Awaiting the
    stream returns the stream itself, so ``await engine.achat(..., stream=True)`` works too.
    """

    def __init__(self, submit: Callable[[], Any], kind: Type[T]) -> None:
        self._submit: Optional[Callable[[], Any]] = submit
        self._kind = kind
        self._generation: Optional[Any] = None
        self._queue: Optional[asyncio.Queue] = None
        self._done = False

    def __await__(self) -> Any:
        async def itself() -> "AsyncStream[T]":
            return self

        return itself().__await__()

    def __aiter__(self) -> "AsyncStream[T]":
        return self

    async def __anext__(self) -> T:
        if self._done:
            raise StopAsyncIteration
        if self._queue is None:
            try:
                self._start()
            except BaseException:
                self._done = True  # the request was refused: the stream is over
                raise
        assert self._queue is not None
        try:
            item = await self._queue.get()
        except BaseException:  # cancelled: the generation goes with the task
            await self.aclose()
            raise
        if item is _END:
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return self._kind.from_dict(json.loads(item))  # type: ignore[no-any-return]

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        submit, self._submit = self._submit, None
        assert submit is not None
        self._generation = generation = submit()
        self._queue = queue = asyncio.Queue()
        # The engine's events reach the queue from the binding's one waiting thread, through
        # loop.call_soon_threadsafe: no thread of this stream's own. The callback holds the
        # queue, never the stream, so dropping the stream still cancels.
        generation.watch(loop, lambda item: queue.put_nowait(_END if item is None else item))

    async def aclose(self) -> None:
        """Cancels the generation (if it is still running) and frees its memory."""
        self._done = True
        self._submit = None
        if self._generation is not None:
            self._generation.cancel()

    async def __aenter__(self) -> "AsyncStream[T]":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if self._generation is not None:
            self._generation.cancel()


async def _awaited(generation: Any) -> str:
    """The whole answer, awaited without a thread of its own (the binding calls back on the
    event loop), so any number of requests wait at once; cancelling the task cancels the
    generation."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(item: Any) -> None:
        if future.done():
            return
        if isinstance(item, BaseException):
            future.set_exception(item)
        elif item is None:
            future.set_exception(HelixFlowError("the generation ended without an answer"))
        else:
            future.set_result(item)

    generation.watch(loop, settle)
    try:
        return await future  # type: ignore[no-any-return]
    except BaseException:  # cancelled, or the coroutine closed with its event loop
        generation.cancel()
        raise


class Engine:
    """A model loaded in this process, with the engine that runs it.

    ``model`` is a built-in id (``smollm2-135m-instruct``, ``all-minilm-l6-v2``), a Hugging Face
    id (``org/name`` or ``org/name:file.gguf``) or a path to a ``.gguf`` file, a Hugging Face
    safetensors chat model folder or an embedding model folder, as the ``helixflow`` CLI accepts;
    built-in models are downloaded into the model home (``$HELIXFLOW_HOME``) on first use. Chat
    models get :meth:`chat` and :meth:`complete`, embedding models :meth:`embed`.

    Engine options: ``max_num_seqs`` (sequences batched at once, default 64),
    ``max_batched_tokens`` (tokens per step, 512), ``queue_capacity`` (requests that may wait,
    256), ``block_size`` (positions per KV block, 16), and the KV cache's memory as
    ``kv_cache_bytes`` (default 1 GiB) or ``kv_cache_fraction`` of the machine's memory; and
    ``quantize`` (``"q8_0"`` or ``"q4_0"``) to quantise a safetensors chat model's matrices at
    load.

    One engine serves any number of threads and asyncio tasks: their requests are batched
    together, and the GIL is released while the engine works. Use it as a context manager, or
    call :meth:`close`, to stop it.
    """

    def __init__(self, model: Union[str, "os.PathLike[str]"] = DEFAULT_MODEL, **engine_options: Any) -> None:
        if isinstance(model, os.PathLike):
            model = os.fspath(model)
        if not isinstance(model, str):
            raise ParameterTypeError(f"model must be a string or a path, got {type(model).__name__}")
        options = _check("Engine", _ENGINE_OPTIONS, engine_options)
        for name, value in options.items():
            _count(name, value)
        self._native = _native.NativeEngine(model, **options)

    @property
    def model(self) -> str:
        """The model's id, as responses report it."""
        return self._native.model_id  # type: ignore[no-any-return]

    @property
    def kind(self) -> str:
        """``chat`` or ``embedding``."""
        return self._native.kind  # type: ignore[no-any-return]

    @property
    def context_length(self) -> Optional[int]:
        """The chat model's context, in tokens (``None`` for embedding models)."""
        return self._native.context_length  # type: ignore[no-any-return]

    @property
    def dimension(self) -> Optional[int]:
        """The embedding model's vector length (``None`` for chat models)."""
        return self._native.dimension  # type: ignore[no-any-return]

    def _submit_chat(self, messages: Any, options: Dict[str, Any]) -> tuple:
        options = _check("chat", _CHAT_OPTIONS, options)
        stream, include_usage = _split_stream(options)
        logprobs = options.pop("logprobs", False)
        top_logprobs = _count("top_logprobs", options.pop("top_logprobs", None))
        messages_json = _messages_json(messages)
        options_json = _options_json(options)

        def submit() -> Any:
            return self._native.chat(
                messages_json, options_json, logprobs, top_logprobs, stream, include_usage
            )

        return stream, submit

    def _submit_completion(self, prompt: Any, options: Dict[str, Any]) -> tuple:
        options = _check("complete", _COMPLETION_OPTIONS, options)
        stream, include_usage = _split_stream(options)
        logprobs = _count("logprobs", options.pop("logprobs", None))
        echo = options.pop("echo", False)
        if not isinstance(prompt, str):
            prompt = _token_ids("prompt", prompt)
            if prompt is None:
                raise ParameterTypeError("prompt must be a string or a list of token ids")
        options_json = _options_json(options)

        def submit() -> Any:
            return self._native.complete(prompt, options_json, logprobs, echo, stream, include_usage)

        return stream, submit

    def chat(self, messages: Any, **options: Any) -> Any:
        """Answers a conversation (OpenAI ``messages``), as a :class:`ChatCompletion`, or with
        ``stream=True`` as a :class:`Stream` of :class:`ChatCompletionChunk`.

        Options, as on the OpenAI API: ``temperature``, ``top_p``, ``top_k``, ``min_p``,
        ``frequency_penalty``, ``presence_penalty``, ``repetition_penalty``, ``logit_bias``,
        ``seed``, ``stop``, ``max_tokens`` (or ``max_completion_tokens``), ``n``,
        ``logprobs``, ``top_logprobs``, ``ignore_eos``, ``stream`` and
        ``stream_options={"include_usage": True}``.
        """
        stream, submit = self._submit_chat(messages, options)
        generation = submit()
        if stream:
            return Stream(generation, ChatCompletionChunk)
        return ChatCompletion.from_dict(json.loads(generation.result()))

    def complete(self, prompt: Union[str, List[int]], **options: Any) -> Any:
        """Continues a raw prompt (a string or token ids; no chat template), as a
        :class:`Completion`, or with ``stream=True`` as a :class:`Stream` of them.

        Options as for :meth:`chat`, except that ``logprobs`` is the number of alternatives
        to report per token (the legacy API's form) and there is no ``top_logprobs``.
        """
        stream, submit = self._submit_completion(prompt, options)
        generation = submit()
        if stream:
            return Stream(generation, Completion)
        return Completion.from_dict(json.loads(generation.result()))

    def achat(self, messages: Any, **options: Any) -> Any:
        """:meth:`chat` for asyncio: ``await engine.achat(...)``, or with ``stream=True``
        ``async for chunk in engine.achat(...)``. Cancelling the task cancels the generation."""
        stream, submit = self._submit_chat(messages, options)
        if stream:
            return AsyncStream(submit, ChatCompletionChunk)
        return self._await(submit, ChatCompletion)

    def acomplete(self, prompt: Union[str, List[int]], **options: Any) -> Any:
        """:meth:`complete` for asyncio, as :meth:`achat` is to :meth:`chat`."""
        stream, submit = self._submit_completion(prompt, options)
        if stream:
            return AsyncStream(submit, Completion)
        return self._await(submit, Completion)

    @staticmethod
    async def _await(submit: Callable[[], Any], kind: Type[T]) -> T:
        answer = await _awaited(submit())
        return kind.from_dict(json.loads(answer))  # type: ignore[no-any-return]

    def embed(
        self, texts: Union[str, Sequence[str]], *, as_numpy: bool = False, truncate: bool = False
    ) -> Any:
        """Embeds each text: a list of vectors (lists of floats), one per text, in order; a
        single string gives a list of one vector. With ``as_numpy=True``, a float32 NumPy
        array of shape ``(len(texts), dimension)`` (NumPy must be installed). A text longer
        than the model takes is an error unless ``truncate=True`` cuts it to that length; at
        most 2048 texts and 300,000 tokens a call."""
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, bytes) or not isinstance(texts, Sequence) or not all(
            isinstance(t, str) for t in texts
        ):
            raise ParameterTypeError("texts must be a string or a list of strings")
        if not isinstance(as_numpy, bool):
            raise ParameterTypeError("as_numpy must be a boolean")
        if not isinstance(truncate, bool):
            raise ParameterTypeError("truncate must be a boolean")
        if not as_numpy:
            return self._native.embed(list(texts), truncate)
        try:
            import numpy
        except ImportError:
            raise ImportError("embed(as_numpy=True) needs NumPy: pip install numpy") from None
        data, rows, dimension = self._native.embed_packed(list(texts), truncate)
        return numpy.frombuffer(data, dtype="<f4").reshape(rows, dimension)

    def tokenize(self, text: str, *, special: bool = True) -> List[int]:
        """The token ids of ``text`` as the engine would feed them: with ``special``, special
        tokens written in the text are recognised and the model's own are added (a chat
        model's BOS when it wants one, an embedding model's ``[CLS]``/``[SEP]``)."""
        if not isinstance(text, str):
            raise ParameterTypeError(f"text must be a string, got {type(text).__name__}")
        if not isinstance(special, bool):
            raise ParameterTypeError("special must be a boolean")
        return self._native.tokenize(text, special)  # type: ignore[no-any-return]

    def detokenize(self, ids: Sequence[int], *, skip_special: bool = False) -> str:
        """The text of token ids; ``skip_special`` leaves special tokens out."""
        checked = _token_ids("ids", ids)
        if checked is None:
            raise ParameterTypeError("ids must be a list of token ids")
        if not isinstance(skip_special, bool):
            raise ParameterTypeError("skip_special must be a boolean")
        return self._native.detokenize(checked, skip_special)  # type: ignore[no-any-return]

    def stats(self) -> EngineStats:
        """The engine's queue, batch, KV cache and counters now (all zero for embedding
        models, which have no engine loop)."""
        return EngineStats.from_dict(json.loads(self._native.stats()))  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stops accepting requests; requests running finish first. Later calls raise
        :class:`EngineStoppedError`."""
        self._native.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Engine(model={self._native.model_id!r}, kind={self._native.kind!r})"
