"""Decoding image files into fixed-size ``uint8`` tensors, with errors that name the file."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


def decode_image(data: bytes, name: str, size: int, channels: int, invert: bool = False) -> torch.Tensor:
    """Decode encoded image bytes into ``uint8 [channels, size, size]``.

    Images of any size are resized (Lanczos, which anti-aliases when shrinking) to
    ``size x size``; colour images become grayscale for ``channels=1`` and grayscale
    images are replicated for ``channels=3``. ``invert`` turns dark ink on white paper
    into bright strokes on a black background, as Omniglot is used.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.LANCZOS)
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(
            f"cannot read image {name}: {err}. Remove or replace the file, "
            "or load the folder with on_error='skip'"
        ) from err
    if invert:
        array = 255 - array
    t = torch.from_numpy(array.copy())
    return t.unsqueeze(0) if channels == 1 else t.permute(2, 0, 1).contiguous()


def decode_many(
    items: Sequence[tuple[str, Callable[[], bytes]]],
    size: int,
    channels: int,
    invert: bool = False,
    on_error: str = "raise",
) -> tuple[list[torch.Tensor | None], list[str]]:
    """Decode ``(name, read_bytes)`` items in parallel threads (PIL releases the GIL).

    Returns one tensor per item, ``None`` for unreadable ones when ``on_error="skip"``,
    and the names of the skipped items. With ``on_error="raise"`` the first unreadable
    file raises :class:`ImageReadError`.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")

    def one(item: tuple[str, Callable[[], bytes]]) -> torch.Tensor | None:
        name, read = item
        try:
            return decode_image(read(), name, size, channels, invert)
        except ImageReadError:
            if on_error == "raise":
                raise
            return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        out = list(pool.map(one, items))
    skipped = [name for (name, _), t in zip(items, out, strict=True) if t is None]
    return out, skipped
