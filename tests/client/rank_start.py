"""One of many ranks that fetch their shards at the same moment (``python -m tests.client.rank_start URL RANK WORLD AT``).

Waits until the wall clock reaches ``AT`` so that every rank asks at once, then fetches
its ``chunk_shard`` rows of :data:`TENSORS` with the default client (its retries with
backoff included) and prints one JSON line with the sha256 of what it received. Numpy
only, so that sixteen of them start fast.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

from tensorinit import Client, chunk_shard

TENSORS = {f"layers.{i}.mlp.fc1.weight": (4096, 2048) for i in range(4)}  # 128 MiB of float32 in all


def main() -> None:
    url, rank, world, at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    request = {
        name: {"scheme": "he_normal", "shape": list(shape), "slice": chunk_shard(shape, 0, rank, world)[1]}
        for name, shape in TENSORS.items()
    }
    time.sleep(max(0.0, at - time.time()))
    with Client(url, timeout=120) as client:  # the default retry policy
        arrays = client.init_many(request, seed=1)
    digest = hashlib.sha256(b"".join(arrays[name].tobytes() for name in TENSORS)).hexdigest()
    print(json.dumps({"rank": rank, "sha256": digest}))


if __name__ == "__main__":
    main()
