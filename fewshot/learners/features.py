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
from fewshot.models import channels_last


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
    (running BatchNorm statistics)."""
    with evaluating(backbone):
        return backbone(channels_last(images))


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
