"""The safetensors header leaves as its own first chunk, on a real uvicorn.

What uvicorn is handed is recorded at the ASGI ``send`` level, outermost, so the sizes
are the ``http.response.body`` messages the server writes to its transport, one write
each; a TCP reader could not tell them apart, since the kernel may merge segments.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.app import create_app
from service.api.settings import Settings
from service.safetensors_stream import MIN_CHUNK_BYTES
from tests.conftest import LiveServer, start_server, stop_server


class BodySizes:
    """Pure ASGI layer that records the sizes of the body messages of every request, by path and query."""

    def __init__(self, app: ASGIApp, record: dict[str, list[list[int]]]):
        self.app = app
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sizes: list[int] = []
        self.record.setdefault(f"{scope['path']}?{scope['query_string'].decode()}", []).append(sizes)

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                sizes.append(len(message["body"]))
            await send(message)

        await self.app(scope, receive, recording)


RECORD: dict[str, list[list[int]]] = {}


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    app = create_app(Settings())
    app.add_middleware(BodySizes, record=RECORD)
    live = start_server(app)
    try:
        yield live
    finally:
        stop_server(live)


CASES = [
    # (path and query, Range, whether the answer starts with the header)
    ("/init?scheme=he_normal&shape=1024,1024", None, True),  # 4 MiB, generated
    ("/init/he_normal?shape=1024,1024&seed=3", None, True),  # the per-scheme form
    ("/init?scheme=zeros&shape=4096,1024", None, True),  # 16 MiB constant: no generation at all
    ("/init/ones?shape=1024,1024&dtype=bfloat16", "bytes=4-", True),  # from inside the header
    ("/init/uniform?shape=1024,1024", "bytes=2000-", False),  # data only
]


@pytest.mark.parametrize(("target", "byte_range", "has_header"), CASES, ids=[c[0] for c in CASES])
def test_first_body_chunk_is_exactly_the_header(server: LiveServer, target: str, byte_range: str | None, has_header: bool) -> None:
    headers = {"Range": byte_range} if byte_range else {}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        body = client.get(target, headers=headers).raise_for_status().content
        whole = client.get(target).content
    (length,) = struct.unpack("<Q", whole[:8])
    start = int(byte_range.removeprefix("bytes=").rstrip("-")) if byte_range else 0
    assert body == whole[start:]
    ranged, full = RECORD[target][-2:] if byte_range else RECORD[target][-1:] * 2
    assert full[0] == 8 + length, "the first chunk of the whole file is 8 + header length bytes"
    assert sum(full) == len(whole)
    assert all(n >= MIN_CHUNK_BYTES for n in full[1:-1])
    assert sum(ranged) == len(body)
    if has_header:
        assert ranged[0] == 8 + length - start
    else:
        assert ranged[0] >= min(MIN_CHUNK_BYTES, len(body))
