"""Progress for long downloads: tqdm when installed, else one terminal line, else nothing.

``progress=None`` (the default) shows a bar only when it can help: stderr is a terminal
and the body is above :data:`AUTO_THRESHOLD`. ``True`` forces it, ``False`` silences it, a
callable receives ``(received, total)`` after every chunk (total None when unknown).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

AUTO_THRESHOLD = 4 << 20

ProgressCallback = Callable[[int, int | None], None]
ProgressOption = bool | ProgressCallback | None


class Progress:
    def __init__(self, option: ProgressOption, description: str) -> None:
        self._option = option
        self._description = description
        self._bar: Any = None
        self._line = False
        self._last = 0.0
        self._shown = 0

    def start(self, total: int | None, received: int) -> None:
        """A (re)started body of ``total`` bytes, of which ``received`` are already here."""
        if callable(self._option):
            self._option(received, total)
            return
        wanted = self._option if self._option is not None else (sys.stderr.isatty() and total is not None and total >= AUTO_THRESHOLD)
        if not wanted:
            return
        if self._bar is None and not self._line:
            try:
                # optional extra "progress"; imported only when a bar is wanted
                from tqdm.auto import tqdm  # type: ignore[import-untyped, unused-ignore]  # noqa: PLC0415
            except ImportError:
                self._line = True
            else:
                self._bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=self._description, leave=False)
        if self._bar is not None:
            self._bar.reset(total=total)
            self._bar.update(received)
        self._total = total
        self._shown = received

    def update(self, received: int, total: int | None) -> None:
        if callable(self._option):
            self._option(received, total)
        elif self._bar is not None:
            self._bar.update(received - self._shown)
            self._shown = received
        elif self._line:
            now = time.monotonic()
            if now - self._last >= 0.1 or received == total:
                self._last = now
                pct = f"{100 * received / total:5.1f}%" if total else ""
                sys.stderr.write(f"\r{self._description}: {received / 2**20:,.1f} MiB {pct}")
                sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._line:
            sys.stderr.write("\n")
            sys.stderr.flush()
