"""A checkpoint's files through nginx: cached like /init, so a second client's download reaches no replica."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.cluster import Cluster, nginx_binary
from tests.tiny_models import write_models

from .conftest import free_ports, upstream_count

RESOLVE = "/{org}/{repo}/resolve/{revision}/{file}"
FILES = "/models/{model}/checkpoint/{file}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    try:
        nginx_binary()
    except FileNotFoundError as err:
        pytest.fail(str(err))
    state = tmp_path_factory.mktemp("cluster")
    state.chmod(0o755)
    models = write_models(tmp_path_factory.mktemp("models"))
    port, *ports = free_ports(2)
    with Cluster(port, ports, state, env={"TENSORINIT_ACCESS_LOG": "off", "TENSORINIT_MODELS_DIR": str(models)}) as running:
        yield running


def test_a_checkpoint_file_is_a_miss_then_a_hit(cluster: Cluster) -> None:
    url = f"{cluster.url}/models/tiny-llama/checkpoint/model.safetensors?seed=5"
    direct = httpx.get(f"{cluster.replicas[0].url}/models/tiny-llama/checkpoint/model.safetensors?seed=5")
    first = httpx.get(url)
    before = upstream_count(cluster, FILES)
    second = httpx.get(url)
    assert before >= 2  # the direct GET and the miss: the label is the route's
    assert (first.headers["x-cache-status"], second.headers["x-cache-status"]) == ("MISS", "HIT")
    assert first.content == second.content == direct.content
    assert second.headers["etag"] == direct.headers["etag"]
    assert upstream_count(cluster, FILES) == before


DOWNLOAD = """
import json, sys
from huggingface_hub import snapshot_download
from pathlib import Path
folder = Path(snapshot_download("tensorinit/tiny-llama", revision="seed-3"))
print(json.dumps({p.name: p.stat().st_size for p in folder.iterdir()}))
"""


def _download(cluster: Cluster, home: Path) -> dict[str, int]:
    env = {
        **os.environ,
        "HF_HOME": str(home),
        "HF_ENDPOINT": cluster.url,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    done = subprocess.run([sys.executable, "-c", DOWNLOAD], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    sizes: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return sizes


def test_a_second_hub_client_is_served_from_nginx(cluster: Cluster, tmp_path: Path) -> None:
    first = _download(cluster, tmp_path / "first")
    before = upstream_count(cluster, RESOLVE)
    assert before > 0  # the first client's HEADs and GETs reached the replicas
    second = _download(cluster, tmp_path / "second")
    assert first == second
    assert set(first) == {"config.json", "model.safetensors"}
    assert upstream_count(cluster, RESOLVE) == before  # every HEAD and GET of the files a HIT
