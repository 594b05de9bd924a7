"""No endpoint touches the file system or evaluates user input: checked in the source.

The service's code (outside the ``make openapi`` exporter) calls no evaluator, no
process or shell, no deserializer of code; it reads exactly one file, the API-key
digests named by the operator's ``TENSORINIT_API_KEYS_FILE``, and appends to at most
one, the access log named by ``TENSORINIT_ACCESS_LOG``, both opened once, at start; and the
model configs (the package's own and those of ``TENSORINIT_MODELS_DIR``), read once, at start. The
launcher (``serve.py``), before any worker starts, makes or empties of ``*.db`` files the
prometheus multiprocess directory of ``TENSORINIT_WORKERS`` > 1. The page's static files
are read once, at import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"
EXPORTER = SERVICE / "api" / "openapi_export.py"

FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "open", "input", "breakpoint"}
FORBIDDEN_ATTRS = {"read_text", "read_bytes", "write_text", "write_bytes", "unlink", "mkdir", "touch", "iterdir", "glob"}
FORBIDDEN_OS = {
    "system",
    "popen",
    "remove",
    "unlink",
    "rename",
    "replace",
    "rmdir",
    "mkdir",
    "makedirs",
    "open",
    "listdir",
    "scandir",
    "walk",
}
FORBIDDEN_MODULES = {"subprocess", "pickle", "marshal", "shelve", "dill", "importlib", "ctypes", "shutil", "tempfile"}
# the key digests file; the access-log file; the model configs, read once at start; the page's own static files, read once at import;
# the launcher's multiprocess-metrics directory, made or emptied before the workers start; Swagger UI's two
# files from fastapi-offline's package, by a fixed name (the route's table of three), read once on first use
ALLOWED = {
    ("swagger.py", "read_bytes"),
    ("security.py", "read_text"),
    ("logging.py", "open"),
    ("page.py", "read_bytes"),
    ("page.py", "iterdir"),
    ("model_catalogue.py", "read_text"),
    ("model_catalogue.py", "glob"),
    ("serve.py", "mkdir"),
    ("serve.py", "glob"),
    ("serve.py", "unlink"),
}
ALLOWED_MODULES = {("serve.py", "tempfile")}


def sources() -> list[Path]:
    return sorted(p for p in SERVICE.rglob("*.py") if p != EXPORTER)


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(SERVICE)))
def test_no_file_system_process_or_evaluation(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"import {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES and (path.name, n) not in ALLOWED_MODULES]
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS and (path.name, func.id) not in ALLOWED:
                found.append(f"{func.id}()")
            elif isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_ATTRS and (path.name, func.attr) not in ALLOWED:
                found.append(f".{func.attr}()")
            elif (
                isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "os" and func.attr in FORBIDDEN_OS
            ):
                found.append(f"os.{func.attr}()")
    assert not found, f"{path.relative_to(SERVICE)}: {found}"
