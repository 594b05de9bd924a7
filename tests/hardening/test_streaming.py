"""Against a real uvicorn server: the slot spans the stream, a disconnect stops and frees it."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.metrics import sample

from .conftest import MiB, ServerThread


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_slot_held_while_streaming_and_freed_on_disconnect(served: ServerThread) -> None:
    hardening = served.app.state.hardening
    blocks, block = 200, MiB
    with httpx.Client(base_url=served.url) as client:
        with client.stream("GET", "/stream", params={"blocks": blocks, "block": block, "delay": 0.02}) as response:
            assert response.status_code == 200
            assert int(response.headers["content-length"]) == blocks * block
            received = 0
            chunks = response.iter_bytes()
            while received < 3 * block:
                received += len(next(chunks))
            assert hardening.admission.active == 1
            assert hardening.admission.bytes_in_flight < blocks * block
            # leaving the block closes the connection mid-stream
        assert wait_for(lambda: hardening.admission.active == 0)
        assert hardening.admission.bytes_in_flight == 0
        assert wait_for(lambda: hardening.metrics.disconnected._value.get() == 1)
        generated = hardening.metrics.bytes_generated._value.get()
        time.sleep(0.3)
        assert hardening.metrics.bytes_generated._value.get() == generated  # generation stopped
        assert generated < blocks * block / 4
        metrics = client.get("/metrics").text
    assert "tensorinit_streams_disconnected_total 1.0" in metrics
    assert "tensorinit_generations_in_flight 0.0" in metrics


def test_completed_stream_is_not_a_disconnect(served: ServerThread) -> None:
    hardening = served.app.state.hardening
    with httpx.Client(base_url=served.url) as client:
        response = client.get("/stream", params={"blocks": 4, "block": MiB})
        assert len(response.content) == 4 * MiB
        metrics = client.get("/metrics").text
    assert hardening.admission.active == 0
    assert "tensorinit_streams_disconnected_total 0.0" in metrics
    assert sample(metrics, "tensorinit_bytes_generated_total") == 4 * MiB
    assert 'tensorinit_http_requests_total{method="GET",route="/stream",status="200"} 1.0' in metrics
