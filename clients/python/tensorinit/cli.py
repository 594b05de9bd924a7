"""The ``tensorinit`` command line: checkpoints, catalogue, tensor files and their statistics from a tensorinit service.

::

    tensorinit checkpoint llama-3.2-1b -o llama-init/ --seed 7
    tensorinit checkpoint ./config.json -o run0/ --dtype bfloat16 --max-shard-size 2GB
    tensorinit models
    tensorinit init he_normal 1024,512 -o w.safetensors --seed 3 mode=fan_out
    tensorinit stats he_normal 1024,512 --seed 3

The service is ``--url``, else ``$TENSORINIT_URL``, else http://127.0.0.1:8000; an API key
``--api-key``, else ``$TENSORINIT_API_KEY``. Exit codes: 0 done, 1 the service refused
(its problem+json detail is printed), 2 a usage error, 3 the service could not be reached
or a transfer could not be completed, 4 received bytes that are not what was planned, 5 a
local file operation failed (a full disk, an output path through a file), 130
interrupted. argparse: the standard library's, so the client needs nothing more for it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from . import _checkpoint
from ._base import __version__
from ._checkpoint import DEFAULT_CONNECTIONS
from ._client import Client
from ._errors import APIConnectionError, APIError, IntegrityError

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTEGRITY, EXIT_LOCAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 130


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the service (default: $TENSORINIT_URL, else http://127.0.0.1:8000)")
    parser.add_argument("--api-key", help="an API key (default: $TENSORINIT_API_KEY)")


def _value(text: str) -> Any:
    """A scheme parameter's value from ``key=value``: JSON when it parses (numbers, true), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _params(items: Sequence[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"scheme parameters are key=value, got {item!r}")
        params[key] = _value(value)
    return params


def _shape(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is comma-separated integers, e.g. 1024,512; got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tensorinit",
        description="Reproducibly initialized tensors and model checkpoints from a tensorinit service.",
        epilog="Exit codes: 0 done, 1 refused by the service (its detail printed), 2 usage, 3 unreachable or cut, 4 integrity,"
        " 5 a local file operation failed, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"tensorinit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    checkpoint = commands.add_parser(
        "checkpoint",
        help="write a Hugging Face checkpoint directory (config.json, safetensors shards, index) that from_pretrained loads",
        description="Write config.json, the safetensors shards and model.safetensors.index.json of CONFIG's model, "
        "initialized as transformers initializes it, into DIR. Running it again keeps finished files and resumes cut ones.",
    )
    checkpoint.add_argument(
        "config", metavar="CONFIG", help="a config.json path (or a directory holding one), or a catalogue name (see: tensorinit models)"
    )
    checkpoint.add_argument("-o", "--output", required=True, metavar="DIR", help="the directory to write (created if missing)")
    checkpoint.add_argument("--seed", type=int, default=0, help="0 <= seed < 2^64 (default 0)")
    checkpoint.add_argument("--dtype", help="float32, bfloat16, float16 or float64 (default: the config's dtype)")
    checkpoint.add_argument(
        "--max-shard-size", metavar="SIZE", help='bytes per shard file, e.g. "500MB" or "5GB" (powers of 10; default 5GB)'
    )
    checkpoint.add_argument(
        "--connections", type=int, default=DEFAULT_CONNECTIONS, help=f"files fetched in parallel (default {DEFAULT_CONNECTIONS})"
    )
    checkpoint.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on a terminal)")
    _common(checkpoint)

    models = commands.add_parser("models", help="list the supported architectures and the catalogue of configs")
    _common(models)

    init = commands.add_parser(
        "init", help="write a safetensors file of one tensor", description="Write one initialized tensor to a safetensors file."
    )
    init.add_argument("scheme", help="a scheme name or alias (GET /schemes)")
    init.add_argument("shape", type=_shape, help="comma-separated, e.g. 1024,512")
    init.add_argument("params", nargs="*", metavar="KEY=VALUE", help="scheme parameters, e.g. mode=fan_out gain=2")
    init.add_argument("-o", "--output", required=True, metavar="FILE", help="the safetensors file to write")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--dtype", default="float32")
    init.add_argument("--name", default="weight", help="the tensor's name in the file (default weight)")
    init.add_argument("--no-progress", action="store_true")
    _common(init)

    stats = commands.add_parser("stats", help="print a tensor's statistics as JSON (nothing downloaded)")
    stats.add_argument("scheme")
    stats.add_argument("shape", type=_shape)
    stats.add_argument("params", nargs="*", metavar="KEY=VALUE")
    stats.add_argument("--seed", type=int, default=0)
    stats.add_argument("--dtype", default="float32")
    _common(stats)
    return parser


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    with Client(args.url, api_key=args.api_key) as client:
        if args.command == "checkpoint":
            try:  # only CONFIG's reading is a usage error: a failed write later is not (exit 5)
                src = _checkpoint.source(args.config, seed=args.seed, dtype=args.dtype, max_shard_size=args.max_shard_size)
            except (FileNotFoundError, ValueError) as err:  # neither a readable config.json nor a name
                parser.error(str(err))
            directory = client.checkpoint(
                src.config if src.config is not None else str(src.name),
                args.output,
                seed=args.seed,
                dtype=args.dtype,
                max_shard_size=args.max_shard_size,
                connections=args.connections,
                progress=False if args.no_progress else None,
            )
            print(directory)
        elif args.command == "models":
            found = client.models()
            for entry in found["models"]:
                print(f"{entry['name']:<24} {entry.get('model_type') or '':<10} {' '.join(entry.get('architectures') or [])}")
            print(f"architectures: {', '.join(a['model_type'] for a in found['architectures'])}")
        elif args.command == "init":
            request = {
                "scheme": args.scheme,
                "shape": args.shape,
                "seed": args.seed,
                "dtype": args.dtype,
                "name": args.name,
                **_params(args.params, parser),
            }
            print(client.download(request, args.output, progress=False if args.no_progress else None))
        else:
            found_stats = client.stats(args.scheme, args.shape, seed=args.seed, dtype=args.dtype, **_params(args.params, parser))
            print(json.dumps(found_stats.raw, indent=2))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (``tensorinit`` exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args, parser)
    except APIError as err:
        print(f"tensorinit: the service refused: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except IntegrityError as err:
        print(f"tensorinit: {err}", file=sys.stderr)
        return EXIT_INTEGRITY
    except APIConnectionError as err:
        print(f"tensorinit: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except OSError as err:  # the network's errors are APIConnectionErrors, above: this is a local file or directory
        print(f"tensorinit: a local file operation failed: {err}", file=sys.stderr)
        return EXIT_LOCAL
    except KeyboardInterrupt:
        print("tensorinit: interrupted (run it again to resume)", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
