"""asyncio: achat and acomplete give the same answers as chat and complete, streamed or not,
and many of them can wait at once. Runs its own event loops (no pytest-asyncio needed)."""

import asyncio

import pytest

from helixflow import AsyncStream, ChatCompletion, Completion, InvalidRequestError

COLORS = [{"role": "user", "content": "Name three primary colors."}]
PROMPT = "Once upon a time"
GREEDY = dict(temperature=0, max_tokens=12)


def test_achat_equals_chat(chat_engine):
    expected = chat_engine.chat(COLORS, **GREEDY)

    async def main() -> ChatCompletion:
        return await chat_engine.achat(COLORS, **GREEDY)

    answer = asyncio.run(main())
    assert isinstance(answer, ChatCompletion)
    assert answer.choices[0].message.content == expected.choices[0].message.content
    assert answer.usage == expected.usage


def test_streamed_achat_concatenates_to_the_answer(chat_engine):
    expected = chat_engine.chat(COLORS, **GREEDY).choices[0].message.content

    async def main() -> str:
        stream = chat_engine.achat(COLORS, stream=True, **GREEDY)
        assert isinstance(stream, AsyncStream)
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        # Awaiting a stream gives the stream, ready to iterate.
        awaited = await chat_engine.achat(COLORS, stream=True, **GREEDY)
        assert isinstance(awaited, AsyncStream)
        assert "".join([c.choices[0].delta.content or "" async for c in awaited if c.choices]) == (
            "".join(parts)
        )
        return "".join(parts)

    assert asyncio.run(main()) == expected


def test_concurrent_achats_all_succeed(chat_engine):
    expected = chat_engine.chat(COLORS, **GREEDY)

    async def main():
        return await asyncio.gather(*(chat_engine.achat(COLORS, **GREEDY) for _ in range(4)))

    answers = asyncio.run(main())
    assert len(answers) == 4
    for answer in answers:
        assert answer.choices[0].message.content == expected.choices[0].message.content
        assert answer.usage == expected.usage
    assert len({a.id for a in answers}) == 4


def test_acomplete_equals_complete(chat_engine):
    expected = chat_engine.complete(PROMPT, **GREEDY)

    async def main():
        whole = await chat_engine.acomplete(PROMPT, **GREEDY)
        chunks = [c async for c in chat_engine.acomplete(
            PROMPT, stream=True, stream_options={"include_usage": True}, **GREEDY)]
        return whole, chunks

    whole, chunks = asyncio.run(main())
    assert isinstance(whole, Completion)
    assert whole.choices[0].text == expected.choices[0].text
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected.choices[0].text
    assert chunks[-1].usage == expected.usage


def test_async_errors_reach_the_awaiting_task(chat_engine):
    async def whole():
        await chat_engine.achat(COLORS, temperature=5)

    async def streamed():
        async for _ in chat_engine.achat([], stream=True):
            pass

    with pytest.raises(InvalidRequestError):
        asyncio.run(whole())
    with pytest.raises(InvalidRequestError):
        asyncio.run(streamed())


def os_threads() -> int:
    """The process's threads as the kernel counts them (Rust's and Python's)."""
    import os

    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/task"), reason="needs /proc")
def test_awaited_requests_take_no_thread_each(chat_engine):
    long = dict(temperature=0, max_tokens=48)

    async def main():
        # Warm up: the binding's one waiting thread starts with the first awaited request.
        await chat_engine.achat(COLORS, **GREEDY)
        before = os_threads()
        streams = [chat_engine.achat(COLORS, stream=True, **long) for _ in range(8)]
        wholes = [asyncio.ensure_future(chat_engine.achat(COLORS, **long)) for _ in range(8)]
        first = [await s.__anext__() for s in streams]  # every stream has started
        during = os_threads()
        rest = [[c async for c in s] for s in streams]
        answers = await asyncio.gather(*wholes)
        return before, during, first, rest, answers

    before, during, first, rest, answers = asyncio.run(main())
    assert during <= before, (before, during)  # sixteen requests in flight, no new thread
    assert len(first) == 8 and all(rest) and len(answers) == 8
