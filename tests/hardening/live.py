"""The service as a real uvicorn subprocess on loopback: for RSS, signals and kill -9.

uvicorn binds the port itself, as ``make run`` does (``--fd`` would not do: uvicorn
duplicates an inherited descriptor and the original keeps listening after shutdown,
so new connections would queue instead of being refused). The port is a free one
picked just before; a restart reuses it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


class LiveProcess:
    """``python -m service.api.serve`` (uvicorn with the app factory) with ``TENSORINIT_*`` settings from ``env``."""

    def __init__(self, log_path: Path, env: dict[str, str] | None = None, graceful_seconds: int = 10):
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.graceful_seconds = graceful_seconds
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> LiveProcess:
        if not self.port:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                self.port = sock.getsockname()[1]
        command = [
            sys.executable,
            "-m",
            "service.api.serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-graceful-shutdown",
            str(self.graceful_seconds),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 180  # a first start compiles the kernels (cached after)
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("uvicorn did not become ready")
            time.sleep(0.05)

    def status(self, field: str) -> int:
        """A ``kB`` field of /proc/<pid>/status (``VmRSS``, ``VmHWM``), in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def rss(self) -> int:
        return self.status("VmRSS")

    def peak_rss(self) -> int:
        return self.status("VmHWM")

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def wait(self, seconds: float) -> int:
        assert self.process is not None
        return self.process.wait(seconds)

    def __enter__(self) -> LiveProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(self.graceful_seconds + 5)
            except subprocess.TimeoutExpired:
                self.kill()
