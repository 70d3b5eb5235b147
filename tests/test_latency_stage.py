"""The latency stage's cache across bases of one architecture: a cached table keyed by another base's
kept convs is re-keyed without timing when every block deploys to a conv it timed, else measured."""

import pytest
import torch

import lmzoo
from lmzoo.core.candidates import all_candidates
from lmzoo.latency.table import conv_config
from lmzoo.pipeline import latency as stage_module
from lmzoo.pipeline.latency import latency_stage
from lmzoo.pipeline.stages import Stage
from lmzoo.pipeline.workspace import Workspace, content_key
from lmzoo.recipes import load_recipe
from lmzoo.tables import LatencyTable
from lmzoo.testing import TINY_MODELS, randomize_norms


def _base(seed):
    t = TINY_MODELS["resnet-basic"]
    torch.manual_seed(seed)
    model = randomize_norms(t.build()).eval()
    example = t.inputs(1, torch.float32)
    return model, example, lmzoo.trace(model, example)


def _table(spec, skip=None):
    timed = {}

    def ms(cand):
        cfg = conv_config(spec, cand)
        return 0.0 if cfg is None else timed.setdefault(cfg.key(), 1.0 + len(timed))

    entries = {c: ms(c) for c in all_candidates(spec) if skip is None or conv_config(spec, c) != skip}
    return LatencyTable(entries, fixed_ms=1.5, spec_fingerprint=spec.fingerprint, spec=spec)


@pytest.fixture()
def workspace(tmp_path):
    recipe, _ = load_recipe("resnet34-fmnist-layermerge", "smoke")
    return Workspace.for_recipe(recipe, tmp_path)


def _cached_file(ws, spec):
    key = content_key(spec.fingerprint, ws.recipe.latency, ws.recipe.solve.rules)
    return ws.stage(Stage.LATENCY, key) / "latency.json"


def test_a_retrained_base_reuses_the_cached_table_keyed_anew(workspace, monkeypatch):
    _, _, first = _base(0)
    model, example, second = _base(1)
    path = _cached_file(workspace, first)
    _table(first).save(path)
    assert set(all_candidates(second)) - set(LatencyTable.load(path).entries)  # kept convs differ

    def no_timing(*args, **kwargs):
        raise AssertionError("a covered table must not be timed again")

    monkeypatch.setattr(stage_module, "latency_table", no_timing)
    table, out = latency_stage(workspace, model, second, example, progress=False)
    assert out == path and set(table.entries) == set(all_candidates(second))
    saved = LatencyTable.load(path).for_network(second)
    assert dict(saved.entries) == dict(table.entries) and saved.metadata["rekeyed_entries"] > 0
    again, _ = latency_stage(workspace, model, second, example, progress=False)
    assert dict(again.entries) == dict(table.entries)


def test_a_cached_table_lacking_a_deployed_conv_is_measured_again(workspace, monkeypatch):
    _, _, first = _base(0)
    model, example, second = _base(1)
    missing = next(c for c in all_candidates(second) if c not in _table(first).entries)
    path = _cached_file(workspace, first)
    _table(first, skip=conv_config(second, missing)).save(path)
    calls = []

    def timed(spec, setting, **kwargs):
        calls.append(kwargs["cands"])
        return _table(spec)

    monkeypatch.setattr(stage_module, "latency_table", timed)
    table, _ = latency_stage(workspace, model, second, example, progress=False)
    assert len(calls) == 1 and set(calls[0]) == set(all_candidates(second))
    assert set(table.entries) == set(all_candidates(second))
