import json
import random

import pytest
import torch
from torch import nn

import lmzoo
from lmzoo.adapters.base.chain import Chain
from lmzoo.core.candidates import METHODS, all_candidates
from lmzoo.latency import table as table_module
from lmzoo.latency.endtoend import deploy_form
from lmzoo.latency.stats import LatencyStats, contended
from lmzoo.latency.table import conv_config, covering
from lmzoo.tables import LatencyTable
from lmzoo.testing import TINY_MODELS, random_plan, randomize_norms

FAST = {"warmup": 0, "runs": 2, "passes": 2, "progress": False}


@pytest.fixture(scope="module")
def tiny():
    t = TINY_MODELS["mobilenetv2"]
    model = randomize_norms(t.build()).eval()
    x = t.inputs(1, torch.float32)[0]
    return model, x, lmzoo.trace(model, x)


@pytest.mark.parametrize("name", ["resnet-basic", "resnet-bottleneck", "mobilenetv2"])
def test_entries_measure_exactly_the_conv_each_block_deploys_to(name):
    t = TINY_MODELS[name]
    model = randomize_norms(t.build()).eval()
    spec = lmzoo.trace(model, t.inputs(1, torch.float32))
    rng = random.Random(name)
    checked = 0
    for method in METHODS:
        cands = lmzoo.candidates(spec, method=method)
        for _ in range(4):
            plan = random_plan(spec, cands, rng)
            merged = lmzoo.merge(lmzoo.apply_plan(model, spec, plan))
            (chain,) = [m for m in merged.modules() if isinstance(m, Chain)]
            for block, deployed in zip(plan, chain.blocks):
                cfg = conv_config(spec, block)
                if cfg is None:
                    assert isinstance(deployed, nn.Identity)
                    continue
                assert isinstance(deployed, nn.Conv2d)
                geometry = (
                    deployed.in_channels,
                    deployed.out_channels,
                    deployed.kernel_size[0],
                    deployed.stride[0],
                    deployed.padding[0],
                    deployed.groups,
                )
                assert geometry == (
                    cfg.in_channels,
                    cfg.out_channels,
                    cfg.kernel,
                    cfg.stride,
                    cfg.padding,
                    cfg.groups,
                ), block
                checked += 1
    assert checked > 50


def test_table_covers_every_method_and_shares_identical_convs(tiny):
    _, _, spec = tiny
    table = lmzoo.latency_table(spec, **FAST)
    union = {c for m in METHODS for c in lmzoo.candidates(spec, method=m)}
    assert set(table.entries) == union
    assert all((v == 0.0) == (c.kernel == 0) for c, v in table.entries.items())
    configs = {conv_config(spec, c).key() for c in union if c.kernel}
    meta = table.metadata
    assert meta["unique_measurements"] == len(configs) < len(union)
    for key in ("backend", "versions", "device_name", "batch_size", "dtype", "threads", "date", "passes"):
        assert key in meta
    assert meta["versions"]["lmzoo"] == lmzoo.__version__ and meta["backend"] == "torch"
    assert table.spec == spec and table.fixed_ms == 0.0
    assert "no model given" in meta["calibration"]["method"]


def test_calibration_against_the_base_network(tiny):
    model, x, spec = tiny
    table = lmzoo.latency_table(spec, model=model, example_inputs=x, **FAST)
    cal = table.metadata["calibration"]
    assert cal["context_scale"] > 0 and table.fixed_ms >= 0
    # by construction the identity plan predicts the base network timed during calibration
    predicted = table.predict(lmzoo.Plan.identity(spec))
    expected = max(cal["base_deploy"]["median_ms"], cal["identity_chain"]["median_ms"])
    assert predicted == pytest.approx(expected, rel=1e-9)


def test_interrupted_table_resumes_from_its_cache(tiny, tmp_path, monkeypatch):
    _, _, spec = tiny
    cache = tmp_path / "latency.jsonl"
    real = table_module.measure_times
    calls = []

    def interrupted(*args, **kwargs):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(table_module, "measure_times", interrupted)
    with pytest.raises(KeyboardInterrupt):  # a partial table is never returned
        lmzoo.latency_table(spec, cache=cache, **FAST)
    assert len(cache.read_text().splitlines()) == 5
    with open(cache, "a") as handle:
        handle.write('{"format": "lmzoo.latency-cache/1", "setting": "tor')  # a torn last line

    counted = []

    def counting(*args, **kwargs):
        counted.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(table_module, "measure_times", counting)
    table = lmzoo.latency_table(spec, cache=cache, **FAST)
    total = 2 * table.metadata["unique_measurements"]
    assert len(counted) == total - 5 and table.metadata["reused_from_cache"] == 5
    lines = cache.read_text().splitlines()
    assert len(lines) == total and all(json.loads(line) for line in lines)

    counted.clear()
    again = lmzoo.latency_table(spec, cache=cache, **FAST)
    assert not counted and again.entries == table.entries  # everything reused, same numbers
    changed = lmzoo.latency_table(spec, cache=cache, **{**FAST, "runs": 4})
    assert len(counted) == total and changed.metadata["reused_from_cache"] == 0  # other settings


def test_table_round_trips_with_its_spec_and_drives_the_solver(tiny, tmp_path):
    _, _, spec = tiny
    table = lmzoo.latency_table(spec, **FAST)
    table.save(tmp_path / "lat.json")
    again = LatencyTable.load(tmp_path / "lat.json")
    assert again == table and again.spec == spec
    importance = lmzoo.ImportanceTable({c: 1.0 for c in table.entries})
    plan = lmzoo.solve(again, importance, speedup=1.1)
    plan.validate(spec)
    assert all(
        b.kernel > 0
        for b in plan
        if b.length == 1 and b.end not in (u.index for u in spec.units if u.removable)
    )


