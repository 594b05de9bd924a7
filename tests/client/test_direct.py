"""The direct receive paths: ``recv_into`` the destination from the socket, and torch tensors filled in their own storage.

Against real servers: tests/client/faulty.py (cuts, restarts, corruption over real TCP)
and the real service (``live_url``). Bodies are several MiB so that, after the first
chunk h11 hands out, more than ``DIRECT_MIN_BYTES`` is left and the socket path runs.
"""

from __future__ import annotations

import errno
import itertools
import mmap
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.numpy import load, save
from tensorinit import AsyncClient, Client, IntegrityError, RetryPolicy
from tensorinit._receive import (
    DIRECT_ALIGN,
    DIRECT_MIN_BYTES,
    FILE_STAGE_BYTES,
    FileSink,
    MemorySink,
    Receiver,
    ScatterSink,
    direct_socket,
)
from tensorinit._rules import Rules
from tensorinit._safetensors import Entry, Header, parse_header
from tensorinit._torch import batch_tensors, places, targets
from torch import nn

from .faulty import Fault, digests_of, serve

FAST = RetryPolicy(max_retries=3, initial_delay=0.01, max_delay=0.05)
RULES: Rules = [("*.weight", "he_normal"), ("*.bias", {"scheme": "uniform", "low": -0.1, "high": 0.1}), ("*", "normal")]


@pytest.fixture(scope="module")
def big_body() -> bytes:
    """F64 (0.5 MiB), F32 "weight" 1024×1024 (4 MiB), F32 "bias", F16: about 4.5 MiB, made by safetensors."""
    rng = np.random.default_rng(1)
    return save(
        {
            "weight": rng.standard_normal((1024, 1024)).astype(np.float32),
            "bias": rng.standard_normal(1024).astype(np.float32),
            "c": rng.standard_normal((256, 256)),
            "h": rng.standard_normal(3000).astype(np.float16),
        }
    )


def _first_chunk_then(url: str, http: httpx.Client) -> Iterator[httpx.Response]:
    with http.stream("POST", url + "/init", json={}, headers={"Accept-Encoding": "identity"}) as response:
        yield response


@pytest.mark.parametrize("size_of_body", ["big", "small"])
def test_the_socket_path_is_taken_for_a_big_plain_http_body_only(big_body: bytes, small_body: bytes, size_of_body: str) -> None:
    body = big_body if size_of_body == "big" else small_body
    with serve(body, digests_of(body)) as srv, httpx.Client() as http:
        for response in _first_chunk_then(srv.url, http):
            rx = Receiver(MemorySink())
            rx.start(response)
            rx.feed(next(response.iter_raw()))
            sock = direct_socket(response, rx)
            assert (sock is not None) == (len(body) - rx.received >= DIRECT_MIN_BYTES)
            assert (sock is not None) == (size_of_body == "big")


def test_no_socket_path_through_a_transport_without_one(big_body: bytes) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": str(len(big_body))}, stream=httpx.ByteStream(big_body))

    transport = httpx.MockTransport(answer)
    with httpx.Client(transport=transport) as http:
        for response in _first_chunk_then("http://tensorinit.invalid", http):
            rx = Receiver(MemorySink())
            rx.start(response)
            rx.feed(next(response.iter_raw()))
            assert direct_socket(response, rx) is None


@pytest.mark.parametrize(
    ("script", "ranges"),  # ranges: the Range header of each request after the first
    [
        ([], []),
        ([Fault(cut=3_000_000)], ["bytes=3000000-"]),
        ([Fault(cut=2_000_000), Fault(cut=1_000_000)], ["bytes=2000000-", "bytes=3000000-"]),
        ([Fault(cut=100)], ["bytes=100-"]),  # cut inside the header
        ([Fault(cut=3_000_000), Fault(ignore_range=True)], ["bytes=3000000-"]),  # 200 to the Range: start over
    ],
)
def test_cut_bodies_resume_into_the_preallocated_buffer(big_body: bytes, script: list[Fault], ranges: list[str]) -> None:
    with serve(big_body, digests_of(big_body), script) as srv, Client(srv.url, max_retries=FAST) as client:
        got = client.init_many({name: {"scheme": "normal", "shape": [1]} for name in ("weight", "bias", "c", "h")}, verify=True)
        assert [s.headers.get("range") for s in srv.seen if s.path.startswith("/init")][1:] == ranges
    want = load(big_body)
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].tobytes() == want[name].tobytes()


