"""The one dataset abstraction of fewshot: a class-indexed set of images held in memory.

Every source (Omniglot, an image folder, the embedded synthetic characters) produces an
:class:`ImageSet`. Images are stored as one ``uint8`` tensor ``[M, C, H, W]`` sorted by
class, so the images of class ``c`` are the contiguous rows ``offsets[c]:offsets[c + 1]``
and an episode is gathered with a single index operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def to_pixels(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """``uint8`` images as ``float32`` in ``[0, 1]`` on ``device``: the one conversion every model
    input goes through (episodes, pretraining batches, feature extraction, prediction)."""
    return images.to(device, torch.float32).mul_(1.0 / 255.0)


@dataclass(frozen=True)
class ImageSet:
    """Images grouped by class, with an optional group (e.g. an alphabet) per class.

    Attributes:
        images: ``uint8`` tensor ``[M, C, H, W]``; rows of one class are contiguous.
            Ink or foreground is bright: Omniglot strokes are 255 on a 0 background.
        offsets: ``int64`` tensor ``[num_classes + 1]``; class ``c`` owns rows
            ``offsets[c]:offsets[c + 1]``.
        class_names: a unique name per class, e.g. ``"Balinese/character01"``.
        groups: the group of each class (``""`` where the source has none).
    """

    images: torch.Tensor
    offsets: torch.Tensor
    class_names: tuple[str, ...]
    groups: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be a uint8 tensor [M, C, H, W], got {self.images.dtype} "
                f"of shape {tuple(self.images.shape)}"
            )
        n = len(self.class_names)
        if len(self.groups) != n or self.offsets.shape != (n + 1,):
            raise ValueError(
                f"{n} class names need {n} groups and {n + 1} offsets, got "
                f"{len(self.groups)} groups and offsets of shape {tuple(self.offsets.shape)}"
            )
        if len(set(self.class_names)) != n:
            raise ValueError("class names must be unique")
        if int(self.offsets[0]) != 0 or int(self.offsets[-1]) != len(self.images):
            raise ValueError("offsets must start at 0 and end at the number of images")
        if bool((self.offsets[1:] < self.offsets[:-1]).any()):
            raise ValueError("offsets must be non-decreasing")

    @classmethod
    def from_classes(
        cls,
        per_class: Sequence[torch.Tensor],
        class_names: Sequence[str],
        groups: Sequence[str] | None = None,
    ) -> ImageSet:
        """Build from one ``uint8 [n_c, C, H, W]`` tensor per class."""
        if len(per_class) == 0:
            raise ValueError("an ImageSet needs at least one class")
        counts = torch.tensor([len(t) for t in per_class], dtype=torch.int64)
        offsets = torch.zeros(len(per_class) + 1, dtype=torch.int64)
        offsets[1:] = counts.cumsum(0)
        return cls(
            images=torch.cat(list(per_class)),
            offsets=offsets,
            class_names=tuple(class_names),
            groups=tuple(groups) if groups is not None else ("",) * len(per_class),
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def counts(self) -> torch.Tensor:
        """Images per class, ``int64 [num_classes]``."""
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def group_names(self) -> list[str]:
        """The distinct groups, in order of first appearance."""
        return list(dict.fromkeys(self.groups))

    def pixels(self, rows: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """Images ``rows`` (an ``int64`` index tensor) as ``float32`` in ``[0, 1]`` (:func:`to_pixels`)."""
        return to_pixels(self.images.index_select(0, rows.view(-1)), device)

    def class_images(self, c: int) -> torch.Tensor:
        """All images of class ``c``, ``uint8 [n_c, C, H, W]`` (a view)."""
        return self.images[int(self.offsets[c]) : int(self.offsets[c + 1])]

    def subset(self, classes: Sequence[int | str]) -> ImageSet:
        """The classes given by index or name, in the order given."""
        index = {name: i for i, name in enumerate(self.class_names)}
        ids = []
        for c in classes:
            if isinstance(c, str):
                if c not in index:
                    raise KeyError(f"class {c!r} is not in this image set")
                ids.append(index[c])
            else:
                ids.append(int(c))
        return ImageSet.from_classes(
            [self.class_images(i) for i in ids],
            [self.class_names[i] for i in ids],
            [self.groups[i] for i in ids],
        )

    def with_rotations(self, angles: Sequence[int] = (0, 90, 180, 270)) -> ImageSet:
        """Each class once per angle, rotated by that many degrees, as a class of its own.

        This is the standard Omniglot augmentation (Santoro et al. 2016): a character rotated
        by 90 degrees is treated as a new character. Rotated classes are named
        ``"<name>@rot<angle>"`` and keep the group of their source class.
        """
        per_class, names, groups = [], [], []
        for angle in angles:
            if angle % 90 != 0:
                raise ValueError(f"rotation angles must be multiples of 90, got {angle}")
            for c in range(self.num_classes):
                per_class.append(torch.rot90(self.class_images(c), k=angle // 90, dims=(2, 3)))
                names.append(self.class_names[c] if angle == 0 else f"{self.class_names[c]}@rot{angle}")
                groups.append(self.groups[c])
        return ImageSet.from_classes(per_class, names, groups)

    def with_reflections(self) -> ImageSet:
        """Each class twice, as drawn and mirrored left to right, the mirror image a class of its own.

        Like :meth:`with_rotations`, this multiplies the classes of a handwriting set (a mirrored
        character is another character); applied after it, the eight symmetries of the square
        each make a class. Mirrored classes are named ``"<name>@flip"`` and keep their group.
        """
        per_class = [self.class_images(c) for c in range(self.num_classes)]
        per_class += [torch.flip(images, dims=(3,)) for images in per_class]
        names = list(self.class_names) + [f"{name}@flip" for name in self.class_names]
        return ImageSet.from_classes(per_class, names, list(self.groups) * 2)

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (
            f"ImageSet({self.num_classes} classes, {len(self.images)} images of {c}x{h}x{w}, "
            f"{len(self.group_names)} groups)"
        )
