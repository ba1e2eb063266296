"""Within-class whitening: the matrix by its definition, and the backbone wrapper around it."""

import pytest
import torch

from fewshot import Whitened, build_model
from fewshot.models import within_class_whitening


def _classes(n_classes=30, per_class=40, seed=0):
    """Features whose within-class spread differs by direction (scales 0.1 to 3), around
    class means spread out much further."""
    g = torch.Generator().manual_seed(seed)
    rotation = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))[0]
    spread = torch.tensor([3.0, 1.0, 0.5, 0.3, 0.2, 0.1], dtype=torch.float64)
    means = 10 * torch.randn(n_classes, 6, generator=g, dtype=torch.float64)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    noise = (torch.randn(len(labels), 6, generator=g, dtype=torch.float64) * spread) @ rotation.T
    return means[labels] + noise, labels


def _within_covariance(features, labels):
    residuals = torch.cat([features[labels == c] - features[labels == c].mean(0) for c in labels.unique()])
    return residuals.T @ residuals / (len(features) - len(labels.unique()))


def test_whitening_makes_the_within_class_covariance_the_identity():
    features, labels = _classes()
    matrix = within_class_whitening(features, labels, shrink=1e-9)
    torch.testing.assert_close(matrix, matrix.T)
    whitened = _within_covariance(features @ matrix, labels)
    torch.testing.assert_close(whitened, torch.eye(6, dtype=torch.float64), atol=1e-6, rtol=0)
    # the labels' values and order do not matter, only which features share one
    shuffled = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
    same = within_class_whitening(features[shuffled], 7 * labels[shuffled] + 3, shrink=1e-9)
    torch.testing.assert_close(same, matrix)


def test_shrinkage_pulls_towards_a_multiple_of_the_identity():
    features, labels = _classes()
    covariance = _within_covariance(features, labels)
    mean_variance = torch.linalg.eigvalsh(covariance).mean()
    shrink = 0.5
    expected = torch.linalg.inv(
        torch.linalg.cholesky(covariance + shrink * mean_variance * torch.eye(6, dtype=torch.float64))
    )  # any inverse square root R satisfies R^T R = (S + aI)^-1
    matrix = within_class_whitening(features, labels, shrink)
    torch.testing.assert_close(matrix @ matrix, expected.T @ expected)
    # shrunk far, the matrix is nearly the identity divided by the square root of that scale
    far = within_class_whitening(features, labels, 1e6)
    torch.testing.assert_close(
        far * (1e6 * mean_variance).sqrt(), torch.eye(6, dtype=torch.float64), atol=1e-5, rtol=0
    )
    # in float32 it comes back in float32
    assert within_class_whitening(features.float(), labels, shrink).dtype == torch.float32


def test_whitening_refuses_what_it_cannot_estimate():
    features, labels = _classes(n_classes=3, per_class=1)
    with pytest.raises(ValueError, match="leave no within-class variance"):
        within_class_whitening(features, labels, 1.0)
    with pytest.raises(ValueError, match="shrink must be > 0, got 0"):
        within_class_whitening(*_classes(), 0)


def test_whitened_backbone_multiplies_its_features_by_the_matrix():
    backbone = build_model("conv4", 5).backbone.eval()
    matrix = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    images = torch.rand(3, 1, 28, 28)
    whitened = Whitened(backbone, matrix)
    assert whitened.feature_dim == 64 and "matrix" in whitened.state_dict()
    torch.testing.assert_close(whitened(images), backbone(images) @ matrix)
    with pytest.raises(ValueError, match="a 64-feature backbone needs a 64x64 matrix, got \\(32, 32\\)"):
        Whitened(backbone, torch.eye(32))
