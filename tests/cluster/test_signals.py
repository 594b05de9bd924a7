"""SIGTERM and SIGINT, many of them, at random moments: everything stops, and nothing is left (issue 17, item 6).

``python -m deploy.cluster`` (the supervisor of ``make cluster``: one replica and nginx
here) and ``python -m service.api.serve`` (one process, and uvicorn's workers) get bursts
of both signals, from their first instant (the interpreter starting, the app importing)
to their steady state. Each must be gone within the grace period, and so must every
process it started: they lead sessions of their own, so whatever remains in one of
those sessions is a stray. The moments come from a seeded generator: a failure names its
round and can be replayed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
import pytest

from deploy.cluster import GRACE_SECONDS, ROOT, SignalStop, nginx_binary

from .conftest import free_ports

ROUNDS = 4
#: Exit statuses of a stop while starting: 0, or killed by the signal itself when it came
#: before the process had installed any handler (the interpreter starting: nothing started
#: yet). Once serving, only 0.
STOPPED = {0, -signal.SIGTERM, -signal.SIGINT}
#: From the first signal of a burst to the process gone: the grace period, and time for
#: two busy cores (idle processes stop in about a second).
BOUND_SECONDS = GRACE_SECONDS + 5
#: uvicorn's workers read their exit flag only once they have imported the app: a worker
#: signalled while importing stops after that (seconds; more on two busy cores).
IMPORT_SECONDS = 20


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, session id) of a live process, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return fields[0], int(fields[3])  # proc(5): state, ppid, pgrp, session


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def leaders(markers: Iterable[str]) -> set[int]:
    """Live processes whose command line holds one of ``markers`` (ports and paths unique to one round)."""
    found = set()
    for pid in _pids():
        line = _cmdline(pid)
        if any(m in line for m in markers) and (_stat(pid) or ("Z",))[0] != "Z":
            found.add(pid)
    return found


def members(sessions: set[int]) -> set[int]:
    """Live (not zombie) processes in ``sessions``."""
    found = set()
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None and stat[0] != "Z" and stat[1] in sessions:
            found.add(pid)
    return found


def storm(process: subprocess.Popen[bytes], rng: random.Random, count: int) -> None:
    """``count`` signals, SIGTERM and SIGINT in random order, a few milliseconds apart at random."""
    for _ in range(count):
        if process.poll() is not None:
            return
        process.send_signal(rng.choice((signal.SIGTERM, signal.SIGINT)))
        time.sleep(rng.uniform(0, 0.01))


def play(
    rounds: int,
    seed: int,
    start: Callable[[int], tuple[subprocess.Popen[bytes], list[str], str, Path]],
    ready_after: float,
    starting_bound: float = BOUND_SECONDS,
) -> None:
    """Start, wait for a random moment (half the rounds before ``ready_after``-ish, half after ready), storm, check.

    ``start(round)`` returns the process, the markers of the processes it starts, a URL
    that answers 200 once it is ready, and its log.
    """
    rng = random.Random(seed)
    for number in range(rounds):
        process, markers, ready_url, log = start(number)
        seen = {process.pid}
        try:
            if number % 2 == 0:  # while starting: from the interpreter's first instant on
                deadline = time.monotonic() + rng.uniform(0, ready_after)
                while time.monotonic() < deadline and process.poll() is None:
                    seen |= leaders(markers)
                    time.sleep(0.02)
            else:  # once serving, at a random moment
                deadline = time.monotonic() + 120
                while process.poll() is None and time.monotonic() < deadline:
                    seen |= leaders(markers)
                    try:
                        if httpx.get(ready_url, timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.05)
                time.sleep(rng.uniform(0, 0.5))
                seen |= leaders(markers)
            first = time.monotonic()
            storm(process, rng, rng.randint(10, 40))
            bound = starting_bound if number % 2 == 0 else BOUND_SECONDS
            while process.poll() is None and time.monotonic() - first < bound:
                seen |= leaders(markers)
                time.sleep(0.05)
            took = time.monotonic() - first
            assert process.poll() in (STOPPED if number % 2 == 0 else {0}), (
                f"round {number} (seed {seed}): {process.returncode} after {took:.1f} s; {log.read_text()[-3000:]}"
            )
            # The processes it started are reaped by it before it exits: none is left.
            left: set[int] = set()
            for _ in range(40):  # a zombie of a process it did not wait for is reaped by init (bounded)
                left = members(seen | leaders(markers))
                if not left:
                    break
                time.sleep(0.05)
            assert not left, f"round {number} (seed {seed}): left running: {[_cmdline(p) for p in left]}"
        finally:
            for pid in members(seen):  # never leave this test's processes behind, whatever failed
                os.kill(pid, signal.SIGKILL)
            process.wait(10)


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_stops_on_signal_storms(tmp_path: Path, workers: int) -> None:
    """One process (uvicorn's handlers, then ours) and two workers (uvicorn's supervisor)."""
    env = {**os.environ, "TENSORINIT_ACCESS_LOG": "off", "TENSORINIT_WORKERS": str(workers)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if workers > 1:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")  # made and emptied by serve

    def start(number: int) -> tuple[subprocess.Popen[bytes], list[str], str, Path]:
        (port,) = free_ports(1)
        path = tmp_path / f"serve-{number}.log"
        with path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "service.api.serve", "--port", str(port), "--timeout-graceful-shutdown", "5"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its workers in its session; this test's signals reach it alone
            )
        return process, [f"--port {port}"], f"http://127.0.0.1:{port}/readyz", path

    if workers == 1:
        play(ROUNDS, seed=18, start=start, ready_after=3.0)
    else:
        play(2, seed=19, start=start, ready_after=3.0, starting_bound=BOUND_SECONDS + IMPORT_SECONDS)


def test_the_cluster_supervisor_stops_everything_on_signal_storms(tmp_path: Path) -> None:
    try:
        nginx_binary()
    except FileNotFoundError as err:
        pytest.fail(str(err))

    def start(number: int) -> tuple[subprocess.Popen[bytes], list[str], str, Path]:
        port, replica = free_ports(2)
        state = tmp_path / f"state-{number}"
        state.mkdir(mode=0o755)
        tmp_path.chmod(0o755)  # nginx's workers may run as another user
        command = [sys.executable, "-m", "deploy.cluster", "--port", str(port), "--replica-ports", str(replica), "--state", str(state)]
        path = tmp_path / f"cluster-{number}.log"
        with path.open("ab") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, env={**os.environ, "TENSORINIT_ACCESS_LOG": "off"}, stdout=log, stderr=log, start_new_session=True
            )
        # the replica (its port), nginx's master (its prefix); nginx's workers are in the master's session
        return process, [f"--port {replica}", f"-p {state}"], f"http://127.0.0.1:{port}/readyz", path

    play(ROUNDS, seed=17, start=start, ready_after=5.0)


def test_signal_stop_wakes_its_waiter_and_puts_the_handlers_back() -> None:
    """In this process: the handler does nothing (no KeyboardInterrupt), the pipe wakes ``wait``."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with SignalStop() as stop:
        assert not stop.wait(0.01) and not stop.is_set()
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
        started = time.monotonic()
        assert stop.wait(10) and time.monotonic() - started < 5
        for _ in range(50):
            os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(0) and set(stop.received) == {signal.SIGTERM, signal.SIGINT}
    assert {s: signal.getsignal(s) for s in before} == before
