"""The requests whose output digests are pinned in ``vectors.json``.

Every scheme, every convention and every dtype appears; several span more than one
chunk of work, and the last rows are slices (shards) of every kind of source. Changing this list or the algorithm means running ``make golden`` deliberately.
"""

from __future__ import annotations

from typing import Any

from service.core import SCHEMES

CONVENTIONS = ("torch", "keras", "jax", "haiku")
DTYPES = ("float32", "bfloat16", "float16", "float64")


def _shape(scheme: str) -> list[int]:
    return {
        "dirac": [16, 8, 3, 3],
        "delta_orthogonal": [3, 3, 8, 16],
        "sparse": [64, 32],
        "orthogonal": [96, 64],
        "identity": [2, 32, 48],
    }.get(scheme, [300, 1000])  # 300,000 elements: two blocks, the second ragged


def _params(scheme: str) -> dict[str, Any]:
    return {"constant": {"value": 0.125}, "sparse": {"sparsity": 0.25}}.get(scheme, {})


def cases() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, scheme in enumerate(sorted(SCHEMES)):
        for j, convention in enumerate(CONVENTIONS):
            if scheme in ("dirac", "delta_orthogonal", "sparse") and convention in ("keras", "haiku"):
                continue
            shape = _shape(scheme)
            if scheme == "dirac" and convention == "jax":
                shape = [3, 3, 8, 16]
            if scheme == "delta_orthogonal" and convention == "torch":
                shape = [16, 8, 3, 3]
            out.append(
                {
                    "scheme": scheme,
                    "shape": shape,
                    "convention": convention,
                    "dtype": DTYPES[(i + j) % 4],
                    "seed": 1000 * i + j,
                    "name": f"layers.{i}.{scheme}.weight",
                    "params": _params(scheme),
                }
            )
    out += [
        {"scheme": "he_normal", "shape": [], "convention": "keras", "dtype": "float32", "seed": 0, "name": "scalar", "params": {}},
        {
            "scheme": "truncated_normal",
            "shape": [5000],
            "convention": "jax",
            "dtype": "float32",
            "seed": 2**64 - 1,
            "name": "tail",
            "params": {"lower": 2.5, "upper": 9.0},
        },
        {
            "scheme": "truncated_normal",
            "shape": [5000],
            "convention": "jax",
            "dtype": "float64",
            "seed": 3,
            "name": "narrow",
            "params": {"lower": -3.2, "upper": -3.0},
        },
        {
            "scheme": "he_uniform",
            "shape": [4, 16, 32],
            "convention": "jax",
            "dtype": "bfloat16",
            "seed": 5,
            "name": "ünïcode·名前",
            "params": {},
            "in_axes": [1],
            "out_axes": [2],
            "batch_axes": [0],
        },
        {"scheme": "he_normal", "shape": [0, 7], "convention": "keras", "dtype": "float32", "seed": 1, "name": "empty", "params": {}},
    ]
    # Shards: the bytes of full[slice], from every kind of source.
    for k, (scheme, shape, part, dtype, convention) in enumerate(
        [
            ("he_normal", [300, 1000], "100:200,::3", "bfloat16", "torch"),
            ("he_uniform", [300, 1000], ":,999:", "float16", "keras"),
            ("truncated_normal", [5000], "1::7", "float64", "jax"),
            ("glorot_normal", [300, 1000], "-1:,:", "float32", "keras"),
            ("orthogonal", [96, 64], ":,10:20", "float64", "haiku"),
            ("delta_orthogonal", [3, 3, 8, 16], "1:2,1:2,:,3:", "float32", "jax"),
            ("sparse", [64, 32], "::2", "float32", "torch"),
        ]
    ):
        out.append(
            {
                "scheme": scheme,
                "shape": shape,
                "convention": convention,
                "dtype": dtype,
                "seed": 7000 + k,
                "name": f"shard.{k}",
                "params": _params(scheme),
                "slice": part,
            }
        )
    return out


def resolve_case(case: dict[str, Any]) -> Any:
    from service.core import resolve

    kwargs = {k: v for k, v in case.items() if k not in ("scheme", "shape", "params")}
    return resolve(case["scheme"], case["shape"], params=case["params"], **kwargs)
