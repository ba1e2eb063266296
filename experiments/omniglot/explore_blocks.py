"""Session 49's exploratory checks: test-side rules scored on a validation network's cached features.

Before ``@block<i>=<w>`` existed, these checks asked which earlier blocks help, and how, without
going through ``python -m fewshot.evaluate``. The run's base characters (as drawn) and its held-out
characters are embedded once with 16 test-time views, keeping every block's output max-pooled over
its positions and the first three blocks' outputs averaged over them (cached beside the run as
``explore_blocks_features.pt``). Episodes (600 per setting, 15 queries per class) are drawn here,
the same ones for every rule, so the rules are paired; they are not the study's episodes. Each rule
is a list of feature groups, each whitened on its own as ``SupportWhitening`` whitens (its base
covariance shrunk by ``s`` times its mean variance, worth ``n`` degrees of freedom against the
support set's spread) and weighted in the squared distances; ``plda`` instead shrinks each class
mean along the base characters' between-class directions (a two-level Gaussian model).

    python experiments/omniglot/explore_blocks.py runs/omniglot/protonet-flip-bf16-alphabets-globalmax weights
    # checks: joined, weights, sn, mean, plda; prints each rule's accuracy and its paired
    # difference from the first rule (the last block's features alone, s = 3, n = 30)
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch
from omegaconf import OmegaConf

from fewshot.io import atomic_write
from fewshot.learners.features import embed, embed_dataset
from fewshot.models import SupportWhitening, ViewAveraged, build_backbone, load_backbone_weights
from fewshot.models.whiten import within_class_covariance
from fewshot.train import load_checkpoint, load_splits

WIDTH = 64  # conv-4's channels: column groups of the cached features
MAX = [list(range(WIDTH * i, WIDTH * (i + 1))) for i in range(4)]  # blocks 1, 2, 3 max-pooled; the features
MEAN = [list(range(WIDTH * (4 + i), WIDTH * (5 + i))) for i in range(3)]  # blocks 1, 2, 3 averaged
SETTINGS = ((5, 1), (20, 1), (5, 5), (20, 5))


class EveryBlock(torch.nn.Module):
    """A Conv-4's blocks 1 to 4 max-pooled over their positions, then blocks 1 to 3 averaged."""

    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone, self.feature_dim = backbone, WIDTH * 7

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maxima, means = [], []
        for i, block in enumerate(self.backbone.blocks):
            x = block(x)
            maxima.append(x.amax((2, 3)))
            if i < 3:
                means.append(x.mean((2, 3)))
        return torch.cat(maxima + means, 1)


def cached_features(run: Path) -> list[torch.Tensor]:
    """Base features, base labels, held-out features, held-out labels (float64 features)."""
    cache = run / "explore_blocks_features.pt"
    if cache.is_file():
        return torch.load(cache, weights_only=True)
    config = load_checkpoint(run / "best.pt")["config"]
    data = OmegaConf.create(config["data"])
    data.split.manifest = str(run / "split.json")
    data.rotations = data.reflections = False
    splits = load_splits(data, required=("base", "val"))[0]
    backbone = build_backbone(config["model"]["backbone"], 1, data.image_size)
    load_backbone_weights(backbone, run / "best.pt")
    net = ViewAveraged(EveryBlock(backbone), 16, 0).eval()
    out = []
    for name in ("base", "val"):
        images = splits[name]
        features = embed_dataset(functools.partial(embed, net), images, torch.device("cpu"))
        out += [features.double(), torch.arange(images.num_classes).repeat_interleave(images.counts)]
    atomic_write(cache, lambda f: torch.save(out, f))  # an interrupted run leaves no half-written cache
    return out


