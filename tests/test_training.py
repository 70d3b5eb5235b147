"""lmzoo.training: the weight average (diffusers' EMA) and its resume."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lmzoo.training.loop import train
from lmzoo.training.settings import TrainSettings

SETTINGS = TrainSettings(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=8, epochs=3)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    return TensorDataset(x, x @ torch.randn(4, 2, generator=g))


def _run(ema_decay, snapshots=None, **kwargs):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)

    def loss_fn(net, x, y, _generator):
        if snapshots is not None:
            snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return nn.functional.mse_loss(net(x), y)

    summary = train(model, _data(), SETTINGS, loss_fn, ema_decay=ema_decay, progress=False, **kwargs)
    return model, summary


def test_the_weight_average_is_the_warmed_up_ema_of_every_step():
    snapshots = []
    plain, summary = _run(0.0, snapshots)
    averaged, _ = _run(0.9)
    after = [*snapshots[1:], plain.state_dict()]  # weights after steps 1..N
    assert len(after) == summary["steps"] == 12
    expected = {k: v.clone() for k, v in snapshots[0].items()}
    for step, weights in enumerate(after):
        d = 0.0 if step == 0 else min(0.9, (1 + step) / (10 + step))  # the first step copies
        for k in expected:
            expected[k] = d * expected[k] + (1 - d) * weights[k]
    for k, v in averaged.state_dict().items():
        torch.testing.assert_close(v, expected[k])
        assert not torch.allclose(v, plain.state_dict()[k])


def test_a_resumed_run_keeps_its_weight_average(tmp_path, monkeypatch):
    import lmzoo.training.loop as training

    whole, _ = _run(0.9)
    calls = {"n": 0}
    original = training._save_state

    def crash_after_first_save(*args, **kwargs):
        original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "_save_state", crash_after_first_save)
    state = tmp_path / "train.state"
    with pytest.raises(KeyboardInterrupt):
        _run(0.9, state_path=state, save_every=5)
    resumed, _ = _run(0.9, state_path=state, save_every=5)
    for k, v in resumed.state_dict().items():
        torch.testing.assert_close(v, whole.state_dict()[k])


def _copies(build, inputs_fn):
    torch.manual_seed(0)
    student = build().eval()
    teacher = build().eval()
    teacher.load_state_dict(student.state_dict())
    return student, teacher


@pytest.mark.parametrize("kind", ["classification", "denoising"])
def test_distillation_pulls_the_student_towards_the_base(kind):
    """Fine-tuning loss with distillation weight w: (1 - w) * task loss + w * a divergence from the
    teacher on the same (augmented / noised) input, which is 0 when student equals teacher."""
    from lmzoo.tasks import Classification, Denoising
    from lmzoo.testing import TINY_MODELS

    tiny = TINY_MODELS["ddpm-unet" if kind == "denoising" else "mobilenetv2"]
    task = Denoising() if kind == "denoising" else Classification()
    student, teacher = _copies(tiny.build, tiny.inputs)
    x = tiny.inputs(4, torch.float32)[0]
    y = torch.randint(0, 2, (4,))

    def value(settings, net, teacher=None):
        return float(task.loss(settings, teacher)(net, x, y, torch.Generator().manual_seed(1)).detach())

    plain = value(TrainSettings(), student)
    assert value(TrainSettings(distill_weight=0.5), student) == pytest.approx(plain)  # no teacher given
    assert value(TrainSettings(distill_weight=1.0), student, teacher) == pytest.approx(0.0, abs=1e-6)
    assert value(TrainSettings(distill_weight=0.25), student, teacher) == pytest.approx(
        0.75 * plain, rel=1e-5
    )
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert value(TrainSettings(distill_weight=1.0), student, teacher) > 1e-6
