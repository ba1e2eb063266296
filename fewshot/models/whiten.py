"""Features whitened by the within-class covariance of labelled images (e.g. the base classes).

ProtoNet's squared Euclidean distance treats every direction of the feature space alike. On
classes it was not trained on, some directions still vary more between drawings of one
character than others, and they swamp the distances between class means. Whitening with the
within-class covariance of classes that are known (linear discriminant analysis' metric)
measures every direction in units of its own within-class spread; shrinking the covariance
towards a multiple of the identity keeps the directions in which the known classes barely vary
from being blown up. The matrix is fitted once on the known classes and every image goes
through the same one, so an image's features still depend on nothing but the image.
"""

from __future__ import annotations

import torch
from torch import nn


def within_class_whitening(features: torch.Tensor, labels: torch.Tensor, shrink: float) -> torch.Tensor:
    """The symmetric ``[D, D]`` matrix ``(S + shrink * mean eigenvalue of S * I)^(-1/2)``, ``S`` the
    pooled within-class covariance of ``[M, D]`` ``features`` with class ``labels`` ``[M]``.

    Features are whitened by ``features @ matrix``. ``shrink`` > 0 sets how far ``S`` is pulled
    towards the identity, relative to its average variance: small values whiten fully, large
    ones leave the features nearly as they are, up to a common scale. Computed in float64 and
    returned as ``features``' dtype.
    """
    if shrink <= 0:
        raise ValueError(f"shrink must be > 0, got {shrink}")
    classes, labels = torch.unique(labels, return_inverse=True)
    if len(features) - len(classes) < 1:
        raise ValueError(
            f"{len(features)} features of {len(classes)} classes leave no within-class variance; "
            "give some classes at least two images"
        )
    x = features.double()
    means = torch.zeros(len(classes), x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    means /= torch.bincount(labels, minlength=len(classes)).unsqueeze(1)
    residuals = x - means[labels]
    covariance = residuals.T @ residuals / (len(x) - len(classes))
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    scale = (eigenvalues.clamp(min=0) + shrink * eigenvalues.mean()).rsqrt()
    return ((eigenvectors * scale) @ eigenvectors.T).to(features.dtype)


class Whitened(nn.Module):
    """``backbone``'s features times a fixed ``[D, D]`` ``matrix`` (see :func:`within_class_whitening`).

    Example:
        >>> matrix = within_class_whitening(embed(backbone, base_images), base_labels, shrink=1.0)
        >>> proto = ProtoNet(Whitened(backbone, matrix))  # then evaluate as usual
    """

    def __init__(self, backbone: nn.Module, matrix: torch.Tensor):
        super().__init__()
        dim = backbone.feature_dim
        if matrix.shape != (dim, dim):
            raise ValueError(
                f"a {dim}-feature backbone needs a {dim}x{dim} matrix, got {tuple(matrix.shape)}"
            )
        self.backbone, self.feature_dim = backbone, dim
        self.register_buffer("matrix", matrix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x) @ self.matrix