def episodes(labels: torch.Tensor, n: int, k: int, q: int, count: int, seed: int):
    """``count`` episodes of n classes, k support and q query rows each: (support, query) row indices."""
    g = torch.Generator().manual_seed(seed)
    classes = labels.unique()
    rows_of = [torch.nonzero(labels == c).flatten() for c in classes]
    for _ in range(count):
        chosen = classes[torch.randperm(len(classes), generator=g)[:n]]
        support, query = [], []
        for c in chosen:
            rows = rows_of[int(c)][torch.randperm(len(rows_of[int(c)]), generator=g)[: k + q]]
            support.append(rows[:k])
            query.append(rows[k:])
        yield torch.stack(support), torch.stack(query)


def score_groups(data: list[torch.Tensor], rules: dict[str, list[tuple]], count: int = 600) -> None:
    """Print each rule's accuracy per setting and its paired difference from the first rule. A rule
    is ``[(columns, s, n, weight), ...]``."""
    base_f, base_y, val_f, val_y = data
    priors = {}
    for groups in rules.values():
        for cols, s, _, _ in groups:
            key = (tuple(cols), s)
            if key not in priors:
                priors[key] = SupportWhitening(
                    within_class_covariance(base_f[:, cols], base_y), s, 1.0
                ).covariance
    for n_way, k in SETTINGS:
        correct = {rule: [] for rule in rules}
        for support, query in episodes(val_y, n_way, k, 15, count, 0):
            truth = torch.arange(n_way).repeat_interleave(query.shape[1])
            for rule, groups in rules.items():
                total = 0
                for cols, s, n, weight in groups:
                    f = val_f[:, cols]
                    xs, xq = f[support], f[query].reshape(-1, len(cols))
                    means = xs.mean(1)
                    residuals = (xs - means[:, None]).reshape(-1, len(cols))
                    pooled = (residuals.T @ residuals + n * priors[(tuple(cols), s)]) / (n_way * (k - 1) + n)
                    factor = torch.linalg.cholesky(pooled)
                    a = torch.linalg.solve_triangular(factor, xq.T, upper=False).T
                    b = torch.linalg.solve_triangular(factor, means.T, upper=False).T
                    total = total + weight * torch.cdist(a, b) ** 2
                correct[rule].append((total.argmin(1) == truth).double().mean())
        _report(f"{n_way}w{k}s", correct)


def score_plda(data: list[torch.Tensor], strengths=(0.5, 1.0, 2.0), count: int = 600) -> None:
    """The last block's features, whitened (s = 3, n = 30), against class means shrunk towards the base
    characters' or the episode's mean along the base characters' between-class covariance (times a
    strength), and distances under the predictive covariance of that two-level Gaussian model."""
    base_f, base_y, val_f, val_y = data
    cols = MAX[3]
    base_f, val_f = base_f[:, cols], val_f[:, cols]
    within = within_class_covariance(base_f, base_y)
    shrunk = SupportWhitening(within, 3.0, 1.0).covariance
    class_means = torch.stack([base_f[base_y == c].mean(0) for c in base_y.unique()])
    between = torch.cov(class_means.T) - within / 20  # less the noise of 20-image means
    values, vectors = torch.linalg.eigh((between + between.T) / 2)
    between = (vectors * values.clamp(min=0)) @ vectors.T
    rules = {"whitened": None} | {f"plda x{a:g} {m}": (a, m) for a in strengths for m in ("base", "episode")}
    for n_way, k in SETTINGS:
        correct = {rule: [] for rule in rules}
        for support, query in episodes(val_y, n_way, k, 15, count, 0):
            truth = torch.arange(n_way).repeat_interleave(query.shape[1])
            xs, xq = val_f[support], val_f[query].reshape(-1, len(cols))
            means = xs.mean(1)
            residuals = (xs - means[:, None]).reshape(-1, len(cols))
            spread = (residuals.T @ residuals + 30 * shrunk) / (n_way * (k - 1) + 30)
            for rule, how in rules.items():
                centres, covariance = means, spread
                if how is not None:
                    strength, centre = how
                    prior = strength * between
                    middle = base_f.mean(0) if centre == "base" else means.mean(0)
                    gain = prior @ torch.linalg.inv(prior + spread / k)
                    centres = middle + (means - middle) @ gain.T
                    covariance = spread + prior - gain @ prior
                    covariance = (covariance + covariance.T) / 2
                factor = torch.linalg.cholesky(covariance)
                a = torch.linalg.solve_triangular(factor, xq.T, upper=False).T
                b = torch.linalg.solve_triangular(factor, centres.T, upper=False).T
                correct[rule].append((torch.cdist(a, b).argmin(1) == truth).double().mean())
        _report(f"{n_way}w{k}s", correct)


