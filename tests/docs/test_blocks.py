"""Every shell and Python block of README.md and docs/*.md runs as written, in order, against a live server.

One test per file. Its blocks run in one fresh Python process (tests/docs/driver.py) in a
temporary directory, with ``TENSORINIT_URL`` naming the session's live server on a
loopback port: Python blocks share a namespace, shell blocks run in bash with curl set to
fail on an HTTP error. A block is skipped only under ``<!-- not-run: reason -->``
(tests/docs/blocks.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LiveServer

from .blocks import MarkerError, blocks, console_commands

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SECONDS_PER_FILE = 180


def _runnable(path: Path) -> list[dict[str, object]]:
    where = str(path.relative_to(ROOT))
    return [
        {"file": where, "line": b.line, "lang": b.lang, "code": console_commands(b.code) if b.lang == "console" else b.code}
        for b in blocks(path.read_text(encoding="utf-8"), where)
        if b.skip is None
    ]


def _drive(runnable: list[dict[str, object]], url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run the blocks in driver.py, in a fresh process and an empty working directory."""
    (tmp_path / "blocks.json").write_text(json.dumps(runnable), encoding="utf-8")
    curl_home = tmp_path / "curl"
    curl_home.mkdir()
    (curl_home / ".curlrc").write_text("fail-with-body\nshow-error\n")  # an HTTP error fails the block
    work = tmp_path / "work"
    work.mkdir()
    paths = [str(ROOT), str(ROOT / "clients" / "python"), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "TENSORINIT_URL": url,
        "CURL_HOME": str(curl_home),
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),  # this venv's python first
    }
    return subprocess.run(
        [sys.executable, str(Path(__file__).with_name("driver.py")), str(tmp_path / "blocks.json")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=SECONDS_PER_FILE,
        check=False,
    )


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_blocks_run(path: Path, live_server: LiveServer, tmp_path: Path) -> None:
    runnable = _runnable(path)
    if not runnable:
        return  # nothing to run in this file (algorithm.md: formulas and output only)
    done = _drive(runnable, live_server.url, tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]


def test_every_skip_says_why() -> None:
    skipped = {
        (str(p.relative_to(ROOT)), b.line): b.skip for p in DOCUMENTS for b in blocks(p.read_text(encoding="utf-8"), p.name) if b.skip
    }
    assert skipped, "no block is marked not-run: make run and make cluster cannot run in a test"
    assert all(len(reason) >= 10 for reason in skipped.values()), skipped


MARKDOWN_CASES = [
    # (markdown, the blocks as (lang, line, skip), or the error)
    ("```sh\necho a\n```\n", [("sh", 1, None)]),
    ("```\nplain output\n```\n\n```json\n{}\n```\n", []),
    ("```python\nx = 1\n```\n\n```console\n$ echo b\nb\n```\n", [("python", 1, None), ("console", 5, None)]),
    ("<!-- not-run: starts a server -->\n```sh\nmake run\n```\n\n```sh\necho c\n```\n", [("sh", 2, "starts a server"), ("sh", 6, None)]),
    ("<!-- not-run: -->\n```sh\nmake run\n```\n", MarkerError),  # no reason
    ("<!-- not-run: a reason -->\n\nsome text\n\n```sh\nmake run\n```\n", MarkerError),  # not right above
    ("<!-- not-run: a reason -->\n```\noutput\n```\n", MarkerError),  # above a block that is not run anyway
    ("text\n<!-- not-run: at the end -->\n", MarkerError),
    ("<!-- a comment -->\n```sh\necho d\n```\n", [("sh", 2, None)]),
    ("- a list\n\n  ```bash\n  echo e\n  ```\n", [("bash", 3, None)]),
]


@pytest.mark.parametrize(("markdown", "expected"), MARKDOWN_CASES)
def test_blocks_and_markers(markdown: str, expected: list[tuple[str, int, str | None]] | type[Exception]) -> None:
    if isinstance(expected, type):
        with pytest.raises(expected, match="not-run marker"):
            blocks(markdown)
        return
    assert [(b.lang, b.line, b.skip) for b in blocks(markdown)] == expected


@pytest.mark.parametrize(
    ("transcript", "commands"),
    [
        ("$ echo a\na\n", "echo a\n"),
        ("$ curl -s x \\\n    -o y\n$ ls\ny\n", "curl -s x \\\n    -o y\nls\n"),
    ],
)
def test_console_transcripts_run_their_commands_only(transcript: str, commands: str) -> None:
    assert console_commands(transcript) == commands


@pytest.mark.parametrize(
    ("markdown", "says"),
    [
        # A NameError in a file's second Python block, as the README's "Recipes from Python"
        # block once had (it used `nn` without importing it): the traceback gives the file's line.
        (
            "```python\nimport math\n```\n\ntext\n\n```python\nx = math.pi\ny = nn.Linear\n```\n",
            ["NameError: name 'nn' is not defined", 'File "doc.md", line 9', "FAILED: the python block at doc.md:7"],
        ),
        # curl answered 404: an HTTP error fails a shell block, though -s would hide it.
        (
            '```sh\ncurl -s "$TENSORINIT_URL/version" -o /dev/null\ncurl -s "$TENSORINIT_URL/schemes/nope"\n```\n',
            ["The requested URL returned error: 404", "FAILED: the sh block at doc.md:1 exited 22"],
        ),
        # a later block does not run after a failure
        ("```sh\nfalse\n```\n\n```python\nprint('never')\n```\n", ["FAILED: the sh block at doc.md:1 exited 1"]),
    ],
)
def test_a_failing_block_fails_and_names_its_line(live_server: LiveServer, tmp_path: Path, markdown: str, says: list[str]) -> None:
    runnable = [{"file": "doc.md", "line": b.line, "lang": b.lang, "code": b.code} for b in blocks(markdown)]
    done = _drive(runnable, live_server.url, tmp_path)
    assert done.returncode == 1
    for text in says:
        assert text in done.stdout + done.stderr
    assert "never" not in done.stdout
