"""Schemathesis from outside: its CLI against a real uvicorn with default settings, as ``make run`` starts it.

``schemathesis run <url>/openapi.json --checks all``, every phase (examples, coverage,
fuzzing, stateful), must find no failure. Only ``ignored_auth`` is left out: a server
without keys checks none, and its document declares no security scheme (the in-process
run, test_contract.py, configures a key and runs that check too). The positive cases set
aside are those of :mod:`tests.hardening.contract`, through
:mod:`tests.hardening.contract_hooks`, and any case whose answer would exceed 64 MiB,
to bound the time of a run against the default 8 GiB limit. Bounded: 10
examples per operation and phase, one worker, and a timeout on the whole run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .live import ROOT, LiveProcess

TIMEOUT_SECONDS = 1800
"""A guard on the whole run: about 5 minutes on two idle cores, three times that on a busy shared machine."""


def _default_environment() -> dict[str, str]:
    """This environment without any ``TENSORINIT_*`` setting: the server and the hooks see the defaults."""
    return {key: value for key, value in os.environ.items() if not key.startswith("TENSORINIT_")}


@pytest.mark.slow
def test_schemathesis_from_outside_finds_no_failure(tmp_path: Path) -> None:
    env = _default_environment()
    server = LiveProcess(tmp_path / "server.log")
    server.env = env
    report = tmp_path / "report.json"
    with server:
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            "ignored_auth",
            "--max-examples",
            "10",
            "--workers",
            "1",
            "--seed",
            "12",
            "--generation-database",
            "none",
            "--no-color",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ]
        hooks = {"SCHEMATHESIS_HOOKS": "tests.hardening.contract_hooks", "PYTHONPATH": str(ROOT)}
        run = subprocess.run(
            command, cwd=tmp_path, env={**env, **hooks}, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
        )
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    summary = json.loads(report.read_text())
    assert summary["complete"] and summary["failures"] == [] and summary["errors"] == []
    operations = summary["operations"]
    assert operations["tested"] == operations["total"] >= 3 * 19 + 11  # every operation, the per-scheme forms included
    # The filter sets some positive cases aside, never all: every operation had accepted ones.
    refused = [op for op, phases in summary["valid_rates"].items() if not any(rate["accepted"] for rate in phases.values())]
    assert refused == []
