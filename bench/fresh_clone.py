"""A newcomer's first start: ``git clone``, then ``make run``, timed until /healthz and /readyz answer 200.

``python -m bench.fresh_clone [REF ...]`` (default: ``main HEAD``) clones this repository
at each ref into a fresh temporary directory (no .venv, no numba cache: everything a
first start does is timed), runs ``make run`` on a free loopback port, and prints, per
ref, the seconds from ``make run`` to each answer, the size of the .venv it made, and
the machine's load average (on a shared machine it says more about the numbers than
anything else). pip's own caches are whatever this machine has: say so beside the
numbers. The stamped log of each run stays in its directory.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 900.0


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Run:
    ref: str
    healthz: float | None  # seconds from `make run`; None: not within DEADLINE
    readyz: float | None
    venv: str  # du -sh
    load: float  # 1-minute load average, mean of the start's and the end's
    log: Path


def first_start(ref: str) -> Run:
    """Clone ``ref``, ``make run``; seconds to /healthz and /readyz, the .venv's size, the load average."""
    where = Path(tempfile.mkdtemp(prefix="tensorinit-fresh-")) / "tensorinit"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(where)], check=True)
    subprocess.run(
        ["git", "-C", str(where), "checkout", "-q", subprocess.check_output(["git", "rev-parse", ref], cwd=ROOT, text=True).strip()],
        check=True,
    )
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "NUMBA_CACHE_DIR")}
    env["PORT"] = str(port)
    load = os.getloadavg()[0]
    start = time.monotonic()
    log = (where / "make-run.log").open("w")
    make = subprocess.Popen(
        ["make", "run"], cwd=where, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )

    def stamp() -> None:  # each line with its second, as a person watching would see it
        assert make.stdout is not None
        for line in make.stdout:
            log.write(f"{time.monotonic() - start:7.1f} {line}")

    threading.Thread(target=stamp, daemon=True).start()
    healthz = readyz = None
    try:
        while readyz is None and time.monotonic() - start < DEADLINE:
            now = time.monotonic() - start
            if healthz is None and _ok(f"http://127.0.0.1:{port}/healthz"):
                healthz = now
            if _ok(f"http://127.0.0.1:{port}/readyz"):
                readyz = now
            time.sleep(0.2)
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(60)
        log.close()
    venv = subprocess.check_output(["du", "-sh", str(where / ".venv")], text=True).split()[0]
    return Run(ref, healthz, readyz, venv, (load + os.getloadavg()[0]) / 2, where / "make-run.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("refs", nargs="*", default=["main", "HEAD"])
    runs = [first_start(ref) for ref in parser.parse_args().refs]
    print(f"{'ref':<12} {'/healthz':>9} {'/readyz':>9} {'.venv':>6} {'load':>5}")
    for run in runs:
        seconds = [f"{t:8.1f}s" if t is not None else "   never" for t in (run.healthz, run.readyz)]
        print(f"{run.ref:<12} {seconds[0]:>9} {seconds[1]:>9} {run.venv:>6} {run.load:5.1f}   {run.log}")
    first, *others = runs
    for run in others:
        if first.healthz and first.readyz and run.healthz and run.readyz:
            print(
                f"{run.ref} against {first.ref}: /healthz {first.healthz / run.healthz:.2f}x sooner, /readyz {first.readyz / run.readyz:.2f}x sooner"
            )


if __name__ == "__main__":
    main()