def _report(setting: str, correct: dict[str, list[torch.Tensor]]) -> None:
    first = torch.stack(next(iter(correct.values()))) * 100
    for rule, values in correct.items():
        accuracy = torch.stack(values) * 100
        d = accuracy - first
        ci = 1.96 * d.std() / len(d) ** 0.5
        print(f"  {setting} {rule:<28} {accuracy.mean():.2f}  diff {d.mean():+.3f} +- {ci:.3f}", flush=True)


def rules_for(check: str) -> dict[str, list[tuple]]:
    """The rules each check compares; the first is always the last block's features alone."""
    rules = {"final s3 n30": [(MAX[3], 3.0, 30.0, 1.0)]}
    if check == "joined":  # block 3 joined to the features, whitened as one vector, against apart
        rules["b3+final joined"] = [(MAX[2] + MAX[3], 3.0, 30.0, 1.0)]
        for w in (0.25, 0.5, 1.0):
            rules[f"final + b3 apart, {w:g}"] = [(MAX[3], 3.0, 30.0, 1.0), (MAX[2], 3.0, 30.0, w)]
    elif check == "weights":  # 36 weightings of blocks 3, 2, 1, at the features' shrinkage or at 1
        for s in (3.0, 1.0):
            for w3 in (0.5, 0.75, 1.0):
                for w2 in (0.0, 0.25, 0.5):
                    for w1 in (0.0, 0.25):
                        groups = [(MAX[3], 3.0, 30.0, 1.0), (MAX[2], s, 30.0, w3)]
                        groups += [(MAX[1], s, 30.0, w2)] * bool(w2) + [(MAX[0], s, 30.0, w1)] * bool(w1)
                        rules[f"s{s:g} b3 {w3:g} b2 {w2:g} b1 {w1:g}"] = groups
    elif check == "sn":  # the chosen weights, every group at one s and n
        for s in (1.0, 2.0, 3.0, 5.0):
            for n in (10.0, 30.0, 100.0):
                weights = (1.0, 0.5, 0.25, 0.25)
                rules[f"blocks s{s:g} n{n:g}"] = [(MAX[3 - i], s, n, w) for i, w in enumerate(weights)]
    elif check == "mean":  # the blocks averaged over their positions, instead of or beside the maxima
        chosen = [(MAX[3 - i], 3.0, 30.0, w) for i, w in enumerate((1.0, 0.5, 0.25, 0.25))]
        rules["blocks, max-pooled"] = chosen
        rules["blocks, averaged"] = [chosen[0]] + [
            (MEAN[2 - i], 3.0, 30.0, w) for i, w in enumerate((0.5, 0.25, 0.25))
        ]
        for w in (0.1, 0.25, 0.5):
            rules[f"max + block 3 averaged, {w:g}"] = chosen + [(MEAN[2], 3.0, 30.0, w)]
    return rules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "run", type=Path, help="a validation network's run directory (its best.pt and split.json)"
    )
    parser.add_argument("check", choices=("joined", "weights", "sn", "mean", "plda"))
    args = parser.parse_args()
    if not (args.run / "best.pt").is_file() or not (args.run / "split.json").is_file():
        parser.error(f"{str(args.run)!r} is not a run directory with best.pt and split.json")
    data = cached_features(args.run)
    if args.check == "plda":
        score_plda(data)
    else:
        score_groups(data, rules_for(args.check))


if __name__ == "__main__":
    main()
