"""The JSON access log: one line per request, buffered, to stderr, stdout or a file.

Each line is one JSON object: ``ts``, ``level``, ``logger`` (``tensorinit.access``),
``msg`` (``request``), then the request's fields: request id, method, path, query
(truncated), route template, status, bytes sent, duration, client, user agent
(truncated). No body and no header but the user agent is ever logged, so neither
``Authorization`` nor an API key can reach a line. Lines are made and written in
batches: when ``max_pending`` lines wait, when ``flush_seconds`` have passed since
the first of them (a timer on the running event loop sees to it when traffic stops),
at the app's shutdown and at interpreter exit; ``flush_seconds=0`` writes every line
at once. Requests to ``skip_paths`` are not logged: the app's install leaves the probes
(:data:`PROBE_PATHS`) out unless ``TENSORINIT_ACCESS_LOG_PROBES`` asks for them, since a
load balancer's probe every few seconds would bury the requests people look for. A stream that cannot be written is reported once on stderr, never to a
request.

Written by hand rather than through :mod:`logging` because that costs more than the
request: a ``LogRecord`` (thread, process and caller lookups), the handler chain,
a lock and a flush (one system call) per line added ~20 µs to a ~60 µs answer. This
is one fixed JSON shape: a request only queues its raw values, and the lines are
formatted and written together, the way nginx's ``access_log ... buffer= flush=``
writes (docs/benchmarks.md, issue 3).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import sys
import time
import weakref
from collections.abc import Mapping
from typing import Any, TextIO

ACCESS_LOGGER = "tensorinit.access"
OFF, STDERR, STDOUT = "off", "stderr", "stdout"
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Liveness, readiness and Prometheus' scrapes: out of the access log by default."""


class AccessLog:
    """Buffered JSON lines on a text stream (``None``: the log is off)."""

    def __init__(self, stream: TextIO | None, *, flush_seconds: float = 1.0, max_pending: int = 32, owned: bool = False):
        self.stream = stream
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self._owned = owned
        self.skip_paths: frozenset[str] = frozenset()
        self._pending: list[tuple[float, Mapping[str, Any] | tuple[Any, ...]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._second = -1
        self._second_text = ""
        self._failed = False
        _LOGS.add(self)  # flushed at interpreter exit too

    @classmethod
    def open(cls, where: str, *, flush_seconds: float = 1.0) -> AccessLog:
        """``"stderr"``, ``"stdout"``, ``"off"``, or a file path (appended to, UTF-8)."""
        if where == OFF:
            return cls(None)
        if where in (STDERR, STDOUT):
            return cls(sys.stderr if where == STDERR else sys.stdout, flush_seconds=flush_seconds)
        return cls(open(where, "a", encoding="utf-8"), flush_seconds=flush_seconds, owned=True)

    @property
    def enabled(self) -> bool:
        return self.stream is not None

    def write(self, fields: Mapping[str, Any]) -> None:
        """Queue one line with these fields (after ts, level, logger and msg)."""
        if self.stream is not None:
            self._queue((time.time(), fields))

    def request(
        self,
        request_id: str,
        scope: Mapping[str, Any],
        route: str,
        status: int,
        sent: int,
        seconds: float,
        user_agent: bytes | None,
    ) -> None:
        """Queue the line of one answered HTTP request.

        Only the raw values are kept here; the line is made at flush time, in a batch,
        where formatting is a fraction of its cost one request at a time.
        """
        if self.stream is not None and scope["path"] not in self.skip_paths:
            raw = (request_id, scope["method"], scope["path"], scope.get("query_string", b""), route, status, sent, seconds)
            self._queue((time.time(), (*raw, scope.get("client"), user_agent)))

    def _queue(self, entry: tuple[float, Mapping[str, Any] | tuple[Any, ...]]) -> None:
        self._pending.append(entry)
        if len(self._pending) >= self.max_pending or self.flush_seconds <= 0:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a synchronous caller): no one would flush later
            self.flush()
            return
        # A timer set on a loop that has since ended would never fire: set one on this loop.
        if self._timer is None or self._timer_loop is not loop:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_loop = loop.call_later(self.flush_seconds, self.flush), loop

    def _line(self, when: float, fields: Mapping[str, Any] | tuple[Any, ...]) -> str:
        second = int(when)
        if second != self._second:  # strftime once a second, not once a line
            self._second, self._second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        doc = {"ts": f"{self._second_text}.{int((when - second) * 1000):03d}Z", "level": "info", "logger": ACCESS_LOGGER, "msg": "request"}
        doc.update(_request_fields(*fields) if isinstance(fields, tuple) else fields)
        return json.dumps(doc, separators=(",", ":"), default=str)

    def flush(self) -> None:
        """Write every queued line now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_loop = None
        if not self._pending or self.stream is None:
            return
        entries, self._pending = self._pending, []
        try:
            self.stream.write("".join(self._line(when, fields) + "\n" for when, fields in entries))
            self.stream.flush()
        except (OSError, ValueError) as exc:  # a full disk or a closed stream must not fail requests
            if not self._failed:  # say so once, where an operator looks
                self._failed = True
                with contextlib.suppress(Exception):
                    print(f"tensorinit: the access log cannot be written ({exc!r}); its lines are dropped", file=sys.__stderr__)

    def close(self) -> None:
        """Flush, and close the file if this log opened it (later lines are dropped)."""
        self.flush()
        if self._owned and self.stream is not None:
            self.stream.close()
            self.stream = None
            _LOGS.discard(self)


_LOGS: weakref.WeakSet[AccessLog] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    """Lines still queued when the interpreter exits (a stream cut at the graceful-shutdown timeout)."""
    for log in list(_LOGS):
        log.flush()


_MAX_TEXT = 512
_MAX_AGENT = 256


def _request_fields(
    request_id: str,
    method: str,
    path: str,
    query: bytes,
    route: str,
    status: int,
    sent: int,
    seconds: float,
    client: tuple[str, int] | None,
    user_agent: bytes | None,
) -> dict[str, Any]:
    text = query.decode("latin-1")
    return {
        "request_id": request_id,
        "method": method,
        "path": path[:_MAX_TEXT],
        "query": text[:_MAX_TEXT] + ("…" if len(text) > _MAX_TEXT else ""),
        "route": route,
        "status": status,
        "bytes": sent,
        "duration_ms": round(seconds * 1000, 3),
        "client": f"{client[0]}:{client[1]}" if client else None,
        "user_agent": (user_agent or b"").decode("latin-1")[:_MAX_AGENT],
    }
