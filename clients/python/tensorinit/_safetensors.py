"""Reading a received safetensors body into arrays without copying it.

safetensors' own ``load(bytes)`` helpers copy every tensor out of the buffer (the Rust
``deserialize`` hands back one ``bytes`` object per tensor), and ``safetensors.numpy``
cannot represent BF16 at all; ``safe_open`` needs a file. For a body that is already in
memory we therefore parse the format ourselves: an 8-byte little-endian header length,
the JSON header, then the data (REFERENCE.md §7). The checks are the loaders' own
(contiguous offsets, sizes matching dtype × shape, no trailing bytes) so nothing that
``safe_open`` would reject is ever returned, and every array is a view of the one
receive buffer: ``np.frombuffer`` with the ml_dtypes dtype for BF16, ``torch.frombuffer``
for torch. Downloaded files are left to ``safe_open`` (memory-mapped).
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any, Literal

import ml_dtypes
import numpy as np

from ._errors import IntegrityError

# The receive buffer: a bytearray, or for large bodies an anonymous mapping (see _receive.allocate).
Buffer = bytearray | mmap.mmap
Framework = Literal["numpy", "torch", "jax"]
FRAMEWORKS: tuple[str, ...] = ("numpy", "torch", "jax")
HEADER_LIMIT = 100_000_000

NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


@dataclass(frozen=True)
class Entry:
    """One tensor of the file; ``begin`` and ``end`` are absolute byte offsets in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    entries: dict[str, Entry]
    metadata: dict[str, str]
    data_start: int
    size: int


def header_length(prefix: bytes | Buffer | memoryview) -> int:
    if len(prefix) < 8:
        raise IntegrityError(f"safetensors body of {len(prefix)} bytes: shorter than the 8-byte header length")
    n = int.from_bytes(prefix[:8], "little")
    if n > HEADER_LIMIT:
        raise IntegrityError(f"safetensors header length {n} exceeds {HEADER_LIMIT} bytes")
    return n


