"""Schemathesis from outside: its CLI against a real uvicorn with default settings, as ``make run`` starts it.

``schemathesis run <url>/openapi.json --checks all``, every phase (examples, coverage,
fuzzing, stateful). Only ``ignored_auth`` is left out: a server without keys checks
none, and its document declares no security scheme (the in-process run,
test_contract.py, configures a key and runs that check too).

No positive case is set aside for the rules the document cannot state: they are sent,
and the one failure allowed is ST202 ("schema-valid request rejected"), for those rules
alone. Every refusal of a positive case is counted by :data:`tests.hardening.contract.UNSTATEABLE`
rule, each of which docs/api.md lists; a refusal under none of them is a rule the
document could state and does not, and fails the test. Only cases whose answer would
exceed 64 MiB are not sent, to bound the time of a run against the default 8 GiB limit.
Bounded: a few examples per operation and phase, no shrinking, one worker, and a
timeout on the whole run (about 60 s on two idle cores).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .contract import UNSTATEABLE, refusal_text, unstateable_rule
from .live import ROOT, LiveProcess

TIMEOUT_SECONDS = 900
"""A guard on the whole run: about a minute on two idle cores, several on a busy shared machine."""
MAX_EXAMPLES = 4


def _default_environment() -> dict[str, str]:
    """This environment without any ``TENSORINIT_*`` setting: the server and the hooks see the defaults."""
    return {key: value for key, value in os.environ.items() if not key.startswith("TENSORINIT_")}


def test_every_unstateable_rule_is_listed_in_the_api_doc() -> None:
    listed = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert [rule.name for rule in UNSTATEABLE if f"**{rule.name}**" not in listed] == []


@pytest.mark.slow
def test_schemathesis_from_outside_finds_only_unstateable_rules(tmp_path: Path) -> None:
    env = _default_environment()
    server = LiveProcess(tmp_path / "server.log")
    server.env = env
    report = tmp_path / "report.json"
    rejections = tmp_path / "rejections.jsonl"
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
            str(MAX_EXAMPLES),
            "--no-shrink",
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
        hooks = {"SCHEMATHESIS_HOOKS": "tests.hardening.contract_hooks", "PYTHONPATH": str(ROOT), "CONTRACT_REJECTIONS": str(rejections)}
        run = subprocess.run(
            command, cwd=tmp_path, env={**env, **hooks}, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
        )
    output = run.stdout[-20000:] + run.stderr[-5000:]
    summary = json.loads(report.read_text())
    assert summary["complete"] and summary["errors"] == [], output
    # No failure of any check but ST202, and the document's patterns are all ones schemathesis can read.
    assert {failure["code"] for failure in summary["failures"]} <= {"ST202"}, output
    assert summary["warnings"]["unsupported_regex"] == []
    operations = summary["operations"]
    assert operations["tested"] == operations["total"] >= 3 * 19 + 11  # every operation, the per-scheme forms included

    # Every refusal of a schema-valid request, by the rule it is for.
    by_rule: collections.Counter[str] = collections.Counter()
    stateable: list[str] = []
    operations_refused: set[str] = set()
    for line in rejections.read_text().splitlines() if rejections.exists() else []:
        refusal = json.loads(line)
        rule = unstateable_rule(refusal["method"], refusal["path"], refusal["status"], refusal["problem"])
        if rule is None:
            stateable.append(f"{refusal['method']} {refusal['path']} {refusal['status']} {refusal_text(refusal['problem'])[:300]}")
        by_rule[rule or "(none)"] += 1
        operations_refused.add(f"{refusal['method']} {refusal['path']}")
    print("schema-valid requests refused, by rule:", dict(by_rule.most_common()))
    assert stateable == [], "\n".join(stateable[:20])
    # An operation none of whose positive cases was accepted had them refused for those rules
    # (/plan's recipes cover few of the kinds a generated manifest names), never for nothing.
    refused = {op for op, phases in summary["valid_rates"].items() if not any(rate["accepted"] for rate in phases.values())}
    assert refused <= operations_refused, refused
    # ST202 is reported when, and only when, some refusal was counted.
    assert bool(by_rule) == bool(summary["failures"]), output
