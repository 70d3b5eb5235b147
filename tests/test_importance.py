import dataclasses
import json
import math
import random

import pytest
import torch
from torch.utils.data import TensorDataset

import lmzoo
import lmzoo.tasks
from lmzoo.errors import InvalidArgumentError, InvalidTableError
from lmzoo.importance import (
    EstimatorContext,
    FinetuneSettings,
    ImportanceData,
    IncompleteTableError,
    estimator_names,
    get_estimator,
    importance_table,
    register_estimator,
)
from lmzoo.importance.context import norm_after
from lmzoo.testing import TINY_MODELS, random_plan, randomize_norms

SETTINGS = FinetuneSettings(lr=0.01, batch_size=8, eval_batch_size=32, block_steps=10)
#: what the hooked estimator does before each entry (a test sets it)
HOOK = {"before": lambda cand: None}


@register_estimator("test-hooked-finetune")
def hooked_finetune(context, cand, seed):
    """A new estimator is one function plus the decorator: here the paper's, behind a test hook."""
    HOOK["before"](cand)
    return get_estimator("finetune").run(context, cand, seed)


def tiny_setup(n_train: int, n_heldout: int, max_end: int):
    """A randomised tiny MobileNetV2, its spec, random importance data and a slice of candidates."""
    torch.manual_seed(0)
    tiny = TINY_MODELS["mobilenetv2"]
    model = randomize_norms(tiny.build()).eval()
    spec = lmzoo.trace(model, torch.randn(1, 3, 20, 20))
    g = torch.Generator().manual_seed(1)

    def images(n):
        return TensorDataset(torch.randn(n, 3, 20, 20, generator=g), torch.randint(0, 10, (n,), generator=g))

    data = ImportanceData(train=images(n_train), heldout=images(n_heldout))
    cands = [c for c in lmzoo.candidates(spec) if c.end <= max_end]  # a slice keeps the tests fast
    return model, spec, data, cands


@pytest.fixture(scope="module")
def setup():
    return tiny_setup(24, 32, 8)


def _table(setup, tmp_path, **kwargs):
    model, spec, data, cands = setup
    return importance_table(
        model, spec, data, cands=cands, settings=SETTINGS, workdir=tmp_path, progress=False, **kwargs
    )


@pytest.mark.parametrize("estimator", ["finetune", "block-distill", "bn-recalibration", "bn-suffix"])
def test_entries_are_exp_of_the_heldout_accuracy_change(setup, tmp_path, estimator):
    _, spec, _, cands = setup
    table = _table(setup, tmp_path, estimator=estimator)
    assert set(table.entries) == set(cands) and table.spec == spec
    base = table.metadata["base"]["accuracy"]
    store_dir = next(tmp_path.glob(f"importance-{estimator}-*"))
    records = [json.loads(p.read_text()) for p in store_dir.glob("*.json") if p.name != "base.json"]
    assert len(records) == sum(1 for c in cands if not (c.length == 1 and c.kept == (c.end,)))
    for record in records:
        cand = lmzoo.Candidate.from_dict(record["candidate"])
        assert record["status"] == "ok" and record["wall_s"] > 0
        assert table.entries[cand] == pytest.approx(math.exp((record["metrics"]["accuracy"] - base) / 100))
    identity = [c for c in cands if c.length == 1 and c.kept == (c.end,)]
    assert identity and all(table.entries[c] == 1.0 for c in identity)
    assert not list(store_dir.glob(".*.tmp"))


def test_same_seed_same_table_and_shards_add_up(setup, tmp_path):
    whole = _table(setup, tmp_path / "a", estimator="finetune", seed=5)
    again = _table(setup, tmp_path / "b", estimator="finetune", seed=5)
    assert whole.entries == again.entries  # deterministic on CPU
    with pytest.raises(IncompleteTableError, match="run the remaining shards"):
        _table(setup, tmp_path / "c", estimator="finetune", seed=5, shard=(0, 2))
    sharded = _table(setup, tmp_path / "c", estimator="finetune", seed=5, shard=(1, 2))
    assert sharded.entries == whole.entries


