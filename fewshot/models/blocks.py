"""A backbone's features with earlier blocks' outputs beside them (multi-level features).

The last block of a network trained on base classes is the most specialised to them. On
classes from new alphabets, the block before it still carries strokes and parts that the last
block has learnt to ignore. Taking each earlier block's output, max-pooled over every
position, beside the features, and whitening each group on its own
(:class:`fewshot.models.SupportWhitening` with ``groups``), lets a metric learner weigh them in:
on held-out Omniglot alphabets, the third block at weight 0.5 beside a Conv-4's features
gained in every setting of three alphabet splits (``experiments/omniglot/README.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _width(block: nn.Module) -> int:
    """Channels out of a block: its last BatchNorm's (or, without one, its last convolution's)."""
    for module in reversed(list(block.modules())):
        if isinstance(module, nn.BatchNorm2d):
            return module.num_features
        if isinstance(module, nn.Conv2d):
            return module.out_channels
    raise ValueError(f"cannot tell how many channels {type(block).__name__} puts out (no conv or BatchNorm)")


class BlockFeatures(nn.Module):
    """``backbone``'s features ``[M, D]`` followed by the outputs of its ``blocks`` (counted from
    1, before the last), each max-pooled over its positions: ``[M, D + C_i + ...]``, earlier
    blocks in ascending order.

    ``backbone`` is a :class:`fewshot.models.Conv4`, ``ResNet12`` or ``TorchvisionBackbone``
    (anything with ``blocks`` and ``run_blocks(x, start, stop)``). ``widths`` holds each added
    block's channels, in order, for :class:`fewshot.models.SupportWhitening`'s ``groups``.

    Example:
        >>> proto = ProtoNet(BlockFeatures(trained.backbone, [3]), whitening=...)  # 64 + 64 features
    """

    def __init__(self, backbone: nn.Module, blocks: Sequence[int]):
        super().__init__()
        n = len(backbone.blocks)
        if not blocks or len(set(blocks)) != len(blocks) or not all(1 <= b < n for b in blocks):
            raise ValueError(
                f"blocks must be distinct numbers from 1 to {n - 1} ({type(backbone).__name__} has {n} "
                f"blocks, and the last one makes its features already), got {list(blocks)}"
            )
        self.backbone, self.blocks = backbone, tuple(sorted(blocks))
        self.widths = tuple(_width(backbone.blocks[b - 1]) for b in self.blocks)
        self.feature_dim = backbone.feature_dim + sum(self.widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled, start = [], 0
        for stop in self.blocks:
            x = self.backbone.run_blocks(x, start, stop)
            pooled.append(x.amax(dim=(-2, -1)))
            start = stop
        return torch.cat((self.backbone.run_blocks(x, start), *pooled), dim=1)
