"""Engine timings on this machine (prints figures; not a test).

    .venv/bin/python tests/benchmarks/bench_engine.py

Trace + candidate enumeration at 224x224 (one forward at batch 1), and merge time of random plans
biased toward long blocks, for resnet34 and mobilenetv2_100.
"""

import random
import statistics
import time

import timm
import torch

import lmzoo
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


if __name__ == "__main__":
    main()