def test_registered_estimators_include_the_built_ins_and_new_ones():
    names = estimator_names()
    assert {"finetune", "finetune-short", "block-distill", "bn-recalibration"} <= set(names)
    assert "test-hooked-finetune" in names
    assert get_estimator("finetune-short").settings(SETTINGS).step_fraction == 0.1
    with pytest.raises(
        InvalidArgumentError, match=r"unknown importance estimator 'magic'; choose one of .*bn-recalibration"
    ):
        get_estimator("magic")


def test_killed_run_resumes_without_recomputing(setup, tmp_path, monkeypatch):
    calls = []

    def dies_after_three(cand):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(cand)

    monkeypatch.setitem(HOOK, "before", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        _table(setup, tmp_path, estimator="test-hooked-finetune")
    done = list(calls)
    calls.clear()
    monkeypatch.setitem(HOOK, "before", calls.append)
    table = _table(setup, tmp_path, estimator="test-hooked-finetune")
    assert not set(calls) & set(done) and len(calls) + 3 == table.metadata["measured_entries"]


def test_a_diverging_fine_tune_is_a_recorded_failure_not_a_value(setup, tmp_path):
    model, spec, data, cands = setup
    exploding = FinetuneSettings(lr=1e12, batch_size=8, eval_batch_size=32)
    with pytest.raises(InvalidTableError, match=r"loss became (nan|inf)"):
        importance_table(model, spec, data, cands=cands, settings=exploding, workdir=tmp_path, progress=False)
    records = [json.loads(p.read_text()) for p in next(tmp_path.glob("importance-*")).glob("*.json")]
    assert any(r.get("status") == "failed" and "lower the lr" in r["error"] for r in records)


def test_bad_arguments(setup, tmp_path):
    with pytest.raises(InvalidArgumentError, match="unknown importance estimator 'oracle'"):
        _table(setup, tmp_path, estimator="oracle")
    with pytest.raises(InvalidArgumentError, match="shard must be"):
        _table(setup, tmp_path, shard=(2, 2))
    with pytest.raises(InvalidArgumentError, match="unknown executor 'slurm'"):
        _table(setup, tmp_path, executor="slurm")


@pytest.fixture(scope="module")
def unet_setup():
    torch.manual_seed(0)
    model = TINY_MODELS["ddpm-unet"].build().eval()
    spec = lmzoo.trace(model, TINY_MODELS["ddpm-unet"].inputs(1, torch.float32))
    g = torch.Generator().manual_seed(2)
    data = ImportanceData(
        train=TensorDataset(torch.rand(8, 3, 16, 16, generator=g) * 2 - 1, torch.zeros(8, dtype=torch.long)),
        heldout=TensorDataset(
            torch.rand(6, 3, 16, 16, generator=g) * 2 - 1, torch.zeros(6, dtype=torch.long)
        ),
    )
    cands = [c for c in lmzoo.candidates(spec) if c.end <= 3]
    return model, spec, data, cands


def test_ddpm_entries_use_the_heldout_denoising_loss_under_fixed_noise(unet_setup, tmp_path):
    model, spec, data, cands = unet_setup
    settings = FinetuneSettings(optimizer="adam", lr=1e-4, weight_decay=0.0, batch_size=4, eval_batch_size=4)
    table = importance_table(
        model, spec, data, cands=cands, settings=settings, workdir=tmp_path, progress=False
    )
    assert table.metadata["task"] == "denoising" and "exp(-(L - L_base)" in table.metadata["metric"]
    base = table.metadata["base"]["loss"]
    task = lmzoo.tasks.Denoising()
    again = task.evaluate(model, data.heldout, batch_size=4, device=torch.device("cpu"))["loss"]
    assert again == base  # fixed noise and timesteps: the same network gives the same loss
    other_batching = task.evaluate(model, data.heldout, batch_size=6, device=torch.device("cpu"))["loss"]
    assert other_batching == pytest.approx(base, rel=1e-5)
    store_dir = next(tmp_path.glob("importance-finetune-*"))
    records = [json.loads(p.read_text()) for p in store_dir.glob("*.json") if p.name != "base.json"]
    assert records
    for record in records:
        cand = lmzoo.Candidate.from_dict(record["candidate"])
        assert table.entries[cand] == pytest.approx(math.exp(-(record["metrics"]["loss"] - base) / base))
    for estimator in ("block-distill", "bn-recalibration", "bn-suffix"):
        with pytest.raises(InvalidArgumentError, match="use finetune"):
            importance_table(
                model, spec, data, cands=cands, estimator=estimator, workdir=tmp_path, progress=False
            )


def _fresh_norms(net):
    """BatchNorms as reset_parameters leaves them (the tiny model's norms are randomised)."""
    return [
        m
        for m in net.modules()
        if isinstance(m, torch.nn.BatchNorm2d) and bool((m.weight == 1).all() and (m.running_var == 1).all())
    ]


def test_reinit_single_starts_single_convs_afresh_and_measures_them(setup, tmp_path):
    """The official rule: a single-conv block's conv and norm start afresh and the entry is measured;
    a multi-conv block keeping one conv keeps its weights."""
    model, spec, data, cands = setup
    settings = dataclasses.replace(SETTINGS, reinit="single")
    context = EstimatorContext(model, spec, data, settings, lmzoo.tasks.Classification(), torch.device("cpu"))
    for cand in [c for c in lmzoo.candidates(spec) if c.length > 1 and len(c.kept) == 1][:3]:
        net = context.compressed(cand, seed=0)
        assert not _fresh_norms(net)
        assert not any(p.grad is not None for p in net.parameters())
    singles = [c for c in cands if c.length == 1 and c.kept == (c.end,)]
    for cand in singles[:3]:
        net = context.compressed(cand, seed=0)
        assert len(_fresh_norms(net)) == 1
    table = importance_table(
        model, spec, data, cands=cands, settings=settings, estimator="bn-recalibration",
        workdir=tmp_path, progress=False,
    )  # fmt: skip
    store_dir = next(tmp_path.glob("importance-bn-recalibration-*"))
    measured = {
        json.loads(p.read_text())["candidate"]["end"]
        for p in store_dir.glob("*.json")
        if p.name != "base.json"
    }
    assert {c.end for c in singles} <= measured
    assert any(table.entries[c] != 1.0 for c in singles)
    with pytest.raises(InvalidArgumentError, match="reinit must be one of single, kept-alone"):
        dataclasses.replace(SETTINGS, reinit="all")


def test_single_kept_blocks_start_their_conv_and_norm_afresh(setup):
    model, spec, data, _ = setup
    context = EstimatorContext(model, spec, data, SETTINGS, lmzoo.tasks.Classification(), torch.device("cpu"))
    singles = [c for c in lmzoo.candidates(spec) if c.length > 1 and len(c.kept) == 1]
    assert singles
    for cand in singles[:4]:
        path = spec.unit(cand.kept[0]).path
        norm = norm_after(model, path, context.example_inputs())
        assert isinstance(norm, torch.nn.BatchNorm2d), path  # timm BatchNormAct2d after every conv
        net = context.compressed(cand, seed=0)
        fresh = [
            m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d) and m.num_batches_tracked == 0
        ]
        assert any(bool((m.weight == 1).all() and (m.running_var == 1).all()) for m in fresh)
    assert not any(p.grad is not None for p in model.parameters())  # the base model is untouched


