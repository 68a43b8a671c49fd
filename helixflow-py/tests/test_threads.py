"""Threads: the GIL is released while the engine generates, and requests from several threads
are batched together, so they finish sooner than one after another."""

import threading
import time
from typing import Iterator, List, Tuple

import pytest

import helixflow

STORY = [{"role": "user", "content": "Tell me a story about a lighthouse."}]


class Spinner(threading.Thread):
    """Counts in a tight Python loop, noting every pause of more than a millisecond (the GIL
    held by another thread, or the OS running something else)."""

    def __init__(self) -> None:
        super().__init__(name="spinner", daemon=True)
        self.count = 0
        self.running = True
        self.pauses: List[Tuple[float, float]] = []

    def run(self) -> None:
        last = time.perf_counter()
        while self.running:
            self.count += 1
            now = time.perf_counter()
            if now - last > 0.001:
                self.pauses.append((last, now))
            last = now

    def longest_pause(self, start: float, end: float) -> float:
        """The longest pause within [start, end]."""
        overlaps = [min(e, end) - max(s, start) for s, e in self.pauses if s < end and e > start]
        return max(overlaps, default=0.0)


def test_python_threads_run_while_the_engine_generates(chat_engine):
    spinner = Spinner()
    spinner.start()
    try:
        while spinner.count == 0:
            time.sleep(0.001)
        before, start = spinner.count, time.perf_counter()
        answer = chat_engine.chat(STORY, max_tokens=64, ignore_eos=True, temperature=0)
        after, end = spinner.count, time.perf_counter()
    finally:
        spinner.running = False
        spinner.join()
    assert answer.usage.completion_tokens == 64
    assert after - before > 1000, f"the counter advanced {after - before} times in {end - start:.3f} s"
    # Holding the GIL through the generation would stall the counter for all of it.
    assert spinner.longest_pause(start, end) < (end - start) / 2


@pytest.fixture(scope="module")
def own_engine() -> Iterator[helixflow.Engine]:
    """An engine of this module's own, so that its batch statistics start from zero."""
    with helixflow.Engine(kv_cache_bytes=128 << 20) as engine:
        engine.chat(STORY, max_tokens=2)  # warm up
        yield engine


def ask(engine: helixflow.Engine, i: int) -> int:
    messages = [{"role": "user", "content": f"Write a poem about the number {i}."}]
    answer = engine.chat(messages, max_tokens=32, ignore_eos=True, temperature=0)
    return answer.usage.completion_tokens


def test_concurrent_requests_are_batched_and_finish_sooner(own_engine):
    requests = 8
    start = time.perf_counter()
    one_by_one = [ask(own_engine, i) for i in range(requests)]
    sequential = time.perf_counter() - start
    assert one_by_one == [32] * requests
    assert own_engine.stats().max_batch_seqs == 1

    results: List[int] = []
    errors: List[BaseException] = []
    barrier = threading.Barrier(requests + 1)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results.append(ask(own_engine, requests + i))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(requests)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    concurrent = time.perf_counter() - start

    assert errors == []
    assert results == [32] * requests
    assert concurrent < sequential, f"concurrent {concurrent:.2f} s, one by one {sequential:.2f} s"
    assert own_engine.stats().max_batch_seqs >= 2
