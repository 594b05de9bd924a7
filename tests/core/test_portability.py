"""The same bytes on every machine, proven on this one: the golden set under other CPUs, BLAS kernels and thread counts.

Each row runs the whole golden set (every scheme × convention × dtype, slices of
large tensors included) in a fresh interpreter with its own numba cache, compiled for
another CPU (``NUMBA_CPU_NAME``: ``generic`` is plain x86-64 without AVX, ``haswell``
AVX2 + FMA, the host whatever it has), with OpenBLAS forced onto another kernel
(``OPENBLAS_CORETYPE``, changed only inside these subprocesses, never in this
process) and with other thread counts. Every digest must equal the pinned vector.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.golden.regenerate import PATH

ROOT = Path(__file__).resolve().parents[2]
PINNED: dict[str, Any] = json.loads(PATH.read_text())
SCRIPT = """
import json, sys
from tests.golden.regenerate import vectors
print(json.dumps([v["sha256"] for v in vectors()]))
"""

ROWS: dict[str, dict[str, str]] = {
    "generic cpu": {"NUMBA_CPU_NAME": "generic"},
    "haswell cpu": {"NUMBA_CPU_NAME": "haswell"},
    "host cpu, 1 thread, OpenBLAS Haswell": {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_NUM_THREADS": "1", "TENSORINIT_THREADS": "1"},
    "host cpu, 3 threads, OpenBLAS Prescott": {"OPENBLAS_CORETYPE": "Prescott", "OPENBLAS_NUM_THREADS": "3", "TENSORINIT_THREADS": "3"},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.Popen[str]]:
    """Start every row at once (they compile in parallel), each with an empty numba cache of its own."""
    started = {}
    for row, extra in ROWS.items():
        env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
        env.update(extra, NUMBA_CACHE_DIR=str(tmp_path_factory.mktemp("numba")), PYTHONPATH=str(ROOT))
        started[row] = subprocess.Popen(
            [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return started


@pytest.mark.slow
@pytest.mark.parametrize("row", list(ROWS))
def test_golden_digests_do_not_depend_on_the_machine(row: str, runs: dict[str, subprocess.Popen[str]]) -> None:
    out, err = runs[row].communicate(timeout=900)
    assert runs[row].returncode == 0, err[-3000:]
    digests = json.loads(out.strip().splitlines()[-1])
    pinned = [v["sha256"] for v in PINNED["vectors"]]
    differ = [PINNED["vectors"][i]["request"] for i, (a, b) in enumerate(zip(digests, pinned, strict=True)) if a != b]
    assert not differ, f"{len(differ)} digests differ under {row}: {differ[:3]}"
