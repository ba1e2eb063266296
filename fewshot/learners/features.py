"""Frozen per-image features: what ProtoNet and SimpleShot (at test time) and the linear
probe see of an image.

In eval mode (running BatchNorm statistics) an image's features depend on nothing but the
image, so a batch of episodes can share one forward pass, and an evaluator can embed each
image of a dataset once (:meth:`fewshot.learners.Learner.feature_extractor`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from fewshot.data import ImageSet
from fewshot.models import ViewAveraged, channels_last

EMBED_IMAGES = 16_384  # per backbone call, views included: 16 views of embed_dataset's 1,024 images


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode (running BatchNorm statistics) and no gradients, restoring the mode after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def embed(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Eval-mode features ``[M, D]`` of images ``[M, C, H, W]``, each independent of the others
    (running BatchNorm statistics). The images go through in groups of at most
    ``EMBED_IMAGES`` with the test-time views of a :class:`ViewAveraged` inside ``backbone``
    counted, so many views of many images fit in memory (64 views of 1,024 images resized to
    36x36, in one call, outgrew 24 GiB); being independent, they get the same features."""
    views = max((m.views for m in backbone.modules() if isinstance(m, ViewAveraged)), default=1)
    per_call = max(1, EMBED_IMAGES // views)
    with evaluating(backbone):
        if len(images) <= per_call:
            return backbone(channels_last(images))
        return torch.cat([backbone(channels_last(group)) for group in images.split(per_call)])


def batch_features(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Features ``[B, M, D]`` of ``[B, M, C, H, W]`` images, the episodes of a batch in one
    pass; features ``[B, M, D]`` (from :func:`embed`) are returned as they are."""
    if images.dim() == 3:
        return images
    return embed(backbone, images.flatten(0, 1)).unflatten(0, images.shape[:2])


@torch.no_grad()
def embed_dataset(
    extract: Callable[[torch.Tensor], torch.Tensor],
    dataset: ImageSet,
    device: torch.device | str = "cpu",
    chunk: int = 1024,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """``extract``'s features ``[M, D]`` of the ``M`` images of ``dataset``, ``chunk`` images at a
    time. With ``rows`` (image indices), only those images are embedded and every other row is
    NaN: an evaluation of a few episodes then embeds only the images they draw, and a row it
    should not read cannot pass for a feature."""
    if rows is not None and len(rows) == 0:
        raise ValueError("rows is empty: there is no image to embed")
    wanted = torch.arange(len(dataset.images)) if rows is None else rows
    features = torch.cat([extract(dataset.pixels(r, device)) for r in wanted.split(chunk)])
    if rows is None:
        return features
    out = features.new_full((len(dataset.images), *features.shape[1:]), float("nan"))
    out[rows.to(out.device)] = features
    return out
