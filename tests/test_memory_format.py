"""Training and evaluating in channels-last (networks with depthwise convs on CPU) computes what NCHW
computes, up to float rounding, and leaves the network in NCHW with the same parameter objects."""

import pytest
import torch
from torch.utils.data import TensorDataset

import lmzoo.training.memory_format as memory_format
from lmzoo.tasks import Classification
from lmzoo.testing import TINY_MODELS
from lmzoo.training.loop import train
from lmzoo.training.settings import TrainSettings

CPU = torch.device("cpu")
SETTINGS = TrainSettings(optimizer="sgd", lr=0.005, momentum=0.9, weight_decay=1e-4, batch_size=16, epochs=1)


def _images(count: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(count, 3, 16, 16, generator=g, dtype=dtype)
    return TensorDataset(x, torch.randint(0, 10, (count,), generator=g))


def _nchw_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_format, "preferred_memory_format", lambda *_: torch.contiguous_format)


@pytest.mark.parametrize(
    ("name", "depthwise"), [("mobilenetv2", True), ("graph", True), ("resnet-basic", False)]
)
def test_only_networks_with_depthwise_convs_prefer_channels_last_on_cpu(name, depthwise):
    net = TINY_MODELS[name].build()
    assert memory_format.has_depthwise_convs(net) is depthwise
    expected = torch.channels_last if depthwise else torch.contiguous_format
    assert memory_format.preferred_memory_format(net, CPU) == expected
    assert memory_format.preferred_memory_format(net, torch.device("cuda")) == torch.contiguous_format


def _trained(seen_formats: list[bool]) -> tuple[torch.nn.Module, list[int]]:
    torch.manual_seed(0)
    # float64 and 4 steps: the layouts' rounding differences grow ~100x a step on this tiny network
    # (random labels) and stay below 1e-7; a layout bug would move weights by O(1)
    net = TINY_MODELS["mobilenetv2"].build().double()
    ids = [id(p) for p in net.parameters()]
    task = Classification()
    inner = task.loss(SETTINGS)

    def loss(model, x, y, generator):
        seen_formats.append(x.is_contiguous(memory_format=torch.channels_last))
        return inner(model, x, y, generator)

    train(net, _images(64, dtype=torch.float64), SETTINGS, loss, seed=3, progress=False)
    return net, ids


def test_training_in_channels_last_matches_nchw_and_returns_nchw_weights(monkeypatch):
    fast_formats: list[bool] = []
    fast, ids = _trained(fast_formats)
    assert all(fast_formats) and len(fast_formats) == 4  # every batch went in channels-last
    assert [id(p) for p in fast.parameters()] == ids  # optimisers and callers keep their parameters
    assert all(p.is_contiguous() for p in fast.state_dict().values())

    with monkeypatch.context() as patch:
        _nchw_everywhere(patch)
        plain_formats: list[bool] = []
        plain, _ = _trained(plain_formats)
    assert not any(plain_formats)
    for (name, a), b in zip(fast.state_dict().items(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=name)


def test_evaluation_in_channels_last_matches_nchw_and_leaves_the_network_as_it_was(monkeypatch):
    torch.manual_seed(1)
    net = TINY_MODELS["mobilenetv2"].build().eval()
    data = _images(48, seed=2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = Classification().evaluate(net, data, batch_size=16, device=CPU)
    assert all(v.is_contiguous() for v in net.state_dict().values())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    _nchw_everywhere(monkeypatch)
    plain = Classification().evaluate(net, data, batch_size=16, device=CPU)
    assert fast["accuracy"] == plain["accuracy"] and fast["heldout"] == plain["heldout"] == 48
    assert fast["loss"] == pytest.approx(plain["loss"], rel=1e-5)
