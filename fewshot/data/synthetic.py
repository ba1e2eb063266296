"""An embedded, offline, deterministic stand-in for Omniglot: procedural handwriting.

Each *alphabet* (group) has its own small vocabulary of stroke shapes; each *character*
(class) is 2 to 4 of those strokes placed, scaled and turned at random; each *drawing*
(sample) redraws the character with jittered control points, a random small affine
distortion (rotation, scale, shear, shift) and a random pen width. Characters of one
alphabet therefore share a style, as real ones do, which makes within-alphabet tasks hard
and gives meta-learning something to learn. Everything follows from one seed; no file or
network is needed.

Strokes are cubic Bezier curves, sampled densely and scattered onto a canvas at twice the
output resolution, widened by max-pooling, and average-pooled down: anti-aliased strokes
of value 255 on a 0 background, like preprocessed Omniglot.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from fewshot.data.imageset import ImageSet

_MAX_STROKES = 4
_VOCABULARY = 6  # stroke shapes per alphabet
_POINTS = 96  # samples along each stroke
# Per-drawing variation (in units of the image width, and radians).
JITTER_STROKE, JITTER_POINT, ROTATION, SCALE, SHEAR, SHIFT = 0.04, 0.045, 0.25, 0.2, 0.2, 0.05


def _bezier_basis(points: int) -> torch.Tensor:
    t = torch.linspace(0.0, 1.0, points).unsqueeze(1)
    return torch.cat([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3], dim=1)


def _characters(
    num_classes: int, classes_per_group: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Control points ``[classes, 4 strokes, 4 points, 2]`` and stroke mask ``[classes, 4]``."""
    num_groups = math.ceil(num_classes / classes_per_group)
    # Each alphabet's vocabulary: strokes as 3 displacements from their start point.
    wiggle = 0.25 + 0.5 * torch.rand(num_groups, 1, 1, 1, generator=g)
    vocab = torch.randn(num_groups, _VOCABULARY, 3, 2, generator=g) * wiggle
    vocab = vocab.cumsum(dim=2)  # a path, not a star of offsets
    group = torch.arange(num_classes) // classes_per_group
    pick = torch.randint(0, _VOCABULARY, (num_classes, _MAX_STROKES), generator=g)
    shape = vocab[group[:, None], pick]  # [C, S, 3, 2]
    angle = torch.rand(num_classes, _MAX_STROKES, generator=g) * 2 * math.pi
    rot = torch.stack(
        [torch.stack([angle.cos(), -angle.sin()], -1), torch.stack([angle.sin(), angle.cos()], -1)], -2
    )  # [C, S, 2, 2]
    scale = 0.2 + 0.2 * torch.rand(num_classes, _MAX_STROKES, 1, 1, generator=g)
    start = 0.25 + 0.5 * torch.rand(num_classes, _MAX_STROKES, 1, 2, generator=g)
    rest = start + scale * shape @ rot.transpose(-1, -2)
    control = torch.cat([start, rest], dim=2).clamp(0.08, 0.92)
    strokes = torch.randint(2, _MAX_STROKES + 1, (num_classes, 1), generator=g)
    mask = torch.arange(_MAX_STROKES) < strokes
    return control, mask


def _dilate(canvas: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a bool canvas ``[n, 1, H, W]`` by a ``(2r+1)``-wide square.

    Separable in-place ORs of shifted views: much faster on the CPU than a stride-1
    max-pool or a convolution, and exactly equal to ``max_pool2d(k=2r+1, stride=1)``.
    """
    for dim in (2, 3):
        out, n = canvas.clone(), canvas.shape[dim]
        for s in range(1, radius + 1):
            out.narrow(dim, s, n - s).logical_or_(canvas.narrow(dim, 0, n - s))
            out.narrow(dim, 0, n - s).logical_or_(canvas.narrow(dim, s, n - s))
        canvas = out
    return canvas


def _render(control: torch.Tensor, mask: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """Draw ``[n, S, 4, 2]`` jittered characters as ``uint8 [n, 1, size, size]``."""
    n = control.shape[0]
    # Each drawing moves every stroke a little, bends it, and distorts the whole character.
    control = control + JITTER_STROKE * torch.randn(n, control.shape[1], 1, 2, generator=g)
    control = control + JITTER_POINT * torch.randn(control.shape, generator=g)
    theta = ROTATION * torch.randn(n, generator=g)
    scale = 1.0 + SCALE * (2 * torch.rand(n, generator=g) - 1)
    shear = SHEAR * torch.randn(n, generator=g)
    affine = torch.stack(
        [
            torch.stack([theta.cos() * scale, -theta.sin() * scale + shear], -1),
            torch.stack([theta.sin() * scale, theta.cos() * scale], -1),
        ],
        -2,
    )  # [n, 2, 2]
    shift = SHIFT * torch.randn(n, 1, 2, generator=g)
    pts = torch.einsum("tk,nskd->nstd", _bezier_basis(_POINTS), control).reshape(n, -1, 2)
    pts = (pts - 0.5) @ affine.transpose(1, 2) + 0.5 + shift
    res = 2 * size
    pix = (pts * res).floor().long()
    inside = ((pix >= 0) & (pix < res)).all(-1) & mask.repeat_interleave(_POINTS, dim=1)
    flat = torch.where(inside, pix[..., 1] * res + pix[..., 0], res * res)  # outside -> spare slot
    canvas = torch.zeros(n, res * res + 1, dtype=torch.bool)
    canvas = canvas.scatter_(1, flat, True)[:, :-1].reshape(n, 1, res, res)
    # Pen width: dilate the centre line by a 3x3 or (for 40% of drawings) a 5x5 square.
    thick = torch.rand(n, 1, 1, 1, generator=g) < 0.4
    canvas = torch.where(thick, _dilate(canvas, 2), _dilate(canvas, 1)).float()
    return (F.avg_pool2d(canvas, 2) * 255).round().to(torch.uint8)


@functools.lru_cache(maxsize=4)
def make_synthetic(
    num_classes: int = 1200,
    samples_per_class: int = 20,
    image_size: int = 28,
    seed: int = 0,
    classes_per_group: int = 20,
) -> ImageSet:
    """Generate the synthetic handwriting dataset (cached per process; it is immutable).

    Classes are named ``"alphabet007/character12"`` and grouped by alphabet, mirroring
    Omniglot, so splits by group work the same way. The default size (1,200 characters
    of 20 drawings, 28x28) takes about a second to draw on two CPU cores.
    """
    for name, value in (
        ("num_classes", num_classes),
        ("samples_per_class", samples_per_class),
        ("image_size", image_size),
        ("classes_per_group", classes_per_group),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    g = torch.Generator().manual_seed(seed)
    control, mask = _characters(num_classes, classes_per_group, g)
    chunks = []
    chunk = max(1, 4096 // samples_per_class)
    for lo in range(0, num_classes, chunk):
        c = control[lo : lo + chunk].repeat_interleave(samples_per_class, dim=0)
        m = mask[lo : lo + chunk].repeat_interleave(samples_per_class, dim=0)
        chunks.append(_render(c, m, image_size, g))
    images = torch.cat(chunks)
    offsets = torch.arange(num_classes + 1, dtype=torch.int64) * samples_per_class
    names = tuple(
        f"alphabet{c // classes_per_group:03d}/character{c % classes_per_group:02d}"
        for c in range(num_classes)
    )
    return ImageSet(images, offsets, names, tuple(n.split("/")[0] for n in names))
