"""Solver benchmark: prints figures (not a test).

    .venv/bin/python tests/benchmarks/bench_solver.py

On every candidate of timm mobilenetv2_100 at 224 with random table values (seeded):
- one `solve` at 2,230 levels and the whole `frontier` at 10,000 levels (median of repeats),
  side by side with a plain pure-Python DP over the same grid (the shape of the official solver);
- peak memory of the frontier (tracemalloc, which sees numpy's buffers);
- how the cost grows with the number of levels and with the number of candidates;
- the two baselines (`depth`, `layer`).
"""

from __future__ import annotations

import math
import random
import statistics
import time
import tracemalloc
from fractions import Fraction

import timm
import torch

import lmzoo
from lmzoo.tables import ImportanceTable, LatencyTable

torch.set_num_threads(2)


def tables(spec, cands, seed=0):
    rng = random.Random(seed)
    lat = {c: 0.0 if c.kernel == 0 else rng.uniform(0.05, 0.5) * c.kernel for c in cands}
    imp = {c: math.exp(rng.uniform(-5.0, 0.5) / 100) for c in cands}
    return LatencyTable(lat, fixed_ms=2.0), ImportanceTable(imp)


def timed(repeats, fn, *args, **kwargs):
    """Median wall time of fn(*args, **kwargs) over `repeats` calls, and the last result."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def pure_python_dp(lat, imp, budget_ms, levels):
    """The textbook DP with Python lists (the official solver's shape), same rounding up."""
    cands = sorted(lat.entries, key=lambda c: (c.end, c.start))
    length = max(c.end for c in cands)
    step = Fraction(levels) / Fraction(budget_ms)
    weight = {c: math.ceil(Fraction(lat.entries[c]) * step) for c in cands}
    best = [[-math.inf] * (levels + 1) for _ in range(length + 1)]
    best[0] = [0.0] * (levels + 1)
    for c in cands:
        src, dst, w, v = best[c.start], best[c.end], weight[c], imp.entries[c]
        for t in range(w, levels + 1):
            value = src[t - w] + v
            if value > dst[t]:
                dst[t] = value
    return best[length][levels]


def main() -> None:
    x = torch.randn(1, 3, 224, 224)
    mbv2 = lmzoo.trace(timm.create_model("mobilenetv2_100").eval(), x)
    cands = lmzoo.candidates(mbv2)
    lat, imp = tables(mbv2, cands)
    print(f"mobilenetv2_100 @224: {mbv2.length} units, {len(cands)} candidates")

    lmzoo.solve(lat, imp, speedup=1.6, levels=2230)  # warm-up (imports, numpy)
    t_solve, _ = timed(21, lmzoo.solve, lat, imp, speedup=1.6, levels=2230)
    t_frontier, points = timed(11, lmzoo.frontier, lat, imp, levels=10_000)
    print(f"solve    @ 2,230 levels: {t_solve * 1e3:7.2f} ms (median of 21)")
    print(f"frontier @10,000 levels: {t_frontier * 1e3:7.2f} ms (median of 11), {len(points)} points")

    base = sum(lat.entries[c] for c in lmzoo.Plan.identity(mbv2)) + lat.fixed_ms
    budget = base / 1.6 - lat.fixed_ms
    for levels in (223, 2230):
        t_ref, ref_value = timed(3, pure_python_dp, lat, imp, budget, levels)
        t_ours, ours = timed(11, lmzoo.solve, lat, imp, budget_ms=budget, levels=levels)
        ours_value = math.fsum(imp.entries[b] for b in ours)
        assert math.isclose(ref_value, ours_value, rel_tol=1e-12), (ref_value, ours_value)
        print(
            f"pure-Python DP @{levels:>5} levels: {t_ref * 1e3:8.1f} ms; lmzoo.solve {t_ours * 1e3:6.2f} ms "
            f"(x{t_ref / t_ours:.0f} faster, same optimum {ours_value:.6f})"
        )

    top = max(points, key=lambda p: p.importance).latency_ms
    t_ref, _ = timed(1, pure_python_dp, lat, imp, top, 10_000)
    print(
        f"pure-Python DP fill alone @10,000 levels: {t_ref * 1e3:.0f} ms vs lmzoo.frontier "
        f"{t_frontier * 1e3:.1f} ms with every plan (x{t_ref / t_frontier:.0f})"
    )

    tracemalloc.start()
    lmzoo.frontier(lat, imp, levels=10_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"frontier @10,000 levels peak memory: {peak / 2**20:.1f} MiB")

    print("\nscaling with levels (mobilenetv2_100, all candidates):")
    for levels in (1_000, 2_230, 5_000, 10_000, 20_000, 50_000):
        ts, _ = timed(7, lmzoo.solve, lat, imp, speedup=1.6, levels=levels)
        tf, pts = timed(5, lmzoo.frontier, lat, imp, levels=levels)
        print(
            f"  {levels:>6} levels: solve {ts * 1e3:7.2f} ms, frontier {tf * 1e3:7.2f} ms ({len(pts)} points)"
        )

    print("\nscaling with candidates (solve 1.3x @2,230 / frontier @10,000 levels):")
    nets = {
        "resnet18": (timm.create_model("resnet18"), lmzoo.PAPER_RULES),
        "resnet34": (timm.create_model("resnet34"), lmzoo.PAPER_RULES),
        "resnet50": (timm.create_model("resnet50"), lmzoo.PAPER_RULES),
        "mobilenetv2_100": (timm.create_model("mobilenetv2_100"), lmzoo.PAPER_RULES),
        "mobilenetv2_100 (all methods' sets)": (timm.create_model("mobilenetv2_100"), None),
    }
    for name, (model, rules) in nets.items():
        spec = lmzoo.trace(model.eval(), x)
        if rules is None:
            cs = sorted({c for m in lmzoo.METHODS for c in lmzoo.candidates(spec, method=m)})
        else:
            cs = lmzoo.candidates(spec, rules)
        la, im = tables(spec, cs, seed=1)
        ts, _ = timed(11, lmzoo.solve, la, im, speedup=1.3, levels=2230)
        tf, _ = timed(5, lmzoo.frontier, la, im, levels=10_000)
        print(f"  {name:>32}: {len(cs):>5} candidates, solve {ts * 1e3:6.2f} ms, frontier {tf * 1e3:7.2f} ms")

    print("\nbaselines on mobilenetv2_100 (solve @2,230 / frontier @10,000 levels):")
    for method in ("depth", "layer"):
        cs = set(cands) | set(lmzoo.candidates(mbv2, method=method))
        la, im = tables(mbv2, sorted(cs), seed=2)
        ts, p = timed(11, lmzoo.solve, la, im, speedup=1.3, levels=2230, method=method, spec=mbv2)
        tf, pts = timed(5, lmzoo.frontier, la, im, levels=10_000, method=method, spec=mbv2)
        print(
            f"  {method:>6}: {len(lmzoo.candidates(mbv2, method=method))} candidates, "
            f"solve {ts * 1e3:6.2f} ms, "
            f"frontier {tf * 1e3:7.2f} ms ({len(pts)} points); 1.3x plan has {len(p)} blocks, "
            f"{len(p.linear)} linear joins"
        )


if __name__ == "__main__":
    main()
