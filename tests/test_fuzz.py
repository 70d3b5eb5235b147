"""Fuzzing what users hand lmzoo: checkpoint files, and the public API called with junk.

Each case must end, within seconds and without growing the process by more than a bound, in a
result or in one ``lmzoo.LmzooError``; a loaded network always holds exactly the weights whose
digest its config records. (Recipes are fuzzed in test_recipes.py, config.json in test_zoo.py.)"""

import hashlib
import json
import math
import resource
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lmzoo
from lmzoo.checkpoint import load_checkpoint
from lmzoo.core import solver
from lmzoo.core.candidates import Candidate, candidates
from lmzoo.core.plan import PLAN_FORMAT, Plan
from lmzoo.engine import apply_plan, merge, trace
from lmzoo.tables import ImportanceTable, LatencyTable
from lmzoo.testing import TINY_MODELS, random_checkpoint, random_plan

#: a case may take this long (the slowest legitimate one, a load with digests, takes ~0.2 s)
CASE_SECONDS = 5.0
#: and grow the process's peak memory by this much over the whole suite
GROWTH_BYTES = 1 << 30

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _peak_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.fixture(scope="module")
def peak():
    """The peak memory before the module's cases; checked after each."""
    return _peak_bytes()


def _bounded(peak, call):
    """Run ``call``: its result, or None when it raised an LmzooError; anything else fails the test."""
    start = time.monotonic()
    try:
        result = call()
    except lmzoo.LmzooError as err:
        assert len(str(err).splitlines()) == 1, str(err)
        result = None
    assert time.monotonic() - start < CASE_SECONDS
    assert _peak_bytes() - peak < GROWTH_BYTES
    return result


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("fuzz") / "entry", seed=5)[0]


def _mutated(blob, data):
    """``blob`` with one of: bytes flipped, truncated, extended, the header length rewritten."""
    blob = bytearray(blob)
    action = data.draw(st.sampled_from(["flip", "truncate", "extend", "header-length", "header-byte"]))
    if action == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
    elif action == "truncate":
        del blob[data.draw(st.integers(0, len(blob) - 1)) :]
    elif action == "extend":
        blob += data.draw(st.binary(min_size=1, max_size=64))
    elif action == "header-length":  # safetensors: 8 bytes of little-endian header length first
        blob[:8] = data.draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little")
    else:
        header = int.from_bytes(blob[:8], "little")
        blob[8 + data.draw(st.integers(0, header - 1))] = data.draw(st.integers(0, 255))
    return bytes(blob)


@FUZZ
@given(data=st.data())
def test_fuzzed_weights_load_only_as_recorded(checkpoint, tmp_path_factory, peak, data):
    """A damaged weights file is refused (with the digests) or loads exactly what it holds (without
    them); with the digests on, a network that loads holds the very file the config records."""
    from safetensors.torch import load_file

    target = tmp_path_factory.mktemp("weights")
    config = (checkpoint / "config.json").read_text()
    (target / "config.json").write_text(config)
    blob = _mutated((checkpoint / "model.safetensors").read_bytes(), data)
    (target / "model.safetensors").write_bytes(blob)
    verify = data.draw(st.booleans())
    model = _bounded(peak, lambda: load_checkpoint(target, verify=verify))
    if model is None:
        return
    if verify:
        assert hashlib.sha256(blob).hexdigest() == json.loads(config)["integrity"]["weights_sha256"]
    for key, tensor in load_file(str(target / "model.safetensors")).items():
        assert torch.equal(model.state_dict()[key], tensor)