class _CountingFileSink(FileSink):
    """A FileSink that counts the bytes that came through the socket path (``landed``)."""

    direct = 0

    def landed(self, offset: int, n: int) -> None:
        super().landed(offset, n)
        self.direct += n


@pytest.mark.parametrize(
    ("script", "ranges"),
    [
        ([], []),
        ([Fault(cut=3_000_000)], ["bytes=3000000-"]),
        ([Fault(cut=2_000_000), Fault(cut=1_000_000)], ["bytes=2000000-", "bytes=3000000-"]),
        ([Fault(cut=3_000_000), Fault(ignore_range=True)], ["bytes=3000000-"]),  # 200 to the Range: the file starts over
    ],
)
def test_a_file_is_received_from_the_socket_through_its_staging_buffer(
    big_body: bytes, script: list[Fault], ranges: list[str], tmp_path: Any
) -> None:
    path = tmp_path / "body.safetensors"
    with serve(big_body, digests_of(big_body), script) as srv, Client(srv.url, max_retries=FAST) as client, path.open("w+b") as f:
        sink = _CountingFileSink(f)
        rx = client._receive({}, sink)
        f.flush()
        assert [s.headers.get("range") for s in srv.seen if s.path.startswith("/init")][1:] == ranges
    assert rx.received == len(big_body)
    assert path.read_bytes() == big_body
    assert sink.direct > len(big_body) // 2  # most of it came through recv_into + write, not through httpx


def test_progress_counts_every_byte_of_a_direct_download(big_body: bytes) -> None:
    seen: list[tuple[int, int | None]] = []
    with serve(big_body, digests_of(big_body), [Fault(cut=2_500_000)]) as srv, Client(srv.url, max_retries=FAST) as client:
        rx = client._receive({}, MemorySink(), progress=_Recorder(seen))  # type: ignore[arg-type]  # Progress's two methods
    assert rx.received == len(big_body)
    assert (2_500_000, len(big_body)) in seen  # the resumed response starts where the cut left off
    assert seen[-1] == (len(big_body), len(big_body))
    assert all(a <= b for (a, _), (b, _) in itertools.pairwise(seen))


class _Recorder:
    def __init__(self, seen: list[tuple[int, int | None]]) -> None:
        self.seen = seen

    def start(self, total: int | None, received: int) -> None:
        self.seen.append((received, total))

    def update(self, received: int, total: int | None) -> None:
        self.seen.append((received, total))


def test_verify_catches_corruption_on_the_socket_path(big_body: bytes) -> None:
    with (
        serve(big_body, digests_of(big_body), [Fault(corrupt=True)] * 4) as srv,
        Client(srv.url, max_retries=FAST) as client,
        pytest.raises(IntegrityError, match="sha256 mismatch"),
    ):
        client.init_many({"x": {"scheme": "normal", "shape": [1]}}, verify=True)


