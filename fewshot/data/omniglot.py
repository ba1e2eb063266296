"""Omniglot (Lake et al. 2015) from its original zips or extracted folders.

Works with any archive or folder in the original layout ``.../<alphabet>/<character>/*.png``:
``images_background.zip`` / ``images_evaluation.zip`` (964 / 659 characters) and the
"minimal" ``images_background_small1.zip`` / ``..._small2.zip`` (136 / 156 characters).
Preprocessing is the standard one: ink becomes 1 (255) on a 0 background, resized to 28x28.
"""

from __future__ import annotations

import functools
import zipfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch

from fewshot.data.decode import decode_many
from fewshot.data.imageset import ImageSet


def _entries(source: Path) -> list[tuple[tuple[str, str, str], Callable[[], bytes]]]:
    """``((alphabet, character, file), read_bytes)`` for every PNG in a zip or folder."""
    if source.is_dir():
        return [
            ((p.parent.parent.name, p.parent.name, p.name), p.read_bytes)
            for p in sorted(source.rglob("*.png"))
        ]
    if not zipfile.is_zipfile(source):
        raise ValueError(f"{str(source)!r} is neither a folder nor a zip archive of Omniglot")
    out = []
    with zipfile.ZipFile(source) as archive:  # the compressed PNGs are small: read them now
        for name in sorted(archive.namelist()):
            parts = name.split("/")
            if name.endswith(".png") and len(parts) >= 3:
                data = archive.read(name)
                out.append(((parts[-3], parts[-2], parts[-1]), lambda d=data: d))
    return out


def load_omniglot(*sources: str | Path, image_size: int = 28) -> ImageSet:
    """Load one or more Omniglot zips or folders as one :class:`ImageSet`.

    Classes are characters named ``"<alphabet>/<character>"``, grouped by alphabet. Zips already
    decoded at this size in this process are not decoded again (see :func:`_decode_archives`).

    Raises:
        FileNotFoundError: a source does not exist (the message says where the data goes).
        ValueError: a source holds no Omniglot images, or two sources hold the same character.
    """
    if not sources:
        raise ValueError("load_omniglot needs at least one zip or folder")
    paths = [Path(source) for source in sources]
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(
                f"Omniglot source {str(path)!r} not found; pass the path of "
                "images_background*.zip (or its extracted folder), e.g. "
                "../shared/data/omniglot/images_background_small1.zip, or fetch the full set "
                "with fewshot.data.download_omniglot"
            )
    if any(path.is_dir() for path in paths):  # a folder's files can change unseen: read it each time
        return _decode(paths, image_size)
    archives = []
    for path in paths:
        st = path.stat()
        archives.append((str(path.resolve()), st.st_size, st.st_mtime_ns))
    return _decode_archives(tuple(archives), image_size)


@functools.lru_cache(maxsize=4)
def _decode_archives(archives: tuple[tuple[str, int, int], ...], image_size: int) -> ImageSet:
    """:func:`_decode` of zips given as ``(path, size, mtime_ns)``, kept for this process.

    A process that trains or scores many runs on the same zips (``experiments/omniglot``'s
    queue of runs, an evaluation whitening with several runs' base classes) decodes them once,
    not once a run. Size and modification time are part of the key, so a replaced zip is read
    again. Nothing in fewshot writes into an ImageSet's images, so one can be shared.
    """
    return _decode([Path(path) for path, _, _ in archives], image_size)


def _decode(sources: list[Path], image_size: int) -> ImageSet:
    """Every character of ``sources`` (zips or folders, each known to exist) as one ImageSet."""
    by_class: dict[tuple[str, str], list[tuple[str, Callable[[], bytes]]]] = defaultdict(list)
    for source in sources:
        entries = _entries(source)
        if not entries:
            raise ValueError(f"no Omniglot images (<alphabet>/<character>/*.png) in {str(source)!r}")
        seen = set()
        for (alphabet, character, file), read in entries:
            key = (alphabet, character)
            if key in by_class and key not in seen:
                raise ValueError(f"character {alphabet}/{character} appears in more than one source")
            seen.add(key)
            by_class[key].append((f"{source}:{alphabet}/{character}/{file}", read))
    keys = sorted(by_class)
    items = [item for key in keys for item in by_class[key]]
    decoded, _ = decode_many(items, image_size, channels=1, invert=True)
    per_class, i = [], 0
    for key in keys:
        n = len(by_class[key])
        per_class.append(torch.stack(decoded[i : i + n]))  # type: ignore[arg-type]
        i += n
    return ImageSet.from_classes(per_class, [f"{a}/{c}" for a, c in keys], [a for a, _ in keys])


def download_omniglot(root: str | Path, background: bool = True) -> Path:
    """Download the full Omniglot background (964 characters) or evaluation (659) set.

    Needs internet; uses torchvision's downloader and returns the extracted folder, ready
    for :func:`load_omniglot`. Nothing in fewshot's tests or default run calls this.
    """
    from torchvision.datasets import Omniglot

    dataset = Omniglot(root=str(root), background=background, download=True)
    return Path(dataset.target_folder)
