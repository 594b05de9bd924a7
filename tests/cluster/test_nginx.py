"""deploy/nginx.conf in front of real replicas: same bytes, the cache, its lock, slices, conditional requests."""

from __future__ import annotations

import threading

import httpx
import pytest

from deploy.cluster import Cluster

from .conftest import tensor_sha256, upstream_count

MiB = 1 << 20
SLICE = 8 * MiB  # deploy/nginx.conf: slice 8m


def init(seed: int, shape: str = "512,512", scheme: str = "he_normal") -> str:
    return f"/init?scheme={scheme}&shape={shape}&seed={seed}"


def test_same_bytes_from_every_replica_and_through_nginx_miss_and_hit(cluster: Cluster) -> None:
    query = init(101)
    direct = [httpx.get(r.url + query, timeout=30).content for r in cluster.replicas]
    miss = httpx.get(cluster.url + query, timeout=30)
    hit = httpx.get(cluster.url + query, timeout=30)
    assert (miss.headers["x-cache-status"], hit.headers["x-cache-status"]) == ("MISS", "HIT")
    assert len(direct[0]) == 8 + int.from_bytes(direct[0][:8], "little") + 512 * 512 * 4
    assert all(body == direct[0] for body in (*direct, miss.content, hit.content))
    stats = httpx.get(cluster.url + query.replace("/init", "/stats"), timeout=30).json()
    assert tensor_sha256(hit.content) == stats["tensors"]["weight"]["sha256"]


def test_a_hit_reaches_no_replica(cluster: Cluster) -> None:
    query = init(102)
    before = upstream_count(cluster)
    assert httpx.get(cluster.url + query, timeout=30).headers["x-cache-status"] == "MISS"
    filled = upstream_count(cluster)
    assert filled == before + 1  # one slice: one upstream request
    for _ in range(3):
        assert httpx.get(cluster.url + query, timeout=30).headers["x-cache-status"] == "HIT"
        assert httpx.head(cluster.url + query, timeout=30).headers["x-cache-status"] == "HIT"
    assert upstream_count(cluster) == filled


@pytest.mark.parametrize(
    "path",
    ["/init/he_normal?shape=256,128&seed=104", "/init/constant?shape=64,64&value=0.5&seed=104", "/stats/he_normal?shape=256,128&seed=104"],
)
def test_the_per_scheme_forms_are_cached_as_the_flat_form(cluster: Cluster, path: str) -> None:
    """GET /init/<scheme> and /stats/<scheme> (one path per scheme) go through the same cache, slices and lock."""
    route = path.split("?", maxsplit=1)[0]
    direct = httpx.get(cluster.replicas[0].url + path, timeout=30)
    assert direct.status_code == 200
    before = upstream_count(cluster, route)
    miss = httpx.get(cluster.url + path, timeout=30)
    filled = upstream_count(cluster, route)
    hit = httpx.get(cluster.url + path, timeout=30)
    assert (miss.headers["x-cache-status"], hit.headers["x-cache-status"]) == ("MISS", "HIT")
    assert miss.content == hit.content == direct.content
    assert miss.headers.get("etag") == hit.headers.get("etag") == direct.headers.get("etag")  # /init's; /stats has none
    assert filled == before + 1 and upstream_count(cluster, route) == filled


