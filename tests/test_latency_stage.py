"""The latency stage's cache across bases of one architecture: a cached table keyed by another base's
kept convs is re-keyed without timing when every block deploys to a conv it timed, else measured."""

import logging

import pytest
import torch

import lmzoo
from lmzoo.core.candidates import all_candidates
from lmzoo.latency.backends import target_of
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


def _table(spec, skip=None, device_name=None):
    timed = {}

    def ms(cand):
        cfg = conv_config(spec, cand)
        return 0.0 if cfg is None else timed.setdefault(cfg.key(), 1.0 + len(timed))

    entries = {c: ms(c) for c in all_candidates(spec) if skip is None or conv_config(spec, c) != skip}
    metadata = {"device_name": device_name} if device_name else None
    return LatencyTable(
        entries, fixed_ms=1.5, spec_fingerprint=spec.fingerprint, metadata=metadata, spec=spec
    )


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


def test_a_cached_table_from_another_machine_is_named_before_plans_are_fitted_to_it(workspace, caplog):
    model, example, spec = _base(0)
    path = _cached_file(workspace, spec)
    here = target_of(workspace.recipe.latency).device_name()
    for device, warned in ((here, False), ("Another CPU (2 threads)", True)):
        _table(spec, device_name=device).save(path)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lmzoo.pipeline.latency"):
            table, _ = latency_stage(workspace, model, spec, example, progress=False)
        assert table.metadata["device_name"] == device  # used as it is either way
        named = [r.getMessage() for r in caplog.records if "was measured on" in r.getMessage()]
        assert bool(named) == warned
        if warned:
            assert f"was measured on {device}, this machine is {here}" in named[0]