def test_deploy_form_is_the_base_network_with_norms_folded(tiny):
    model, x, spec = tiny
    deploy = deploy_form(model, spec)
    with torch.no_grad():
        assert torch.allclose(deploy(x), model(x), atol=1e-4 * model(x).abs().max().item())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deploy.blocks.modules())


@pytest.mark.parametrize("name", ["ddpm-unet", "mobilenetv2"])
def test_calibration_chain_runs_every_conv_even_in_optimising_runtimes(name, tmp_path):
    """The identity-plan probe must run each conv: onnxruntime once constant-folded a probe whose
    inputs were buffers (its calibration ratio collapsed to 0.02). Checked on the graph that
    onnxruntime actually executes, so the test does not depend on timings."""
    import onnx
    import onnxruntime as ort

    from lmzoo.latency.table import _IdentityChain
    from lmzoo.onnx_graph import onnx_bytes

    t = TINY_MODELS[name]
    model = t.build().eval()
    spec = lmzoo.trace(model, t.inputs(1, torch.float32))
    chain = _IdentityChain(spec).eval()
    assert chain.chained == (name != "ddpm-unet")
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(
        onnx_bytes(chain, chain.example_inputs(1)), options, providers=["CPUExecutionProvider"]
    )
    ops = [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]
    assert sum(op in ("Conv", "FusedConv") for op in ops) == len(chain.convs) == spec.length


def test_table_on_a_unet_with_calibration():
    t = TINY_MODELS["ddpm-unet"]
    model = t.build().eval()
    inputs = t.inputs(1, torch.float32)
    spec = lmzoo.trace(model, inputs)
    table = lmzoo.latency_table(spec, model=model, example_inputs=inputs, **FAST)
    assert table.metadata["calibration"]["context_scale"] > 0 and table.fixed_ms >= 0
    assert any(
        cfg.activation == "groupnorm+silu"
        for cfg in map(lambda c: conv_config(spec, c), table.entries)
        if cfg
    )


def test_latency_stats_flag_contention_when_most_runs_are_slowed():
    quiet = LatencyStats.from_times([1.0 + 0.01 * i for i in range(50)], warmup=0)  # ordinary jitter
    shared = LatencyStats.from_times([1.0] * 10 + [4.0] * 40, warmup=0)  # most runs beside another job
    spike = LatencyStats.from_times([1.0] * 40 + [9.0] * 10, warmup=0)  # a few slow runs: median holds
    assert not quiet.contended and shared.contended and not spike.contended
    assert contended({"a": quiet, "b": shared, "c": spike}, "test") == ["b"]


def test_table_records_and_warns_about_contended_measurements(tiny, monkeypatch, caplog):
    _, _, spec = tiny
    calls = []

    def timed(_module, _inputs, **kwargs):  # the first conv measured while "another job" ran
        calls.append(1)
        slow = len(calls) == 1
        return [0.1, 0.1] + [0.1 * (5 if slow else 1)] * (kwargs["runs"] - 2)

    monkeypatch.setattr(table_module, "measure_times", timed)
    with caplog.at_level("WARNING"):
        table = lmzoo.latency_table(spec, **{**FAST, "passes": 1, "runs": 10})
    flagged = table.metadata["contended"]
    assert len(flagged) == 1 and "latency table: 1 of" in caplog.text and "re-measure" in caplog.text
    monkeypatch.setattr(table_module, "measure_times", lambda _m, _i, **kw: [0.1] * kw["runs"])
    assert lmzoo.latency_table(spec, **{**FAST, "passes": 1, "runs": 10}).metadata["contended"] == []


@pytest.mark.parametrize("name", ["resnet-basic", "resnet-bottleneck", "mobilenetv2"])
def test_a_table_covers_a_retrained_base_whose_candidates_keep_other_convs(name):
    """Which convs a candidate keeps follows the base's weights, so two bases of one architecture
    key some blocks differently; every block still deploys to a conv the first base's table timed,
    and ``covering`` gives the second base's table from it without timing anything."""
    t = TINY_MODELS[name]
    specs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        specs.append(lmzoo.trace(randomize_norms(t.build()).eval(), t.inputs(1, torch.float32)))
    first, second = specs
    assert first.fingerprint == second.fingerprint
    timed = {}  # a distinct "measurement" per deployed conv, 0 for identity blocks

    def ms(spec, cand):
        cfg = conv_config(spec, cand)
        return 0.0 if cfg is None else timed.setdefault(cfg.key(), 1.0 + len(timed))

    old = LatencyTable(
        {c: ms(first, c) for c in all_candidates(first)},
        fixed_ms=2.5,
        spec_fingerprint=first.fingerprint,
        metadata={"backend": "torch"},
        spec=first,
    )
    wanted = all_candidates(second)
    assert set(wanted) - set(old.entries)  # the second base keeps other convs in some blocks
    new = covering(old, second, wanted)
    assert new is not None and set(new.entries) == set(wanted)
    assert all(new[c] == ms(second, c) for c in wanted)
    assert new.fixed_ms == 2.5 and new.spec_fingerprint == second.fingerprint
    assert new.metadata["rekeyed_entries"] == len(set(wanted) - set(old.entries))
    assert covering(old, first, all_candidates(first)) is old  # nothing to re-key: the table itself
    # a candidate whose conv the table never timed cannot be covered
    lacking = next(c for c in wanted if c not in old.entries and conv_config(second, c) is not None)
    key = conv_config(second, lacking).key()
    partial = LatencyTable(
        {
            c: v
            for c, v in old.entries.items()
            if conv_config(first, c) is None or conv_config(first, c).key() != key
        },
        fixed_ms=2.5,
        spec=first,
    )
    assert covering(partial, second, wanted) is None
