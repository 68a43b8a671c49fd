"""Shared fixtures: one chat engine and one embedding engine for the whole session (loading a
model takes time), the golden reference files, and a helper that waits for an engine to be idle.

The golden files are `helixflow-core/tests/fixtures/golden/*.json`, computed outside the project
(llama.cpp for the chat model, a float64 reference for the embedding model)."""

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import pytest

import helixflow

CHAT_MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "all-minilm-l6-v2"

GOLDEN = Path(__file__).resolve().parents[2] / "helixflow-core" / "tests" / "fixtures" / "golden"


def golden(name: str) -> Dict[str, Any]:
    with open(GOLDEN / name, encoding="utf-8") as f:
        return json.load(f)  # type: ignore[no-any-return]


CHAT_GOLDEN = golden("smollm2-chat.json")
EMBEDDING_GOLDEN = golden("minilm-embeddings.json")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per golden case, for tests that take `chat_case`, `token_case` or
    `embedding_case`."""
    cases = {
        "chat_case": (CHAT_GOLDEN["cases"], lambda c: c["messages"][-1]["content"]),
        "token_case": (CHAT_GOLDEN["tokenization"], lambda c: c["text"]),
        "embedding_case": (EMBEDDING_GOLDEN["cases"], lambda c: c["input"] or "<empty>"),
    }
    for name, (values, label) in cases.items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, values, ids=[label(v)[:40] for v in values])


@pytest.fixture(scope="session")
def chat_golden() -> Dict[str, Any]:
    """`smollm2-chat.json`: greedy answers, first-step logprobs and tokenization."""
    return CHAT_GOLDEN


@pytest.fixture(scope="session")
def embedding_golden() -> Dict[str, Any]:
    """`minilm-embeddings.json`: token ids and embeddings."""
    return EMBEDDING_GOLDEN


@pytest.fixture(scope="session")
def chat_engine() -> Iterator[helixflow.Engine]:
    with helixflow.Engine(CHAT_MODEL) as engine:
        yield engine


@pytest.fixture(scope="session")
def embedding_engine() -> Iterator[helixflow.Engine]:
    with helixflow.Engine(EMBEDDING_MODEL) as engine:
        yield engine


def wait_idle(engine: helixflow.Engine, timeout: float = 10.0) -> helixflow.EngineStats:
    """Polls the engine until no request runs or waits and no KV block is held; its stats
    then. Fails the test after `timeout` seconds."""
    deadline = time.perf_counter() + timeout
    while True:
        stats = engine.stats()
        if (
            stats.running_requests == 0
            and stats.waiting_requests == 0
            and stats.kv_blocks_used == 0
        ):
            return stats
        if time.perf_counter() > deadline:
            pytest.fail(f"the engine still holds requests or blocks after {timeout} s: {stats}")
        time.sleep(0.01)


@pytest.fixture
def idle() -> Callable[..., helixflow.EngineStats]:
    """:func:`wait_idle`, for tests."""
    return wait_idle
