"""Several frozen backbones as one: each image's features from every member, side by side.

Networks trained alike from different seeds make different mistakes, and a nearest-centroid
classifier can pool them without any training: the squared distance between concatenated
features is the sum of the members' squared distances, so ProtoNet on a
:class:`FeatureEnsemble` adds up its members' logits. A member whose distances are larger
(more features, larger activations) weighs more in that sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FeatureEnsemble(nn.Module):
    """Images ``[M, C, H, W]`` to the members' features concatenated, ``[M, sum of feature_dim]``.

    Args:
        members: backbones taking the same images; at least two.

    Example:
        >>> proto = ProtoNet(FeatureEnsemble([run_a.backbone, run_b.backbone]))
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two backbones, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.feature_dim = sum(m.feature_dim for m in members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([member(x) for member in self.members], dim=-1)
