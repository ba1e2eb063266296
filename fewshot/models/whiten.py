"""Features whitened by the within-class covariance of labelled images (e.g. the base classes).

ProtoNet's squared Euclidean distance treats every direction of the feature space alike. On
classes it was not trained on, some directions still vary more between drawings of one
character than others, and they swamp the distances between class means. Whitening with the
within-class covariance of classes that are known (linear discriminant analysis' metric)
measures every direction in units of its own within-class spread; shrinking the covariance
towards a multiple of the identity keeps the directions in which the known classes barely vary
from being blown up. The matrix is fitted once on the known classes and every image goes
through the same one, so an image's features still depend on nothing but the image.
:class:`SupportWhitening` also lets each episode's support set, whose classes are new, show
how they vary.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _within_class_scatter(
    features: torch.Tensor, labels: torch.Tensor, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sum ``[..., D, D]`` of the outer products of ``[..., M, D]`` ``features`` less their
    class means (labels ``[..., M]`` in ``0..n_classes-1``), in float64, and its degrees of
    freedom ``[...]``: images less the classes that have any."""
    x = features.double()
    index = labels.unsqueeze(-1).expand_as(x)
    sums = x.new_zeros(*x.shape[:-2], n_classes, x.shape[-1]).scatter_add_(-2, index, x)
    counts = x.new_zeros(*labels.shape[:-1], n_classes).scatter_add_(-1, labels, torch.ones_like(x[..., 0]))
    residuals = x - (sums / counts.clamp(min=1).unsqueeze(-1)).gather(-2, index)
    return residuals.transpose(-1, -2) @ residuals, labels.shape[-1] - (counts > 0).sum(-1)


def _shrunk(covariance: torch.Tensor, shrink: float) -> torch.Tensor:
    """``covariance + shrink * mean eigenvalue * I`` (the mean eigenvalue is the mean variance)."""
    mean_variance = covariance.diagonal().mean()
    return covariance + shrink * mean_variance * torch.eye(
        len(covariance), dtype=covariance.dtype, device=covariance.device
    )


