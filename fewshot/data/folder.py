"""Users' own images: ``root/<class>/*.png|jpg`` or ``root/<group>/<class>/*``."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from fewshot.data.decode import IMAGE_EXTENSIONS, decode_many
from fewshot.data.imageset import ImageSet


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_classes(root: str | Path) -> list[tuple[str, str, list[Path]]]:
    """``(class name, group, image paths)`` for every class folder under ``root``.

    A first-level folder that holds images is a class; one that holds only folders is a
    group whose sub-folders are classes (named ``"<group>/<class>"``).

    Raises:
        FileNotFoundError: ``root`` does not exist or is not a folder.
        ValueError: there are no class folders, or a class folder has no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"image folder {str(root)!r} does not exist or is not a folder; pass the folder "
            "that holds one sub-folder per class (data.root=<dir>)"
        )
    classes: list[tuple[str, str, list[Path]]] = []
    empty: list[str] = []
    for first in _subfolders(root):
        images, subs = _images_in(first), _subfolders(first)
        if images or not subs:
            if images:
                classes.append((first.name, "", images))
            else:
                empty.append(str(first))
            continue
        for second in subs:
            images = _images_in(second)
            if images:
                classes.append((f"{first.name}/{second.name}", first.name, images))
            else:
                empty.append(str(second))
    if empty:
        raise ValueError(
            f"class folder(s) with no images ({', '.join(IMAGE_EXTENSIONS)}): "
            f"{', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}; add images or remove the folder"
        )
    if not classes:
        raise ValueError(
            f"no class folders in {str(root)!r}: expected {root}/<class>/<image> "
            f"or {root}/<group>/<class>/<image>"
        )
    return classes


def load_image_folder(
    root: str | Path, image_size: int = 84, channels: int = 3, on_error: str = "raise"
) -> ImageSet:
    """Load every class folder under ``root`` into memory, resized to ``image_size``.

    Mixed sizes and modes are fine: every image is converted to ``channels`` (1 or 3)
    and resized. A corrupt or unreadable file raises an error naming it, or, with
    ``on_error="skip"``, is left out with a warning that lists the skipped files.
    """
    classes = find_classes(root)
    items = [(str(p), p.read_bytes) for _, _, paths in classes for p in paths]
    decoded, skipped = decode_many(items, image_size, channels, on_error=on_error)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s): {', '.join(skipped)}", stacklevel=2)
    per_class, names, groups, i = [], [], [], 0
    for name, group, paths in classes:
        kept = [t for t in decoded[i : i + len(paths)] if t is not None]
        i += len(paths)
        if not kept:
            raise ValueError(f"class {name!r} has no readable images; fix or remove its folder")
        per_class.append(torch.stack(kept))
        names.append(name)
        groups.append(group)
    return ImageSet.from_classes(per_class, names, groups)