class _Odd(nn.Module):
    """A Linear-sized weight and bias, a float64 and a bfloat16 parameter, a transposed (non-contiguous) one, a float8 buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(512, 1024)
        self.wide = nn.Parameter(torch.zeros(64, 64, dtype=torch.float64))
        self.brain = nn.Parameter(torch.zeros(300, 7, dtype=torch.bfloat16))
        self.turned = nn.Parameter(torch.zeros(48, 32).t())
        self.register_buffer("small", torch.zeros(16, dtype=torch.float8_e4m3fn))


def test_init_module_in_place_equals_the_numpy_path(live_url: str) -> None:
    model = _Odd()
    before = {name: (t.data_ptr(), t._version) for name, t in model.named_parameters()}
    found = targets(model)
    with Client(live_url) as client:
        done = client.init_module(model, RULES, seed=4)
        want = client.init_many(batch_tensors(found, RULES, None), seed=4, framework="numpy")  # the same request, into numpy
    assert done == list(found)
    for name, t in found.items():
        expected = torch.from_numpy(want[name].astype(np.float32)).to(t.dtype) if t.dtype == torch.bfloat16 else None
        if expected is None:
            expected = torch.from_numpy(np.ascontiguousarray(want[name])).to(t.dtype)  # float8: rounded as copy_ rounds
        assert torch.equal(t.contiguous().view(torch.uint8), expected.contiguous().view(torch.uint8)), name
    for name, t in model.named_parameters():
        assert t.data_ptr() == before[name][0] and t._version > before[name][1], name  # same storage, version bumped as by copy_


@pytest.mark.anyio
async def test_async_init_module_in_place_equals_the_sync_one(live_url: str) -> None:
    a, b = _Odd(), _Odd()
    with Client(live_url) as client:
        client.init_module(a, RULES, seed=2)
    async with AsyncClient(live_url) as client:
        await client.init_module(b, RULES, seed=2)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x.contiguous().view(torch.uint8), y.contiguous().view(torch.uint8)), name


@pytest.mark.parametrize("script", [[], [Fault(cut=1_500_000)], [Fault(cut=40)], [Fault(cut=2_000_000), Fault(ignore_range=True)]])
def test_init_module_receives_into_the_parameters_across_cuts(big_body: bytes, script: list[Fault]) -> None:
    """The faulty server sends its fixed body whatever is asked; a Linear named like its tensors takes it."""
    model = nn.Linear(1024, 1024)
    with serve(big_body, digests_of(big_body), script) as srv, Client(srv.url, max_retries=FAST) as client:
        assert client.init_module(model, [("*", "normal")], verify=True) == ["weight", "bias"]
    want = load(big_body)
    assert model.weight.detach().numpy().tobytes() == want["weight"].tobytes()
    assert model.bias.detach().numpy().tobytes() == want["bias"].tobytes()


def test_places_skips_what_copy_must_convert_or_what_overlaps() -> None:
    found = targets(_Odd())
    found["alias"] = found["lin.weight"][:4]  # shares bytes with lin.weight
    found["tail"] = found["lin.weight"][-1]  # overlaps lin.weight too, but not alias
    own = {torch.float32: "F32", torch.float64: "F64", torch.bfloat16: "BF16"}
    entries = {n: Entry(n, own.get(t.dtype, "F32"), tuple(t.shape), 0, 0) for n, t in found.items()}  # float8 is served as F32
    placed = places(found)(Header(entries, {}, 0, 0))
    assert sorted(placed) == ["brain", "lin.bias", "wide"]  # turned: not contiguous; small: float8; alias, tail overlap lin.weight
    assert placed["brain"].nbytes == 300 * 7 * 2 and not placed["brain"].readonly


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_scatter_sink_writes_every_chunk_size_like_a_plain_buffer(big_body: bytes, step: int) -> None:
    home = np.zeros((1024, 1024), np.float32)
    sink = ScatterSink(lambda header: {"weight": home.data.cast("B")})
    sink.reset(len(big_body))
    end = 3 * 8192 if step == 1 else len(big_body)  # bytewise only through the header and into the data
    for offset in range(0, end, step):
        sink.write(offset, big_body[offset : min(end, offset + step)])
    header_end = 8 + int.from_bytes(big_body[:8], "little")
    assert sink.placed.keys() == {"weight"}
    buffer = sink.take()
    assert bytes(buffer[:header_end]) == big_body[:header_end]
    if end == len(big_body):
        assert home.tobytes() == load(big_body)["weight"].tobytes()
        weight = parse_header(buffer, len(buffer)).entries["weight"]
        rest = [(0, weight.begin), (weight.end, len(big_body))]
        assert all(bytes(buffer[a:b]) == big_body[a:b] for a, b in rest)  # everything else is in the buffer, in place


@pytest.mark.parametrize(
    ("shape", "dtype", "out_dtype"),
    [((1024, 1024), "float32", np.float32), ((300, 7), "bfloat16", ml_dtypes.bfloat16), ((4, 3), "float64", np.float64)],
)
def test_init_into_a_preallocated_array_gives_the_bytes_of_a_fresh_one(
    live_url: str, shape: tuple[int, ...], dtype: str, out_dtype: type
) -> None:
    out: np.ndarray[Any, Any] = np.full(shape, 7, dtype=out_dtype)
    with Client(live_url) as client:
        got = client.init("he_normal", shape, name="w", seed=3, dtype=dtype, out=out, verify=True)
        fresh = client.init("he_normal", shape, name="w", seed=3, dtype=dtype)
    assert got is out and out.tobytes() == fresh.tobytes()


@pytest.mark.parametrize(
    ("out", "error"),
    [
        (np.zeros((1024, 1024), np.float64), "server sends F32"),
        (np.zeros((1024, 1023), np.float32), "shape"),
        (np.zeros((1024, 2048), np.float32)[:, ::2], "C-contiguous"),
    ],
)
def test_init_refuses_an_out_that_does_not_match_and_leaves_it_alone(live_url: str, out: np.ndarray, error: str) -> None:
    before = out.copy()
    with Client(live_url) as client, pytest.raises(ValueError, match=error):
        client.init("he_normal", (1024, 1024), name="w", dtype="float32", out=out)
    assert np.array_equal(out, before)


def test_init_into_out_resumes_across_a_cut() -> None:
    body = save({"weight": np.random.default_rng(5).standard_normal((1024, 1024)).astype(np.float32)})
    out = np.zeros((1024, 1024), np.float32)
    with serve(body, digests_of(body), [Fault(cut=2_000_000)]) as srv, Client(srv.url, max_retries=FAST) as client:
        assert client.init("normal", (1024, 1024), name="w", out=out, verify=True) is out
        assert srv.seen[1].headers["range"] == "bytes=2000000-"
    assert out.tobytes() == load(body)["weight"].tobytes()


@pytest.mark.anyio
async def test_async_init_into_out_matches_the_sync_client(live_url: str) -> None:
    a, b = np.zeros((600, 700), np.float32), np.zeros((600, 700), np.float32)
    with Client(live_url) as client:
        client.init("he_uniform", (600, 700), name="w", seed=8, out=a)
    async with AsyncClient(live_url) as aclient:
        assert await aclient.init("he_uniform", (600, 700), name="w", seed=8, out=b, verify=True) is b
    assert a.any() and a.tobytes() == b.tobytes()


# -- a file sink's writes around the page cache (O_DIRECT) ----------------------------------

_BODY = np.random.default_rng(2).bytes((9 << 20) + 12_345)  # nine stages and a tail


def _o_direct_works(directory: Path) -> bool:
    """Whether the file system under ``directory`` takes an aligned O_DIRECT write (tmpfs before Linux 6.6 does not)."""
    probe = directory / "probe"
    probe.touch()
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_DIRECT)
        try:
            return os.pwrite(fd, mmap.mmap(-1, DIRECT_ALIGN), 0) == DIRECT_ALIGN
        finally:
            os.close(fd)
    except OSError:
        return False
    finally:
        probe.unlink()


class _SpySink(FileSink):
    """A FileSink that counts the bytes it wrote with O_DIRECT."""

    around = 0

    def _write_direct(self, data: memoryview, offset: int) -> int:
        n = super()._write_direct(data, offset)
        self.around += n
        return n


def _drive(sink: FileSink, responses: list[tuple[int, int, int]]) -> None:
    """Each response (first, last, step): a restart from 0 or a resume at ``first``, bytes landed ``step`` at a time up to ``last``."""
    for first, last, step in responses:
        if first == 0:
            sink.reset(len(_BODY))
        offset = first
        try:
            while offset < last:
                window = sink.window(offset)
                n = min(step, len(window), last - offset)
                window[:n] = _BODY[offset : offset + n]
                sink.landed(offset, n)
                offset += n
        finally:  # as the clients end every response
            sink.end()


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="O_DIRECT is Linux's")
@pytest.mark.parametrize(
    "responses",
    [
        [(0, len(_BODY), 1 << 20)],  # recv_into fills each window
        [(0, len(_BODY), 65_536 - 3)],  # recv_into returns less, at every alignment
        [(0, 3_000_001, 65_536), (3_000_001, len(_BODY), 1 << 20)],  # a cut mid-page, then a resume there
        [(0, 5 << 20, 4096), (0, len(_BODY), 1 << 20)],  # a cut on a stage boundary, then a restart (200)
        [(0, 100, 7), (100, 4196, 1000), (4196, len(_BODY), 300_000)],  # two resumes inside the first stage
    ],
)
def test_a_direct_file_sink_lands_every_byte_in_place_around_the_page_cache(responses: list[tuple[int, int, int]], tmp_path: Path) -> None:
    path = tmp_path / "file.part"
    path.touch()
    with path.open("r+b") as f:
        sink = _SpySink(f, direct=True)
        _drive(sink, responses)
        assert sink._direct_fd is None  # end() closed it
    assert path.read_bytes() == _BODY
    if _o_direct_works(tmp_path):
        # every whole stage of the last response went around the page cache; its partial first stage and the tail did not
        first = responses[-1][0]
        whole = (len(_BODY) // FILE_STAGE_BYTES) - -(-first // FILE_STAGE_BYTES)
        assert sink.around >= whole * FILE_STAGE_BYTES > 0
    else:
        assert sink.around == 0


def test_a_file_system_that_refuses_o_direct_gets_buffered_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = os.open

    def refuse_direct(path: Any, flags: int, *args: Any) -> int:
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")  # what open(2) answers where the file system has no O_DIRECT
        return opened(path, flags, *args)

    monkeypatch.setattr(os, "open", refuse_direct)
    path = tmp_path / "file.part"
    path.touch()
    with path.open("r+b") as f:
        sink = _SpySink(f, direct=True)
        _drive(sink, [(0, len(_BODY), 1 << 20)])
    assert path.read_bytes() == _BODY and sink.around == 0


def test_a_checkpoint_file_lands_whole_through_o_direct(live_url: str, tmp_path: Path) -> None:
    """The real service, the real client: a 3-layer model's single file, compared with the served bytes."""
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 4096, "hidden_size": 256,
              "intermediate_size": 512, "num_hidden_layers": 3, "num_attention_heads": 4, "dtype": "float32"}  # fmt: skip
    with Client(live_url) as client:
        folder = client.checkpoint(config, tmp_path / "ckpt", seed=3, progress=False)
        served = client._http.post(client.url("/checkpoint/model.safetensors"), json={"config": config, "seed": 3})
    assert served.status_code == 200 and len(served.content) > 4 * FILE_STAGE_BYTES
    assert (folder / "model.safetensors").read_bytes() == served.content


