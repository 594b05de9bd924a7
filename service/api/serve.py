"""Run the service: ``python -m service.api.serve [APP --factory] [uvicorn options]``.

The uvicorn command line (the app factory filled in when no app is named), with one
difference: after a graceful shutdown on SIGTERM or SIGINT the process exits 0. uvicorn itself re-raises
the signal it caught once it has shut down, so that the exit status names the signal
(143 under a shell); an orchestrator that sends SIGTERM to stop the service would then
see every clean stop as a failure. A signal that comes before uvicorn serves (while the
app is imported) stops the process at once, also with 0.

``HOST`` and ``PORT`` from the environment are the defaults of ``--host`` and
``--port`` (127.0.0.1 and 8000; the container sets HOST=0.0.0.0), and in-flight
streams get ``--timeout-graceful-shutdown`` seconds (default 30) to finish. uvicorn's
plain access log is off (``--access-log`` turns it back on): the app writes JSON lines.
The HTTP protocol is uvicorn's httptools one with a bounded request head and deadlines
for slow heads and stalled writes (service/api/protocol.py); idle keep-alive connections
close after ``TENSORINIT_KEEP_ALIVE_SECONDS`` (default 5; ``--timeout-keep-alive``).
``make run`` and the Dockerfile run ``python -m service.api.serve service.api.app:create_app --factory``.

``TENSORINIT_WORKERS=N`` (N > 1, unless ``--workers`` is given) serves from N uvicorn
worker processes on one socket. They then share their metrics through prometheus-client's
multiprocess mode (service/api/metrics.py): ``PROMETHEUS_MULTIPROC_DIR`` is set, by
default to a fresh temporary directory, and its ``*.db`` files are removed before the
workers start, so that a previous run's counts are not added to this one's.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

import uvicorn

APP = "service.api.app:create_app"
HTTP_PROTOCOL = "service.api.protocol:HttpToolsProtocol"  # uvicorn's httptools with the connection bounds of issue 17
GRACEFUL_SECONDS = 30


def _exit(signum: int, frame: FrameType | None) -> None:
    """SIGTERM or SIGINT while uvicorn's own handlers are not installed: exit 0.

    Before: uvicorn imports and builds the app (seconds) before it installs its handlers,
    and a signal then must still stop the process (a handler that did nothing lost it, and
    the process went on to serve). After: uvicorn puts this handler back once it has shut
    down and re-raises the signal it caught, which must not make a clean stop a failure.
    Nothing here takes a lock (issue 17): the signals that follow are ignored by the kernel
    (SIG_IGN), and SystemExit unwinds the main thread as a KeyboardInterrupt would.
    """
    for other in (signal.SIGTERM, signal.SIGINT):
        signal.signal(other, signal.SIG_IGN)
    raise SystemExit(0)


def command(argv: list[str]) -> list[str]:
    """The uvicorn arguments: ``argv``, with the factory and HOST/PORT/grace defaults where it says nothing."""
    args = list(argv) if argv and not argv[0].startswith("-") else [APP, "--factory", *argv]
    for option, default in (
        ("--host", os.environ.get("HOST", "127.0.0.1")),
        ("--port", os.environ.get("PORT", "8000")),
        ("--timeout-graceful-shutdown", str(GRACEFUL_SECONDS)),
        ("--workers", os.environ.get("TENSORINIT_WORKERS", "1")),
        # The head bound and the head and write-stall deadlines (issue 17): every worker runs it.
        ("--http", HTTP_PROTOCOL),
        ("--timeout-keep-alive", os.environ.get("TENSORINIT_KEEP_ALIVE_SECONDS", "5")),
    ):
        if not any(a == option or a.startswith(option + "=") for a in args):
            args += [option, default]
    if "--access-log" not in args and "--no-access-log" not in args:
        args.append("--no-access-log")  # the app writes its own JSON access log, with request ids
    return args


def workers(args: list[str]) -> int:
    """The ``--workers`` count of uvicorn arguments made by :func:`command`."""
    for i, arg in enumerate(args):
        if arg.startswith("--workers="):
            return int(arg.split("=", 1)[1])
        if arg == "--workers":
            return int(args[i + 1])
    return 1


def multiprocess_metrics() -> Path:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` (kept if given, else a fresh directory) and empty it of metric files."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="tensorinit-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)  # inherited by the workers, read at their first import
    return path


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM/SIGINT, shut down gracefully, exit 0."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        # uvicorn installs its own handlers while serving and restores these afterwards.
        signal.signal(signum, _exit)
    args = command(sys.argv[1:] if argv is None else argv)
    if workers(args) > 1:
        multiprocess_metrics()
    uvicorn.main.main(args=args, prog_name="tensorinit")


if __name__ == "__main__":
    main()
