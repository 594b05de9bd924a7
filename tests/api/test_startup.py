"""What ``make run`` shows a person: a line when the kernels are ready, and no probe requests in the access log.

The real command line (``python -m service.api.serve``, as ``make run`` runs it) in a
subprocess on a free loopback port, its stderr read as a terminal would show it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
READY = "tensorinit is ready: kernels compiled"


def _serve(log: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "service.api.serve", "--port", str(port), "--timeout-graceful-shutdown", "5"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("env", "probes_logged"),
    [
        ({}, False),
        ({"TENSORINIT_ACCESS_LOG_PROBES": "true"}, True),
    ],
)
def test_the_ready_line_and_probes_out_of_the_access_log(tmp_path: Path, env: dict[str, str], probes_logged: bool) -> None:
    log = tmp_path / "serve.log"
    process, url = _serve(log, {"TENSORINIT_ACCESS_LOG_FLUSH_SECONDS": "0", **env})
    try:
        deadline = time.monotonic() + 120  # kernels load from numba's cache (the session's warm-up wrote it)
        while READY not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/readyz").status_code == 200  # the line is written once /readyz says so
            for path in ("/healthz", "/metrics", "/version"):
                assert client.get(path).status_code == 200
    finally:
        process.terminate()
        assert process.wait(15) == 0
    text = log.read_text()
    lines = text.splitlines()
    ready = [line for line in lines if READY in line]
    assert len(ready) == 1, text
    assert ready[0].startswith("INFO:"), ready  # uvicorn's format, beside "Uvicorn running on ..."
    logged = [json.loads(line)["path"] for line in lines if line.startswith("{")]
    assert logged == (["/readyz", "/healthz", "/metrics", "/version"] if probes_logged else ["/version"])
