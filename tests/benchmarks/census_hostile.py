"""Hostile-input census: how many cases of each class end in a clean ``lmzoo.LmzooError``, are
accepted correctly, or end otherwise (another exception, a hang, exhausted memory, a wrong result
accepted silently). Each case runs in a forked child (8 GiB of address space, 20 s); the random cases
use fixed seeds, so two trees get the same cases.

    .venv/bin/python tests/benchmarks/census_hostile.py             # this tree
    PYTHONPATH=/path/to/other/tree .venv/bin/python tests/benchmarks/census_hostile.py
    CENSUS_N=150 (cases per random class; default 150)
"""

import json
import os
import random
import shutil
import signal
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import torch

import lmzoo
from lmzoo.checkpoint import load_checkpoint
from lmzoo.testing import random_checkpoint

warnings.filterwarnings("ignore")
torch.set_num_threads(1)  # forked children must not inherit a busy OpenMP pool

N = int(os.environ.get("CENSUS_N", "150"))
ROOT = Path(tempfile.mkdtemp(prefix="census-"))
counts: dict[str, Counter] = {}
others: dict[str, list[str]] = {}


def _child(fn, judge, write_end):
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    signal.alarm(0)
    try:
        result = fn()
        outcome = "accepted" if judge(result) else "other:accepted wrongly"
    except lmzoo.LmzooError as err:
        outcome = "clean" if "\n" not in str(err) else "other:multi-line"
    except MemoryError:
        outcome = "other:memory"
    except BaseException as err:
        outcome = f"other:{type(err).__name__}: {str(err)[:70]}"
    os.write(write_end, outcome.encode()[:500])
    os._exit(0)


