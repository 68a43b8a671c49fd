"""The exceptions HelixFlow raises. Every error of the engine is a :class:`HelixFlowError`."""

from __future__ import annotations

__all__ = [
    "HelixFlowError",
    "ModelNotFoundError",
    "ModelLoadError",
    "InvalidRequestError",
    "ContextLengthError",
    "ParameterTypeError",
    "OverloadedError",
    "EngineStoppedError",
    "InternalError",
]


class HelixFlowError(Exception):
    """Base class of every error the engine raises."""


class ModelNotFoundError(HelixFlowError, LookupError):
    """No model has that id, or no file or folder is at that path."""


class ModelLoadError(HelixFlowError):
    """The model was found but cannot be loaded: a malformed or unsupported file, a checksum
    mismatch, or a failed download."""


class InvalidRequestError(HelixFlowError, ValueError):
    """A parameter is out of range or inconsistent, the messages are malformed, or the model
    is of the wrong kind for the call (an embedding model asked to chat)."""


class ContextLengthError(InvalidRequestError):
    """The prompt plus ``max_tokens`` does not fit the model's context."""


class ParameterTypeError(InvalidRequestError, TypeError):
    """A parameter has the wrong Python type (a string where a number is expected)."""


class OverloadedError(HelixFlowError):
    """The engine's queue is full; retry later or raise ``queue_capacity``."""


class EngineStoppedError(HelixFlowError):
    """The engine was closed, or its thread stopped; no more requests can run."""


class InternalError(HelixFlowError):
    """A failure inside the engine (tensor or I/O errors). Please report it."""


# Tracebacks name the classes as users import them.
for _class in (HelixFlowError, ModelNotFoundError, ModelLoadError, InvalidRequestError,
               ContextLengthError, ParameterTypeError, OverloadedError, EngineStoppedError,
               InternalError):
    _class.__module__ = "helixflow"
