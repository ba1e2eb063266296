"""Metric-based learners: Prototypical Networks and SimpleShot nearest-centroid."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fewshot.data import Episode
from fewshot.learners.base import BatchPredictor, Learner, MetaLearner
from fewshot.learners.features import batch_features, embed
from fewshot.learners.functional import cross_entropy_and_accuracy, distillation_loss
from fewshot.models import (
    BlockFeatures,
    SupportWhitening,
    channels_last,
    whiten_by_own_spread,
    whitening_matrix,
)

COVARIANCE_MOMENTUM = 0.01  # of ProtoNet's running within-class covariance (train_shrink)


def prototypes(features: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Class means ``[..., N, D]`` of ``[..., M, D]`` features with labels ``[..., M]`` in ``0..N-1``.

    Leading dimensions are episodes of a batch, each with its own means.
    """
    onehot = F.one_hot(labels, n_way).to(features.dtype)  # [..., M, N]
    sums = onehot.transpose(-1, -2) @ features
    return sums / onehot.sum(-2).clamp(min=1).unsqueeze(-1)


def prototype_head(features: torch.Tensor, labels: torch.Tensor, n_way: int) -> dict[str, torch.Tensor]:
    """A linear head ``{"head.weight", "head.bias"}`` that predicts as ProtoNet on ``features``.

    Row ``2 c_k`` and bias ``-|c_k|^2`` for the class means ``c_k``: its logits are
    ``-|h - c_k|^2`` up to ``|h|^2``, which is the same for every class of an image
    (Proto-MAML's head, Triantafillou et al. 2020).
    """
    centres = prototypes(features, labels, n_way)
    return {"head.weight": 2 * centres, "head.bias": -centres.pow(2).sum(-1)}


