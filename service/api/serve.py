"""Run the service: ``python -m service.api.serve [APP --factory] [uvicorn options]``.

The uvicorn command line (the app factory filled in when no app is named), with one
difference: after a graceful shutdown on SIGTERM or SIGINT the process exits 0. uvicorn itself re-raises
the signal it caught once it has shut down, so that the exit status names the signal
(143 under a shell); an orchestrator that sends SIGTERM to stop the service would then
see every clean stop as a failure.

``HOST`` and ``PORT`` from the environment are the defaults of ``--host`` and
``--port`` (127.0.0.1 and 8000; the container sets HOST=0.0.0.0), and in-flight
streams get ``--timeout-graceful-shutdown`` seconds (default 30) to finish. uvicorn's
plain access log is off (``--access-log`` turns it back on): the app writes JSON lines.
``make run`` and the Dockerfile run ``python -m service.api.serve service.api.app:create_app --factory``.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

import uvicorn

APP = "service.api.app:create_app"
GRACEFUL_SECONDS = 30


def _after_shutdown(signum: int, frame: FrameType | None) -> None:
    """What uvicorn's re-raised signal runs into once the server has shut down: nothing."""


def command(argv: list[str]) -> list[str]:
    """The uvicorn arguments: ``argv``, with the factory and HOST/PORT/grace defaults where it says nothing."""
    args = list(argv) if argv and not argv[0].startswith("-") else [APP, "--factory", *argv]
    for option, default in (
        ("--host", os.environ.get("HOST", "127.0.0.1")),
        ("--port", os.environ.get("PORT", "8000")),
        ("--timeout-graceful-shutdown", str(GRACEFUL_SECONDS)),
    ):
        if not any(a == option or a.startswith(option + "=") for a in args):
            args += [option, default]
    if "--access-log" not in args and "--no-access-log" not in args:
        args.append("--no-access-log")  # the app writes its own JSON access log, with request ids
    return args


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM/SIGINT, shut down gracefully, exit 0."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        # uvicorn installs its own handlers while serving and restores these afterwards.
        signal.signal(signum, _after_shutdown)
    uvicorn.main.main(args=command(sys.argv[1:] if argv is None else argv), prog_name="tensorinit")


if __name__ == "__main__":
    main()
