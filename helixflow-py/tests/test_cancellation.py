"""Cancellation: every way of abandoning a generation (breaking out of a stream, close(), a with
block, ctrl-c, cancelling an asyncio task) stops it and gives its KV blocks back."""

import _thread
import asyncio
import signal
import threading
import time

import pytest

import helixflow

# Long enough that no test below can finish it in time: only cancelling frees the engine early.
LONG = dict(max_tokens=400, ignore_eos=True)
STORY = [{"role": "user", "content": "Write a long story about a dragon."}]


def cancelled(engine) -> int:
    return engine.stats().cancelled_requests


def test_breaking_out_of_a_stream_cancels_it(chat_engine, idle):
    before = idle(chat_engine)
    received = 0
    for _ in chat_engine.chat(STORY, stream=True, **LONG):
        received += 1
        if received == 2:
            break
    after = idle(chat_engine)
    assert after.cancelled_requests > before.cancelled_requests
    assert after.tokens_generated - before.tokens_generated < 400


def test_closing_a_stream_cancels_it(chat_engine, idle):
    before = cancelled(chat_engine)
    stream = chat_engine.complete("Once upon a time", stream=True, **LONG)
    next(stream)
    stream.close()
    assert list(stream) == []
    idle(chat_engine)
    assert cancelled(chat_engine) > before
    stream.close()  # closing twice is harmless


def test_leaving_a_with_block_cancels_the_stream(chat_engine, idle):
    before = cancelled(chat_engine)
    with chat_engine.chat(STORY, stream=True, **LONG) as stream:
        next(stream)
    idle(chat_engine)
    assert cancelled(chat_engine) > before
    assert list(stream) == []


INTERRUPT_AFTER = 0.3
# A waiting call looks for ctrl-c at least every few tens of milliseconds; 400 tokens take
# seconds on a CPU. A ctrl-c noticed only at the end of the answer is not a cancellation.
PROMPTLY = INTERRUPT_AFTER + 1.0


@pytest.fixture
def sigint_raises():
    """Python's own SIGINT handler, which raises KeyboardInterrupt. A process started in the
    background inherits SIGINT ignored, and then `interrupt_main` does nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def interrupt_soon() -> threading.Timer:
    """Delivers KeyboardInterrupt to the main thread in 0.3 s, as ctrl-c would."""
    timer = threading.Timer(INTERRUPT_AFTER, _thread.interrupt_main)
    timer.start()
    return timer


def whole_answer(engine: helixflow.Engine) -> None:
    engine.chat(STORY, **LONG)


def streamed_answer(engine: helixflow.Engine) -> None:
    for _ in engine.chat(STORY, stream=True, **LONG):
        pass


@pytest.mark.parametrize("generate", [whole_answer, streamed_answer], ids=["whole", "stream"])
def test_ctrl_c_cancels_the_generation(chat_engine, idle, sigint_raises, generate):
    before = cancelled(chat_engine)
    completed = False
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        timer = interrupt_soon()
        try:
            generate(chat_engine)
            completed = True
        finally:
            timer.join()
    waited = time.perf_counter() - start
    assert not completed, "the answer was complete before ctrl-c"
    assert waited < PROMPTLY, f"ctrl-c took effect {waited:.2f} s after the call began"
    idle(chat_engine)
    assert cancelled(chat_engine) > before


def test_cancelling_an_asyncio_task_cancels_its_generation(chat_engine, idle):
    before = cancelled(chat_engine)

    async def main() -> None:
        task = asyncio.ensure_future(chat_engine.achat(STORY, **LONG))
        for _ in range(1000):  # until the engine runs it (10 s at most)
            await asyncio.sleep(0.01)
            if chat_engine.stats().running_requests > 0:
                break
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    idle(chat_engine)
    assert cancelled(chat_engine) > before


def test_leaving_an_async_stream_cancels_it(chat_engine, idle):
    before = cancelled(chat_engine)

    async def main() -> None:
        received = 0
        async for _ in chat_engine.achat(STORY, stream=True, **LONG):
            received += 1
            if received == 2:
                break
        async with chat_engine.acomplete("Once upon a time", stream=True, **LONG) as stream:
            await stream.__anext__()

    asyncio.run(main())
    idle(chat_engine)
    assert cancelled(chat_engine) >= before + 2
