"""A model's starting checkpoint on disk: the command line against transformers' own route, and against the disk.

    python -m bench.checkpoint [--model llama-3.2-1b] [--no-transformers] [--max-rss-gib G] [--dir D]

In one run, on this machine and disk:

- ours: ``tensorinit checkpoint MODEL -o DIR`` (the command line, in its own process)
  against the service (``python -m service.api.serve``, started here on a loopback port),
  with the peak RSS of the client and of the server above its idle RSS;
- the disk's ceiling: the same number of bytes written from memory to the same disk,
  file by file as the checkpoint's (64 MiB writes, no fsync, as neither side fsyncs), both
  buffered and with O_DIRECT (as the client writes checkpoint files); the faster is the ceiling;
- transformers: ``AutoModelForCausalLM.from_config(config, dtype=<the checkpoint's>)`` then
  ``save_pretrained(DIR, max_shard_size="5GB")``, in its own process, with its peak RSS.

Printed: seconds, GB/s and peak RSS of each, and the ratios the issue asks about
(ours vs transformers ≥ 10x, ours vs the disk ≥ 0.7x).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.server import ROOT, peak_rss_while, rss_kib, server

TRANSFORMERS = """
import json, sys, torch
from transformers import AutoConfig, AutoModelForCausalLM
config = AutoConfig.for_model(**json.load(open(sys.argv[1])))
model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, sys.argv[3]))
model.save_pretrained(sys.argv[2], max_shard_size="5GB")
"""


class OverCeilingError(RuntimeError):
    """The command's RSS passed the ceiling it was given: killed, so that the machine keeps its memory."""


def run_sampled(cmd: list[str], env: dict[str, str] | None = None, max_rss_kib: int | None = None) -> tuple[float, int]:
    """Seconds a command takes and its peak RSS in KiB (VmHWM, read until it exits); killed past ``max_rss_kib``."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            break
        if max_rss_kib is not None and peak > max_rss_kib:
            proc.kill()
            proc.wait()
            raise OverCeilingError(f"{time.perf_counter() - start:.1f} s, peak RSS {peak / 1024:.0f} MiB")
        time.sleep(0.02)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed: {err.decode()[-2000:]}")
    return time.perf_counter() - start, peak


def disk_seconds(sizes: list[int], directory: Path, *, direct: bool = False) -> float:
    """The same bytes written from memory, one file per checkpoint file: buffered, or with O_DIRECT (as ours writes).

    64 MiB writes from one page-aligned buffer; with ``direct`` the tail past the last
    4096-byte boundary of each file is written buffered, as the client does.
    """
    block = mmap.mmap(-1, 64 << 20)
    block.write(os.urandom(64 << 20))
    view = memoryview(block)
    start = time.perf_counter()
    for i, size in enumerate(sizes):
        path = directory / f"ceiling-{i}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0))
        try:
            offset, aligned = 0, size - size % 4096 if direct else size
            while offset < aligned:
                offset += os.pwrite(fd, view[: min(aligned - offset, len(view))], offset)
        finally:
            os.close(fd)
        if offset < size:
            with path.open("r+b") as f:
                f.seek(offset)
                f.write(view[: size - offset])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llama-3.2-1b", help="a catalogue name (default llama-3.2-1b)")
    parser.add_argument("--no-transformers", action="store_true", help="skip the transformers route (e.g. for a model it cannot hold)")
    parser.add_argument(
        "--max-rss-gib",
        type=float,
        default=None,
        help="kill the transformers route once its RSS passes this (an 8B model on a 24 GiB machine); reported as such",
    )
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary directory on /tmp's disk)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-checkpoint-", dir=args.dir))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "clients/python"), os.environ.get("PYTHONPATH", "")])}
    try:
        with server("service.api.app:create_app") as (url, pid):
            plan = json.loads(
                subprocess.run(["curl", "-sf", f"{url}/models/{args.model}/checkpoint"], capture_output=True, check=True).stdout
            )
            sizes = [f["size"] for f in plan["files"]]
            total = sum(sizes)
            idle = rss_kib(pid)
            cli = [
                sys.executable,
                "-m",
                "tensorinit.cli",
                "checkpoint",
                args.model,
                "-o",
                str(work / "ours"),
                "--url",
                url,
                "--no-progress",
            ]
            timed: list[tuple[float, int]] = []
            server_peak = peak_rss_while(pid, lambda: timed.append(run_sampled(cli, env)))
            ((ours, client_peak),) = timed
        shutil.rmtree(work / "ours")
        ceilings = {}
        for direct in (False, True):
            ceilings["O_DIRECT" if direct else "buffered"] = disk_seconds(sizes, work, direct=direct)
            for path in work.glob("ceiling-*"):
                path.unlink()
        how, ceiling = min(ceilings.items(), key=lambda item: item[1])
        print(f"model {args.model}: {len(plan['files'])} files, {total / 1e9:.2f} GB, dtype {plan['dtype']}")
        print(
            f"ours (tensorinit checkpoint): {ours:7.2f} s  {total / ours / 1e9:5.2f} GB/s  client peak RSS {client_peak / 1024:6.0f} MiB,"
            f" server peak {(server_peak - idle) / 1024:6.0f} MiB above its idle {idle / 1024:.0f} MiB"
        )
        print(
            f"disk ceiling (same bytes from memory): {ceiling:7.2f} s  {total / ceiling / 1e9:5.2f} GB/s  ours/ceiling {ceiling / ours:5.2f}x"
            f"  (the faster of buffered {ceilings['buffered']:.2f} s and O_DIRECT {ceilings['O_DIRECT']:.2f} s: {how})"
        )
        if not args.no_transformers:
            (work / "config.json").write_text(json.dumps(plan["config"]))
            ceiling_kib = None if args.max_rss_gib is None else int(args.max_rss_gib * (1 << 20))
            try:
                seconds, peak = run_sampled(
                    [sys.executable, "-c", TRANSFORMERS, str(work / "config.json"), str(work / "theirs"), plan["dtype"]], env, ceiling_kib
                )
            except OverCeilingError as err:
                print(f"transformers (from_config + save_pretrained): killed past --max-rss-gib {args.max_rss_gib} ({err})")
                return
            print(
                f"transformers (from_config + save_pretrained): {seconds:7.2f} s  {total / seconds / 1e9:5.2f} GB/s  peak RSS {peak / 1024:6.0f} MiB"
            )
            print(f"ours vs transformers: {seconds / ours:5.1f}x faster")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
