"""Write the application's OpenAPI document to ``openapi/openapi.json`` (``make openapi``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .app import create_app
from .settings import Settings

TARGET = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def document() -> dict[str, Any]:
    """The OpenAPI document of an app with default settings (the environment must not change it)."""
    return create_app(Settings.model_construct()).openapi()


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def main() -> int:
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
