"""Admission control: a bounded number of generations and of bytes in flight.

A generating request asks for a :class:`Slot` with the byte count of its answer. It is
admitted at once when fewer than ``max_concurrent`` generations run and the bytes of
all admitted answers stay within ``max_bytes``; a request larger than ``max_bytes`` on
its own is admitted only when nothing else runs, so every valid request can eventually
be served. Otherwise it waits, first come first served (a large request is not
starved by a stream of small ones), for at most ``timeout`` seconds, and then gets
:class:`Overloaded`, which the web layer answers with 503 ``overloaded`` and
``Retry-After``. At most ``max_waiting`` requests wait; beyond that they are refused at
once, so a flood costs a bounded amount of memory.

A streaming route holds its slot for the whole stream and releases it when the stream
completes, fails or the client goes away (see :mod:`service.api.hardening`). As its
bytes go out it reports them with :meth:`Slot.sent`, so "bytes in flight" counts what
was admitted and not yet sent and a long stream makes room for others as it goes.

One client (a peer address; behind nginx the address it forwards) may hold at most
``client_share`` of the budget (issue 17): ``client_share × max_concurrent`` slots (at
least one), ``client_share × max_bytes`` bytes in flight, and ``client_share ×
max_waiting`` places in the queue. An answer counts in flight for at most that share
of bytes, however large it is (a stream holds only a few chunks in memory at a time,
whatever its length): so a client whose 1 GiB answer is stalled, or who asks for many,
leaves the rest of the budget to everyone else. A waiter held back only by its own
client's share does not hold up those behind it. ``client_share = 1`` (the default
here; the service's setting is 0.5) is one budget for all.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType


class Overloaded(Exception):  # noqa: N818 - the name is the problem type it becomes
    """No capacity came free within the admission timeout."""

    def __init__(self, detail: str, retry_after: int):
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


@dataclass(eq=False)
class _Waiter:
    nbytes: int
    client: object
    future: asyncio.Future[None] = field(repr=False)


@dataclass
class _Client:
    active: int = 0
    bytes: int = 0
    waiting: int = 0


class Admission:
    """The admission controller of one application (all state on its event loop)."""

    def __init__(
        self,
        max_concurrent: int,
        max_bytes: int,
        timeout: float,
        *,
        max_waiting: int | None = None,
        retry_after: int | None = None,
        on_reject: Callable[[], None] | None = None,
        client_share: float = 1.0,
    ):
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent: got {max_concurrent}; allowed: an integer >= 1")
        if max_bytes < 1:
            raise ValueError(f"max_bytes: got {max_bytes}; allowed: an integer >= 1")
        if not (timeout >= 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout: got {timeout}; allowed: a finite number of seconds >= 0")
        if not 0 < client_share <= 1:
            raise ValueError(f"client_share: got {client_share}; allowed: a number in (0, 1]")
        self.max_concurrent = max_concurrent
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_waiting = max_waiting if max_waiting is not None else 16 * max_concurrent
        self.retry_after = retry_after if retry_after is not None else max(1, math.ceil(timeout))
        self.on_reject = on_reject
        self.client_slots = max(1, math.floor(client_share * max_concurrent))
        self.client_bytes = max(1, math.floor(client_share * max_bytes))
        self.client_waiting = max(1, math.floor(client_share * self.max_waiting))
        self._active = 0
        self._bytes = 0
        self._waiters: deque[_Waiter] = deque()
        self._clients: dict[object, _Client] = {}

    @property
    def active(self) -> int:
        """Generations admitted and not yet released."""
        return self._active

    @property
    def bytes_in_flight(self) -> int:
        """The bytes of all admitted answers."""
        return self._bytes

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiters)

    def slot(self, nbytes: int, client: object = None) -> _SlotRequest:
        """``async with admission.slot(n):`` holds a slot for the body of the block."""
        return _SlotRequest(self, nbytes, client)

    async def acquire(self, nbytes: int, client: object = None) -> Slot:
        """Wait (boundedly) for capacity for an answer of ``nbytes`` bytes asked for by ``client``.

        Raises :class:`Overloaded` when none came free in time or too many already wait.
        Cancellation while waiting (a client that went away) gives the place up.
        """
        if nbytes < 0:
            raise ValueError(f"nbytes: got {nbytes}; allowed: an integer >= 0")
        charge = min(nbytes, self.client_bytes)
        if not self._queue_ahead() and self._fits(charge) and self._client_fits(client, charge):
            self._take(charge, client)
            return Slot(self, nbytes, charge, client)
        if len(self._waiters) >= self.max_waiting:
            raise self._reject(f"{len(self._waiters)} requests are already waiting for a generation slot")
        state = self._clients.setdefault(client, _Client())
        if state.waiting >= self.client_waiting:
            self._forget(client)
            raise self._reject(f"{state.waiting} requests of this client already wait for a generation slot")
        waiter = _Waiter(charge, client, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        state.waiting += 1
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.shield(waiter.future)
        except BaseException as exc:
            if waiter.future.done() and not waiter.future.cancelled():
                # Granted in the same instant as the timeout or cancellation struck.
                if isinstance(exc, TimeoutError):
                    return Slot(self, nbytes, charge, client)
                self._give_back(charge, client)
            else:
                waiter.future.cancel()
                self._waiters.remove(waiter)
                state.waiting -= 1
                self._forget(client)
                # A waiter that leaves the head of the queue may unblock those behind it.
                self._grant_waiters()
            if isinstance(exc, TimeoutError):
                raise self._reject(f"no generation slot came free within {self.timeout:g} s") from None
            raise
        return Slot(self, nbytes, charge, client)

    def _fits(self, charge: int) -> bool:
        if self._active >= self.max_concurrent:
            return False
        return self._active == 0 or self._bytes + charge <= self.max_bytes

    def _client_fits(self, client: object, charge: int) -> bool:
        state = self._clients.get(client)
        return state is None or (state.active < self.client_slots and state.bytes + charge <= self.client_bytes)

    def _queue_ahead(self) -> bool:
        """Whether a waiter waits for the shared budget (not only for its own client's share)."""
        return any(not self._fits(w.nbytes) for w in self._waiters)

    def _forget(self, client: object) -> None:
        state = self._clients.get(client)
        if state is not None and state.active == state.waiting == 0:
            del self._clients[client]

    def _take(self, charge: int, client: object) -> None:
        self._active += 1
        self._bytes += charge
        state = self._clients.setdefault(client, _Client())
        state.active += 1
        state.bytes += charge

    def _give_back(self, charge: int, client: object) -> None:
        self._active -= 1
        self._bytes -= charge
        state = self._clients[client]
        state.active -= 1
        state.bytes -= charge
        self._forget(client)
        self._grant_waiters()

    def _sent(self, nbytes: int, client: object) -> None:
        self._bytes -= nbytes
        self._clients[client].bytes -= nbytes
        self._grant_waiters()

    def _grant_waiters(self) -> None:
        # In arrival order: stop at the first waiter that does not fit the shared budget;
        # one held back only by its own client's share is passed over, keeping its place.
        for waiter in list(self._waiters):
            if not self._fits(waiter.nbytes):
                return
            if not self._client_fits(waiter.client, waiter.nbytes):
                continue
            self._waiters.remove(waiter)
            self._clients[waiter.client].waiting -= 1
            self._take(waiter.nbytes, waiter.client)
            waiter.future.set_result(None)

    def _reject(self, reason: str) -> Overloaded:
        if self.on_reject is not None:
            self.on_reject()
        return Overloaded(f"the server is at capacity ({reason}); retry after {self.retry_after} s", self.retry_after)


class Slot:
    """Capacity held by one admitted generation; :meth:`release` is idempotent."""

    __slots__ = ("_admission", "_released", "client", "nbytes", "outstanding", "unsent")

    def __init__(self, admission: Admission, nbytes: int, charge: int | None = None, client: object = None):
        self._admission = admission
        self.nbytes = nbytes
        self.unsent = nbytes
        self.outstanding = nbytes if charge is None else charge  # what counts in flight: at most the unsent bytes
        self.client = client
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    def sent(self, nbytes: int) -> None:
        """``nbytes`` more bytes of the answer went out: they no longer count as in flight."""
        self.unsent = max(0, self.unsent - nbytes)
        done = self.outstanding - min(self.outstanding, self.unsent)
        if done > 0 and not self._released:
            self.outstanding -= done
            self._admission._sent(done, self.client)

    def release(self) -> None:
        """Give the capacity back (a second call does nothing)."""
        if not self._released:
            self._released = True
            self._admission._give_back(self.outstanding, self.client)


class _SlotRequest:
    def __init__(self, admission: Admission, nbytes: int, client: object):
        self._admission = admission
        self._nbytes = nbytes
        self._client = client
        self._slot: Slot | None = None

    async def __aenter__(self) -> Slot:
        self._slot = await self._admission.acquire(self._nbytes, self._client)
        return self._slot

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._slot is not None:
            self._slot.release()
