import json
import math

import pytest
import torch
from torch.utils.data import TensorDataset

import lmzoo
from lmzoo import importance as imp
from lmzoo.errors import InvalidArgumentError, InvalidTableError
from lmzoo.importance import FinetuneSettings, ImportanceData, IncompleteTableError, importance_table
from lmzoo.testing import TINY_MODELS, randomize_norms

SETTINGS = FinetuneSettings(lr=0.01, batch_size=8, eval_batch_size=32)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    tiny = TINY_MODELS["mobilenetv2"]
    model = randomize_norms(tiny.build()).eval()
    spec = lmzoo.trace(model, torch.randn(1, 3, 20, 20))
    g = torch.Generator().manual_seed(1)
    data = ImportanceData(
        train=TensorDataset(
            torch.randn(24, 3, 20, 20, generator=g), torch.randint(0, 10, (24,), generator=g)
        ),
        heldout=TensorDataset(
            torch.randn(32, 3, 20, 20, generator=g), torch.randint(0, 10, (32,), generator=g)
        ),
    )
    cands = [c for c in lmzoo.candidates(spec) if c.end <= 8]  # a slice keeps the test fast
    return model, spec, data, cands


def _table(setup, tmp_path, **kwargs):
    model, spec, data, cands = setup
    return importance_table(
        model, spec, data, cands=cands, settings=SETTINGS, workdir=tmp_path, progress=False, **kwargs
    )


@pytest.mark.parametrize("estimator", ["finetune", "bn-recalibration"])
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


def test_killed_run_resumes_without_recomputing(setup, tmp_path, monkeypatch):
    real = imp.ESTIMATORS["finetune"]
    calls = []

    def dies_after_three(context, cand, seed):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(cand)
        return real(context, cand, seed)

    monkeypatch.setitem(imp.ESTIMATORS, "finetune", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        _table(setup, tmp_path, estimator="finetune")
    done = list(calls)
    calls.clear()
    monkeypatch.setitem(imp.ESTIMATORS, "finetune", lambda *a: calls.append(a[1]) or real(*a))
    table = _table(setup, tmp_path, estimator="finetune")
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