def _inverse_square_root(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix^(-1/2)`` of symmetric positive definite ``[..., D, D]`` matrices."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * eigenvalues.clamp(min=0).rsqrt().unsqueeze(-2)) @ eigenvectors.transpose(-1, -2)


def within_class_covariance(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The pooled within-class covariance ``[D, D]`` (float64) of ``[M, D]`` ``features`` with
    class ``labels`` ``[M]`` (any values: only which features share one matters)."""
    classes, labels = torch.unique(labels, return_inverse=True)
    scatter, dof = _within_class_scatter(features, labels, len(classes))
    if dof < 1:
        raise ValueError(
            f"{len(features)} features of {len(classes)} classes leave no within-class variance; "
            "give some classes at least two images"
        )
    return scatter / dof


def within_class_whitening(features: torch.Tensor, labels: torch.Tensor, shrink: float) -> torch.Tensor:
    """The symmetric ``[D, D]`` matrix ``(S + shrink * mean eigenvalue of S * I)^(-1/2)``, ``S`` the
    pooled within-class covariance of ``[M, D]`` ``features`` with class ``labels`` ``[M]``.

    Features are whitened by ``features @ matrix``. ``shrink`` > 0 sets how far ``S`` is pulled
    towards the identity, relative to its average variance: small values whiten fully, large
    ones leave the features nearly as they are, up to a common scale. Computed in float64 and
    returned as ``features``' dtype.
    """
    return whitening_matrix(within_class_covariance(features, labels), shrink).to(features.dtype)


def whiten_by_own_spread(
    features: torch.Tensor, labels: torch.Tensor, n_classes: int, shrink: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[M, D]`` ``features`` whitened by their own shrunk within-class covariance ``C`` (labels
    ``[M]`` in ``0..n_classes-1``), differentiably, and that covariance unshrunk ``[D, D]``
    (float64). The features come back as ``features @ L^-T`` with ``C = L L^T``, so squared
    distances between them are Mahalanobis distances under ``C``: for training with the metric
    that whitening gives at test time (the Cholesky factor keeps the gradient finite where
    eigenvalues repeat). Computed in float64, returned in float32 (float64 for float64 features:
    bf16 features under autocast are not rounded back to bf16)."""
    if shrink <= 0:
        raise ValueError(f"shrink must be > 0, got {shrink}")
    scatter, dof = _within_class_scatter(features, labels, n_classes)
    if dof < 1:
        raise ValueError(f"{len(features)} features of {n_classes} classes leave no within-class variance")
    covariance = scatter / dof
    factor = torch.linalg.cholesky(_shrunk(covariance, shrink))
    whitened = torch.linalg.solve_triangular(factor, features.double().transpose(-1, -2), upper=False)
    return whitened.transpose(-1, -2).to(torch.promote_types(features.dtype, torch.float32)), covariance


def whitening_matrix(covariance: torch.Tensor, shrink: float) -> torch.Tensor:
    """The symmetric ``[D, D]`` matrix ``(C + shrink * mean eigenvalue of C * I)^(-1/2)`` of a
    covariance ``C``, in ``C``'s dtype; features are whitened by ``features @ matrix``."""
    if shrink <= 0:
        raise ValueError(f"shrink must be > 0, got {shrink}")
    return _inverse_square_root(_shrunk(covariance.double(), shrink)).to(covariance.dtype)


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


class SupportWhitening(nn.Module):
    """Whitening fitted to each episode: known classes' within-class covariance, shrunk, as a
    prior worth ``prior`` degrees of freedom, pooled with the support set's own within-class
    spread.

    Characters of a new alphabet do not vary as the known ones do, and an episode's support set
    shows how its own classes vary: with ``K`` images of each of ``N`` classes, ``N (K - 1)``
    degrees of freedom. The matrix of an episode is ``P^(-1/2)`` with

        ``P = (scatter of the support images about their class means + prior * C) / (N (K - 1) + prior)``

    and ``C = S + shrink * mean eigenvalue of S * I``, ``S`` the known classes' covariance
    (:func:`within_class_covariance`). With one image a class the support set adds nothing and
    it is :func:`within_class_whitening` with the same ``shrink``; the more images, the more the
    episode's own spread counts. It uses only the labelled support set: a query's prediction
    still depends on nothing but the query and the support set.

    ``groups``, ``[(size, weight), ...]`` over consecutive features (e.g. a backbone's features
    and an earlier block's, :class:`fewshot.models.blocks.BlockFeatures`), whitens each group on
    its own (each shrunk by its own mean variance, no covariance between groups) and multiplies
    its whitened features by ``sqrt(weight)``, so a squared distance is the weighted sum of the
    groups' own. Whitening removes any scale a group's features had, so the weight is the only
    thing that sets how much a group counts.

    Example:
        >>> whitening = SupportWhitening(within_class_covariance(base_features, base_labels), 5, 30)
        >>> proto = ProtoNet(backbone, whitening=whitening)  # then evaluate as usual
    """

    def __init__(
        self,
        covariance: torch.Tensor,
        shrink: float,
        prior: float,
        groups: Sequence[tuple[int, float]] | None = None,
    ):
        super().__init__()
        if shrink <= 0 or prior <= 0:
            raise ValueError(f"shrink and prior must be > 0, got {shrink} and {prior}")
        if covariance.dim() != 2 or covariance.shape[0] != covariance.shape[1]:
            raise ValueError(
                "covariance must be a square [D, D] matrix (within_class_covariance), "
                f"got {tuple(covariance.shape)}"
            )
        self.prior = prior
        self.groups: list[tuple[int, int, float]] | None = None  # (first, end, weight) of each group
        if groups is None:
            self.register_buffer("covariance", _shrunk(covariance.double(), shrink))
            return
        sizes, weights = [int(size) for size, _ in groups], [float(weight) for _, weight in groups]
        if sum(sizes) != len(covariance) or min(sizes) < 1 or min(weights) <= 0:
            raise ValueError(
                f"groups must split the {len(covariance)} features into runs of at least one, each "
                f"with a weight > 0; got sizes {sizes} and weights {weights}"
            )
        ends = torch.tensor(sizes).cumsum(0).tolist()
        self.groups = [(e - n, e, w) for n, e, w in zip(sizes, ends, weights, strict=True)]
        blocks = [covariance.double()[a:e, a:e] for a, e, _ in self.groups]
        self.register_buffer("covariance", torch.block_diag(*(_shrunk(b, shrink) for b in blocks)))

    def forward(self, support: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
        """The matrices ``[..., D, D]`` for ``[..., S, D]`` support features with labels ``[..., S]``
        in ``0..n_way-1``, in ``support``'s dtype; features are whitened by ``features @ matrix``."""
        self._check(support)
        scatter, dof = _within_class_scatter(support, labels, n_way)
        dof = (dof + self.prior).unsqueeze(-1).unsqueeze(-1)
        return self._matrix((scatter + self.prior * self.covariance) / dof).to(support.dtype)

    def with_queries(
        self,
        support: torch.Tensor,
        labels: torch.Tensor,
        centres: torch.Tensor,
        queries: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        """The matrices ``[..., D, D]`` with the unlabelled queries counted too (transductive).

        ``queries [..., M, D]`` belong to the classes in proportion to ``weights [..., M, N]``
        (each row sums to one), and every image's spread is taken about ``centres [..., N, D]``,
        the class means estimated from both: the M-step of a Gaussian mixture with one shared
        covariance, whose prior is the known classes' (``prior`` degrees of freedom). The
        queries add ``M`` degrees of freedom, and the ``N`` means take ``N`` away."""
        self._check(support)
        x, c, q, w = support.double(), centres.double(), queries.double(), weights.double()
        residuals = x - c.gather(-2, labels.unsqueeze(-1).expand_as(x))
        scatter = residuals.transpose(-1, -2) @ residuals
        spread = q.unsqueeze(-2) - c.unsqueeze(-3)  # [..., M, N, D]
        scatter = scatter + torch.einsum("...mn,...mnd,...mne->...de", w, spread, spread)
        dof = labels.shape[-1] + queries.shape[-2] - centres.shape[-2] + self.prior
        return self._matrix((scatter + self.prior * self.covariance) / dof).to(support.dtype)

    def _matrix(self, pooled: torch.Tensor) -> torch.Tensor:
        """``pooled^(-1/2)``; with ``groups``, of its diagonal blocks alone (one small
        eigendecomposition each), each block times the square root of its weight."""
        if self.groups is None:
            return _inverse_square_root(pooled)
        matrix = torch.zeros_like(pooled)
        for a, e, weight in self.groups:
            matrix[..., a:e, a:e] = _inverse_square_root(pooled[..., a:e, a:e]) * weight**0.5
        return matrix

    def _check(self, support: torch.Tensor) -> None:
        if support.shape[-1] != len(self.covariance):
            raise ValueError(
                f"{support.shape[-1]}-dimensional support features against a {len(self.covariance)}x"
                f"{len(self.covariance)} covariance; fit it on features of the same backbone"
            )
