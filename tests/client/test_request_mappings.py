"""Every request field the server takes passes the client's field check, and a dtype in any spelling is sent as its name.

Rows found by review: in_axes/out_axes/batch_axes were refused by the client although the
server takes them; a torch or numpy dtype inside a request mapping (stats, download, plan)
reached httpx unconverted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from tensorinit import Client

from service.core import generate, resolve


def test_axes_fields_reach_the_server(live_url: str) -> None:
    with Client(live_url) as client:
        got = client.init("he_normal", (3, 4, 5), name="w", in_axes=[0], out_axes=[1], convention="jax")
    spec = resolve("he_normal", (3, 4, 5), name="w", convention="jax", in_axes=[0], out_axes=[1])
    np.testing.assert_array_equal(got, generate(spec))


@pytest.mark.parametrize("dtype", [torch.float16, np.dtype("float16"), np.float16, "float16"], ids=str)
def test_a_dtype_in_a_request_mapping_is_sent_by_name(live_url: str, tmp_path: Path, dtype: Any) -> None:
    request = {"scheme": "normal", "shape": [8, 8], "name": "w", "dtype": dtype}
    with Client(live_url) as client:
        stats = client.stats(request)
        path = client.download(request, tmp_path / "w.safetensors")
        plan = client.plan({"fc.weight": {"shape": [4, 4], "kind": "linear", "dtype": dtype}}, recipe="torch")
    assert stats["w"].empirical.count == 64
    with safe_open(str(path), "np") as f:
        assert f.get_tensor("w").dtype == np.float16
    assert plan["fc.weight"].raw["dtype"] == "float16"
