"""The runnable code blocks of a Markdown file, read with markdown-it-py (the CommonMark parser).

A fenced block whose info string is ``sh``, ``bash``, ``console`` or ``python`` is runnable;
any other fence (a bare one for output, ``json``, ...) is text. A runnable block is skipped
only when an HTML comment ``<!-- not-run: why -->`` stands right above its fence, with a
reason: a marker without one, or one that no runnable fence follows, is an error, so that
a skip can neither be silent nor outlive its block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from markdown_it import MarkdownIt

LANGUAGES = frozenset({"sh", "bash", "console", "python"})
NOT_RUN = re.compile(r"\A\s*<!--\s*not-run\s*:(?P<reason>.*?)-->\s*\Z", re.DOTALL)


class MarkerError(ValueError):
    """A ``not-run`` marker without a reason, or with no runnable block after it."""


@dataclass(frozen=True)
class Block:
    """One runnable block: its language, its code, the line of its fence (1-based) and, if skipped, why."""

    lang: str
    code: str
    line: int
    skip: str | None = None


def blocks(text: str, where: str = "<text>") -> list[Block]:
    """The runnable blocks of ``text``, in order."""
    found: list[Block] = []
    pending: tuple[int, str] | None = None  # a not-run marker waiting for its fence
    for token in MarkdownIt("commonmark").parse(text):
        line = token.map[0] + 1 if token.map else 0
        marker = NOT_RUN.match(token.content) if token.type == "html_block" else None
        if marker:
            if pending:
                raise MarkerError(f"{where}:{pending[0]}: a not-run marker with no runnable block after it")
            reason = marker["reason"].strip()
            if not reason:
                raise MarkerError(f"{where}:{line}: a not-run marker must say why: <!-- not-run: reason -->")
            pending = (line, reason)
            continue
        lang = token.info.split()[0] if token.type == "fence" and token.info.strip() else ""
        if lang in LANGUAGES:
            found.append(Block(lang, token.content, line, pending[1] if pending else None))
        elif pending:
            raise MarkerError(f"{where}:{pending[0]}: a not-run marker with no runnable block right after it")
        pending = None
    if pending:
        raise MarkerError(f"{where}:{pending[0]}: a not-run marker with no runnable block after it")
    return found


def console_commands(code: str) -> str:
    """The commands of a ``console`` transcript: the ``$ `` lines and their ``\\`` continuations, without the output."""
    commands: list[str] = []
    continued = False
    for line in code.splitlines():
        if continued or line.startswith("$ "):
            commands.append(line if continued else line[2:])
            continued = line.endswith("\\")
    return "\n".join(commands) + "\n"
