"""Training and evaluation throughput in NCHW against channels-last, the layout lmzoo picks on CPU
for networks with depthwise convs (``lmzoo.training.memory_format``); prints figures.

    .venv/bin/python tests/benchmarks/bench_training.py [--rounds 3] [--threads 2]

Networks: the Fashion-MNIST zoo's (32 px, 1 channel, 10 classes): MobileNetV2-1.0 and ResNet-34, each
as its base and as the configured network of a ~1.6x plan (what ``lmzoo build`` fine-tunes; plan
from a FLOP-proportional latency proxy). A training step is SGD with momentum at batch 256 (the
recipes' batch); evaluation is a no-grad forward at batch 512 (the held-out batch). The two layouts
alternate step for step, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from copy import deepcopy

import timm
import torch
from bench_load import solved_plan
from torch import nn

import lmzoo
from lmzoo.training.memory_format import preferred_memory_format

NETWORKS = ("mobilenetv2_100", "resnet34")


def _train_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer) -> None:
    loss = nn.functional.cross_entropy(net(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _timed(fn, *args) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def compare(name: str, net: nn.Module, rounds: int) -> None:
    layouts = {"nchw": torch.contiguous_format, "channels-last": torch.channels_last}
    nets = {}
    for label, fmt in layouts.items():
        copy = deepcopy(net).to(memory_format=fmt)
        nets[label] = (copy, torch.optim.SGD(copy.parameters(), lr=1e-3, momentum=0.9), fmt)
    x, y = torch.randn(256, 1, 32, 32), torch.randint(0, 10, (256,))
    xe = torch.randn(512, 1, 32, 32)
    train: dict[str, list[float]] = {k: [] for k in layouts}
    evaluate: dict[str, list[float]] = {k: [] for k in layouts}
    for r in range(rounds + 1):  # the first round warms up
        for label, (copy, opt, fmt) in nets.items():
            copy.train()
            t = _timed(_train_step, copy, x.contiguous(memory_format=fmt), y, opt)
            copy.eval()
            with torch.no_grad():
                e = _timed(copy, xe.contiguous(memory_format=fmt))
            if r:
                train[label].append(t)
                evaluate[label].append(e)
    chosen = (
        "channels-last"
        if preferred_memory_format(net, torch.device("cpu")) == torch.channels_last
        else "nchw"
    )
    tn, tc = statistics.median(train["nchw"]), statistics.median(train["channels-last"])
    en, ec = statistics.median(evaluate["nchw"]), statistics.median(evaluate["channels-last"])
    print(
        f"{name:32s} {tn * 1e3:8.0f} {tc * 1e3:8.0f} {tn / tc:6.2f}x   "
        f"{en * 1e3:7.0f} {ec * 1e3:7.0f} {en / ec:6.2f}x   {chosen}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, timm {timm.__version__}, threads {torch.get_num_threads()}")
    print(
        f"{'network':32s} {'train step ms: nchw':>19s} {'cl':>6s} {'ratio':>7s}   "
        f"{'eval ms: nchw':>13s} {'cl':>5s} {'ratio':>7s}   lmzoo picks"
    )
    for arch in NETWORKS:
        torch.manual_seed(0)
        base = timm.create_model(arch, num_classes=10, in_chans=1)
        spec = lmzoo.trace(base, torch.zeros(1, 1, 32, 32))
        compare(f"{arch} base", base, args.rounds)
        compare(f"{arch} configured ~1.6x", lmzoo.apply_plan(base, spec, solved_plan(spec)), args.rounds)


if __name__ == "__main__":
    main()
