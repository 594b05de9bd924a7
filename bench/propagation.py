"""/propagation's three speed goals (issue 11), each beside what bounds it, in one process and one run.

Run as ``python -m bench.propagation``. Best of N after a warm-up, the median beside it:

* theory of a 1000-layer stack (relu: closed forms; tanh: quadrature), goal < 50 ms,
  beside the same recursion's floor, one ``Activation.moments`` call per layer;
* the measurement at width 1024 × depth 50 × batch 256 (he_normal, relu), goal < 2 s,
  beside its floor: the same 100 float32 matmuls alone, on arrays already made, on one BLAS
  thread (as the pass runs them) and on one per core (OpenBLAS's default, which the engine
  turns off: its threads spin on shared cores);
* one PNG of that network's result (forward and backward panels), goal < 300 ms,
  beside an empty figure of the same size saved the same way.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import threadpoolctl

from service.core.algorithms import warm_up
from service.core.plots import _figure, _save, propagation_figure
from service.core.propagation import Activation, Network, build_network, measure, propagate, theory


def best(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def main() -> None:
    warm_up()
    blas = "; ".join(f"{b['internal_api']} {b['version']} {b.get('architecture')}" for b in threadpoolctl.threadpool_info())
    coretype = os.environ.get("OPENBLAS_CORETYPE", "unset")
    print(
        f"{platform.processor() or platform.machine()} · {os.cpu_count()} cores · numpy {np.__version__} · {blas} · OPENBLAS_CORETYPE {coretype}"
    )
    rows: list[tuple[str, float, float, float, str, float]] = []

    for name in ("relu", "tanh"):
        deep = build_network({"depth": 1000, "width": 512, "activation": name, "init": "he_normal"})
        act = deep.layers[0].activation

        def recursion(deep: Network = deep) -> object:
            return theory(deep)

        def moments(act: Activation = act) -> object:
            return [act.moments(1.0 + i * 1e-3) for i in range(1000)]

        t, med = best(recursion, 7)
        floor, _ = best(moments, 7)
        rows.append((f"theory, 1000 layers {name}", t, med, 0.050, "1000 moments() alone", floor))

    net = build_network({"depth": 50, "width": 1024, "activation": "relu", "init": "he_normal", "batch": 256})
    t, med = best(lambda: measure(net), 3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 1024), dtype=np.float32)
    w = rng.standard_normal((1024, 1024), dtype=np.float32)
    floor, _ = best(lambda: [x @ w.T for _ in range(100)], 3)
    rows.append(("measurement 1024 × 50 × 256", t, med, 2.0, "its 100 float32 matmuls", floor))
    with threadpoolctl.threadpool_limits(limits=os.cpu_count(), user_api="blas"):
        many, many_med = best(lambda: [x @ w.T for _ in range(100)], 3)
    rows.append((f"100 matmuls, {os.cpu_count()} BLAS threads", many, many_med, math.inf, "the same on 1 BLAS thread", floor))

    result = propagate(net, measured=False)
    result.measurement = measure(net)
    t, med = best(lambda: propagation_figure([result], "image/png"), 7)
    floor, _ = best(lambda: _save(_figure(10.0, 3.7), "image/png"), 7)
    rows.append(("PNG, 50 layers, 2 panels", t, med, 0.300, "an empty figure's PNG", floor))

    print(f"{'case':32s} {'best':>9s} {'median':>9s} {'goal':>8s} {'':5s} {'floor':>9s} {'best/floor':>10s}  floor is")
    for label, t, med, goal, floor_label, floor in rows:
        verdict = "" if math.isinf(goal) else "PASS" if t < goal else "MISS"
        goal_text = "-" if math.isinf(goal) else f"{goal * 1e3:.0f}"
        print(
            f"{label:32s} {t * 1e3:7.1f}ms {med * 1e3:7.1f}ms {goal_text:>6s}ms {verdict:5s} {floor * 1e3:7.1f}ms {t / floor:10.2f}  {floor_label}"
        )


if __name__ == "__main__":
    main()
