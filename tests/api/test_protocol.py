"""serve.py's HTTP protocol: uvicorn's httptools one with a response's head sent with its body.

The same bytes as stock uvicorn for every kind of answer, compared over raw sockets
against a stock server of the same app (its ``date`` and ``x-request-id`` aside), the
head and the body in one write where there is a body, and no answer held back: not a
HEAD's or a 304's, which have no body, and not a ``100 Continue``, which the client
waits for before it sends one.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest

from service.api.app import create_app
from service.api.protocol import HeadHoldingTransport
from service.api.settings import Settings
from tests.conftest import LiveServer, start_server, stop_server

SMALL = "/init?scheme=he_uniform&shape=64,64&seed=3"
BIG = "/init?scheme=he_normal&shape=512,4096&seed=3"  # 8 MiB: streamed

REQUESTS = {
    "small GET": f"GET {SMALL} HTTP/1.1\r\nHost: x\r\n\r\n",
    "HEAD": f"HEAD {SMALL} HTTP/1.1\r\nHost: x\r\n\r\n",
    "304": f"GET {SMALL} HTTP/1.1\r\nHost: x\r\nIf-None-Match: {{etag}}\r\n\r\n",
    "206": f"GET {SMALL} HTTP/1.1\r\nHost: x\r\nRange: bytes=10-99\r\n\r\n",
    "416": f"GET {SMALL} HTTP/1.1\r\nHost: x\r\nRange: bytes=99999-\r\n\r\n",
    "422 problem": "GET /init?scheme=he_uniform&shape=0x1 HTTP/1.1\r\nHost: x\r\n\r\n",
    "404": "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n",
    "JSON": "GET /schemes/he_normal HTTP/1.1\r\nHost: x\r\n\r\n",
    "streamed": f"GET {BIG} HTTP/1.1\r\nHost: x\r\n\r\n",
    "two pipelined": f"GET {SMALL} HTTP/1.1\r\nHost: x\r\n\r\nHEAD {SMALL} HTTP/1.1\r\nHost: x\r\n\r\n",
    "connection close": f"GET {SMALL} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "POST": 'POST /init HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 42\r\n\r\n{"scheme": "zeros", "shape": [3], "seed": 1}'[
        :-2
    ]
    + "}",
}


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[LiveServer, LiveServer]]:
    ours = start_server(create_app(Settings()))
    stock = start_server(create_app(Settings()), http="httptools")
    try:
        yield ours, stock
    finally:
        stop_server(ours)
        stop_server(stock)


def exchange(port: int, request: bytes, *, seconds: float = 4) -> bytes:
    """Everything the server sends for ``request`` until it has answered each request in it (or closes).

    Within ``seconds``, under uvicorn's 5 s keep-alive timeout: a head held back until the
    connection closes would make it.
    """
    methods = re.findall(rb"(?m)^(GET|HEAD|POST) /", request)
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        sock.sendall(request)
        data = b""
        deadline = time.monotonic() + seconds
        while complete_answers(data, methods) < len(methods) and time.monotonic() < deadline:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
        assert complete_answers(data, methods) == len(methods), f"{len(methods)} answers not complete in {seconds} s: {data[:300]!r}"
        return data


def complete_answers(data: bytes, methods: list[bytes]) -> int:
    """How many whole answers ``data`` holds, the i-th to a request of ``methods[i]``."""
    count, pos = 0, 0
    while count < len(methods) and (end := data.find(b"\r\n\r\n", pos)) >= 0:
        head = data[pos:end]
        length = re.search(rb"(?i)\r\ncontent-length: (\d+)", head)
        bodiless = methods[count] == b"HEAD" or head.startswith(b"HTTP/1.1 304") or length is None
        body = 0 if bodiless else int(length.group(1))  # type: ignore[union-attr]
        if end + 4 + body > len(data):
            break
        count, pos = count + 1, end + 4 + body
    return count


def normalized(data: bytes) -> bytes:
    """The bytes but for what differs between any two answers: the date and the request id."""
    data = re.sub(rb"(?im)^(date|x-request-id): [^\r]*\r\n", b"", data)
    return re.sub(rb'"request_id":"[0-9a-f]+"', b'"request_id":""', data)


@pytest.mark.parametrize("case", REQUESTS, ids=list(REQUESTS))
def test_the_same_bytes_as_stock_uvicorn(servers: tuple[LiveServer, LiveServer], case: str) -> None:
    ours, stock = servers
    text = REQUESTS[case]
    if "{etag}" in text:
        head = exchange(stock.port, REQUESTS["HEAD"].encode())
        text = text.replace("{etag}", re.search(rb"(?i)etag: ([^\r]*)", head).group(1).decode())  # type: ignore[union-attr]
    request = text.encode()
    got, want = exchange(ours.port, request), exchange(stock.port, request)
    assert got.startswith(b"HTTP/1.1 ")
    assert normalized(got) == normalized(want)


def test_a_100_continue_is_not_held(servers: tuple[LiveServer, LiveServer]) -> None:
    ours, _ = servers
    body = b'{"scheme": "zeros", "shape": [3], "seed": 1}'
    with socket.create_connection(("127.0.0.1", ours.port), timeout=5) as sock:
        sock.sendall(
            b"POST /init HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")  # before the body is sent: a held one would time out
        sock.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(1 << 16)
        assert answer.startswith(b"HTTP/1.1 200 OK")


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[bytes]]] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", [bytes(data)]))

    def writelines(self, chunks: list[bytes]) -> None:
        self.calls.append(("writelines", [bytes(c) for c in chunks]))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


HEAD_200 = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n"

WRITES = [
    # (what the server writes, in order; "flush"/"close" as calls), what reaches the socket
    ([HEAD_200, b"abc"], [("writelines", [HEAD_200, b"abc"])]),
    ([HEAD_200, "flush"], [("write", [HEAD_200])]),
    ([HEAD_200, "close"], [("write", [HEAD_200])]),
    ([b"HTTP/1.1 100 Continue\r\n\r\n"], [("write", [b"HTTP/1.1 100 Continue\r\n\r\n"])]),
    ([b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc"], [("write", [b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc"])]),
    ([b"body bytes", b"more"], [("write", [b"body bytes"]), ("write", [b"more"])]),
    ([HEAD_200, b""], [("write", [HEAD_200])]),
]


@pytest.mark.parametrize(("writes", "sent"), WRITES)
def test_only_a_complete_head_waits_and_never_past_the_next_write(writes: list[bytes | str], sent: list[tuple[str, list[bytes]]]) -> None:
    raw = _Recorder()
    transport = HeadHoldingTransport(raw)  # type: ignore[arg-type]
    for item in writes:
        if item == "flush":
            transport.flush()
        elif item == "close":
            transport.close()
        else:
            assert isinstance(item, bytes)
            transport.write(item)
    if "flush" not in writes and "close" not in writes and writes[-1] is not HEAD_200:
        transport.flush()  # nothing may be left either way
    assert raw.calls == sent
    assert transport.is_closing() == ("close" in writes)
