"""Write the study's class manifests (lists of character names, no images).

* ``small1_split.json``: the characters of images_background_small1, 116 for training
  (``base``, rotated into 464 classes by the configs) and 20 held out for validation
  (``val``), by class, seed 0.
* ``small2_novel.json``: the characters of images_background_small2 whose alphabet is
  not in small1 (``novel``). small2 shares its Greek and Latin alphabets with small1, and
  those 50 characters are byte-identical drawings; they are listed as ``seen_in_small1``
  and never evaluated.
* ``small1_trainval.json``: the same characters with the validation ones also trained on
  (``base``: all 136; ``val``: the 20, now seen in training). For a final run whose settings
  were already chosen on the held-out characters: its validation scores measure training
  classes, so it is scored from its last checkpoint, never its "best".
* ``small1_alphabets.json``: small1 split by alphabet, seed 0: three alphabets for training
  (``base``, 72 characters) and two held out whole (``val``: Greek and Korean, 64
  characters). Validation across alphabets, as small2's novel alphabets are new: for
  test-time choices that depend on how characters of an unseen alphabet vary, which
  held-out characters of a trained alphabet do not show.
* ``small1_alphabets2.json``: a second such split, seed 8 (the first seed whose two held-out
  alphabets are neither of the first split's): Balinese and Latin held out (50 characters),
  Early Aramaic, Greek and Korean trained on (86), to check a choice made on the first.
* ``small1_alphabets3.json``: a third, seed 1 (the first seed that holds out Early Aramaic,
  the one alphabet neither of the others does): Early Aramaic and Korean held out (62
  characters), Balinese, Greek and Latin trained on (74), so that every alphabet of small1 is
  held out by some split.

    python experiments/omniglot/make_splits.py [--data ../shared/data/omniglot]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fewshot.data import load_omniglot, make_split, save_manifest

HERE = Path(__file__).resolve().parent
# each alphabet split's manifest and the seed of its make_split (the docstring says why each)
ALPHABET_SPLITS = {
    "small1_alphabets.json": 0,
    "small1_alphabets2.json": 8,
    "small1_alphabets3.json": 1,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(HERE.parents[2] / "shared/data/omniglot"))
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args()
    small1 = load_omniglot(Path(args.data) / "images_background_small1.zip")
    small2 = load_omniglot(Path(args.data) / "images_background_small2.zip")
    split = make_split(small1, {"base": small1.num_classes - 20, "val": 20}, by="class", seed=0)
    save_manifest(split, Path(args.out) / "small1_split.json")
    trainval = {
        **split,
        "sizes": {"base": small1.num_classes, "val": 20},
        "splits": {"base": list(small1.class_names), "val": split["splits"]["val"]},
    }
    save_manifest(trainval, Path(args.out) / "small1_trainval.json")
    by_alphabet = {
        name: make_split(small1, {"base": 3, "val": 2}, by="group", seed=seed)
        for name, seed in ALPHABET_SPLITS.items()
    }
    for name, manifest in by_alphabet.items():
        save_manifest(manifest, Path(args.out) / name)
    seen = set(small1.group_names)
    characters = list(zip(small2.class_names, small2.groups, strict=True))
    novel = {
        "by": "group",
        "seed": None,
        "sizes": None,
        "splits": {
            "novel": [c for c, g in characters if g not in seen],
            "seen_in_small1": [c for c, g in characters if g in seen],
        },
    }
    save_manifest(novel, Path(args.out) / "small2_novel.json")
    counts = {k: len(v) for k, v in novel["splits"].items()}
    base, val = len(split["splits"]["base"]), len(split["splits"]["val"])
    print(f"small1: {base} base, {val} val characters (all {base + val} in small1_trainval.json)")
    for name, split in by_alphabet.items():
        base, val = (len(split["splits"][k]) for k in ("base", "val"))
        print(f"small1 by alphabet: {base} base, {val} val characters ({name})")
    print(f"small2: {counts['novel']} novel characters, {counts['seen_in_small1']} also in small1 (not used)")


if __name__ == "__main__":
    main()
