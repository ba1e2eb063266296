"""Test-time augmentation of a frozen backbone: each image's features averaged over views.

With one example per class a prototype is one embedding, and how that one drawing sits in
its 28x28 frame (a little rotated, smaller, shifted) moves it. :class:`ViewAveraged` embeds
the image itself and ``views - 1`` copies through small affine maps (the same kind that
``data.augment=affine`` trains with) and averages the features. The maps are drawn once,
from ``seed``, and every image goes through the same ones, so an image's features still
depend on nothing but the image: evaluators can embed each image once, and the same seed
gives the same numbers.
"""

from __future__ import annotations

import torch
from torch import nn

from fewshot.data.augment import affine_matrices, warp
from fewshot.models.backbones import channels_last


class ViewAveraged(nn.Module):
    """``backbone``'s features of an image, averaged over the image and ``views - 1`` fixed
    affine copies of it.

    Args:
        backbone: images ``[M, C, H, W]`` to features ``[M, D]``; its ``feature_dim`` is kept.
        views: how many views to average, the image itself included (at least 1).
        seed: draws the affine maps.

    Example:
        >>> proto = ProtoNet(ViewAveraged(trained.backbone, views=8))  # then evaluate as usual
    """

    def __init__(self, backbone: nn.Module, views: int, seed: int = 0):
        super().__init__()
        if views < 1:
            raise ValueError(f"views must be at least 1 (the image itself), got {views}")
        self.backbone = backbone
        self.feature_dim = backbone.feature_dim
        self.register_buffer("theta", affine_matrices(views - 1, torch.Generator().manual_seed(seed)))

    @property
    def views(self) -> int:
        return len(self.theta) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not len(self.theta):
            return self.backbone(x)
        copies = x.unsqueeze(0).expand(len(self.theta), *x.shape).flatten(0, 1)
        warped = warp(copies, self.theta.repeat_interleave(len(x), 0))
        features = self.backbone(channels_last(torch.cat((x, warped))))  # warp's output is NCHW
        return features.unflatten(0, (self.views, len(x))).mean(0)
