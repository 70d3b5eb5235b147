import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one intra-op thread per xdist worker: two workers x two OpenMP threads on two cores made the
    # training-loop tests 10x slower (threads spin-waiting for each other)
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def fid_weights_file(tmp_path_factory):
    """A weights file laid out as pytorch-fid's pt_inception-2015-12-05 (random values: the real
    file is downloaded from GitHub, which tests cannot reach)."""
    from lmzoo.frechet import FID_WEIGHTS_FILE, fid_inception

    state = fid_inception().state_dict()
    g = torch.Generator().manual_seed(0)
    state["fc.weight"] = torch.randn(1008, 2048, generator=g) * 0.01
    state["fc.bias"] = torch.zeros(1008)
    path = tmp_path_factory.mktemp("fid") / FID_WEIGHTS_FILE
    torch.save(state, path)
    return path
