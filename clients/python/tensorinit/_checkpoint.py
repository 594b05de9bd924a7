"""``checkpoint``: a Hugging Face checkpoint directory from the service, the steps that need no I/O on the network.

The server plans the directory (``GET /models/{model}/checkpoint`` for a catalogue name,
``POST /checkpoint`` for a config of one's own): every file with its size and ETag. The
client then fetches the files over a few connections, each into ``NAME.part`` and renamed
once complete and checked. A file already there with the planned identity is kept, and a
``.part`` left by a cut resumes with ``Range`` + ``If-Range``, so running the same call
again finishes what an earlier one left.

Identity, as the server defines it (service/core/checkpoint.py): a safetensors file's ETag
is the first 40 hex digits of the sha256 of its header (which holds every spec of its
tensors, so it defines the bytes); a JSON file's is its git blob id.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode

from ._errors import IntegrityError
from ._progress import Progress, ProgressOption
from ._receive import FileSink, Receiver

DEFAULT_CONNECTIONS = 2
"""Files fetched at once. A server admits one client address to at most half its generation
slots (``TENSORINIT_MAX_CLIENT_SHARE`` 0.5 of 4 by default): a third and fourth connection
were refused 503 and waited out their Retry-After (30 refusals for the 8B checkpoint), and
two streams already keep two cores busy (docs/benchmarks.md, issue 19)."""


@dataclass(frozen=True)
class Source:
    """Where a checkpoint's plan and files come from: a catalogue name (GETs nginx caches) or a config (POSTs)."""

    name: str | None
    config: dict[str, Any] | None
    options: dict[str, Any]

    def plan_request(self) -> tuple[str, str, Any]:
        if self.name is not None:
            return "GET", f"/models/{quote(self.name, safe='')}/checkpoint{self._query()}", None
        return "POST", "/checkpoint", self._body()

    def file_request(self, file: str) -> tuple[str, str, Any]:
        if self.name is not None:
            return "GET", f"/models/{quote(self.name, safe='')}/checkpoint/{quote(file, safe='')}{self._query()}", None
        return "POST", f"/checkpoint/{quote(file, safe='')}", self._body()

    def _query(self) -> str:
        # One fixed order, so that every client's URL of a file is the same cache entry.
        items = [(k, str(self.options[k])) for k in ("seed", "dtype", "max_shard_size", "algorithm") if self.options.get(k) is not None]
        return "?" + urlencode(items) if items else ""

    def _body(self) -> dict[str, Any]:
        return {"config": self.config, **{k: v for k, v in self.options.items() if v is not None}}


def source(
    config_or_name: str | os.PathLike[str] | Mapping[str, Any],
    *,
    seed: int,
    dtype: str | None,
    max_shard_size: int | str | None,
    algorithm: int | None = None,
) -> Source:
    """A mapping is a config; a path to a file (or to a directory holding config.json) is read as one; any other string a catalogue name."""
    options = {"seed": seed, "dtype": dtype, "max_shard_size": max_shard_size, "algorithm": algorithm}
    if isinstance(config_or_name, Mapping):
        return Source(None, dict(config_or_name), options)
    path = Path(config_or_name)
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    if path.is_file():
        config = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError(f"{path}: a config.json holds a JSON object")
        return Source(None, config, options)
    if isinstance(config_or_name, str) and "/" not in config_or_name and not config_or_name.endswith(".json"):
        return Source(config_or_name, None, options)
    raise FileNotFoundError(f"{config_or_name}: no such config file (a catalogue name has no slash nor .json)")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def identity(file: IO[bytes], name: str, size: int) -> str | None:
    """The ETag (unquoted) the server gives a file of these bytes, or None when they cannot be one."""
    file.seek(0)
    if not name.endswith(".safetensors"):
        return git_blob_id(file.read(size + 1))
    head = file.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    if n > 100_000_000:
        return None
    return hashlib.sha256(head + file.read(n)).hexdigest()[:40]


def is_done(path: Path, entry: Mapping[str, Any]) -> bool:
    """Whether ``path`` already holds the planned file (its size and identity)."""
    if not path.is_file() or path.stat().st_size != entry["size"]:
        return False
    with path.open("rb") as f:
        return identity(f, entry["name"], entry["size"]) == str(entry["etag"])


def check(file: IO[bytes], entry: Mapping[str, Any], received: int) -> None:
    """Raise IntegrityError unless the received file is the planned one."""
    if received != entry["size"]:
        raise IntegrityError(f"{entry['name']}: received {received} bytes, the plan says {entry['size']}")
    found = identity(file, entry["name"], entry["size"])
    if found != entry["etag"]:
        raise IntegrityError(f"{entry['name']}: its bytes are identified as {found}, the plan says {entry['etag']}")


def resuming(file: IO[bytes], entry: Mapping[str, Any], progress: Progress | None) -> Receiver:
    """A receiver for ``file`` (a ``.part`` opened r+b): set to resume after what it holds when that is a start of the file."""
    rx = Receiver(FileSink(file, direct=True), progress)  # a checkpoint is read later: around the page cache
    have = file.seek(0, os.SEEK_END)
    if 0 < have < entry["size"]:
        rx.started = rx.ranges = True
        rx.total = entry["size"]
        rx.etag = f'"{entry["etag"]}"'
        rx.received = rx.high_water = have
        if progress is not None:
            progress.start(rx.total, have)
    else:
        file.seek(0)
        file.truncate(0)
    return rx


class Turns:
    """Whether a file refused 503 may try again: only while the checkpoint's other files make progress.

    The server admits one client for at most its share of slots and bytes in flight, which
    this checkpoint's other files may hold: while they make progress, a refused file waits its
    turn instead of failing the checkpoint. No progress at all since its last try: a refusal.
    """

    def __init__(self, tally: Tally) -> None:
        self._tally = tally
        self._seen = tally.received

    def progressed(self) -> bool:
        """Whether any byte of the checkpoint came in since the last call (or since this file began)."""
        moved = self._tally.received != self._seen
        self._seen = self._tally.received
        return moved


def check_part(file: IO[bytes], part: Path, entry: Mapping[str, Any], received: int) -> None:
    """Flush the received ``.part`` and check it against the plan; removed, and IntegrityError, if it is not the planned file."""
    file.flush()
    try:
        check(file, entry, received)
    except IntegrityError:
        part.unlink(missing_ok=True)
        raise


class Tally:
    """One progress bar (or callback) over every file of a checkpoint, fed by each file's own :class:`Share`."""

    def __init__(self, option: ProgressOption, description: str, total: int) -> None:
        self._bar = Progress(option, description)
        self._lock = threading.Lock()
        self.total = total
        self.received = 0
        self._bar.start(total, 0)

    def add(self, n: int) -> None:
        with self._lock:
            self.received += n
            self._bar.update(self.received, self.total)

    def close(self) -> None:
        self._bar.close()


class Share(Progress):
    """One file's part of a :class:`Tally`: what the file's receiver reports, as increments."""

    def __init__(self, tally: Tally) -> None:
        super().__init__(False, "")
        self._tally = tally
        self._seen = 0

    def start(self, total: int | None, received: int) -> None:
        self._tally.add(received - self._seen)
        self._seen = received

    def update(self, received: int, total: int | None) -> None:
        self.start(total, received)

    def close(self) -> None:
        pass


def paths(directory: Path, name: str) -> tuple[Path, Path]:
    return directory / name, directory / (name + ".part")
