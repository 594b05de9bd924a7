"""Prometheus metrics of one application, in a registry of its own.

A private :class:`~prometheus_client.CollectorRegistry` per app (never the global
one) keeps two apps in one process, as in the tests, from sharing or clashing::

    tensorinit_http_requests_total{method,route,status}   every answer, by route template
    tensorinit_http_request_duration_seconds{method,route} time to the last byte
    tensorinit_bytes_generated_total                      tensor-file bytes produced
    tensorinit_generation_seconds                         wall time of each generating stream
    tensorinit_generations_in_flight                      admitted generations now
    tensorinit_generation_bytes_in_flight                 bytes of the admitted answers now
    tensorinit_generations_waiting                        requests waiting for admission
    tensorinit_rejected_requests_total{reason}            refused by admission or access control
    tensorinit_streams_disconnected_total                 streams stopped because the client left
    tensorinit_stream_errors_total                        streams cut by an error after the first byte
    tensorinit_blocks_generated_total                     engine blocks computed (from the stream counters)
    tensorinit_streams_total{outcome}                     started, completed, aborted (from the stream counters)

The route label is the route's template (``/schemes/{name}``), or ``<unmatched>`` when
no route matched, so that arbitrary paths cannot blow up the label set.

Several workers (``TENSORINIT_WORKERS``, service/api/serve.py): with
``PROMETHEUS_MULTIPROC_DIR`` set, prometheus-client's multiprocess mode
(https://prometheus.github.io/client_python/multiprocess/) writes every worker's values
to files there, and a scrape, whichever worker answers it, reads them all through a
``MultiProcessCollector``. That mode keeps no custom collectors and no callback gauges,
so each worker copies its admission gauges (as ``livesum`` gauges: summed over the
workers) and its stream counters (as increments) into the files at every scrape it
answers and every :data:`SAMPLE_SECONDS` from a thread of its own: another worker's
gauges may be that much behind. The process and platform collectors, which the mode
does not support, are not used in either mode (this registry never held them).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from typing import TYPE_CHECKING, Literal, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

if TYPE_CHECKING:
    from .admission import Admission

UNMATCHED = "<unmatched>"
SAMPLE_SECONDS = 0.25

#: What a Starlette body iterator may yield.
Chunk = str | bytes | memoryview


def chunk_bytes(chunk: Chunk) -> int:
    """The byte count of a body chunk (a memoryview's ``len()`` counts elements, not bytes)."""
    if isinstance(chunk, memoryview):
        return chunk.nbytes
    return len(chunk.encode()) if isinstance(chunk, str) else len(chunk)


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class StreamCounters(Protocol):
    """What the safetensors streams count as they work (``service.safetensors_stream.Counters``)."""

    blocks_generated: int
    streams_started: int
    streams_completed: int
    streams_aborted: int


class _StreamCountersCollector(Collector):
    def __init__(self, counters: StreamCounters):
        self.counters = counters

    def collect(self) -> list[CounterMetricFamily]:
        c = self.counters
        blocks = CounterMetricFamily("tensorinit_blocks_generated", "Engine blocks computed by the streams.", value=c.blocks_generated)
        streams = CounterMetricFamily("tensorinit_streams", "Streams by outcome.", labels=["outcome"])
        for outcome, value in (("started", c.streams_started), ("completed", c.streams_completed), ("aborted", c.streams_aborted)):
            streams.add_metric([outcome], value)
        return [blocks, streams]


def multiprocess_dir() -> str | None:
    """The directory of prometheus-client's multiprocess mode, when this process runs in it."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _Mirror:
    """Copies one worker's callback gauges and stream counters into multiprocess metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.gauges: list[tuple[Gauge, Callable[[], float]]] = []
        self.counters: StreamCounters | None = None
        self.blocks = Counter("tensorinit_blocks_generated", "Engine blocks computed by the streams.", registry=registry)
        self.streams = Counter("tensorinit_streams", "Streams by outcome.", ["outcome"], registry=registry)
        self.copied = {"blocks": 0, "started": 0, "completed": 0, "aborted": 0}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Copy every :data:`SAMPLE_SECONDS` from now on (one thread per worker)."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="tensorinit-metrics-mirror", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(SAMPLE_SECONDS)
            self.copy()

    def copy(self) -> None:
        with self.lock:
            for gauge, read in self.gauges:
                gauge.set(read())
            c = self.counters
            if c is None:
                return
            now = {
                "blocks": c.blocks_generated,
                "started": c.streams_started,
                "completed": c.streams_completed,
                "aborted": c.streams_aborted,
            }
            for key, value in now.items():
                if value > self.copied[key]:
                    target = self.blocks if key == "blocks" else self.streams.labels(key)
                    target.inc(value - self.copied[key])
                    self.copied[key] = value


class Metrics:
    """The collectors of one application."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.multiprocess = multiprocess_dir()
        r = self.registry
        self._mirror = _Mirror(r) if self.multiprocess else None
        self.requests = Counter(
            "tensorinit_http_requests", "HTTP answers by method, route template and status.", ["method", "route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "tensorinit_http_request_duration_seconds",
            "Time from the request to the last byte of the answer.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.bytes_generated = Counter("tensorinit_bytes_generated", "Bytes of tensor files produced by streams.", registry=r)
        self.generation_seconds = Histogram(
            "tensorinit_generation_seconds", "Wall time of each generating stream.", buckets=_LATENCY_BUCKETS, registry=r
        )
        # Several workers: their sum. A worker that exits leaves its last copied values in
        # its file (nothing calls mark_process_dead: uvicorn's supervisor has no hook for
        # it) until the next start wipes the directory.
        mode: Literal["livesum"] = "livesum"
        self.in_flight = Gauge("tensorinit_generations_in_flight", "Admitted generations now running.", registry=r, multiprocess_mode=mode)
        self.bytes_in_flight = Gauge(
            "tensorinit_generation_bytes_in_flight", "Bytes of the admitted answers now running.", registry=r, multiprocess_mode=mode
        )
        self.waiting = Gauge(
            "tensorinit_generations_waiting", "Requests waiting for a generation slot.", registry=r, multiprocess_mode=mode
        )
        self.rejected = Counter("tensorinit_rejected_requests", "Requests refused, by reason.", ["reason"], registry=r)
        self.disconnected = Counter("tensorinit_streams_disconnected", "Streams stopped early because the client went away.", registry=r)
        self.stream_errors = Counter("tensorinit_stream_errors", "Streams cut by an error after their first byte.", registry=r)

    def observe_admission(self, admission: Admission) -> None:
        """Read the in-flight gauges from ``admission`` at every scrape."""
        reads: list[tuple[Gauge, Callable[[], float]]] = [
            (self.in_flight, lambda: admission.active),
            (self.bytes_in_flight, lambda: admission.bytes_in_flight),
            (self.waiting, lambda: admission.waiting),
        ]
        if self._mirror is None:
            for gauge, read in reads:
                gauge.set_function(read)
        else:
            self._mirror.gauges += reads
            self._mirror.start()

    def observe_stream_counters(self, counters: StreamCounters) -> None:
        """Export the streams' own counters (blocks computed, streams by outcome) at every scrape."""
        if self._mirror is None:
            self.registry.register(_StreamCountersCollector(counters))
        else:
            self._mirror.counters = counters
            self._mirror.start()

    def reject(self, reason: str) -> None:
        """Count one refused request."""
        self.rejected.labels(reason).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every collector (of every worker, in multiprocess mode)."""
        if self._mirror is None or self.multiprocess is None:
            return generate_latest(self.registry)
        self._mirror.copy()
        workers = CollectorRegistry()
        MultiProcessCollector(workers, path=self.multiprocess)  # type: ignore[no-untyped-call]
        return generate_latest(workers)

    async def instrument_stream(self, chunks: AsyncIterable[Chunk]) -> AsyncGenerator[Chunk, None]:
        """Pass ``chunks`` through, counting bytes, time, disconnects and errors.

        A client that goes away shows up here as the cancellation of the pending
        ``__anext__`` or as ``GeneratorExit`` when the stream is closed early.
        """
        start = time.perf_counter()
        try:
            async for chunk in chunks:
                self.bytes_generated.inc(chunk_bytes(chunk))
                yield chunk
        except (asyncio.CancelledError, GeneratorExit):
            self.disconnected.inc()
            raise
        except Exception:
            self.stream_errors.inc()
            raise
        finally:
            self.generation_seconds.observe(time.perf_counter() - start)

    async def endpoint(self, request: Request) -> Response:
        """``GET /metrics``."""
        return Response(self.render(), media_type=CONTENT_TYPE_LATEST)


def route_template(scope: Scope) -> str:
    """The template of the route that handled ``scope`` (set by the router), or ``<unmatched>``."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else UNMATCHED
