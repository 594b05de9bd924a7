"""Admission control: limits, bounded waits, fairness, cancellation and the 503 answer."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.api.admission import Admission, Overloaded

from .conftest import MiB, StubSettings, small_app

pytestmark = pytest.mark.anyio


async def test_grants_within_limits_and_counts() -> None:
    admission = Admission(2, 100, 0.1)
    a = await admission.acquire(40)
    b = await admission.acquire(60)
    assert (admission.active, admission.bytes_in_flight) == (2, 100)
    a.release()
    a.release()  # idempotent
    assert (admission.active, admission.bytes_in_flight) == (1, 60)
    b.release()
    assert (admission.active, admission.bytes_in_flight) == (0, 0)


async def test_concurrency_limit_waits_then_times_out() -> None:
    rejected: list[int] = []
    admission = Admission(1, 100, 0.05, retry_after=3, on_reject=lambda: rejected.append(1))
    held = await admission.acquire(1)
    with pytest.raises(Overloaded) as info:
        await admission.acquire(1)
    assert info.value.retry_after == 3
    assert "capacity" in info.value.detail
    assert rejected == [1]
    assert admission.waiting == 0
    held.release()
    (await admission.acquire(1)).release()


async def test_waiter_is_admitted_when_a_slot_frees() -> None:
    admission = Admission(1, 100, 1.0)
    held = await admission.acquire(10)
    waiter = asyncio.create_task(admission.acquire(10))
    await asyncio.sleep(0.01)
    assert admission.waiting == 1
    held.release()
    slot = await asyncio.wait_for(waiter, 1)
    assert admission.active == 1
    slot.release()


async def test_byte_limit_and_progress_release_bytes() -> None:
    admission = Admission(4, 100, 1.0)
    big = await admission.acquire(80)
    waiter = asyncio.create_task(admission.acquire(50))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    big.sent(30)  # 50 of the 80 bytes remain in flight: 50 + 50 fits
    slot = await asyncio.wait_for(waiter, 1)
    assert admission.bytes_in_flight == 100
    big.release()
    assert admission.bytes_in_flight == 50
    slot.release()
    assert admission.bytes_in_flight == 0


async def test_oversized_request_runs_alone() -> None:
    admission = Admission(4, 100, 0.05)
    huge = await admission.acquire(10_000)
    with pytest.raises(Overloaded):
        await admission.acquire(1)
    huge.release()
    small = await admission.acquire(1)
    with pytest.raises(Overloaded):
        await admission.acquire(10_000)
    small.release()


async def test_first_come_first_served() -> None:
    admission = Admission(4, 100, 1.0)
    first = await admission.acquire(60)
    large = asyncio.create_task(admission.acquire(60))
    await asyncio.sleep(0.01)
    small = asyncio.create_task(admission.acquire(1))  # would fit, but arrived after the large one
    await asyncio.sleep(0.01)
    assert not large.done()
    assert not small.done()
    first.release()
    (await asyncio.wait_for(large, 1)).release()
    (await asyncio.wait_for(small, 1)).release()


async def test_cancelled_waiter_gives_its_place_up() -> None:
    admission = Admission(1, 100, 5.0)
    held = await admission.acquire(1)
    waiter = asyncio.create_task(admission.acquire(1))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert admission.waiting == 0
    held.release()
    assert admission.active == 0


async def test_bounded_queue_refuses_at_once() -> None:
    admission = Admission(1, 100, 5.0, max_waiting=2)
    held = await admission.acquire(1)
    waiters = [asyncio.create_task(admission.acquire(1)) for _ in range(2)]
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(Overloaded, match="already waiting"):
        await admission.acquire(1)
    assert loop.time() - start < 0.5
    held.release()
    for task in waiters:
        (await asyncio.wait_for(task, 1)).release()
    assert (admission.active, admission.waiting) == (0, 0)


async def test_slot_context_manager_releases_on_error() -> None:
    admission = Admission(1, 100, 0.1)

    async def fail_while_holding() -> None:
        async with admission.slot(5):
            assert admission.active == 1
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await fail_while_holding()
    assert (admission.active, admission.bytes_in_flight) == (0, 0)


@pytest.mark.parametrize(
    ("args", "message"), [((0, 1, 1.0), "max_concurrent"), ((1, 0, 1.0), "max_bytes"), ((1, 1, float("nan")), "timeout")]
)
def test_rejects_nonsense_settings(args: tuple[int, int, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Admission(*args)


async def test_overloaded_is_503_problem_with_retry_after() -> None:
    app = small_app(StubSettings(max_concurrent_generations=1, admission_timeout_seconds=0.05))
    hardening = app.state.hardening
    held = await hardening.admission.acquire(1)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            response = await c.get("/stream", params={"blocks": 1, "block": 16})
            metrics = await c.get("/metrics")
    finally:
        held.release()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "https://tensorinit.dev/problems/overloaded"
    assert body["request_id"] == response.headers["x-request-id"]
    assert 'tensorinit_rejected_requests_total{reason="overloaded"} 1.0' in metrics.text


async def test_slot_held_for_whole_stream_and_released_after() -> None:
    app = small_app(StubSettings(max_concurrent_generations=1))
    admission = app.state.hardening.admission
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        response = await c.get("/stream", params={"blocks": 3, "block": MiB})
    assert response.status_code == 200
    assert len(response.content) == 3 * MiB
    assert (admission.active, admission.bytes_in_flight) == (0, 0)


async def test_admit_context_for_work_that_is_not_streamed() -> None:
    app = small_app(StubSettings(max_concurrent_generations=1, admission_timeout_seconds=0.05))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        slow, refused = await asyncio.gather(
            c.get("/work", params={"nbytes": 10, "seconds": 0.5}), c.get("/work", params={"nbytes": 10}, headers={"X-Request-ID": "late"})
        )
        after = await c.get("/work", params={"nbytes": 10})
    assert slow.status_code == 200
    assert refused.status_code == 503
    assert refused.json()["request_id"] == "late"
    assert after.status_code == 200
    assert app.state.hardening.admission.active == 0


# -- one client's share (issue 17): a client that stalls or asks for much leaves the rest to others --


async def test_a_client_holds_at_most_its_share_of_slots_and_others_pass_it() -> None:
    admission = Admission(4, 100, 0.05, client_share=0.5)
    held = [await admission.acquire(1, "a"), await admission.acquire(1, "a")]
    with pytest.raises(Overloaded):
        await admission.acquire(1, "a")  # a third: over a's two slots
    other = await admission.acquire(1, "b")  # at once: a's waiter did not hold b up
    assert (admission.active, admission.waiting) == (3, 0)
    for slot in (*held, other):
        slot.release()
    assert (admission.active, admission.bytes_in_flight, admission.waiting) == (0, 0, 0)


async def test_an_answer_counts_in_flight_for_at_most_a_clients_share_of_bytes() -> None:
    admission = Admission(4, 100, 0.05, client_share=0.5)
    huge = await admission.acquire(10_000, "a")  # a stalled 1 GiB GET, say
    assert admission.bytes_in_flight == 50
    other = await admission.acquire(50, "b")  # the other half is b's
    assert admission.bytes_in_flight == 100
    with pytest.raises(Overloaded):
        await admission.acquire(1, "a")  # a's bytes are a's share already
    huge.sent(9_970)  # 30 bytes left unsent: only they count now
    assert admission.bytes_in_flight == 80
    (await admission.acquire(20, "a")).release()
    huge.release()
    other.release()
    assert (admission.active, admission.bytes_in_flight) == (0, 0)


@pytest.mark.parametrize(("share", "slots", "nbytes", "waiting"), [(1.0, 4, 100, 64), (0.5, 2, 50, 32), (0.01, 1, 1, 1)])
def test_shares_round_down_but_never_to_nothing(share: float, slots: int, nbytes: int, waiting: int) -> None:
    admission = Admission(4, 100, 1.0, client_share=share)
    assert (admission.client_slots, admission.client_bytes, admission.client_waiting) == (slots, nbytes, waiting)


async def test_a_client_holds_at_most_its_share_of_the_queue() -> None:
    admission = Admission(1, 100, 5.0, max_waiting=4, client_share=0.5)
    held = await admission.acquire(1, "b")
    waiters = [asyncio.create_task(admission.acquire(1, "a")) for _ in range(2)]
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded, match="this client"):
        await admission.acquire(1, "a")
    late = asyncio.create_task(admission.acquire(1, "c"))  # c still finds a place
    await asyncio.sleep(0.01)
    assert admission.waiting == 3
    held.release()
    for task in (*waiters, late):
        (await asyncio.wait_for(task, 1)).release()
    assert (admission.active, admission.waiting) == (0, 0)
