"""The Fréchet distance (FID's formula on lmzoo classifier features), checked against an independent
computation and its invariances over many random feature sets; Inception FID features checked against
pytorch-fid's own network."""

import urllib.error

import pytest
import torch

from lmzoo.errors import DataNotFoundError
from lmzoo.frechet import (
    FID_WEIGHTS_FILE,
    classifier_features,
    fid_weights_path,
    frechet_distance,
    inception_features,
    load_fid_inception,
)


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


def test_fid_features_equal_pytorch_fids_own_inception(fid_weights_file, monkeypatch):
    """Our Inception (loaded from the file with weights_only) against pytorch-fid's InceptionV3 built
    by pytorch-fid itself from the same file: same keys and shapes (strict loading) and the same
    pool3 features, for RGB images and for grey ones repeated to RGB."""
    from pytorch_fid import inception as reference

    monkeypatch.setenv("LMZOO_FID_WEIGHTS", str(fid_weights_file))
    monkeypatch.setattr(
        reference,
        "load_state_dict_from_url",
        lambda *_a, **_k: torch.load(fid_weights_file, weights_only=True),
    )
    theirs = reference.InceptionV3([3]).eval()
    ours = load_fid_inception()
    g = torch.Generator().manual_seed(1)
    rgb = torch.randint(0, 256, (3, 3, 32, 32), generator=g) / 255  # 8-bit images: quantising is exact
    with torch.no_grad():
        expected = theirs(rgb)[0].flatten(1)
    got = inception_features(ours, rgb)
    assert got.shape == (3, 2048)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    grey = rgb[:, :1]
    torch.testing.assert_close(
        inception_features(ours, grey), inception_features(ours, grey.expand(-1, 3, -1, -1))
    )


def test_fid_weights_missing_or_corrupt_give_one_error_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("LMZOO_FID_WEIGHTS", str(tmp_path / "nowhere.pth"))
    with pytest.raises(DataNotFoundError, match=r"LMZOO_FID_WEIGHTS names .*nowhere.pth"):
        fid_weights_path()
    monkeypatch.delenv("LMZOO_FID_WEIGHTS")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(DataNotFoundError, match=f"{FID_WEIGHTS_FILE}.*downloading is off.*fetch https://"):
        fid_weights_path(download=False)

    def offline(*_args, **_kwargs):
        raise urllib.error.URLError("no route to github.com")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(DataNotFoundError, match=r"downloading it failed: URLError.*LMZOO_FID_WEIGHTS"):
        fid_weights_path()
    corrupt = tmp_path / FID_WEIGHTS_FILE
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(DataNotFoundError, match=r"is not pytorch-fid's .*delete it"):
        load_fid_inception(corrupt)