@pytest.mark.parametrize("family", ["resnet-basic", "resnet-bottleneck", "mobilenetv2"])
def test_a_chain_resumed_from_cached_maps_computes_the_same_output(family):
    from lmzoo.adapters.base.chain import Chain

    tiny = TINY_MODELS[family]
    model = randomize_norms(tiny.build()).eval()
    (x,) = tiny.inputs(3, torch.float32)
    spec = lmzoo.trace(model, x)
    rng = random.Random(family)
    cands = lmzoo.candidates(spec)
    for _ in range(5):
        net = lmzoo.apply_plan(model, spec, random_plan(spec, cands, rng)).eval()
        (chain,) = [m for m in net.modules() if isinstance(m, Chain)]
        captured: list[torch.Tensor] = []
        handle = chain.register_forward_pre_hook(lambda _m, inputs, store=captured: store.append(inputs[0]))
        with torch.no_grad():
            full = net(x)
        handle.remove()
        first = rng.randrange(len(chain.blocks))
        with torch.no_grad():
            saved = {0: captured[0]}
            h = chain.run_blocks(captured[0], saved, 0, first)
            with chain.resumed([(first, h, saved)]):
                resumed = net(torch.zeros_like(x))
        torch.testing.assert_close(resumed, full, rtol=0, atol=0)


