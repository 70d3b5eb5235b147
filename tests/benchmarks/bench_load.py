"""`lmzoo.load` of a merged network from the local store against what a user of the base network
does: `timm.create_model` plus loading its weights from a local safetensors file (prints figures).

    .venv/bin/python tests/benchmarks/bench_load.py [--runs 9]

Checkpoints: MobileNetV2-1.0 merged with a solver plan at ~1.6x predicted speed-up from a
FLOP-proportional latency proxy (the structure of a real entry; weights random), at 224 px / 1000
classes (the ImageNet entries) and at 32 px / 1 channel / 10 classes (the Fashion-MNIST entries).
The two loads alternate, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file, save_file

import lmzoo
from lmzoo.checkpoint import checkpoint_config, write_checkpoint
from lmzoo.sources import Architecture
from lmzoo.tables import ImportanceTable, LatencyTable
from lmzoo.testing import randomize_norms

SETTINGS = {
    "imagenet-224": ({"num_classes": 1000, "in_chans": 3}, (3, 224, 224)),
    "fmnist-32": ({"num_classes": 10, "in_chans": 1}, (1, 32, 32)),
}


def solved_plan(spec: lmzoo.Spec) -> lmzoo.Plan:
    """A plan at ~1.6x by a FLOP proxy: latency = merged MACs, importance = 1 (depth only)."""
    cands = lmzoo.candidates(spec)
    lat = {}
    for c in cands:
        first, last = spec.units[c.start], spec.units[c.end - 1]
        fan_in = 1 if c.depthwise else first.in_channels
        lat[c] = 1e-6 * c.kernel**2 * fan_in * last.out_channels
    latency = LatencyTable(lat, metadata={"backend": "flops-proxy"}, spec=spec)
    importance = ImportanceTable({c: 1.0 + 0.01 * c.length for c in cands}, spec=spec)
    return lmzoo.solve(latency, importance, speedup=1.6)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, timm {timm.__version__}, threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LMZOO_HOME"] = tmp
        for setting, (kwargs, shape) in SETTINGS.items():
            torch.manual_seed(0)
            model = randomize_norms(timm.create_model("mobilenetv2_100", **kwargs)).eval()
            base_file = Path(tmp) / f"base-{setting}.safetensors"
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(base_file))
            spec = lmzoo.trace(model, torch.zeros(1, *shape))
            plan = solved_plan(spec)
            merged = lmzoo.merge(lmzoo.apply_plan(model, spec, plan)).eval()
            name = f"bench-{setting}"
            config = checkpoint_config(
                name=name,
                architecture=Architecture("timm", "mobilenetv2_100", kwargs),
                input_shape=shape,
                task="classification",
                spec_fingerprint=spec.fingerprint,
                plan=plan,
            )
            write_checkpoint(Path(tmp) / name, merged, config)
            x = torch.randn(2, *shape)
            with torch.no_grad():
                assert torch.equal(lmzoo.load(name)(x), merged(x))
            base_times, load_times = [], []
            for _ in range(args.runs):
                start = time.perf_counter()
                base = timm.create_model("mobilenetv2_100", **kwargs)
                base.load_state_dict(load_file(str(base_file)), strict=True)
                base.eval()
                base_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                lmzoo.load(name)
                load_times.append(time.perf_counter() - start)
            b, m = statistics.median(base_times), statistics.median(load_times)
            convs = sum(isinstance(mod, torch.nn.Conv2d) for mod in merged.modules())
            print(
                f"{setting}: plan {len(plan)} blocks ({convs} convs); timm.create_model + load base weights "
                f"median {b * 1000:.0f} ms, lmzoo.load merged median {m * 1000:.0f} ms over {args.runs} "
                f"alternating runs: ratio {m / b:.2f}x (goal <= 2x)"
            )


if __name__ == "__main__":
    main()
