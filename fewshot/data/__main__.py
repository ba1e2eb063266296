"""Print a few episodes: ``python -m fewshot.data [--source synthetic|omniglot|folder] ...``.

A quick look at what the samplers hand to a learner: the classes of each episode, the
tensor shapes and labels, and a coarse text rendering of the support images.
"""

from __future__ import annotations

import argparse

import torch

from fewshot.data import EpisodeSampler, ImageSet, load_image_folder, load_omniglot, make_synthetic

_SHADES = " .:-=+*#%@"


def ascii_row(images: torch.Tensor, width: int = 14) -> str:
    """Render ``[n, C, H, W]`` images in [0, 1] side by side as text, ``width`` characters each."""
    small = torch.nn.functional.adaptive_avg_pool2d(images.mean(1, keepdim=True), width)[:, 0]
    levels = (small * (len(_SHADES) - 1)).round().long().clamp(0, len(_SHADES) - 1)
    return "\n".join(
        "  ".join("".join(_SHADES[v] for v in img[r].tolist()) for img in levels) for r in range(width)
    )


def load(source: str, root: str | None, image_size: int | None) -> ImageSet:
    """The image set named on the command line."""
    if source == "synthetic":
        return make_synthetic()
    if root is None:
        raise SystemExit(f"--root is required for --source {source}")
    if source == "omniglot":
        return load_omniglot(*root.split(","), image_size=image_size or 28)
    return load_image_folder(root, image_size=image_size or 84)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fewshot.data", description=__doc__)
    parser.add_argument("--source", choices=["synthetic", "omniglot", "folder"], default="synthetic")
    parser.add_argument("--root", help="zip(s) or folder for omniglot (comma-separated), folder for folder")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--n-way", type=int, default=5)
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--q-query", type=int, default=15)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    try:
        data = load(args.source, args.root, args.image_size)
        sampler = EpisodeSampler(data, args.n_way, args.k_shot, args.q_query, seed=args.seed)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}") from err
    print(data)
    print(sampler)
    for i in range(args.episodes):
        ep = sampler.episode(i)
        names = [data.class_names[c] for c in ep.classes.tolist()]
        print(f"\nepisode {i}: support {tuple(ep.support_x.shape)}, query {tuple(ep.query_x.shape)}")
        print("  labels 0..{}: {}".format(args.n_way - 1, ", ".join(names)))
        print(ascii_row(ep.support_x[:: args.k_shot][:8]))


if __name__ == "__main__":
    main()