def test_twenty_concurrent_identical_misses_generate_once(cluster: Cluster) -> None:
    query = init(103, shape="1024,1024")  # 4 MiB: one slice
    before = upstream_count(cluster)
    bodies: list[bytes] = []
    start = threading.Barrier(20)

    def fetch() -> None:
        with httpx.Client(timeout=60) as client:
            start.wait()
            bodies.append(client.get(cluster.url + query).content)

    threads = [threading.Thread(target=fetch) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(bodies) == 20 and len(set(bodies)) == 1
    assert upstream_count(cluster) == before + 1


@pytest.mark.parametrize(
    ("header", "first", "stop"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=1000-", 1000, None),
        ("bytes=-4096", -4096, None),
        (f"bytes={SLICE - 10}-{SLICE + 9}", SLICE - 10, SLICE + 10),  # across a slice boundary
        (f"bytes={2 * SLICE + 5}-{2 * SLICE + 5}", 2 * SLICE + 5, 2 * SLICE + 6),  # one byte of the third slice
        ("bytes=0-", 0, None),
    ],
)
def test_range_through_nginx_is_that_slice_of_the_whole(cluster: Cluster, header: str, first: int, stop: int | None) -> None:
    query = init(104, shape="2560,2560")  # 25 MiB: four slices
    whole = httpx.get(cluster.replicas[0].url + query, timeout=60).content
    part = httpx.get(cluster.url + query, headers={"Range": header}, timeout=60)
    assert part.status_code == 206
    expected = whole[first:stop]
    assert part.content == expected
    begin = first % len(whole)
    assert part.headers["content-range"] == f"bytes {begin}-{begin + len(expected) - 1}/{len(whole)}"


@pytest.mark.parametrize(
    ("seed", "header", "slices"),
    [
        (105, "bytes=100-200", 1),  # inside the first slice
        (106, f"bytes={SLICE + 1}-{SLICE + 2}", 1),  # inside the second: the first is not fetched
        (107, f"bytes={SLICE - 1}-{SLICE}", 2),  # across the boundary
        (108, None, 4),  # the whole file: every slice
    ],
)
def test_a_range_fetches_only_the_slices_it_covers(cluster: Cluster, seed: int, header: str | None, slices: int) -> None:
    query = init(seed, shape="2560,2560")
    headers = {"Range": header} if header else {}
    before = upstream_count(cluster)
    answer = httpx.get(cluster.url + query, headers=headers, timeout=60)
    assert answer.status_code == (206 if header else 200) and answer.headers["x-cache-status"] == "MISS"
    assert upstream_count(cluster) == before + slices
    again = httpx.get(cluster.url + query, headers=headers, timeout=60)
    assert (again.headers["x-cache-status"], again.content) == ("HIT", answer.content)
    assert upstream_count(cluster) == before + slices


HEADERS = ("etag", "content-length", "accept-ranges", "cache-control", "content-disposition", "content-type")


def test_head_etag_304_and_if_range_as_the_service_answers_them(cluster: Cluster) -> None:
    query = init(109, shape="2048,1024")  # 8 MiB + header: two slices
    replica = cluster.replicas[1].url
    for method in ("HEAD", "GET"):  # HEAD first: a miss through nginx, then served from what GET stored
        direct = httpx.request(method, replica + query, timeout=60)
        proxied = httpx.request(method, cluster.url + query, timeout=60)
        assert proxied.status_code == direct.status_code == 200
        assert {h: proxied.headers.get(h) for h in HEADERS} == {h: direct.headers.get(h) for h in HEADERS}
        assert proxied.content == direct.content
    etag = direct.headers["etag"]
    for headers, status in (
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": f'"other", W/{etag}'}, 304),
        ({"If-None-Match": '"other"'}, 200),
        ({"Range": "bytes=10-19", "If-Range": etag}, 206),
        ({"Range": "bytes=10-19", "If-Range": '"other"'}, 200),
    ):
        direct = httpx.get(replica + query, headers=headers, timeout=60)
        proxied = httpx.get(cluster.url + query, headers=headers, timeout=60)
        assert proxied.status_code == direct.status_code == status, headers
        assert (proxied.content, proxied.headers.get("etag"), proxied.headers["x-cache-status"]) == (direct.content, etag, "HIT")


def test_errors_and_posts_are_never_stored(cluster: Cluster) -> None:
    for _ in range(2):
        before = upstream_count(cluster)
        wrong = httpx.get(cluster.url + "/init?scheme=he_normal&shape=4,4&seed=-1", timeout=30)
        assert wrong.status_code == 422 and wrong.headers["content-type"] == "application/problem+json"
        assert wrong.headers["x-cache-status"] == "MISS"
        posted = httpx.post(cluster.url + "/init", json={"scheme": "he_normal", "shape": [64, 64], "seed": 110}, timeout=30)
        assert posted.status_code == 200 and posted.headers["x-cache-status"] == "BYPASS"
        assert upstream_count(cluster) == before + 2


def test_stats_are_cached_per_accept(cluster: Cluster) -> None:
    query = "/stats?scheme=he_normal&shape=256,256&seed=111"
    before = upstream_count(cluster, "/stats")
    for accept, kind in (("application/json", "application/json"), ("text/plain", "text/plain")):
        first = httpx.get(cluster.url + query, headers={"Accept": accept}, timeout=30)
        second = httpx.get(cluster.url + query, headers={"Accept": accept}, timeout=30)
        assert [first.headers["x-cache-status"], second.headers["x-cache-status"]] == ["MISS", "HIT"]
        assert first.content == second.content and second.headers["content-type"].startswith(kind)
    assert upstream_count(cluster, "/stats") == before + 2


def test_request_ids_are_the_requests_own_also_on_a_hit(cluster: Cluster) -> None:
    query = init(112, shape="16,16")
    ids = [httpx.get(cluster.url + query, headers={"X-Request-ID": f"probe-{i}"}).headers["x-request-id"] for i in range(2)]
    assert ids == ["probe-0", "probe-1"]
    fresh = {httpx.get(cluster.url + query).headers["x-request-id"] for _ in range(2)}
    assert len(fresh) == 2


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", init(113, shape="64,64"), {}, 200),
        ("GET", init(113, shape="64,64"), {"Range": "bytes=0-3"}, 206),
        ("GET", init(113, shape="64,64"), {"Range": "bytes=999999-"}, 416),  # made by nginx from the stored file
        ("HEAD", init(113, shape="64,64"), {}, 200),
        ("GET", "/init?scheme=he_normal&shape=4&seed=-1", {}, 422),
        ("GET", "/nowhere", {}, 404),
        ("GET", "/healthz", {}, 200),
    ],
)
def test_cache_status_and_request_id_once_on_every_answer(
    cluster: Cluster, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    httpx.get(cluster.url + init(113, shape="64,64"))  # stored
    answer = httpx.request(method, cluster.url + path, headers=headers)
    assert answer.status_code == status
    assert len(answer.headers.get_list("x-cache-status")) == len(answer.headers.get_list("x-request-id")) == 1
    if status >= 400:
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["status"] == status


def test_a_cut_post_resumes_through_nginx_with_range(cluster: Cluster) -> None:
    body = {"scheme": "he_normal", "shape": [1024, 1024], "seed": 114}
    whole = httpx.post(cluster.url + "/init", json=body, timeout=60)
    etag = whole.headers["etag"]
    rest = httpx.post(cluster.url + "/init", json=body, headers={"Range": "bytes=1000000-", "If-Range": etag}, timeout=60)
    assert (rest.status_code, rest.headers["x-cache-status"]) == (206, "BYPASS")
    assert rest.content == whole.content[1000000:]


def test_without_keys_nginx_asks_nothing_and_answers_stay_public(cluster: Cluster) -> None:
    """No API key configured: no key check before the cache (it would cost a replica request per hit)."""
    assert cluster.auth_request == "off" and "auth_request off;" in cluster.config.read_text()
    query = init(115, shape="16,16")
    answers = [httpx.get(cluster.url + query, timeout=30) for _ in range(2)]
    assert [a.headers["x-cache-status"] for a in answers] == ["MISS", "HIT"]
    assert answers[1].headers["cache-control"] == "public, max-age=31536000, immutable"
