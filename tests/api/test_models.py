"""Models over HTTP: the catalogue, checkpoint plans and files, and the Hub protocol through the real huggingface_hub and transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.core.checkpoint import checkpoint
from tests.conftest import LiveServer
from tests.tiny_models import TINY
from tests.tiny_models import models_server as models_server_of


@pytest.fixture(scope="module")
def models_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with models_server_of(tmp_path_factory.mktemp("models")) as live:
        yield live


@pytest.fixture
def http(models_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=models_server.url, timeout=60) as client:
        yield client


def test_models_lists_the_architectures_and_the_catalogue(http: httpx.Client) -> None:
    found = http.get("/models").json()
    types = {a["model_type"] for a in found["architectures"]}
    assert {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gpt2", "opt", "bert", "t5", "mixtral"} <= types
    names = {m["name"]: m for m in found["models"]}
    assert {"gpt2", "llama-3.2-1b", "mixtral-8x7b-v0.1", "tiny-llama", "tiny-gpt2"} <= set(names)
    assert names["tiny-llama"]["repo"] == "tensorinit/tiny-llama"


def test_the_plan_is_the_engines_and_each_file_is_served_as_planned(http: httpx.Client) -> None:
    plan = http.get("/models/tiny-llama/checkpoint", params={"seed": 7, "max_shard_size": "100KB"}).json()
    engine = checkpoint(TINY["tiny-llama"], seed=7, max_shard_size="100KB")
    assert plan["commit"] == engine.commit
    assert [(f["name"], f["size"], f["etag"]) for f in plan["files"]] == [(f.name, f.size, f.etag) for f in engine.files.values()]
    assert plan["index"] == engine.index
    assert len(engine.shards) > 2
    for entry in plan["files"]:
        url = f"/models/tiny-llama/checkpoint/{entry['name']}?seed=7&max_shard_size=100KB"
        head = http.head(url)
        got = http.get(url)
        assert got.status_code == head.status_code == 200
        assert int(head.headers["content-length"]) == len(got.content) == entry["size"]
        assert got.headers["etag"] == head.headers["etag"] == f'"{entry["etag"]}"'
        assert "content-encoding" not in got.headers
        item = engine.files[entry["name"]]
        assert got.content == (item.content if item.plan is None else item.plan.read())
        assert http.get(url, headers={"If-None-Match": got.headers["etag"]}).status_code == 304
        part = http.get(url, headers={"Range": "bytes=10-99"})
        assert part.status_code == 206
        assert part.content == got.content[10:100]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("GET", "/models/nope/checkpoint", None, 404, "tiny-llama"),
        ("GET", "/models/tiny-llama/checkpoint?max_shard_size=5GiB", None, 422, "max_shard_size"),
        ("GET", "/models/tiny-llama/checkpoint?seed=-1", None, 422, "seed"),
        ("GET", "/models/tiny-llama/checkpoint?dtype=int8", None, 422, "dtype"),
        ("GET", "/models/tiny-llama/checkpoint?colour=red", None, 422, "colour"),
        ("GET", "/models/tiny-llama/checkpoint/model-00009-of-00009.safetensors", None, 404, "config.json"),
        ("POST", "/checkpoint", {"config": {"model_type": "resnet"}}, 422, "llama"),
        ("POST", "/checkpoint", {"config": {"model_type": "llama"}, "model": "gpt2"}, 422, "exactly one"),
        ("POST", "/checkpoint", {"model": "gpt2", "max_shard_size": "1GB", "dtype": "float16", "seed": 1, "colour": 1}, 422, "colour"),
    ],
)
def test_errors_name_what_is_wrong(http: httpx.Client, method: str, path: str, body: Any, status: int, says: str) -> None:
    answer = http.request(method, path, json=body)
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"
    assert says in answer.text


LONG = "x" * 10_000
LLAMA = b'{"config": {"model_type": "llama", "num_hidden_layers": 1, '


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"/api/models/tensorinit/{LONG}", None),
        (f"/api/models/{LONG}/gpt2", None),
        (f"/tensorinit/{LONG}/resolve/main/config.json", None),
        (f"/models/tiny-llama/checkpoint?{LONG}=1", None),
        ("/checkpoint", LLAMA + f'"{LONG}": 1e400}}}}'.encode()),
        ("/checkpoint", LLAMA + f'"{LONG}": "\\ud800"}}}}'.encode()),
    ],
)
def test_a_long_name_is_not_echoed_in_full(http: httpx.Client, path: str, body: bytes | None) -> None:
    answer = http.request("GET" if body is None else "POST", path, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code in (404, 422), answer.text[:300]
    assert answer.headers["content-type"] == "application/problem+json"
    assert len(answer.content) < 2000, len(answer.content)


def test_a_config_in_the_body_gives_the_catalogue_names_files(http: httpx.Client) -> None:
    body = {"config": TINY["tiny-gpt2"], "seed": 3, "dtype": "bfloat16"}
    by_body = http.post("/checkpoint", json=body).json()
    by_name = http.get("/models/tiny-gpt2/checkpoint", params={"seed": 3, "dtype": "bfloat16"}).json()
    assert by_body["files"] == by_name["files"]
    assert by_body["dtype"] == "bfloat16"
    shard = http.post("/checkpoint/model.safetensors", json=body)
    assert shard.content == http.get("/models/tiny-gpt2/checkpoint/model.safetensors?seed=3&dtype=bfloat16").content
    assert shard.headers["cache-control"] == "no-store"


def test_hub_answers_carry_the_commit_and_its_errors_their_codes(http: httpx.Client) -> None:
    info = http.get("/api/models/tensorinit/tiny-llama/revision/seed-7").json()
    commit = info["sha"]
    assert len(commit) == 40
    assert {s["rfilename"] for s in info["siblings"]} == {"config.json", "model.safetensors"}
    for revision in ("seed-7", commit):
        answer = http.head(f"/tensorinit/tiny-llama/resolve/{revision}/model.safetensors")
        assert answer.headers["x-repo-commit"] == commit
        etag = answer.headers["etag"].strip('"')
        assert len(etag) == 40  # not 64: huggingface_hub would take it for the file's sha256
    assert http.head("/tensorinit/tiny-llama/resolve/main/model.safetensors").headers["x-repo-commit"] != commit
    tree = http.get(f"/api/models/tensorinit/tiny-llama/tree/{commit}", params={"recursive": "true"}).json()
    assert {e["path"]: e["size"] for e in tree} == {s["rfilename"]: s["size"] for s in info["siblings"]}
    missing = http.get(f"/tensorinit/tiny-llama/resolve/{commit}/pytorch_model.bin")
    assert (missing.status_code, missing.headers["x-error-code"], missing.headers["x-repo-commit"]) == (404, "EntryNotFound", commit)
    for path, code in [
        ("/tensorinit/nope/resolve/main/config.json", "RepoNotFound"),
        ("/someone/tiny-llama/resolve/main/config.json", "RepoNotFound"),
        ("/tensorinit/tiny-llama/resolve/v1.0/config.json", "RevisionNotFound"),
        (f"/tensorinit/tiny-llama/resolve/{'0' * 24}{commit[24:]}/config.json", "RevisionNotFound"),
        ("/api/models/tensorinit/nope/revision/main", "RepoNotFound"),
    ]:
        answer = http.get(path)
        assert (answer.status_code, answer.headers["x-error-code"]) == (404, code), path


HUB_SCRIPT = """
import json, re, sys
import httpx, torch
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
from safetensors.torch import load
from transformers import AutoModelForCausalLM

