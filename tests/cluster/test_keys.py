"""API keys behind nginx (issue 17, item 1): the cache never gives a stored answer to a request without a valid key.

The keyed cluster's replicas require ``TENSORINIT_API_KEYS`` (conftest.KEYS); nginx asks
a replica about the key before every answer it could take from its cache
(deploy/nginx.conf, "API keys"). Each refused request is tried after a keyed one has
stored the answer, so that a leak would be a HIT with the stored bytes.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from deploy.cluster import AUTH_REQUEST, TEMPLATE, Cluster

from .conftest import KEYS, upstream_count

KEYED = {"Authorization": f"Bearer {KEYS[0]}"}
SHAPE = "shape=64,64&seed=201"

# Every GET form nginx caches: the flat and per-scheme /init and /stats.
PATHS = [f"/init?scheme=he_normal&{SHAPE}", f"/init/he_normal?{SHAPE}", f"/stats?scheme=he_normal&{SHAPE}", f"/stats/he_normal?{SHAPE}"]
# The checkpoint files' GET forms (issue 19), cached in slices as /init is: by catalogue name and by the Hub protocol.
FILE_PATHS = ["/models/gpt2/checkpoint/model.safetensors?seed=201", "/tensorinit/gpt2/resolve/seed-201/model.safetensors"]

# (method, headers) of requests without a valid key; "{etag}" is the stored answer's ETag.
REFUSED = [
    ("GET", {}),
    ("GET", {"Authorization": "Bearer wrong-key"}),
    ("GET", {"Authorization": f"Bearer {KEYS[0]}x"}),  # a valid key's prefix is not a key
    ("GET", {"Authorization": f"Basic {KEYS[0]}"}),
    ("GET", {"Authorization": "Bearer"}),
    ("GET", {"X-API-Key": KEYS[0]}),  # the service takes keys as bearer tokens only
    ("HEAD", {}),
    ("HEAD", {"Authorization": "Bearer wrong-key"}),
    ("GET", {"Range": "bytes=0-99"}),
    ("GET", {"Range": "bytes=-10", "Authorization": "Bearer wrong-key"}),
    ("GET", {"Range": "bytes=99999999-"}),  # beyond the end: nginx's own 416 for a keyed request
    ("GET", {"If-None-Match": "{etag}"}),
    ("GET", {"Range": "bytes=0-99", "If-Range": "{etag}"}),
]


def stored(cluster: Cluster, path: str) -> httpx.Response:
    """The answer to ``path`` as a keyed client gets it once nginx has stored it (a HIT; at most two requests)."""
    for _ in range(2):
        answer = httpx.get(cluster.url + path, headers=KEYED, timeout=30)
        assert answer.status_code == 200, answer.text
        if answer.headers["x-cache-status"] == "HIT":
            return answer
    raise AssertionError(f"{path}: a second keyed GET was not a HIT")


@pytest.mark.parametrize("path", PATHS + FILE_PATHS)
@pytest.mark.parametrize(("method", "headers"), REFUSED)
def test_no_stored_answer_without_a_valid_key(keyed_cluster: Cluster, path: str, method: str, headers: dict[str, str]) -> None:
    hit = stored(keyed_cluster, path)
    etag = hit.headers.get("etag", '"none"')  # /stats has none
    sent = {name: value.replace("{etag}", etag) for name, value in headers.items()}
    refused = httpx.request(method, keyed_cluster.url + path, headers=sent, timeout=30)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["x-cache-status"] == "BYPASS"  # never from the cache
    assert len(refused.headers.get_list("www-authenticate")) == 1 and refused.headers["www-authenticate"].startswith("Bearer")
    assert "etag" not in refused.headers and "content-range" not in refused.headers
    if method == "GET":
        assert refused.json()["status"] == 401 and refused.content != hit.content
    else:
        assert refused.content == b""
    again = httpx.get(keyed_cluster.url + path, headers=KEYED, timeout=30)
    # Nor was the 401 stored. A checkpoint file named by seed is fresh for a minute, then
    # revalidated with its ETag (a 304 from a replica, the stored bytes served): either is the entry.
    fresh = ("HIT", "REVALIDATED") if path in FILE_PATHS else ("HIT",)
    assert again.headers["x-cache-status"] in fresh and again.content == hit.content


@pytest.mark.parametrize("path", PATHS)
def test_keyed_clients_share_one_entry_and_hit_as_before(keyed_cluster: Cluster, path: str) -> None:
    route = path.split("?", maxsplit=1)[0]
    fresh = path.replace("seed=201", "seed=202")
    before = upstream_count(keyed_cluster, route, KEYED)
    answers = [httpx.get(keyed_cluster.url + fresh, headers={"Authorization": f"Bearer {key}"}, timeout=30) for key in (*KEYS, KEYS[0])]
    assert [a.headers["x-cache-status"] for a in answers] == ["MISS", "HIT", "HIT"]  # another key: the same entry
    assert len({a.content for a in answers}) == 1
    assert upstream_count(keyed_cluster, route, KEYED) == before + 1  # the key checks go to GET /auth, not to the route


# (path, method, headers, status) of keyed requests answered from the cache.
KEYED_HITS: list[tuple[str, str, dict[str, str], int]] = [
    *((path, method, {}, 200) for path in PATHS for method in ("GET", "HEAD")),
    *((path, "GET", {"Range": "bytes=0-9"}, 206) for path in PATHS[:2]),
    *((path, "GET", {"If-None-Match": "{etag}"}, 304) for path in PATHS[:2]),  # /stats has no ETag
]


@pytest.mark.parametrize(("path", "method", "headers", "status"), KEYED_HITS)
def test_keyed_answers_never_say_public(keyed_cluster: Cluster, path: str, method: str, headers: dict[str, str], status: int) -> None:
    hit = stored(keyed_cluster, path)
    sent = {**KEYED, **{name: value.replace("{etag}", hit.headers.get("etag", "")) for name, value in headers.items()}}
    answer = httpx.request(method, keyed_cluster.url + path, headers=sent, timeout=30)
    assert answer.status_code == status and answer.headers["x-cache-status"] == "HIT"
    directives = [d.strip().lower() for d in answer.headers.get("cache-control", "").split(",")]
    assert "public" not in directives
    if status != 304:
        assert any(d.startswith("max-age=") for d in directives)  # what nginx stores it by


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/healthz", {}, 200),
        ("GET", "/readyz", {}, 200),
        ("GET", "/", {}, 200),  # the page: it asks for the key
        ("GET", "/auth", {}, 401),
        ("GET", "/auth", KEYED, 204),
        ("GET", AUTH_REQUEST, KEYED, 404),  # nginx's internal location
        ("GET", "/version", {}, 401),
        ("POST", "/init", {}, 401),
        ("POST", "/init", KEYED, 200),
    ],
)
def test_what_is_not_cached_is_the_replicas_to_check(
    keyed_cluster: Cluster, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    body = {"scheme": "zeros", "shape": [2, 2]} if method == "POST" else None
    answer = httpx.request(method, keyed_cluster.url + path, headers=headers, json=body, timeout=30)
    assert answer.status_code == status


def test_the_keyed_cluster_renders_the_check_and_the_open_one_does_not(keyed_cluster: Cluster) -> None:
    assert keyed_cluster.auth_request == AUTH_REQUEST
    assert f"auth_request {AUTH_REQUEST};" in keyed_cluster.config.read_text()


def _blocks(text: str, head: str) -> list[str]:
    """The bodies of the ``head ... { ... }`` blocks of an nginx config (nested braces included)."""
    found = []
    for match in re.finditer(head, text):
        depth, start = 0, text.index("{", match.end())
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                found.append(text[start + 1 : i])
                break
    return found


def test_every_location_that_caches_asks_about_the_key() -> None:
    """Generic, for locations added later (the Hub's files): the check is the server's, and a caching location keeps it."""
    config = re.sub(r"#.*", "", TEMPLATE.read_text())
    (server,) = _blocks(config, r"\bserver\s*(?=\{)")
    outside_locations = re.sub(r"location[^{]*\{(?:[^{}]|\{[^{}]*\})*\}", "", server)
    assert re.search(r"^\s*auth_request \$\{TENSORINIT_NGINX_AUTH_REQUEST\};", outside_locations, re.M)
    locations = _blocks(server, r"\blocation\b[^{]*")
    caching = [body for body in locations if re.search(r"^\s*proxy_cache\s+(?!off)", body, re.M)]
    assert len(caching) >= 2  # /init and /stats at least
    for body in caching:
        assert not re.search(r"auth_request\s+off", body)


def test_no_location_with_its_own_error_page_loses_the_servers() -> None:
    """nginx inherits error_page only into a level that has none: one there would drop the refusal's @refused and @unavailable."""
    config = re.sub(r"#.*", "", TEMPLATE.read_text())
    (server,) = _blocks(config, r"\bserver\s*(?=\{)")
    for body in _blocks(server, r"\blocation\b[^{]*"):
        assert "error_page" not in body


@pytest.mark.parametrize("path", ["/models/gpt2/checkpoint/config.json", "/tensorinit/gpt2/resolve/main/config.json"])
def test_a_checkpoint_file_without_a_key_is_the_replicas_401_problem(keyed_cluster: Cluster, path: str) -> None:
    """The files' location once had an error_page of its own, which dropped the server's @refused: nginx's HTML 401."""
    refused = httpx.get(keyed_cluster.url + path, timeout=30)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json" and refused.json()["status"] == 401
    assert httpx.get(keyed_cluster.url + path, headers=KEYED, timeout=30).status_code == 200


# (method, path, headers) while no replica runs: through the key check (a cached GET, its
# HEAD and Range) and past it (POST /init, uncached: the replica's to check, nginx's 502).
WHILE_DOWN = [
    ("GET", f"/init?scheme=he_normal&{SHAPE}", KEYED),
    ("HEAD", f"/init/he_normal?{SHAPE}", KEYED),
    ("GET", f"/init?scheme=he_normal&{SHAPE}", {**KEYED, "Range": "bytes=0-9"}),
    ("GET", f"/stats?scheme=he_normal&{SHAPE}", {}),
    ("POST", "/init", KEYED),
    ("GET", "/version", KEYED),
]


def test_with_every_replica_down_each_answer_is_a_503_problem_to_retry(keyed_cluster: Cluster) -> None:
    """Last in this module: it stops the replicas, and starts them again before it ends."""
    for path in PATHS:
        stored(keyed_cluster, path)  # even a stored answer needs a replica to check the key
    for replica in keyed_cluster.replicas:
        replica.stop()
    try:
        for method, path, headers in WHILE_DOWN:
            body = {"scheme": "zeros", "shape": [2, 2]} if method == "POST" else None
            answer = httpx.request(method, keyed_cluster.url + path, headers=headers, json=body, timeout=60)
            where = f"{method} {path}"
            assert answer.status_code == 503, (where, answer.status_code, answer.text[:200])
            assert answer.headers["content-type"] == "application/problem+json", where
            assert answer.headers["retry-after"] == "1", where
            assert len(answer.headers.get_list("x-request-id")) == 1, where
            if method != "HEAD":
                assert answer.json()["status"] == 503 and "replica" in answer.json()["detail"], where
    finally:
        assert len(keyed_cluster.revive()) == len(keyed_cluster.replicas)
    # Back: nginx tries the replicas again once their fail_timeout (5 s) has passed; until then, 503s to retry.
    deadline = time.monotonic() + 20
    while (answer := httpx.get(keyed_cluster.url + PATHS[0], headers=KEYED, timeout=30)).status_code == 503:
        assert time.monotonic() < deadline, "the revived replicas got no request"
        time.sleep(float(answer.headers["retry-after"]) / 4)
    assert answer.status_code == 200
