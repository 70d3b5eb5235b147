"""Which common networks lmzoo depth-compresses, and how exactly: one row per network with its family,
units, chains, residual spans, candidates, the largest merged kernel, whether a merge shortens it,
the largest relative difference between merged and configured networks over random plans (float64
and float32) and trace + candidate time; or the reason it is refused.

    .venv/bin/python tests/benchmarks/coverage.py                  # the issue's 25 networks, 64 px
    .venv/bin/python tests/benchmarks/coverage.py --markdown > coverage.md
    .venv/bin/python tests/benchmarks/coverage.py timm:resnet18 torchvision:mobilenet_v2
"""

from __future__ import annotations

import argparse
import random
import time

import torch

import lmzoo
from lmzoo.core.candidates import CandidateRules
from lmzoo.engine import tensor_output
from lmzoo.sources import Architecture
from lmzoo.testing import random_plan, randomize_norms

NETWORKS = [
    "timm:resnet18",
    "timm:resnet50",
    "timm:resnet101",
    "timm:resnet50d",
    "timm:seresnet50",
    "timm:resnext50_32x4d",
    "timm:wide_resnet50_2",
    "timm:regnetx_002",
    "timm:regnety_002",
    "timm:mobilenetv2_140",
    "timm:mobilenetv3_large_100",
    "timm:efficientnet_b0",
    "timm:efficientnet_lite0",
    "timm:mnasnet_100",
    "timm:vgg11_bn",
    "timm:repvgg_a0",
    "timm:convnext_atto",
    "timm:densenet121",
    "torchvision:resnet18",
    "torchvision:resnet50",
    "torchvision:mobilenet_v2",
    "torchvision:mobilenet_v3_small",
    "torchvision:efficientnet_b0",
    "torchvision:vgg11_bn",
    "torchvision:regnet_x_400mf",
]
#: merged kernels are capped for the random plans: the merge of a 47x47 kernel at 1024 channels
#: (resnet101's longest block) does not fit in memory, and lmzoo refuses it (MergeTooLargeError)
MAX_KERNEL = 9


def row(name: str, size: int, plans: int) -> dict[str, object]:
    source, arch = name.split(":")
    torch.manual_seed(0)
    model = randomize_norms(Architecture(source, arch, {"num_classes": 10}).build()).eval()
    x = torch.randn(2, 3, size, size)
    started = time.perf_counter()
    try:
        spec = lmzoo.trace(model, x)
    except lmzoo.LmzooError as err:
        return {"network": name, "refused": str(err)}
    cands = lmzoo.candidates(spec, CandidateRules(max_kernel=MAX_KERNEL))
    elapsed = time.perf_counter() - started
    rng = random.Random(0)
    errors = {torch.float64: 0.0, torch.float32: 0.0}
    for _ in range(plans):
        plan = random_plan(spec, cands, rng, long_bias=1.0)
        for dtype in errors:
            net = model.to(dtype)
            configured = lmzoo.apply_plan(net, spec, plan).eval()
            merged = lmzoo.merge(configured)
            with torch.no_grad():
                a, b = tensor_output(configured(x.to(dtype))), tensor_output(merged(x.to(dtype)))
            errors[dtype] = max(errors[dtype], float((a - b).abs().max() / a.abs().max()))
        model.float()
    return {
        "network": name,
        "family": spec.family,
        "units": spec.length,
        "chains": 1 + sum(1 for p in spec.positions if p.barrier),
        "spans": len(spec.spans),
        "candidates": len(cands),
        "largest kernel": max(c.kernel for c in cands),
        "shortens": any(c.length > 1 and c.kept for c in cands),
        "error float64": errors[torch.float64],
        "error float32": errors[torch.float32],
        "trace + candidates (s)": round(elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("networks", nargs="*", default=NETWORKS, help="SOURCE:ARCH (default: the issue's 25)")
    parser.add_argument("--size", type=int, default=64, help="input resolution (default 64)")
    parser.add_argument("--plans", type=int, default=2, help="random plans merged per network")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    rows = [row(name, args.size, args.plans) for name in args.networks]
    columns = ["network", "family", "units", "chains", "spans", "candidates", "largest kernel", "shortens",
               "error float64", "error float32", "trace + candidates (s)"]  # fmt: skip
    supported = sum(1 for r in rows if r.get("shortens"))
    if args.markdown:
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
    for r in rows:
        if "refused" in r:
            cells = [str(r["network"]), f"refused: {r['refused']}"] + [""] * (len(columns) - 2)
        else:
            cells = [f"{r[c]:.1e}" if c.startswith("error") else str(r[c]) for c in columns]
        print("| " + " | ".join(cells) + " |" if args.markdown else "  ".join(cells))
    print(f"\n{supported} of {len(rows)} networks supported with merges that shorten them")


if __name__ == "__main__":
    main()
