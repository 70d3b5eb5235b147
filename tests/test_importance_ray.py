"""The Ray executor on a real local cluster of 2 CPUs (the `lmzoo[ray]` extra)."""

import pytest
import torch
from torch.utils.data import TensorDataset

import lmzoo
from lmzoo.importance import FinetuneSettings, ImportanceData, importance_table
from lmzoo.testing import TINY_MODELS, randomize_norms

ray = pytest.importorskip("ray", reason="the Ray executor test needs `pip install lmzoo[ray]`")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_executor_gives_the_local_table_and_resumes(cluster, tmp_path):
    torch.manual_seed(0)
    tiny = TINY_MODELS["mobilenetv2"]
    model = randomize_norms(tiny.build()).eval()
    spec = lmzoo.trace(model, torch.randn(1, 3, 20, 20))
    g = torch.Generator().manual_seed(1)
    data = ImportanceData(
        train=TensorDataset(
            torch.randn(16, 3, 20, 20, generator=g), torch.randint(0, 10, (16,), generator=g)
        ),
        heldout=TensorDataset(
            torch.randn(16, 3, 20, 20, generator=g), torch.randint(0, 10, (16,), generator=g)
        ),
    )
    cands = [c for c in lmzoo.candidates(spec) if c.end <= 5]
    settings = FinetuneSettings(lr=0.01, batch_size=8, eval_batch_size=16)
    kwargs = dict(cands=cands, settings=settings, seed=3, progress=False)
    local = importance_table(model, spec, data, workdir=tmp_path / "local", **kwargs)
    half = importance_table  # the first shard locally, the rest as Ray tasks into the same store
    with pytest.raises(lmzoo.importance.IncompleteTableError):
        half(model, spec, data, workdir=tmp_path / "ray", shard=(0, 2), **kwargs)
    on_ray = importance_table(model, spec, data, workdir=tmp_path / "ray", executor="ray", **kwargs)
    assert on_ray.entries.keys() == local.entries.keys()
    for cand, value in local.entries.items():
        assert on_ray.entries[cand] == pytest.approx(value, abs=1e-12)
    records = list(next((tmp_path / "ray").glob("importance-*")).glob("*.json"))
    assert len(records) == local.metadata["measured_entries"] + 1  # + base.json