def parse_header(head: bytes | Buffer | memoryview, size: int) -> Header:
    """Parse and check the header of a ``size``-byte file whose first bytes are ``head``."""
    n = header_length(head)
    if 8 + n > min(size, len(head)):
        raise IntegrityError(f"safetensors header of {n} bytes does not fit in a body of {size} bytes")
    try:
        raw = json.loads(bytes(head[8 : 8 + n]))
    except (UnicodeDecodeError, ValueError) as exc:
        raise IntegrityError(f"safetensors header is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise IntegrityError("safetensors header is not a JSON object")
    data_start = 8 + n
    metadata = raw.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise IntegrityError("safetensors __metadata__ must map strings to strings")
    entries: dict[str, Entry] = {}
    for name, info in raw.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise IntegrityError(f"safetensors entry {name!r} is malformed: {info!r}") from None
        if dtype not in NUMPY_DTYPES:
            raise IntegrityError(f"safetensors entry {name!r} has unsupported dtype {dtype!r}")
        if not all(isinstance(d, int) and d >= 0 for d in shape) or not isinstance(begin, int) or not isinstance(end, int):
            raise IntegrityError(f"safetensors entry {name!r} has a malformed shape or offsets")
        if end - begin != math.prod(shape) * NUMPY_DTYPES[dtype].itemsize:
            raise IntegrityError(f"safetensors entry {name!r}: {end - begin} bytes do not hold {dtype} × {list(shape)}")
        entries[name] = Entry(name, dtype, shape, data_start + begin, data_start + end)
    position = data_start
    for entry in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if entry.begin != position:
            raise IntegrityError(f"safetensors entry {entry.name!r} starts at {entry.begin}, expected {position}: hole or overlap")
        position = entry.end
    if position != size:
        raise IntegrityError(f"safetensors data ends at byte {position} but the body has {size} bytes")
    return Header(entries, metadata, data_start, size)


def numpy_views(buffer: Buffer, header: Header) -> dict[str, np.ndarray[Any, Any]]:
    """Zero-copy numpy arrays over ``buffer``, in header order."""
    view = memoryview(buffer)
    return {e.name: np.frombuffer(view[e.begin : e.end], dtype=NUMPY_DTYPES[e.dtype]).reshape(e.shape) for e in header.entries.values()}


def torch_dtypes() -> dict[str, Any]:
    """safetensors dtype → torch dtype."""
    import torch  # noqa: PLC0415 -- optional extra, imported only when asked for

    return {
        "F64": torch.float64,
        "F32": torch.float32,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "I64": torch.int64,
        "I32": torch.int32,
        "I16": torch.int16,
        "I8": torch.int8,
        "U8": torch.uint8,
        "BOOL": torch.bool,
    }


def torch_views(buffer: Buffer, header: Header) -> dict[str, Any]:
    """Zero-copy torch tensors over ``buffer`` (BF16 becomes ``torch.bfloat16``)."""
    import torch  # noqa: PLC0415 -- optional extra, imported only when asked for

    dtypes = torch_dtypes()
    out: dict[str, Any] = {}
    for e in header.entries.values():
        count = math.prod(e.shape)
        if count == 0:  # torch.frombuffer refuses an empty slice
            out[e.name] = torch.empty(e.shape, dtype=dtypes[e.dtype])
        else:
            out[e.name] = torch.frombuffer(buffer, dtype=dtypes[e.dtype], count=count, offset=e.begin).reshape(e.shape)
    return out


def build(buffer: Buffer, header: Header, framework: str) -> dict[str, Any]:
    """Arrays of the requested framework, sharing ``buffer`` where the framework allows."""
    if framework == "numpy":
        return dict(numpy_views(buffer, header))
    if framework == "torch":
        return torch_views(buffer, header)
    if framework == "jax":
        import jax.numpy as jnp  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415 -- optional extra

        # jax owns device memory: this is one copy onto the default device (ml_dtypes
        # bfloat16 is jax's own bfloat16, so no conversion happens on the way).
        return {name: jnp.asarray(a) for name, a in numpy_views(buffer, header).items()}
    raise ValueError(f"framework: got {framework!r}; allowed: one of {', '.join(FRAMEWORKS)}")


def check_framework(framework: str) -> None:
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework: got {framework!r}; allowed: one of {', '.join(FRAMEWORKS)}")


def place_array(out: np.ndarray[Any, Any]) -> Callable[[Header], dict[str, memoryview]]:
    """For ``init(out=...)``: the one tensor of a single-tensor body goes straight into ``out``.

    ``out`` must be a writeable C-contiguous array of exactly the served dtype (byte
    order included) and shape; that is checked against the header, before any data byte.
    """
    if not isinstance(out, np.ndarray) or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"out: got {type(out).__name__}; allowed: a writeable C-contiguous numpy array, or a torch tensor")

    def place(header: Header) -> dict[str, memoryview]:
        if len(header.entries) != 1:
            raise IntegrityError(f"expected one tensor, the body holds {sorted(header.entries)}")
        (entry,) = header.entries.values()
        if NUMPY_DTYPES[entry.dtype] != out.dtype or entry.shape != out.shape:
            raise ValueError(f"out: a {out.dtype} array of shape {list(out.shape)}; the server sends {entry.dtype} × {list(entry.shape)}")
        return {entry.name: out.reshape(-1).view(np.uint8).data}

    return place


def digests_of_buffer(buffer: Buffer, header: Header) -> dict[str, str]:
    view = memoryview(buffer)
    return digests_of_views({e.name: view[e.begin : e.end] for e in header.entries.values()})


def digests_of_views(views: Mapping[str, memoryview]) -> dict[str, str]:
    """Per-tensor sha256 of bytes wherever they landed (the receive buffer, or a parameter's storage): one pass."""
    return {name: hashlib.sha256(view).hexdigest() for name, view in views.items()}


def read_file_header(f: IO[bytes], size: int) -> Header:
    f.seek(0)
    prefix = f.read(8)
    n = header_length(prefix)
    return parse_header(prefix + f.read(min(n, max(0, size - 8))), size)


def digests_of_file(f: IO[bytes], header: Header, chunk: int = 1 << 20) -> dict[str, str]:
    """Per-tensor sha256 of a file, read in bounded chunks so memory stays flat."""
    out = {}
    for e in header.entries.values():
        digest = hashlib.sha256()
        f.seek(e.begin)
        left = e.end - e.begin
        while left:
            block = f.read(min(chunk, left))
            if not block:
                raise IntegrityError(f"file ends inside tensor {e.name!r}")
            digest.update(block)
            left -= len(block)
        out[e.name] = digest.hexdigest()
    return out


def check_digests(actual: Mapping[str, str], expected: Mapping[str, str]) -> None:
    """Every tensor's sha256 must equal the one /stats reports for it."""
    if set(actual) != set(expected):
        raise IntegrityError(f"tensors received {sorted(actual)} differ from those /stats describes {sorted(expected)}")
    bad = [name for name in actual if actual[name] != expected[name]]
    if bad:
        raise IntegrityError(f"sha256 mismatch against /stats for {bad}: the body is corrupt")
