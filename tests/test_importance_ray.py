"""The Ray executor on a real local cluster of 2 CPUs (the `lmzoo[ray]` extra)."""

import pytest

import lmzoo
from lmzoo.importance import FinetuneSettings, importance_table
from tests.test_importance import tiny_setup

pytestmark = pytest.mark.integration  # smoke builds, torchrun, olah and Ray: the integration tier

ray = pytest.importorskip("ray", reason="the Ray executor test needs `pip install lmzoo[ray]`")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_executor_gives_the_local_table_and_resumes(cluster, tmp_path):
    model, spec, data, cands = tiny_setup(16, 16, 5)
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
