"""Fréchet distance between generated and real images in a classifier's feature space.

The distance is FID's formula (Heusel et al., 2017) between Gaussians fitted to two feature sets,

    d^2 = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2),

but the features come from the penultimate layer of one of lmzoo's own classifiers (for example the
Fashion-MNIST MobileNetV2), not from Inception-v3: the numbers compare models with each other under
the same feature model and sample count, and are not comparable with published FIDs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


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