def _states_of(spec, cands):
    from lmzoo.core.activations import extra_states

    depth = set(lmzoo.candidates(spec, method="depth"))
    return extra_states(spec, [c for c in cands if c in depth])


@pytest.mark.parametrize("estimator", ["bn-recalibration", "block-distill", "bn-suffix"])
def test_activation_states_are_measured_as_their_own_entries(setup, tmp_path, estimator):
    """Depth compression's extended entries: each state is one more record (a rerun measures
    nothing), the table holds it beside the plain entries, and its network has the activations
    the state names."""
    from lmzoo.core.activations import ActivationState
    from lmzoo.importance.context import entry_plan

    _, spec, _, cands = setup
    states = _states_of(spec, cands)
    inserting_at_start = [
        s for s in states if s.start_active and spec.positions[s.candidate.start].activation is None
    ]
    assert states and inserting_at_start
    plain = _table(setup, tmp_path, estimator=estimator)
    table = _table(setup, tmp_path, estimator=estimator, states=states)
    assert dict(table.entries) == dict(plain.entries) and set(table.states) == set(states)
    store_dir = next(tmp_path.glob(f"importance-{estimator}-*"))
    records = [json.loads(p.read_text()) for p in store_dir.glob("*.json") if p.name != "base.json"]
    measured = {
        ActivationState.from_dict(r["candidate"]): r for r in records if "start_active" in r["candidate"]
    }
    assert set(measured) == set(states)
    base = table.metadata["base"]["accuracy"]
    for state, record in measured.items():
        assert table.states[state] == pytest.approx(math.exp((record["metrics"]["accuracy"] - base) / 100))
    assert _table(setup, tmp_path, estimator=estimator, states=states) == table  # nothing re-measured
    state = inserting_at_start[0]
    blocks = [
        b for b in lmzoo.Plan.identity(spec) if not state.candidate.start < b.end <= state.candidate.end
    ]
    blocks.insert(state.candidate.start, state.candidate)
    plan = entry_plan(spec, blocks, state)
    assert state.candidate.start in plan.activated
    if state.end_active and spec.block_activation(state.candidate.start, state.candidate.end) is None:
        assert state.candidate.end in plan.activated


def test_block_distill_feeds_a_state_the_activation_it_inserts(setup):
    """With a zero learning rate the distilled block stays as it is, so block-distill's held-out
    metrics from cached maps must equal the whole configured network's, activation included."""
    from lmzoo.importance.block_distill import distill_block

    model, spec, data, cands = setup
    settings = dataclasses.replace(SETTINGS, block_lr=0.0, block_steps=1)
    context = EstimatorContext(
        model, spec, data, settings, lmzoo.tasks.make_task("classification"), torch.device("cpu")
    )
    for state in [s for s in _states_of(spec, cands) if s.start_active][:3]:
        metrics = distill_block(context, state, seed=3)
        whole = context.evaluate(context.compressed(state, 3).eval())
        assert metrics["accuracy"] == whole["accuracy"]
        assert metrics["loss"] == pytest.approx(whole["loss"], rel=1e-5)