def record(kind, fn, judge=lambda result: True, limit=20, label=""):
    """Run one case in a forked child (8 GiB address space, ``limit`` seconds)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(fn, judge, write_end)
    os.close(write_end)
    deadline = time.monotonic() + limit
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        status = "hang"
    text = os.read(read_end, 600).decode(errors="replace")
    os.close(read_end)
    if status == "hang":
        text = "other:hang"
    elif not text:
        text = "other:killed (memory)"
    outcome, _, detail = text.partition(":")
    counts.setdefault(kind, Counter())[outcome] += 1
    if outcome == "other":
        others.setdefault(kind, []).append(f"{detail} {label}".strip())


def load(directory):
    return load_checkpoint(directory)


# -- weights files ------------------------------------------------------------------------------
base, merged = random_checkpoint(ROOT / "entry", seed=1)
original = {k: v.clone() for k, v in merged.state_dict().items()}
blob = (base / "model.safetensors").read_bytes()
rng = random.Random(0)
for i in range(N):
    d = ROOT / f"w{i}"
    shutil.copytree(base, d)
    data = bytearray(blob)
    action = rng.choice(["flip", "flip-data", "truncate", "extend", "header-length"])
    if action == "flip":
        data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
    elif action == "flip-data":
        data[rng.randrange(len(data) - 2000, len(data))] ^= 1 << rng.randrange(8)
    elif action == "truncate":
        del data[rng.randrange(len(data)) :]
    elif action == "extend":
        data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    else:
        data[:8] = rng.randrange(2**64).to_bytes(8, "little")
    (d / "model.safetensors").write_bytes(bytes(data))
    record(
        "weights file",
        lambda d=d: load(d),
        lambda m: all(torch.equal(m.state_dict()[k], v) for k, v in original.items()),
    )
    shutil.rmtree(d)

# -- config.json --------------------------------------------------------------------------------
config = json.loads((base / "config.json").read_text())
x = torch.randn(2, 1, 32, 32)
with torch.no_grad():
    expected = merged.eval()(x)
JUNK = [None, True, -1, 0, 3, 2**70, 1e308, "x", "hf-hub:timm/resnet18", [], {}, [1, 4194304, 1], [[[]]]]


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, (*prefix, i))


all_paths = [p for p in paths(config) if p]
for i in range(N):
    c = json.loads(json.dumps(config))
    path = rng.choice(all_paths)
    parent = c
    for key in path[:-1]:
        parent = parent[key]
    action = rng.choice(["replace", "replace", "drop"])
    if action == "drop" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = rng.choice(JUNK)
    d = ROOT / f"c{i}"
    shutil.copytree(base, d)
    (d / "config.json").write_text(json.dumps(c))

    def judge(m):
        with torch.no_grad():
            out = m(x)
        return out.shape == expected.shape and torch.allclose(out, expected)

    record(
        "config.json",
        lambda d=d: load(d),
        judge,
        label=f"{action} {path} {str(parent.get(path[-1]) if isinstance(parent, dict) else '')[:40]}",
    )
    shutil.rmtree(d)


# -- hostile files in a checkpoint --------------------------------------------------------------
def hostile(name, make):
    d = ROOT / f"h-{name}"
    shutil.copytree(base, d)
    make(d)
    record("hostile files", lambda: load(d), lambda m: False)


outside = ROOT / "outside.json"
outside.write_text((base / "config.json").read_text())
hostile("config-link-out", lambda d: ((d / "config.json").unlink(), (d / "config.json").symlink_to(outside)))
hostile(
    "config-devzero", lambda d: ((d / "config.json").unlink(), (d / "config.json").symlink_to("/dev/zero"))
)
hostile("config-fifo", lambda d: ((d / "config.json").unlink(), os.mkfifo(d / "config.json")))
hostile("weights-fifo", lambda d: ((d / "model.safetensors").unlink(), os.mkfifo(d / "model.safetensors")))
hostile("nested", lambda d: (d / "config.json").write_text("[" * 100000 + "]" * 100000))
record("hostile files", lambda: lmzoo.load("local-dir:" + "a" * 10000), lambda m: False)
record("hostile files", lambda: lmzoo.load("../../outside"), lambda m: False)
record("hostile files", lambda: lmzoo.load("/etc"), lambda m: False)

# -- recipes ------------------------------------------------------------------------------------
from lmzoo.recipes import parse_recipe  # noqa: E402

GOOD = """
name: tiny-fmnist-layermerge
model: {source: timm, arch: mobilenetv2_035, kwargs: {num_classes: 10, in_chans: 1}, input_size: 32}
data: {dataset: fashion-mnist, pad_to: 32}
solve: {speedups: [1.5, 2]}
"""
SANE = {  # what a sane recipe value is (the list)
    ("base", "epochs"): (0, 1e4),
    ("base", "batch_size"): (1, 65536),
    ("base", "lr"): (0, 10),
    ("base", "warmup_steps"): (0, 1e7),
    ("base", "distill_weight"): (0, 1),
    ("importance", "seed"): (0, 2**32 - 1),
    ("importance", "eval_batch_size"): (1, 65536),
    ("solve", "levels"): (1, 1e5),
    ("data", "pad_to"): (1, 2048),
    ("finetune", "label_smoothing"): (0, 0.99),
    ("evaluate", "sample_count"): (1, 1e4),
}
VALUES = [
    "0",
    "-5",
    "-0.1",
    ".inf",
    ".nan",
    "1e9",
    "1000000000",
    "1180591620717411303424",
    "5",
    "0.5",
    "2",
    "true",
    "x",
]
for i in range(N):
    (section, key), value = rng.choice(sorted(SANE)), rng.choice(VALUES)
    if section == "data":
        text = GOOD.replace("pad_to: 32", f"pad_to: {value}")
    elif section == "solve":
        text = GOOD.replace("speedups: [1.5, 2]", f"speedups: [1.5, 2], {key}: {value}")
    else:
        text = GOOD + f"{section}: {{{key}: {value}}}\n"
    path = ROOT / f"r{i}.yaml"
    path.write_text(text)

    def judge(recipe, section=section, key=key):
        v = getattr(getattr(recipe, section), key)
        low, high = SANE[(section, key)]
        return isinstance(v, (int, float)) and low <= v <= high

    record("recipe values", lambda path=path: parse_recipe(path), judge)
for name, text in {
    "duplicate key": GOOD + "solve: {}\n",
    "same-name speedups": GOOD.replace("[1.5, 2]", "[1.6, 1.60]"),
    "absurd speedup": GOOD.replace("[1.5, 2]", "[1.0e+9]"),
    "alias bomb": "a: &a [x,x,x,x,x,x,x,x,x,x]\n"
    + "".join(f"{chr(98 + k)}: &{chr(98 + k)} [{','.join([f'*{chr(97 + k)}'] * 10)}]\n" for k in range(8))
    + GOOD,
    "in_chans 0": GOOD.replace("in_chans: 1", "in_chans: 0"),
    "num_classes -1": GOOD.replace("num_classes: 10", "num_classes: -1"),
}.items():
    path = ROOT / f"named-{name.replace(' ', '-')}.yaml"
    path.write_text(text)
    record("recipe values", lambda path=path: parse_recipe(path), lambda r: False)
(ROOT / "binary.yaml").write_bytes(bytes(range(256)))
record("recipe values", lambda: parse_recipe(ROOT / "binary.yaml"), lambda r: False)
(ROOT / "zero.yaml").symlink_to("/dev/zero")
record("recipe values", lambda: parse_recipe(ROOT / "zero.yaml"), lambda r: False)

# -- public API ---------------------------------------------------------------------------------
from lmzoo.core import solver  # noqa: E402
from lmzoo.core.candidates import Candidate, candidates  # noqa: E402
from lmzoo.core.plan import PLAN_FORMAT, Plan  # noqa: E402
from lmzoo.engine import apply_plan, trace  # noqa: E402
from lmzoo.tables import ImportanceTable, LatencyTable  # noqa: E402
from lmzoo.testing import TINY_MODELS, random_plan  # noqa: E402

tiny = TINY_MODELS["resnet-basic"]
model = tiny.build().eval()
spec = trace(model, tiny.inputs(1, torch.float32))
cands = candidates(spec)
lat = LatencyTable({c: 0.1 + 0.01 * i for i, c in enumerate(cands)}, spec=spec, fixed_ms=1.0)
imp = ImportanceTable({c: 0.5 for c in cands}, spec=spec)
plan = random_plan(spec, cands, random.Random(0))
API_JUNK = [None, "x", -3, 0, 1e-300, 5e-324, 1e308, float("nan"), float("inf"), 2**70, [1], {}]


def api_case(r):
    kind = r.choice(["candidate", "plan", "solve", "reachable", "table", "apply", "trace", "from_dict"])
    if kind == "candidate":
        args = [r.choice([*API_JUNK, 0, 1, 3]) for _ in range(4)] + [
            r.choice([False, "x"]),
            r.choice([(1,), "1", None]),
        ]
        return lambda: Candidate(*args), lambda c: c.kernel >= 0 and c.stride >= 1 and c.end < 10**6
    if kind == "plan":
        return lambda: Plan(r.choice([*API_JUNK, list(plan)]), r.choice([(), None, 3, [99]])), lambda p: True
    if kind == "solve":
        k = r.choice(["budget_ms", "speedup"])
        v, lv = r.choice([*API_JUNK, 1.3, 2.0]), r.choice([None, 1, 2, 10**7, -1, "x"])
        return lambda: solver.solve(lat, imp, **{k: v}, levels=lv), lambda p: True
    if kind == "reachable":
        table = r.choice([lat, LatencyTable(dict.fromkeys(cands, 0.0), spec=spec, fixed_ms=1.0)])
        return lambda: solver.solve_reachable(
            lat if table is None else table, imp, speedup=50.0, levels=r.choice([1, 2, 100])
        ), lambda p: True
    if kind == "table":
        v = r.choice(API_JUNK)
        return lambda: solver.solve(
            LatencyTable({c: v for c in cands}, spec=spec), imp, speedup=1.3
        ), lambda p: False
    if kind == "apply":
        return lambda: apply_plan(
            r.choice([model, None]), r.choice([spec, None, {}]), r.choice([plan, "p", None])
        ), lambda m: True
    if kind == "trace":
        shape = r.choice([(1, 3, 4096, 4096), (1, 5, 8, 8), (1, 3, 37, 43)])
        return lambda: trace(
            r.choice([model, "m"]), r.choice([torch.randn(*shape), "x", 3])
        ), lambda s: max(shape) <= 2048
    n = r.choice([10, 10**6])
    blocks = [
        {"start": i, "end": i + 1, "kernel": 3, "stride": 1, "depthwise": False, "kept": [i + 1]}
        for i in range(n)
    ]
    return lambda: Plan.from_dict(
        {"format": PLAN_FORMAT, "length": n, "blocks": blocks}
    ), lambda p: len(p) <= 10**4


for _ in range(N):
    call, judge = api_case(rng)
    start = time.monotonic()
    record(
        "public API", call, lambda res, judge=judge, start=start: judge(res) and time.monotonic() - start < 5
    )

total = Counter()
print(f"{'class':16s} {'tried':>6s} {'clean':>6s} {'ok':>6s} {'other':>6s}")
for kind, c in counts.items():
    total += c
    print(f"{kind:16s} {sum(c.values()):6d} {c['clean']:6d} {c['accepted']:6d} {c['other']:6d}")
print(f"{'all':16s} {sum(total.values()):6d} {total['clean']:6d} {total['accepted']:6d} {total['other']:6d}")
for kind, items in others.items():
    print(kind, Counter(items).most_common(6))
shutil.rmtree(ROOT, ignore_errors=True)
