"""Plain fine-tuning baselines: linear probe, partial and full fine-tuning.

Defaults follow Chen et al. 2019, "A Closer Look at Few-shot Classification": a new
linear (or cosine) head, SGD with learning rate 0.01, momentum 0.9 and weight decay 1e-3,
100 epochs over the support set in batches of 4. The backbone's BatchNorm layers keep
their (pretrained) running statistics throughout: a few support images are too few to
re-estimate them.
"""

from __future__ import annotations

import contextlib
import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from fewshot.learners.base import Learner, Predictor
from fewshot.learners.functional import batch_statistics


class CosineHead(nn.Module):
    """Logits ``scale * cos(feature, weight_c)`` (the cosine classifier of Chen et al.)."""

    def __init__(self, in_features: int, n_way: int, scale: float = 10.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_way, in_features) * 0.01)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(x, dim=-1) @ F.normalize(self.weight, dim=-1).t()


class FineTune(Learner):
    """Fine-tune a pretrained backbone with a new head on each support set.

    Args:
        backbone: the pretrained feature extractor; never modified (each episode trains a copy).
        mode: ``"linear"`` (frozen backbone, features computed once), ``"partial"`` (freeze
            the first ``freeze_blocks`` entries of ``backbone.blocks``) or ``"full"``.
        head: ``"linear"`` or ``"cosine"``.
        lr, momentum, weight_decay, epochs, batch_size: the SGD schedule.
        backbone_lr: learning rate of unfrozen backbone layers (default ``lr``).
        batch_norm: ``"running"`` keeps a pretrained backbone's running statistics;
            ``"batch"`` normalises with each batch's statistics (as MAML does), the right
            choice for a backbone that was never trained, whose running statistics are void.
        seed: seeds the head initialisation and batch order, so results repeat.
    """

    def __init__(
        self,
        backbone: nn.Module,
        mode: str = "linear",
        freeze_blocks: int = 0,
        head: str = "linear",
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-3,
        epochs: int = 100,
        batch_size: int = 4,
        backbone_lr: float | None = None,
        batch_norm: str = "running",
        seed: int = 0,
    ):
        super().__init__()
        if mode not in ("linear", "partial", "full"):
            raise ValueError(f"mode must be 'linear', 'partial' or 'full', got {mode!r}")
        if batch_norm not in ("running", "batch"):
            raise ValueError(f"batch_norm must be 'running' or 'batch', got {batch_norm!r}")
        if head not in ("linear", "cosine"):
            raise ValueError(f"head must be 'linear' or 'cosine', got {head!r}")
        n_blocks = len(getattr(backbone, "blocks", []))
        if mode == "partial" and not 0 < freeze_blocks <= n_blocks:
            raise ValueError(f"freeze_blocks must be in 1..{n_blocks} for this backbone, got {freeze_blocks}")
        self.backbone = backbone
        self.mode, self.freeze_blocks, self.head_kind = mode, freeze_blocks, head
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.epochs, self.batch_size, self.seed = epochs, batch_size, seed
        self.batch_norm = batch_norm
        self.backbone_lr = lr if backbone_lr is None else backbone_lr

    def _new_head(self, n_way: int, device: torch.device) -> nn.Module:
        dim = self.backbone.feature_dim
        head = nn.Linear(dim, n_way) if self.head_kind == "linear" else CosineHead(dim, n_way)
        return head.to(device)

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> Predictor:
        n_way = int(support_y.max()) + 1
        g = torch.Generator().manual_seed(self.seed)
        torch_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)
        head = self._new_head(n_way, support_x.device)
        torch.random.set_rng_state(torch_state)
        backbone = self.backbone if self.mode == "linear" else copy.deepcopy(self.backbone)
        backbone.eval()  # running BatchNorm statistics, also while fine-tuning, unless:
        norms = batch_statistics(backbone) if self.batch_norm == "batch" else contextlib.nullcontext()
        groups = [{"params": head.parameters(), "lr": self.lr}]
        if self.mode == "linear":
            with torch.no_grad():
                inputs = backbone(support_x)  # frozen: features once
            encode = nn.Identity()
        else:
            frozen = backbone.blocks[: self.freeze_blocks] if self.mode == "partial" else []
            for block in frozen:
                block.requires_grad_(False)
            groups.append(
                {"params": [p for p in backbone.parameters() if p.requires_grad], "lr": self.backbone_lr}
            )
            inputs, encode = support_x, backbone
        opt = torch.optim.SGD(groups, momentum=self.momentum, weight_decay=self.weight_decay)
        n = len(support_y)
        with torch.enable_grad(), norms:
            for _ in range(self.epochs):
                order = torch.randperm(n, generator=g).to(support_x.device)
                for i in range(math.ceil(n / self.batch_size)):
                    idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                    opt.zero_grad(set_to_none=True)
                    F.cross_entropy(head(encode(inputs[idx])), support_y[idx]).backward()
                    opt.step()

        def predict(query_x: torch.Tensor) -> torch.Tensor:
            norms = batch_statistics(backbone) if self.batch_norm == "batch" else contextlib.nullcontext()
            with torch.no_grad(), norms:
                return head(backbone(query_x))

        return predict
