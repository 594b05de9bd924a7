"""A tiny real HTTP/1.1 server on a loopback port that misbehaves on cue.

Not a mock of tensorinit: a raw-socket server serving one fixed safetensors body from
``/init`` (and its per-tensor sha256 from ``/stats``), honouring ``Range`` + ``If-Range``
like the real service, so the client's retry and resume paths run over real TCP.
Each request consumes the next :class:`Fault` of the script; once the script is empty
requests are served properly. Every connection is closed after one response.
"""

from __future__ import annotations

import hashlib
import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BufferedIOBase


@dataclass(frozen=True)
class Fault:
    """One misbehaviour: an error ``status``, a ``cut`` after that many body bytes, a ``delay``
    before answering, ``ignore_range`` (answer 200 to a Range request) or a ``corrupt`` body."""

    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    cut: int | None = None
    delay: float = 0.0
    ignore_range: bool = False
    corrupt: bool = False


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Faulty:
    body: bytes
    digests: dict[str, str]
    etag: str = '"faulty-etag"'
    script: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self) -> Fault:
        with self.lock:
            return self.script.pop(0) if self.script else Fault()


def _read_request(rfile: BufferedIOBase) -> tuple[str, str, dict[str, str], bytes] | None:
    line = rfile.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        raw = rfile.readline().decode("latin-1")
        if raw in ("\r\n", "\n", ""):
            break
        key, _, value = raw.partition(":")
        headers[key.strip().lower()] = value.strip()
    body = rfile.read(int(headers.get("content-length", "0")))
    return method, path, headers, body


def _handler(state: Faulty) -> type[socketserver.StreamRequestHandler]:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            request = _read_request(self.rfile)
            if request is None:
                return
            method, path, headers, _ = request
            state.seen.append(Seen(method, path, headers))
            fault = state.next_fault()
            if fault.delay:
                time.sleep(fault.delay)
            if path.startswith("/stats"):
                body = json.dumps({"algorithm": 1, "etag": state.etag, "tensors": {k: {"sha256": v} for k, v in state.digests.items()}})
                self._send(200, [("Content-Type", "application/json")], body.encode())
                return
            if fault.status is not None:
                problem = json.dumps(
                    {
                        "type": "https://tensorinit.dev/problems/overloaded",
                        "title": "Overloaded",
                        "status": fault.status,
                        "detail": "try later",
                    }
                )
                self._send(fault.status, [("Content-Type", "application/problem+json"), *fault.headers], problem.encode())
                return
            data = state.body
            if fault.corrupt:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            status, extra = 200, [("ETag", state.etag), ("Accept-Ranges", "bytes")]
            wanted = headers.get("range", "")
            if wanted.startswith("bytes=") and headers.get("if-range") == state.etag and not fault.ignore_range:
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                status = 206
                extra.append(("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"))
                data = data[start:]
            self._send(status, [("Content-Type", "application/octet-stream"), *extra], data, cut=fault.cut)

        def _send(self, status: int, headers: list[tuple[str, str]], body: bytes, cut: int | None = None) -> None:
            head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close", *(f"{k}: {v}" for k, v in headers)]
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            self.wfile.write(body if cut is None else body[:cut])
            self.wfile.flush()
            if cut is not None:
                # An abrupt end mid-body, as when a server process dies.
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that gave up (timeout tests) leaves a broken pipe behind: expected, silent.
        pass


@contextmanager
def serve(body: bytes, digests: dict[str, str], script: list[Fault] | None = None) -> Iterator[Faulty]:
    """Run a :class:`Faulty` server on 127.0.0.1 (free port) for the duration of the block."""
    state = Faulty(body=body, digests=digests, script=list(script or []))
    server = _Server(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def digests_of(body: bytes) -> dict[str, str]:
    """Per-tensor sha256 of a safetensors body, computed independently of the client."""
    n = int.from_bytes(body[:8], "little")
    header = json.loads(body[8 : 8 + n])
    header.pop("__metadata__", None)
    start = 8 + n
    return {
        name: hashlib.sha256(body[start + e["data_offsets"][0] : start + e["data_offsets"][1]]).hexdigest() for name, e in header.items()
    }
