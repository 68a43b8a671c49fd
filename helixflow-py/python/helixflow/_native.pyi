"""Type stubs of the extension module ``helixflow._native`` (internal: use ``helixflow.Engine``)."""

from typing import Any, Callable, List, Optional, Tuple, Union

__version__: str
"""The package's version."""

class NativeGeneration:
    """A queued generation; dropping it cancels the request."""

    def next_chunk(self) -> Optional[str]:
        """The next stream chunk as JSON, or ``None`` at the end (or once cancelled)."""
    def result(self) -> str:
        """The whole answer as JSON, once generated."""
    def cancel(self) -> None:
        """Cancels the request and frees its memory."""
    def watch(self, event_loop: Any, deliver: Callable[[Any], None]) -> None:
        """Calls ``deliver`` on the asyncio loop with each part's JSON, then ``None`` at the
        end, or an exception instance; from the binding's one waiting thread."""

class NativeEngine:
    """One loaded model and, for chat models, its engine."""

    def __init__(
        self,
        model: str,
        *,
        max_num_seqs: Optional[int] = None,
        max_batched_tokens: Optional[int] = None,
        queue_capacity: Optional[int] = None,
        block_size: Optional[int] = None,
        kv_cache_bytes: Optional[int] = None,
        kv_cache_fraction: Optional[float] = None,
        quantize: Optional[str] = None,
    ) -> None: ...
    @property
    def model_id(self) -> str:
        """The model's id."""
    @property
    def kind(self) -> str:
        """``chat`` or ``embedding``."""
    @property
    def context_length(self) -> Optional[int]:
        """A chat model's context length in tokens."""
    @property
    def dimension(self) -> Optional[int]:
        """An embedding model's vector length."""
    def chat(
        self,
        messages_json: str,
        options_json: str,
        logprobs: bool,
        top_logprobs: Optional[int],
        stream: bool,
        include_usage: bool,
    ) -> NativeGeneration:
        """Queues a chat completion: streamed chunks, or the whole answer."""
    def complete(
        self,
        prompt: Union[str, List[int]],
        options_json: str,
        logprobs: Optional[int],
        echo: bool,
        stream: bool,
        include_usage: bool,
    ) -> NativeGeneration:
        """Queues a text completion: streamed chunks, or the whole answer."""
    def embed(self, texts: List[str], truncate: bool) -> List[List[float]]:
        """One vector per text."""
    def embed_packed(self, texts: List[str], truncate: bool) -> Tuple[bytearray, int, int]:
        """The vectors as packed little-endian f32s, with the row count and dimension."""
    def tokenize(self, text: str, special: bool) -> List[int]:
        """The token ids of ``text``."""
    def detokenize(self, ids: List[int], skip_special: bool) -> str:
        """The text of token ids."""
    def stats(self) -> str:
        """The engine's figures as JSON."""
    def close(self) -> None:
        """Drops the model; new calls fail."""
