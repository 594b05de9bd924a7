"""Work that grows with a request, off the event loop, without starving it (issue 17).

Resolving a batch or a recipe (up to ``max_batch_tensors`` tensors, ``max_rules``
rules), ``/plan``, and parsing a large body are pure Python: on the event loop they
held every other request for seconds. On a thread they still hold the GIL, which the
loop's thread then waits for at each of its system calls, up to the interpreter's
switch interval (5 ms) each time and longer when several such threads take turns: two
concurrent costliest /plan requests on two threads put ``/healthz``'s p99 at 0.6-0.7 s.
So they run on one thread of their own, one at a time (the others queue, as they would
for a core), and :func:`start` shortens the switch interval to 1 ms, so that the loop
waits at most that long each time.

What remained were the garbage collector's full passes: the objects such work makes
trigger them, and a full pass over everything the process has (FastAPI, numba, numpy:
a few hundred thousand objects) held the GIL for 0.3-0.5 s. :func:`settle`, once
start-up is over, moves what exists then into the permanent generation
(``gc.freeze``), so that later passes visit only what requests made. Each step measured
in docs/benchmarks.md (2026-12-07).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

SWITCH_INTERVAL = 0.001
"""Seconds a thread runs Python before it hands the GIL to one that asks for it (CPython's default: 0.005)."""

_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tensorinit-resolve")


def start() -> None:
    """Shorten the interpreter's switch interval (process-wide; the app's lifespan calls it)."""
    sys.setswitchinterval(SWITCH_INTERVAL)


def settle() -> None:
    """Exempt every object alive now from the collector's passes (once per process, when start-up is done).

    Once: a process that makes many apps (the tests) would otherwise freeze each one's
    garbage-to-be, which the collector then never reclaims.
    """
    global _settled
    with _settle_lock:
        if _settled:
            return
        _settled = True
    gc.collect()
    gc.freeze()


_settled = False
_settle_lock = threading.Lock()


async def off_loop(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` on the request-work thread, in the caller's context (as ``asyncio.to_thread``)."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_POOL, call)
