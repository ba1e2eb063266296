"""Plain fine-tuning baselines: linear probe, partial and full fine-tuning.

Defaults follow Chen et al. 2019, "A Closer Look at Few-shot Classification": a new
linear (or cosine) head, SGD with learning rate 0.01, momentum 0.9 and weight decay 1e-3,
100 epochs over the support set in batches of 4. The backbone's BatchNorm layers keep
their (pretrained) running statistics throughout: a few support images are too few to
re-estimate them.

:meth:`FineTune.adapt_batch` trains the episodes of a batch together (one vmapped
gradient per SGD step); it computes what a loop of ``torch.optim.SGD`` over each episode
computes, up to float rounding (tests/test_finetune.py).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fewshot.learners.base import BatchPredictor, Learner
from fewshot.learners.features import batch_features, embed
from fewshot.learners.functional import batch_statistics
from fewshot.models import HEADS, CosineHead, channels_last


class FineTune(Learner):
    """Fine-tune a pretrained backbone with a new head on each support set.

    Args:
        backbone: the pretrained feature extractor; never modified (each episode trains its own
            weights, functionally, starting from the backbone's).
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
        if head not in HEADS:
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

    def _new_head(self, n_way: int, like: torch.Tensor) -> nn.Module:
        """The head every episode starts from (seeded: the same for every episode), on the
        device and in the dtype of ``like``."""
        torch_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)
        dim = self.backbone.feature_dim
        head = nn.Linear(dim, n_way) if self.head_kind == "linear" else CosineHead(dim, n_way)
        torch.random.set_rng_state(torch_state)
        return head.to(like.device, like.dtype)

    def _trained_names(self) -> set[str]:
        """Backbone parameters that fine-tuning updates (none for a linear probe)."""
        if self.mode == "linear":
            return set()
        frozen = self.backbone.blocks[: self.freeze_blocks] if self.mode == "partial" else []
        frozen_ids = {id(p) for block in frozen for p in block.parameters()}
        return {n for n, p in self.backbone.named_parameters() if id(p) not in frozen_ids}

    def adapt_batch(self, support_x: torch.Tensor, support_y: torch.Tensor) -> BatchPredictor:
        """Fine-tune one copy of the head (and backbone layers) per episode, all at once.

        Each episode's weights are a slice of stacked tensors, and one vmapped gradient
        evaluates every episode's mini-batch in a single pass: the same SGD as a loop over
        episodes with ``torch.optim.SGD`` (tests check it), without a Python loop per episode.
        A linear probe computes the frozen features once and trains only the heads on them.
        """
        b, n = support_y.shape
        head = self._new_head(int(support_y.max()) + 1, support_x)
        # Frozen blocks on running statistics map each image to fixed activations: computed
        # once per episode here instead of in every SGD step.
        start = self.freeze_blocks if self.mode == "partial" and self.batch_norm == "running" else 0
        net = _Network(self.backbone, head, start)
        trained = {f"backbone.{name}" for name in self._trained_names()}
        trained |= {f"head.{name}" for name, _ in head.named_parameters()}
        linear = self.mode == "linear"
        model, prefix = (head, "head.") if linear else (net, "")
        params = {
            name.removeprefix(prefix): p.detach()
            for name, p in net.named_parameters()
            if name.startswith(prefix)
        }
        fixed = {name: p for name, p in params.items() if prefix + name not in trained}
        weights = {
            name: p.expand(b, *p.shape).clone() for name, p in params.items() if prefix + name in trained
        }
        lrs = {name: self.lr if (prefix + name).startswith("head.") else self.backbone_lr for name in weights}

        def loss(w: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(functional_call(model, {**fixed, **w}, (x,)), y)

        if linear and self.head_kind == "linear":
            step_grads = _linear_head_grads  # the common baseline: closed form, several times faster
        else:
            step_grads = torch.vmap(torch.func.grad(loss))
        momenta: dict[str, torch.Tensor] = {}
        g = torch.Generator().manual_seed(self.seed)
        with self._backbone_mode():
            inputs = self._features(support_x) if linear else self._frozen_part(support_x, start)
            with torch.enable_grad():
                for _ in range(self.epochs):
                    order = torch.randperm(n, generator=g).to(support_x.device)
                    for i in range(math.ceil(n / self.batch_size)):
                        idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                        grads = step_grads(weights, inputs[:, idx], support_y[:, idx])
                        for name, w in weights.items():  # torch.optim.SGD's update, per tensor
                            d = grads[name] + self.weight_decay * w if self.weight_decay else grads[name]
                            momenta[name] = (
                                momenta[name].mul_(self.momentum).add_(d) if name in momenta else d
                            )
                            weights[name] = w - lrs[name] * momenta[name]
        weights = {name: w.detach() for name, w in weights.items()}

        def predict(query_x: torch.Tensor) -> torch.Tensor:
            with self._backbone_mode():
                x = self._features(query_x) if linear else self._frozen_part(query_x, start)
                return torch.vmap(lambda w, x: functional_call(model, {**fixed, **w}, (x,)))(weights, x)

        return predict

    @contextlib.contextmanager
    def _backbone_mode(self) -> Iterator[None]:
        """No gradients; running BatchNorm statistics, or batch statistics for ``batch_norm="batch"``."""
        was_training = self.backbone.training
        self.backbone.eval()
        norms = batch_statistics(self.backbone, composite=True) if self.batch_norm == "batch" else None
        try:
            with torch.no_grad(), norms or contextlib.nullcontext():
                yield
        finally:
            self.backbone.train(was_training)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features ``[B, M, D]`` of ``[B, M, C, H, W]`` images.

        With running statistics the episodes share one pass (and features from
        :meth:`feature_extractor` pass through); with batch statistics each episode is
        normalised on its own images (vmap).
        """
        if self.batch_norm == "batch":
            return torch.vmap(self.backbone)(images)
        return batch_features(self.backbone, images)

    def _frozen_part(self, images: torch.Tensor, blocks: int) -> torch.Tensor:
        """The output of the first ``blocks`` backbone blocks for ``[B, M, C, H, W]`` images
        (the images themselves for 0)."""
        if blocks == 0:
            return images
        b, m = images.shape[:2]
        out = self.backbone.run_blocks(channels_last(images.flatten(0, 1)), 0, blocks)
        return out.reshape(b, m, *out.shape[1:])

    def feature_extractor(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The backbone's features for a linear probe on running statistics; else ``None``."""
        if self.mode != "linear" or self.batch_norm != "running":
            return None
        return functools.partial(embed, self.backbone)


class _Network(nn.Module):
    """The head on the backbone's features, entering the backbone at block ``start`` (its input
    is then what enters that block). Parameter names are ``backbone.*`` and ``head.*``."""

    def __init__(self, backbone: nn.Module, head: nn.Module, start: int = 0):
        super().__init__()
        self.backbone, self.head, self.start = backbone, head, start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.run_blocks(x, self.start))


def _linear_head_grads(
    w: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-episode gradients of the mean cross-entropy of linear heads, in closed form.

    ``x [B, m, D]`` features, ``y [B, m]`` labels, ``w`` the stacked heads (``weight [B, N, D]``,
    ``bias [B, N]``); the gradient of the loss in the logits is ``(softmax - onehot) / m``.
    """
    logits = torch.baddbmm(w["bias"].unsqueeze(1), x, w["weight"].transpose(1, 2))
    g = (logits.softmax(-1) - F.one_hot(y, logits.shape[-1]).to(logits.dtype)) / y.shape[1]
    return {"weight": g.transpose(1, 2) @ x, "bias": g.sum(1)}