class _FailingSink(FileSink):
    """A FileSink whose write at one offset fails once, after writing part of its bytes, as a disk filling up would."""

    def __init__(self, file: Any, fail_at: int) -> None:
        super().__init__(file, direct=True)
        self.fail_at = fail_at

    def _write_at(self, data: memoryview, offset: int) -> None:
        if offset == self.fail_at:
            self.fail_at = -1
            os.pwrite(self.file.fileno(), data[: len(data) // 2], offset)  # a short write, then ENOSPC
            raise OSError(errno.ENOSPC, "No space left on device")
        super()._write_at(data, offset)


@pytest.mark.parametrize(
    "fail_at",
    [0, 5 << 20, 9 << 20],  # the first stage, one in the middle (later stages are queued behind it), the tail (written by end())
)
def test_a_failed_write_leaves_the_file_a_prefix_that_ends_where_it_failed(fail_at: int, tmp_path: Path) -> None:
    path = tmp_path / "file.part"
    path.touch()
    with path.open("r+b") as f:
        sink = _FailingSink(f, fail_at)
        with pytest.raises(OSError, match="No space left") as failed:
            _drive(sink, [(0, len(_BODY), 1 << 20)])
        assert failed.value.__context__ is None  # raised once: end() did not raise over it
        assert sink._direct_fd is None and sink._writer is None  # released all the same
    assert path.read_bytes() == _BODY[:fail_at]  # cut where it failed, no stage after it: a resume from the size is right


class _SlowSink(FileSink):
    """A FileSink whose writes take 20 ms each, so that some are still queued when the body restarts."""

    def _write_at(self, data: memoryview, offset: int) -> None:
        time.sleep(0.02)
        super()._write_at(data, offset)


def test_a_restart_waits_for_the_writes_in_flight_before_it_truncates(tmp_path: Path) -> None:
    path = tmp_path / "file.part"
    path.touch()
    stale = bytes(reversed(_BODY))
    with path.open("r+b") as f:
        sink = _SlowSink(f, direct=True)
        sink.reset(len(_BODY))
        for offset in range(0, 3 << 20, 1 << 20):  # three whole stages handed to the writer, no end(): a 200 comes next
            window = sink.window(offset)
            window[: 1 << 20] = stale[offset : offset + (1 << 20)]
            sink.landed(offset, 1 << 20)
        _drive(sink, [(0, 1 << 19, 1 << 20)])  # the restart is cut after half a MiB
    assert path.read_bytes() == _BODY[: 1 << 19]  # nothing of the first body landed after the truncation
