"""Fréchet distance between generated and real images in a classifier's feature space.

The distance is FID's formula (Heusel et al., 2017) between Gaussians fitted to two feature sets,

    d^2 = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2),

with features from one of two places:

- the penultimate layer of one of lmzoo's own classifiers (for example the Fashion-MNIST MobileNetV2):
  the numbers compare models with each other under the same feature model and sample count, and are
  not comparable with published FIDs;
- ``"inception"``: FID proper, in the 2048-d pool3 features of the Inception-v3 that pytorch-fid ports
  from the TensorFlow FID graph (``pt_inception-2015-12-05``), on 8-bit images resized to 299 px.
  Its weights come from the torch hub cache (where pytorch-fid puts them), ``$LMZOO_FID_WEIGHTS``, or
  a download; they are loaded with ``torch.load(weights_only=True)``, never unpickled.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmzoo.errors import DataNotFoundError, InvalidArgumentError

#: the feature-model name that selects Inception-v3, i.e. FID proper
INCEPTION = "inception"
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_FILE = FID_WEIGHTS_URL.rsplit("/", 1)[1]


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """d^2 between Gaussians fitted to the rows of ``a`` (N x D) and ``b`` (M x D), in float64."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(
            f"need two feature matrices with >= 2 rows and equal widths, got {a.shape}, {b.shape}"
        )
    a, b = a.double(), b.double()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _psd_sqrt(cov_a)
    # Tr (S_a S_b)^1/2 = Tr (S_a^1/2 S_b S_a^1/2)^1/2, the root of a symmetric PSD matrix
    cross = _symmetric(root_a @ cov_b @ root_a)
    trace_root = torch.linalg.eigvalsh(cross).clamp_min(0).sqrt().sum()
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    return float(mean_term + cov_a.trace() + cov_b.trace() - 2 * trace_root)


def _symmetric(m: Tensor) -> Tensor:
    return (m + m.T) / 2


def _psd_sqrt(m: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh(_symmetric(m))
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


@torch.no_grad()
def classifier_features(classifier: nn.Module, images: Tensor, *, batch_size: int = 256) -> Tensor:
    """Penultimate-layer features (after global pooling, before the classifier) of a timm model."""
    forward_features: Any = getattr(classifier, "forward_features", None)
    forward_head: Any = getattr(classifier, "forward_head", None)
    if forward_features is None or forward_head is None:
        raise TypeError(
            f"{type(classifier).__name__} is not a timm classifier (no forward_features/forward_head)"
        )
    classifier.eval()
    chunks = [
        forward_head(forward_features(images[i : i + batch_size]), pre_logits=True).flatten(1)
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks)


def fid_weights_path(*, download: bool = True) -> Path:
    """The FID Inception weights: ``$LMZOO_FID_WEIGHTS`` if set, else the torch hub cache (downloaded
    there when missing and ``download``). Raises one error saying where to put the file."""
    explicit = os.environ.get("LMZOO_FID_WEIGHTS")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise DataNotFoundError(
                f"LMZOO_FID_WEIGHTS names {path}, which is not a file; point it at {FID_WEIGHTS_FILE}"
            )
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE
    if path.is_file():
        return path
    failure = "downloading is off"
    if download:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(path), progress=True)
            return path
        except Exception as err:  # any network or file error means the same to the user
            failure = f"downloading it failed: {type(err).__name__}: {err}"
    raise DataNotFoundError(
        f"FID needs pytorch-fid's Inception weights {FID_WEIGHTS_FILE}, not found in {path.parent} "
        f"({failure}); fetch {FID_WEIGHTS_URL} into that folder, or set LMZOO_FID_WEIGHTS to the file"
    )


def check_inception() -> Path:
    """Fail early, with the fix, when Inception FID cannot run here: pytorch-fid missing, or its
    weights neither found nor downloadable. Returns the weights' path."""
    _pytorch_fid()
    return fid_weights_path()


def _pytorch_fid() -> Any:
    try:
        from pytorch_fid import inception
    except ImportError:
        raise InvalidArgumentError("Inception FID needs pytorch-fid: pip install 'lmzoo[fid]'") from None
    return inception


def fid_inception(state_dict: dict[str, Tensor] | None = None) -> nn.Module:
    """pytorch-fid's Inception-v3 (torchvision's, with the blocks of the TensorFlow FID graph) whose
    forward returns the 2048-d pool3 features. ``state_dict=None`` leaves it untrained (tests)."""
    import torchvision

    fid = _pytorch_fid()
    net = torchvision.models.inception_v3(
        weights=None, aux_logits=False, num_classes=1008, init_weights=False
    )
    net.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fid.FIDInceptionE_1(1280)
    net.Mixed_7c = fid.FIDInceptionE_2(2048)
    if state_dict is not None:
        net.load_state_dict(state_dict)
    net.dropout = nn.Identity()  # the pooled features, not the 1008 logits
    net.fc = nn.Identity()
    return net.eval()


def load_fid_inception(path: Path | None = None) -> nn.Module:
    """:func:`fid_inception` with the weights of :func:`fid_weights_path` (or ``path``)."""
    path = path or fid_weights_path()
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        return fid_inception(state_dict)
    except (RuntimeError, OSError, ValueError, KeyError, pickle.UnpicklingError) as err:
        raise DataNotFoundError(
            f"{path} is not pytorch-fid's {FID_WEIGHTS_FILE} ({type(err).__name__}: {str(err)[:200]}); "
            f"delete it and fetch {FID_WEIGHTS_URL} again"
        ) from None


@torch.no_grad()
def inception_features(inception: nn.Module, images01: Tensor, *, batch_size: int = 64) -> Tensor:
    """FID features of images in [0, 1] (N x 1 or 3 x H x W): quantised to 8 bits as saved images
    would be, grey repeated to RGB, resized bilinearly to 299 px and scaled to [-1, 1] (pytorch-fid)."""
    images = (images01.clamp(0, 1) * 255).round() / 255
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    chunks = []
    for i in range(0, len(images), batch_size):
        x = nn.functional.interpolate(
            images[i : i + batch_size], size=(299, 299), mode="bilinear", align_corners=False
        )
        chunks.append(inception(2 * x - 1).flatten(1))
    return torch.cat(chunks)