@pytest.fixture(scope="module")
def tiny():
    """A traced tiny ResNet with tables over its candidates and a random plan."""
    import random

    tiny = TINY_MODELS["resnet-basic"]
    model = tiny.build().eval()
    example = tiny.inputs(1, torch.float32)
    spec = trace(model, example)
    cands = candidates(spec)
    latency = LatencyTable({c: 0.1 + 0.01 * i for i, c in enumerate(cands)}, spec=spec, fixed_ms=1.0)
    importance = ImportanceTable({c: 0.5 + 0.001 * i for i, c in enumerate(cands)}, spec=spec)
    return model, example, spec, latency, importance, random_plan(spec, cands, random.Random(0))


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(-3, 8), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
)
NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-300, 5e-324, 1e308, 0.0, -1.0, 1.0, 1.3, 3.0, 1e9]),
    st.integers(-5, 10**9),
    JUNK,
)


def _table_dict(cands, values):
    return {
        "format": LatencyTable.FORMAT,
        "spec_fingerprint": None,
        "spec": None,
        "fixed_ms": 0.0,
        "metadata": {},
        "entries": [{"candidate": c.to_dict(), "ms": v} for c, v in zip(cands, values, strict=False)],
    }


@FUZZ
@given(data=st.data())
def test_the_public_api_given_junk_raises_only_lmzoo_errors(tiny, peak, data):
    model, _example, spec, latency, importance, plan = tiny
    cands = list(latency.entries)
    calls = {
        "Candidate": lambda: Candidate(*[data.draw(st.one_of(st.integers(-3, 12), JUNK)) for _ in range(6)]),
        "Plan.from_dict": lambda: Plan.from_dict(
            data.draw(
                st.fixed_dictionaries(
                    {"format": st.sampled_from([PLAN_FORMAT, "x"]), "length": NUMBER, "blocks": JUNK}
                )
            )
        ),
        "Plan": lambda: Plan(data.draw(st.one_of(JUNK, st.just(list(plan)))), data.draw(JUNK | st.just(()))),
        "LatencyTable.from_dict": lambda: LatencyTable.from_dict(
            _table_dict(cands, data.draw(st.lists(NUMBER, min_size=1, max_size=len(cands))))
        ),
        "ImportanceTable": lambda: ImportanceTable({cands[0]: data.draw(NUMBER)}),
        "solve": lambda: solver.solve(
            latency,
            importance,
            **data.draw(
                st.sampled_from(["budget_ms", "speedup"]).flatmap(
                    lambda k: st.fixed_dictionaries({k: NUMBER})
                )
            ),
            levels=data.draw(st.one_of(st.none(), st.integers(-2, 200_000), JUNK)),
        ),
        "solve_reachable": lambda: solver.solve_reachable(
            data.draw(st.sampled_from([latency, _zero_latency(latency)])),
            importance,
            speedup=data.draw(NUMBER),
            levels=data.draw(st.one_of(st.integers(1, 50), st.none())),
        ),
        "frontier": lambda: solver.frontier(
            latency, importance, levels=data.draw(st.one_of(st.integers(-1, 3000), JUNK))
        ),
        "apply_plan": lambda: apply_plan(
            data.draw(st.sampled_from([model, None, "model"])),
            data.draw(st.sampled_from([spec, None, {}])),
            data.draw(st.sampled_from([plan, None, "plan", Plan.identity(spec)])),
        ),
        "merge": lambda: merge(data.draw(st.sampled_from([model, None, torch.nn.Identity()]))),
        "trace": lambda: trace(
            model,
            data.draw(
                st.one_of(
                    st.tuples(
                        st.integers(1, 2), st.integers(1, 4), st.integers(1, 48), st.integers(1, 48)
                    ).map(lambda shape: torch.randn(*shape)),
                    st.just(torch.randn(1, 3, 4096, 8)),
                    JUNK,
                )
            ),
        ),
        "load": lambda: lmzoo.load(data.draw(st.text(max_size=40))),
    }
    name = data.draw(st.sampled_from(sorted(calls)))
    result = _bounded(peak, calls[name])
    if name.startswith("solve") and result is not None:
        chosen = result[0] if name == "solve_reachable" else result
        assert isinstance(chosen, Plan) and math.isfinite(latency.chain_ms(chosen))


def _zero_latency(latency):
    return LatencyTable(dict.fromkeys(latency.entries, 0.0), spec=latency.spec)