def negative_squared_distances(queries: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Logits ``-||q - c||^2`` of ``[..., M, D]`` queries against ``[..., N, D]`` centres."""
    return -torch.cdist(queries, centres).pow(2)


def refined_prototypes(
    support: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor, n_way: int, steps: int
) -> torch.Tensor:
    """Class means ``[..., N, D]`` refined with the unlabelled ``queries`` by ``steps`` rounds of
    soft k-means (Ren et al. 2018): each query joins every class in proportion to its ProtoNet
    probability, each support image with weight one. Transductive: a query's prediction then
    depends on the other queries of its episode. ``steps=0`` gives :func:`prototypes`.
    """
    return _soft_k_means(support, labels, queries, n_way, steps, None)[0]


def refined_with_whitening(
    support: torch.Tensor,
    labels: torch.Tensor,
    queries: torch.Tensor,
    n_way: int,
    steps: int,
    whitening: SupportWhitening,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means ``[..., N, D]`` and whitening ``[..., D, D]`` refined together with the
    unlabelled ``queries`` by ``steps`` rounds: each query joins every class in proportion to its
    ProtoNet probability in the whitened space, as in :func:`refined_prototypes`, then the means
    and :meth:`~fewshot.models.SupportWhitening.with_queries`'s matrix are estimated again from
    the support set and the queries so weighted. Transductive; ``steps=0`` gives the class means
    and the support set's whitening. Logits are then ``-|(q - c) matrix|^2``.
    """
    centres, matrix = _soft_k_means(support, labels, queries, n_way, steps, whitening)
    assert matrix is not None  # a whitening gives a matrix
    return centres, matrix


def _soft_k_means(
    support: torch.Tensor,
    labels: torch.Tensor,
    queries: torch.Tensor,
    n_way: int,
    steps: int,
    whitening: SupportWhitening | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rounds of :func:`refined_prototypes`, with distances measured and the matrix
    re-estimated by ``whitening`` when there is one (:func:`refined_with_whitening`)."""
    centres = prototypes(support, labels, n_way)
    counts = F.one_hot(labels, n_way).sum(-2).to(support.dtype)  # [..., N] support images per class
    sums = centres * counts.unsqueeze(-1)
    matrix = None if whitening is None else whitening(support, labels, n_way)
    for _ in range(steps):
        q, c = (queries, centres) if matrix is None else (queries @ matrix, centres @ matrix)
        weights = negative_squared_distances(q, c).softmax(-1)  # [..., M, N]
        centres = (sums + weights.transpose(-1, -2) @ queries) / (counts + weights.sum(-2)).unsqueeze(-1)
        if whitening is not None:
            matrix = whitening.with_queries(support, labels, centres, queries, weights)
    return centres, matrix


class ProtoNet(MetaLearner):
    """Prototypical Networks (Snell et al. 2017): class means of embeddings, squared
    Euclidean distance. ``backbone`` is trained end to end by :meth:`meta_loss`.

    With ``refine_steps`` > 0, :meth:`adapt_batch` refines the class means with the
    episode's queries (:func:`refined_prototypes`): transductive inference, for when the
    images to classify come as a batch of the new classes.

    With a ``whitening`` (:class:`fewshot.models.SupportWhitening`), :meth:`adapt_batch` whitens
    the features of each episode by a matrix fitted to known classes and the episode's support
    set: still inductive, a query's prediction depends on the support set and itself alone.
    With ``refine_whitening`` as well, the ``refine_steps`` rounds re-estimate that matrix with
    the queries too (:func:`refined_with_whitening`), not only the class means.

    With ``base_classes`` > 0 and ``base_weight`` > 0, :meth:`meta_loss` adds ``base_weight``
    times the cross-entropy of a linear head over all ``base_classes`` classes of the training
    set, applied to the features of every image of the episode (support and queries alike,
    labelled by ``Episode.classes``): each step then also separates the episode's classes from
    every other base class, not only from the N - 1 others it was drawn with (the auxiliary
    global classification of Ye et al. 2020's FEAT). The head shapes training only: adaptation
    and prediction use the backbone alone.

    With ``train_shrink`` > 0, :meth:`meta_loss` measures distances after whitening each episode's
    features by their own within-class covariance, shrunk by ``train_shrink``
    (:func:`~fewshot.models.whiten_by_own_spread`): training with the metric that ``whitening``
    gives at test time, so the network is not pressed to make every direction vary alike. As
    BatchNorm does with its statistics, training keeps a running average of those covariances
    (``running_covariance``, a buffer saved with the weights), and :meth:`adapt_batch` whitens
    with it, shrunk alike, unless a ``whitening`` is given: validation and evaluation then
    measure the distances the network was trained with.

    With ``block_weights``, one weight per block before the last, :meth:`meta_loss` measures
    distances between the features with each block of weight ``w`` > 0 beside them, its output
    max-pooled over its positions and its squared distances counted ``w`` times
    (:class:`~fewshot.models.BlockFeatures`): training with the features that ``@block<i>=<w>``
    adds at test time, so the earlier blocks learn to tell classes apart too. With
    ``blocks_apart`` instead, each such block has a ProtoNet loss of its own, added ``w`` times
    to the features' (deep supervision). Training only: validation and prediction use the
    features alone.

    With a ``teacher`` (another embedding network, e.g. a trained ProtoNet's backbone),
    :meth:`meta_loss` is distillation (Hinton et al. 2015; born-again networks, Furlanello et
    al. 2018): ``(1 - w)`` times the cross-entropy with the labels plus ``w`` times
    :func:`~fewshot.learners.functional.distillation_loss` against the teacher's ProtoNet
    logits on the same episode, ``w = distill_weight``. The teacher is used in eval mode and
    never trained; it is not a submodule, so checkpoints and evaluation do without it.

    Example:
        >>> proto = ProtoNet(build_backbone("conv4"))
        >>> loss, metrics = proto.meta_loss(sampler.batch(range(8)))
    """

    def __init__(
        self,
        backbone: nn.Module,
        refine_steps: int = 0,
        teacher: nn.Module | None = None,
        distill_weight: float = 0.5,
        temperature: float = 4.0,
        whitening: SupportWhitening | None = None,
        base_classes: int = 0,
        base_weight: float = 0.0,
        train_shrink: float | None = None,
        refine_whitening: bool = False,
        block_weights: Sequence[float] = (),
        blocks_apart: bool = False,
    ):
        super().__init__()
        if refine_steps < 0:
            raise ValueError(f"refine_steps must be >= 0, got {refine_steps}")
        if refine_whitening and (whitening is None or refine_steps < 1):
            raise ValueError("refine_whitening re-estimates a support whitening while refining: give both")
        if not 0 <= distill_weight <= 1:
            raise ValueError(f"distill_weight must be between 0 and 1, got {distill_weight}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if base_weight < 0:
            raise ValueError(f"base_weight must be >= 0, got {base_weight}")
        if base_weight > 0 and base_classes < 1:
            raise ValueError(
                f"base_weight {base_weight} needs the number of base classes, got {base_classes}"
            )
        self.backbone, self.refine_steps = backbone, refine_steps
        self.distill_weight, self.temperature = distill_weight, temperature
        self.whitening, self.refine_whitening = whitening, refine_whitening
        if train_shrink is not None and train_shrink <= 0:
            raise ValueError(f"train_shrink must be > 0 (or None for no whitening), got {train_shrink}")
        self.base_weight, self.train_shrink = base_weight, train_shrink
        if train_shrink is not None:
            dim = backbone.feature_dim
            self.register_buffer("running_covariance", torch.eye(dim, dtype=torch.float64))
            self.register_buffer("covariance_updates", torch.zeros((), dtype=torch.long))
        self.base_head = nn.Linear(backbone.feature_dim, base_classes) if base_weight > 0 else None
        self._blocks: tuple[BlockFeatures, list[float]] | tuple[()] = ()
        if blocks_apart and not block_weights:
            raise ValueError("blocks_apart gives each of block_weights' blocks a loss of its own: give them")
        if block_weights:
            if train_shrink is not None:
                raise ValueError("block_weights and train_shrink are two metrics for training: give one")
            if min(block_weights) < 0 or max(block_weights) <= 0:
                raise ValueError(f"block_weights must be >= 0 with one > 0, got {list(block_weights)}")
            if len(block_weights) >= len(backbone.blocks):
                raise ValueError(
                    f"block_weights has {len(block_weights)} weights, one per block before the last: "
                    f"{type(backbone).__name__} has {len(backbone.blocks) - 1} such blocks"
                )
            chosen = [(i + 1, w) for i, w in enumerate(block_weights) if w > 0]
            features = BlockFeatures(backbone, [i for i, _ in chosen])
            self._blocks = (features, [w for _, w in chosen])  # a tuple: the backbone is saved once
        self.blocks_apart = blocks_apart
        # A tuple, not a submodule: outside state_dict(), parameters() and train()/eval().
        self._teacher = () if teacher is None else (teacher.eval().requires_grad_(False),)

    @staticmethod
    def _logits(feats: torch.Tensor, sy: torch.Tensor, n_way: int) -> torch.Tensor:
        """ProtoNet logits of the queries from the features of support then queries."""
        return negative_squared_distances(feats[len(sy) :], prototypes(feats[: len(sy)], sy, n_way))

    def _episode_loss(
        self,
        sx: torch.Tensor,
        sy: torch.Tensor,
        qx: torch.Tensor,
        qy: torch.Tensor,
        classes: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_way = len(classes)
        images = channels_last(torch.cat((sx, qx)))
        earlier: list[tuple[torch.Tensor, float]] = []  # each chosen block's pooled output and weight
        if self._blocks:
            blocks, weights = self._blocks
            feats, *pooled = blocks(images).split([self.backbone.feature_dim, *blocks.widths], 1)
            earlier = list(zip(pooled, weights, strict=True))
        else:
            feats = self.backbone(images)
        metric = feats
        if earlier and not self.blocks_apart:
            metric = torch.cat([feats] + [block * w**0.5 for block, w in earlier], 1)
        if self.train_shrink is not None:
            metric, covariance = whiten_by_own_spread(feats, torch.cat((sy, qy)), n_way, self.train_shrink)
            if self.training:
                self._update_running_covariance(covariance.detach())
        logits = self._logits(metric, sy, n_way)
        loss, accuracy = cross_entropy_and_accuracy(logits, qy)
        if self.blocks_apart:
            for block, w in earlier:
                loss = loss + w * F.cross_entropy(self._logits(block, sy, n_way).float(), qy)
        if self._teacher:
            teacher = self._teacher[0].to(sx.device)  # a no-op once it is there
            with torch.no_grad():
                target = self._logits(teacher(images), sy, n_way)
            soft = distillation_loss(logits, target, self.temperature)
            loss = (1 - self.distill_weight) * loss + self.distill_weight * soft
        if self.base_head is not None:
            base_logits = self.base_head(feats).float()
            loss = loss + self.base_weight * F.cross_entropy(base_logits, classes[torch.cat((sy, qy))])
        return loss, accuracy

    @torch.no_grad()
    def _update_running_covariance(self, covariance: torch.Tensor) -> None:
        """The mean of the covariances seen so far over the first ``1 / COVARIANCE_MOMENTUM``
        episodes, then an exponential moving average with that momentum."""
        # computed on the buffers' device: no host sync in the training step
        weight = (1.0 / (self.covariance_updates + 1)).clamp(min=COVARIANCE_MOMENTUM)
        self.running_covariance.lerp_(
            covariance.to(self.running_covariance), weight.to(self.running_covariance)
        )
        self.covariance_updates += 1

    def meta_loss(self, batch: Episode) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pairs = [
            self._episode_loss(
                batch.support_x[i], batch.support_y[i], batch.query_x[i], batch.query_y[i], batch.classes[i]
            )
            for i in range(len(batch.support_x))
        ]
        loss = torch.stack([p[0] for p in pairs]).mean()
        return loss, {"loss": loss.detach(), "accuracy": torch.stack([p[1] for p in pairs]).mean()}

    def adapt_batch(self, support_x: torch.Tensor, support_y: torch.Tensor) -> BatchPredictor:
        """Prototypes from the support sets (backbone in eval mode: running BatchNorm statistics),
        whitened per episode when there is a ``whitening`` (else by the running covariance of a
        network trained with ``train_shrink``), refined with each episode's queries
        when ``refine_steps`` > 0."""
        support, n_way = batch_features(self.backbone, support_x), int(support_y.max()) + 1
        if self.refine_whitening and self.whitening is not None:

            def predict_refining_whitening(query_x: torch.Tensor) -> torch.Tensor:
                queries = batch_features(self.backbone, query_x)
                centres, matrix = refined_with_whitening(
                    support, support_y, queries, n_way, self.refine_steps, self.whitening
                )
                return negative_squared_distances(queries @ matrix, centres @ matrix)

            return predict_refining_whitening
        matrix = None
        if self.whitening is not None:
            matrix = self.whitening(support, support_y, n_way)
        elif self.train_shrink is not None:
            matrix = whitening_matrix(self.running_covariance, self.train_shrink).to(support.dtype)
        if matrix is not None:
            support = support @ matrix

        def predict(query_x: torch.Tensor) -> torch.Tensor:
            queries = batch_features(self.backbone, query_x)
            if matrix is not None:
                queries = queries @ matrix
            centres = refined_prototypes(support, support_y, queries, n_way, self.refine_steps)
            return negative_squared_distances(queries, centres)

        return predict

    def feature_extractor(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return functools.partial(embed, self.backbone)


class SimpleShot(Learner):
    """SimpleShot (Wang et al. 2019): nearest centroid on frozen, centred, L2-normalised features.

    Args:
        backbone: a pretrained feature extractor (used in eval mode, never trained here).
        feature_mean: the mean feature of the base classes, subtracted before normalising
            ("CL2N"); when ``None``, the mean of the support features is used instead.
    """

    def __init__(self, backbone: nn.Module, feature_mean: torch.Tensor | None = None):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("feature_mean", feature_mean)

    def adapt_batch(self, support_x: torch.Tensor, support_y: torch.Tensor) -> BatchPredictor:
        support = batch_features(self.backbone, support_x)
        mean = self.feature_mean if self.feature_mean is not None else support.mean(-2, keepdim=True)
        centres = prototypes(F.normalize(support - mean, dim=-1), support_y, int(support_y.max()) + 1)

        def predict(query_x: torch.Tensor) -> torch.Tensor:
            queries = F.normalize(batch_features(self.backbone, query_x) - mean, dim=-1)
            return negative_squared_distances(queries, centres)

        return predict

    def feature_extractor(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return functools.partial(embed, self.backbone)
