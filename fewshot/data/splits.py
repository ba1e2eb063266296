"""Seeded class splits (base / validation / novel), saved as a JSON manifest.

Few-shot evaluation is only honest when the novel classes were never trained on. A split
assigns whole classes, or whole groups (e.g. Omniglot alphabets) so that even the writing
system of a novel character is unseen. The manifest lists class names, so it can be
reviewed, versioned, and re-applied to the same data later, in any process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fewshot.data.imageset import ImageSet
from fewshot.io import atomic_write_json


def _allocate(n_units: int, sizes: dict[str, float | int]) -> dict[str, int]:
    """How many units each split gets: integer sizes are counts, float sizes fractions."""
    if not sizes:
        raise ValueError("sizes must name at least one split, e.g. {'train': 0.8, 'test': 0.2}")
    if any(isinstance(v, float) for v in sizes.values()):
        total = sum(sizes.values())
        if abs(total - 1.0) > 1e-6 or any(v < 0 for v in sizes.values()):
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {sizes}")
        counts = {k: int(round(v * n_units)) for k, v in sizes.items()}
        last = list(sizes)[-1]
        counts[last] = n_units - sum(v for k, v in counts.items() if k != last)
    else:
        counts = dict(sizes)  # type: ignore[arg-type]
    if any(v < 0 for v in counts.values()) or sum(counts.values()) > n_units:
        raise ValueError(f"split sizes {sizes} need more than the {n_units} units available")
    return counts


def make_split(
    dataset: ImageSet, sizes: dict[str, float | int], by: str = "class", seed: int = 0
) -> dict[str, Any]:
    """A manifest assigning the classes of ``dataset`` to named splits.

    Args:
        sizes: split name -> fraction (floats summing to 1) or count (ints) of units.
        by: ``"class"`` shuffles classes; ``"group"`` shuffles whole groups (alphabets).
        seed: the same dataset, sizes, ``by`` and seed always give the same manifest.

    Returns:
        ``{"by", "seed", "sizes", "splits": {name: [class names in dataset order]}}``.
    """
    if by == "class":
        units = list(dataset.class_names)
    elif by == "group":
        units = dataset.group_names
        if units == [""]:
            raise ValueError("this dataset has no groups; split with by='class'")
    else:
        raise ValueError(f"by must be 'class' or 'group', got {by!r}")
    counts = _allocate(len(units), sizes)
    order = torch.randperm(len(units), generator=torch.Generator().manual_seed(seed)).tolist()
    unit_split: dict[str, str] = {}
    start = 0
    for name, n in counts.items():
        for i in order[start : start + n]:
            unit_split[units[i]] = name
        start += n
    keys = dataset.class_names if by == "class" else dataset.groups
    splits: dict[str, list[str]] = {name: [] for name in counts}
    for class_name, key in zip(dataset.class_names, keys, strict=True):
        if key in unit_split:
            splits[unit_split[key]].append(class_name)
    return {"by": by, "seed": seed, "sizes": dict(sizes), "splits": splits}


def save_manifest(manifest: dict[str, Any], path: str | Path) -> Path:
    """Write a split manifest as JSON (atomically)."""
    return atomic_write_json(path, manifest)


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read a split manifest written by :func:`save_manifest` (or by hand)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split manifest {str(path)!r} not found")
    manifest = json.loads(path.read_text())
    if not isinstance(manifest.get("splits"), dict):
        raise ValueError(f"{str(path)!r} is not a split manifest: it has no 'splits' mapping")
    return manifest


def apply_split(dataset: ImageSet, manifest: dict[str, Any]) -> dict[str, ImageSet]:
    """One :class:`ImageSet` per split of ``manifest``; every listed class must exist."""
    known = set(dataset.class_names)
    out = {}
    for name, classes in manifest["splits"].items():
        missing = [c for c in classes if c not in known]
        if missing:
            raise ValueError(
                f"split {name!r} lists {len(missing)} class(es) not in the dataset, e.g. "
                f"{missing[0]!r}; the manifest was made for other data"
            )
        if not classes:
            raise ValueError(f"split {name!r} is empty; give it a larger size")
        out[name] = dataset.subset(classes)
    return out