@pytest.mark.parametrize("kind", ["candidate", "state inserting at its start"])
def test_bn_suffix_equals_recalibrating_the_later_norms_of_the_whole_network(setup, kind):
    """bn-suffix runs from cached maps at the block's start; it must equal the whole configured
    network with the statistics of every BatchNorm from the block on (the block's, the later
    blocks', the head's) re-estimated on the same calibration batches (up to rounding)."""
    import itertools

    from torch.utils.data import DataLoader

    from lmzoo.importance.bn_suffix import recalibrate_suffix

    model, spec, data, cands = setup
    settings = dataclasses.replace(SETTINGS, calibration_examples=16, eval_batch_size=8)
    context = EstimatorContext(
        model, spec, data, settings, lmzoo.tasks.make_task("classification"), torch.device("cpu")
    )
    if kind == "candidate":
        entries = [c for c in cands if c.length > 1 and c.start > 0][:3]
    else:
        entries = [s for s in _states_of(spec, cands) if s.start_active][:2]
    assert entries
    for entry in entries:
        metrics = recalibrate_suffix(context, entry, seed=3)
        net = context.compressed(entry, 3).eval()
        start = (entry.candidate if hasattr(entry, "candidate") else entry).start
        blocks = context.chain(net).blocks
        later = [m for b in list(blocks)[start:] for m in b.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        later.append(net.bn2)
        for norm in later:
            norm.reset_running_stats()
            norm.momentum = None
            norm.train()
        with torch.no_grad():
            for x, _ in itertools.islice(DataLoader(data.train, batch_size=8), 2):
                net(x)
        whole = context.evaluate(net.eval())
        assert metrics["recalibrated_norms"] == len(later) and metrics["calibration_examples"] == 16
        # the measurement folds each BatchNorm into its conv: equal up to rounding, so at most a
        # near-tie among the 32 held-out images may flip
        assert abs(metrics["accuracy"] - whole["accuracy"]) <= 100 / 32
        assert metrics["loss"] == pytest.approx(whole["loss"], rel=1e-4)


def test_a_work_directory_never_serves_records_of_another_network_or_data(setup, tmp_path):
    """Records under one workdir are reused for the same network and subsets only: a retrained
    network (other weights), another held-out subset (a Subset of other indices or another size) each
    measure afresh, and the first inputs still resume from their own records."""
    from torch.utils.data import Subset

    model, spec, data, cands = setup
    cands = cands[:4]

    def table(net, subsets):
        return importance_table(
            net, spec, subsets, cands=cands, settings=SETTINGS, estimator="bn-recalibration",
            workdir=tmp_path, progress=False,
        )  # fmt: skip

    first = table(model, data)
    assert len(list(tmp_path.glob("importance-bn-recalibration-*"))) == 1
    retrained = _copy_with_scaled_first_conv(model)
    assert table(retrained, data).metadata["base"] != first.metadata["base"]
    pool = ImportanceData(train=data.train, heldout=Subset(data.heldout, range(16)))
    other = ImportanceData(train=data.train, heldout=Subset(data.heldout, range(16, 32)))
    assert table(model, pool).metadata["base"] != table(model, other).metadata["base"]
    assert len(list(tmp_path.glob("importance-bn-recalibration-*"))) == 4  # one store per inputs
    resumed = table(model, data)
    assert resumed.entries == first.entries and resumed.metadata["base"] == first.metadata["base"]
    assert len(list(tmp_path.glob("importance-bn-recalibration-*"))) == 4


def _copy_with_scaled_first_conv(model):
    import copy

    net = copy.deepcopy(model)
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        conv.weight.mul_(0.5)
    return net
