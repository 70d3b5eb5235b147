"""Engine timings on this machine (prints figures; not a test).

    .venv/bin/python tests/benchmarks/bench_engine.py

Trace + candidate enumeration at 224x224 (one forward at batch 1), and merge time of random plans
biased toward long blocks, for resnet34 and mobilenetv2_100; then the generic family against the
hand-written ones on the same networks (with the policies that reproduce their candidate sets), and
the generic family alone on resnet101 and efficientnet_b0, all in one run.
"""

import random
import statistics
import time

import timm
import torch

import lmzoo
from lmzoo.adapters.graph import TIMM_MOBILENETV2, TIMM_RESNET, GraphAdapter
from lmzoo.core.plan import random_plan
from lmzoo.engine import check_merge
from lmzoo.testing import randomize_norms


def main() -> None:
    torch.set_num_threads(torch.get_num_threads())
    print(f"torch {torch.__version__}, timm {timm.__version__}, threads {torch.get_num_threads()}")
    for name in ("resnet34", "mobilenetv2_100"):
        model = randomize_norms(timm.create_model(name)).eval()
        x = torch.randn(1, 3, 224, 224)
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            spec = lmzoo.trace(model, x)
            cands = lmzoo.candidates(spec)
            runs.append(time.perf_counter() - start)
        print(
            f"{name}: {spec.length} units, {len(cands)} candidates; trace+candidates "
            f"median {statistics.median(runs):.2f} s over {len(runs)} runs"
        )
        rng = random.Random(0)
        for i in range(3):
            check = check_merge(model, spec, random_plan(spec, cands, rng), x)
            print(
                f"  plan {i}: {check.blocks} blocks (largest kernel {check.largest_kernel}), "
                f"merge {check.merge_s:.2f} s, max relative difference {check.relative_error:.1e}"
            )


def _median_s(work, runs=5):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def generic_against_hand_written() -> None:
    x = torch.randn(1, 3, 224, 224)
    for name, policy in (("resnet34", TIMM_RESNET), ("mobilenetv2_100", TIMM_MOBILENETV2)):
        model = timm.create_model(name).eval()
        hand = _median_s(lambda m=model: lmzoo.candidates(lmzoo.trace(m, x)))
        generic = _median_s(lambda m=model, p=policy: lmzoo.candidates(GraphAdapter(p).trace(m, (x,))))
        print(
            f"{name}: trace+candidates hand-written {hand:.3f} s, generic {generic:.3f} s "
            f"(ratio {generic / hand:.2f}, median of 5)"
        )
    for name in ("resnet101", "efficientnet_b0"):
        model = timm.create_model(name).eval()
        generic = _median_s(lambda m=model: lmzoo.candidates(GraphAdapter().trace(m, (x,))))
        print(f"{name}: trace+candidates generic {generic:.3f} s (median of 5)")


if __name__ == "__main__":
    main()
    generic_against_hand_written()
