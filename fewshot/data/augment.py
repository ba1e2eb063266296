"""Batched, seeded image augmentation for supervised pretraining.

``"crop"``: each image shifted by up to 1/8 of its side (reflect-padded, then cropped back
to its size); ``"crop-flip"``: also mirrored left-right with probability 1/2 (natural
images; not characters, whose mirror image is another character). Random choices come from
the caller's generator, so a pretraining step is still a pure function of (seed, step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "crop", "crop-flip")


def augment(images: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Augmented copies of ``images [N, C, H, W]`` (``kind`` one of :data:`AUGMENTATIONS`)."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augmentation {kind!r} is not one of {', '.join(AUGMENTATIONS)}")
    if kind == "none":
        return images
    n, c, h, w = images.shape
    pad = max(1, min(h, w) // 8)
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator)
    flip = (
        torch.rand(n, generator=generator) < 0.5 if kind == "crop-flip" else torch.zeros(n, dtype=torch.bool)
    )
    cols = dx + torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(-1), cols)  # mirroring reverses the columns read
    rows = (dy + torch.arange(h)).to(images.device)
    cols = cols.to(images.device)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