url = sys.argv[1]
out = {}

def resolve_gets():
    text = httpx.get(url + "/metrics").text
    lines = [l for l in text.splitlines() if l.startswith("tensorinit_http_requests_total{") and 'method="GET"' in l and "resolve" in l]
    return sum(float(l.rsplit(" ", 1)[1]) for l in lines)

model, info = AutoModelForCausalLM.from_pretrained("tensorinit/tiny-llama", revision="seed-7", output_loading_info=True)
out["info"] = {k: sorted(map(str, v)) for k, v in info.items()}
served = load(httpx.get(url + "/tensorinit/tiny-llama/resolve/seed-7/model.safetensors").content)
state = model.state_dict()
out["keys_equal"] = sorted(served) == sorted(state)
out["values_equal"] = all(torch.equal(served[k], state[k]) for k in served)
out["logits"] = list(model(torch.tensor([[1, 2, 3]])).logits.shape)
before = resolve_gets()
out["first_load_gets"] = before
again = AutoModelForCausalLM.from_pretrained("tensorinit/tiny-llama", revision="seed-7")
out["second_load_gets"] = resolve_gets() - before
out["second_equal"] = all(torch.equal(v, again.state_dict()[k]) for k, v in state.items())
folder = snapshot_download("tensorinit/tiny-gpt2")
out["snapshot"] = sorted(p.name for p in __import__("pathlib").Path(folder).iterdir())
out["download"] = json.load(open(hf_hub_download("tensorinit/tiny-gpt2", "config.json", revision="seed-2")))["model_type"]
for repo, name, error in [("tensorinit/tiny-gpt2", "nope.json", EntryNotFoundError), ("tensorinit/nope", "config.json", RepositoryNotFoundError)]:
    try:
        hf_hub_download(repo, name)
        out[name] = "no error"
    except error as err:
        out[name] = type(err).__name__
print(json.dumps(out))
"""


def test_from_pretrained_snapshot_and_download_through_the_hub_protocol(models_server: LiveServer, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": models_server.url,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(HUB_SCRIPT), models_server.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["info"] == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    assert out["keys_equal"]
    assert out["values_equal"]  # nothing redrawn by transformers: the served bytes, as they are
    assert out["logits"] == [1, 3, TINY["tiny-llama"]["vocab_size"]]
    assert out["first_load_gets"] > 0  # the metric counts the resolve route's GETs
    assert out["second_load_gets"] == 0  # the second load came from the local cache (HEADs only)
    assert out["second_equal"]
    assert out["snapshot"] == ["config.json", "model.safetensors"]
    assert out["download"] == "gpt2"
    assert out["nope.json"] == "RemoteEntryNotFoundError"
    assert out["config.json"] == "RepositoryNotFoundError"


def test_with_api_keys_the_hub_routes_take_the_token_huggingface_hub_sends(tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    key = "hub-test-key"
    (tmp_path / "models").mkdir()
    with models_server_of(tmp_path / "models", api_keys=key) as live:
        path = hf_hub_download("tensorinit/tiny-gpt2", "config.json", endpoint=live.url, token=key, cache_dir=tmp_path / "hf")
        assert json.loads(Path(path).read_text())["model_type"] == "gpt2"
        with pytest.raises(HfHubHTTPError) as refused:
            hf_hub_download("tensorinit/tiny-gpt2", "model.safetensors", endpoint=live.url, token=False, cache_dir=tmp_path / "hf2")
        assert refused.value.response.status_code == 401
