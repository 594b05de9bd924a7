"""Regenerate tests/golden/vectors.json: run only on purpose (``make golden``).

A changed digest means the algorithm changed: add a new algorithm version beside the
frozen ones (service/core/algorithms), or find the bug.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from service.core import ALGORITHM_VERSION, generate

from .cases import cases, resolve_case

PATH = Path(__file__).with_name("vectors.json")


def vectors() -> list[dict[str, Any]]:
    out = []
    for case in cases():
        spec = resolve_case(case)
        data = np.ascontiguousarray(generate(spec)).view(np.uint8).tobytes()
        out.append({"request": case, "spec_sha256": spec.digest(), "sha256": hashlib.sha256(data).hexdigest()})
    return out


def main() -> None:
    pinned = vectors()
    body = {"algorithm": ALGORITHM_VERSION, "vectors": pinned}
    PATH.write_text(json.dumps(body, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(pinned)} vectors to {PATH}")


if __name__ == "__main__":
    main()
