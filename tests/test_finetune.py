"""Batched fine-tuning against a plain per-episode loop with torch.optim.SGD."""

import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from fewshot import EpisodeSampler, FineTune
from fewshot.learners.functional import batch_statistics
from fewshot.models import build_backbone


def reference_finetune(learner: FineTune, sx, sy, qx):
    """The textbook loop: copy the network, torch.optim.SGD over shuffled mini-batches."""
    head = learner._new_head(int(sy.max()) + 1, sx)
    backbone = copy.deepcopy(learner.backbone).eval()
    norms = batch_statistics(backbone) if learner.batch_norm == "batch" else contextlib.nullcontext()
    frozen = backbone.blocks[: learner.freeze_blocks] if learner.mode == "partial" else []
    if learner.mode == "linear":
        frozen = [backbone]
    for block in frozen:
        block.requires_grad_(False)
    groups = [{"params": list(head.parameters()), "lr": learner.lr}]
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    if trainable:
        groups.append({"params": trainable, "lr": learner.backbone_lr})
    opt = torch.optim.SGD(groups, momentum=learner.momentum, weight_decay=learner.weight_decay)
    g = torch.Generator().manual_seed(learner.seed)
    with norms:
        features = backbone(sx) if learner.mode == "linear" else None
        for _ in range(learner.epochs):
            order = torch.randperm(len(sy), generator=g)
            for i in range(math.ceil(len(sy) / learner.batch_size)):
                idx = order[i * learner.batch_size : (i + 1) * learner.batch_size]
                h = features[idx] if features is not None else backbone(sx[idx])
                opt.zero_grad()
                F.cross_entropy(head(h), sy[idx]).backward()
                opt.step()
        with torch.no_grad():
            return head(backbone(qx))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "linear"},
        {"mode": "linear", "head": "cosine", "weight_decay": 0.0},
        {"mode": "partial", "freeze_blocks": 2, "backbone_lr": 0.05},
        {"mode": "full"},
        {"mode": "full", "batch_norm": "batch"},
    ],
)
def test_batched_finetune_equals_per_episode_sgd(small_synthetic, kwargs):
    torch.manual_seed(0)
    backbone = build_backbone("conv4")
    for m in backbone.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    learner = FineTune(backbone, epochs=3, seed=3, **kwargs)
    batch = EpisodeSampler(small_synthetic, 5, 2, 3, seed=0).batch(range(3))
    before = copy.deepcopy(backbone.state_dict())
    logits = learner.adapt_batch(batch.support_x, batch.support_y)(batch.query_x)
    assert logits.shape == (3, 15, 5)
    for i in range(3):
        expected = reference_finetune(learner, batch.support_x[i], batch.support_y[i], batch.query_x[i])
        torch.testing.assert_close(logits[i], expected, rtol=1e-4, atol=1e-4)
        single = learner.adapt(batch.support_x[i], batch.support_y[i])(batch.query_x[i])
        torch.testing.assert_close(single, logits[i], rtol=1e-4, atol=1e-4)
    for k, v in backbone.state_dict().items():  # the pretrained backbone is never modified
        assert torch.equal(v, before[k]), k
