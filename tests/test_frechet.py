"""The Fréchet distance (FID's formula on lmzoo classifier features), checked against an independent
computation and its invariances over many random feature sets."""

import pytest
import torch

from lmzoo.frechet import classifier_features, frechet_distance


def _reference(a, b):
    """d^2 with Tr (S_a S_b)^1/2 from the eigenvalues of the (non-symmetric) product S_a S_b."""
    a, b = a.double(), b.double()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_trace = torch.linalg.eigvals(cov_a @ cov_b).real.clamp_min(0).sqrt().sum()
    return float((a.mean(0) - b.mean(0)).square().sum() + cov_a.trace() + cov_b.trace() - 2 * root_trace)


@pytest.mark.parametrize("seed", range(20))
def test_frechet_distance_matches_an_independent_computation_and_its_invariances(seed):
    g = torch.Generator().manual_seed(seed)
    dim = int(torch.randint(2, 24, (1,), generator=g))
    n, m = (int(v) for v in torch.randint(3 * dim, 6 * dim, (2,), generator=g))
    mix_a, mix_b = torch.randn(dim, dim, generator=g), torch.randn(dim, dim, generator=g)
    a = torch.randn(n, dim, generator=g) @ mix_a + torch.randn(dim, generator=g)
    b = torch.randn(m, dim, generator=g) @ mix_b
    d = frechet_distance(a, b)
    assert d == pytest.approx(_reference(a, b), rel=1e-6, abs=1e-8)
    assert d == pytest.approx(frechet_distance(b, a), rel=1e-8)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    assert frechet_distance(a.double() @ q, b.double() @ q) == pytest.approx(d, rel=1e-7)
    shift = torch.randn(dim, generator=g)
    assert frechet_distance(a + shift, a) == pytest.approx(float(shift.double().square().sum()), rel=1e-6)
    assert abs(frechet_distance(a, a)) < 1e-6 * max(1.0, d)


def test_frechet_distance_rejects_mismatched_features():
    with pytest.raises(ValueError, match="equal widths"):
        frechet_distance(torch.zeros(4, 3), torch.zeros(4, 2))


def test_classifier_features_are_the_pre_logits_of_a_timm_model():
    import timm

    model = timm.create_model("mobilenetv2_035", num_classes=10, in_chans=1).eval()
    x = torch.randn(5, 1, 32, 32)
    features = classifier_features(model, x, batch_size=2)
    assert features.shape == (5, model.num_features)
    with torch.no_grad():
        assert torch.allclose(model.get_classifier()(features), model(x), atol=1e-5)
    with pytest.raises(TypeError, match="not a timm classifier"):
        classifier_features(torch.nn.Linear(2, 2), x)
