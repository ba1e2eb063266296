"""Batched, seeded image augmentation.

``"crop"``: each image shifted by up to 1/8 of its side (reflect-padded, then cropped back
to its size); ``"crop-flip"``: also mirrored left-right with probability 1/2 (natural
images; not characters, whose mirror image is another character). ``"affine"``: a small
random rotation (up to 15 degrees), scaling (0.9 to 1.1), shear (up to 0.15) and shift (up
to 1/10 of the side), resampled bilinearly with 0 outside the image: the handwriting kind
(strokes on a 0 background), which keeps a character the same character.
``"affine-elastic"``: the same affine transform, then every pixel displaced along a smooth
random field (bicubic between a 4x4 grid of offsets of up to 2 pixels at 28x28, scaled with
the side): it bends strokes a little as another drawer would, which an affine map cannot
(Simard et al. 2003 distort handwritten digits this way). Random choices come from the
caller's generator, so a training step is still a pure function of (seed, step).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "crop", "crop-flip", "affine", "affine-elastic")
ELASTIC_GRID = 4  # offsets drawn on a 4x4 grid, so the field bends strokes, not single pixels
ELASTIC_PIXELS = 2.0 / 28  # largest offset at a grid point, as a fraction of the side


def augment(images: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Augmented copies of ``images [N, C, H, W]`` (``kind`` one of :data:`AUGMENTATIONS`)."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augmentation {kind!r} is not one of {', '.join(AUGMENTATIONS)}")
    if kind == "none":
        return images
    if kind in ("affine", "affine-elastic"):
        return _affine(images, generator, elastic=kind == "affine-elastic")
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


def affine_matrices(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random affine maps ``[n, 2, 3]`` (float64, ``F.affine_grid``'s output-to-input
    convention): each a rotation up to 15 degrees, a scaling 0.9 to 1.1, a shear up to 0.15
    and a shift up to 1/10 of the side, drawn in that order from ``generator``."""

    def uniform(bound: float, centre: float = 0.0) -> torch.Tensor:
        return centre + bound * (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1)

    angle, scale = uniform(math.radians(15)), uniform(0.1, centre=1.0)
    shear, shift = uniform(0.15), torch.stack([uniform(0.2), uniform(0.2)], 1)  # 0.2 = 1/10 of [-1, 1]
    cos, sin = angle.cos() / scale, angle.sin() / scale
    # Output coordinates to input coordinates: rotate and scale, then shear along x.
    return torch.stack(
        [
            torch.stack([cos + shear * sin, -sin + shear * cos, shift[:, 0]], 1),
            torch.stack([sin, cos, shift[:, 1]], 1),
        ],
        1,
    )


def warp(images: torch.Tensor, theta: torch.Tensor, field: torch.Tensor | None = None) -> torch.Tensor:
    """``images [N, C, H, W]`` resampled bilinearly (0 outside) through the affine maps
    ``theta [N, 2, 3]``, plus an optional displacement ``field [N, 2, H, W]`` in grid units."""
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
    if field is not None:
        grid = grid + field.permute(0, 2, 3, 1).to(images.device, images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _affine(images: torch.Tensor, generator: torch.Generator, elastic: bool = False) -> torch.Tensor:
    """Each image through its own random affine map (:func:`affine_matrices`), and with
    ``elastic`` its own smooth displacement field on top (see the module). The affine draws
    come first, so an image gets the same affine map with and without ``elastic``."""
    theta = affine_matrices(images.shape[0], generator)
    if not elastic:
        return warp(images, theta)
    # 2 * ELASTIC_PIXELS: a side spans 2 in grid coordinates.
    offsets = (
        2
        * ELASTIC_PIXELS
        * (2 * torch.rand(images.shape[0], 2, ELASTIC_GRID, ELASTIC_GRID, generator=generator) - 1)
    )
    return warp(
        images, theta, F.interpolate(offsets, size=images.shape[-2:], mode="bicubic", align_corners=True)
    )
