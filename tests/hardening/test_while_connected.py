"""while_connected: the work, the client's leaving, and the caller's own cancellation kept apart."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message

from service.api.hardening import ClientGoneError, while_connected


async def leaves_soon() -> Message:
    await asyncio.sleep(0.01)
    return {"type": "http.disconnect"}


async def stays() -> Message:
    await asyncio.Event().wait()
    return {"type": "http.disconnect"}


async def slow_to_cancel(log: list[str]) -> int:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        await asyncio.sleep(0.2)  # cleanup that awaits (giving a slot back after the threads stopped)
        log.append("unwound")
        raise
    return 1


def test_the_work_wins_when_the_client_stays() -> None:
    async def work() -> int:
        await asyncio.sleep(0.01)
        return 7

    assert asyncio.run(while_connected(stays, work())) == 7


def test_a_client_that_leaves_cancels_the_work_after_it_unwinds() -> None:
    log: list[str] = []
    with pytest.raises(ClientGoneError):
        asyncio.run(while_connected(leaves_soon, slow_to_cancel(log)))
    assert log == ["unwound"]


def test_the_callers_cancellation_is_not_swallowed_even_during_cleanup() -> None:
    log: list[str] = []

    async def main() -> None:
        outer = asyncio.ensure_future(while_connected(leaves_soon, slow_to_cancel(log)))
        await asyncio.sleep(0.1)  # the client has left; the work is unwinding
        outer.cancel()  # e.g. the server's graceful-shutdown timeout
        with pytest.raises(asyncio.CancelledError):
            await outer

    asyncio.run(main())


def test_an_error_from_receive_is_not_a_client_leaving() -> None:
    async def broken() -> Message:
        raise RuntimeError("receive failed")

    async def work() -> int:
        await asyncio.sleep(0.05)
        return 1

    with pytest.raises(RuntimeError, match="receive failed"):
        asyncio.run(while_connected(broken, work()))


def test_an_error_from_the_work_propagates() -> None:
    async def work() -> int:
        raise ValueError("engine")

    with pytest.raises(ValueError, match="engine"):
        asyncio.run(while_connected(stays, work()))
