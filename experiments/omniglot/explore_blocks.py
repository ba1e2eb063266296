"""Exploratory checks (sessions 49 to 51): test-side rules scored on a validation network's cached features.

Before ``@block<i>=<w>`` existed, these checks asked which earlier blocks help, and how, without
going through ``python -m fewshot.evaluate``. The run's base characters (as drawn) and its held-out
characters are embedded once with 16 test-time views, keeping every block's output max-pooled over
its positions and the first three blocks' outputs averaged over them (cached beside the run as
``explore_blocks_features.pt``). Episodes (600 per setting, 15 queries per class) are drawn here,
the same ones for every rule, so the rules are paired; they are not the study's episodes. Each rule
is a list of feature groups, each whitened on its own as ``SupportWhitening`` whitens (its base
covariance shrunk by ``s`` times its mean variance, worth ``n`` degrees of freedom against the
support set's spread) and weighted in the squared distances; ``plda`` instead shrinks each class
mean along the base characters' between-class directions (a two-level Gaussian model). Session 50
added heavier weights for the earlier blocks, other rules than the nearest class mean on the same
whitened features (``classify``: a reweighted mean, a logistic regression started at ProtoNet's
head), positions kept apart rather than max-pooled (``positions``, a second cache), and
``against``, which pairs two networks trained on one split (e.g. one with ``train_blocks``, or
one trained on larger images). Session 51 added ``scales``: the same network fed its images at
other sizes (a cache for each), its features there as more groups beside the chosen blocks.

    python experiments/omniglot/explore_blocks.py runs/omniglot/protonet-flip-bf16-alphabets-globalmax weights
    # checks: joined, weights, sn, mean, plda (session 49), heavier, classify, positions (session 50),
    # scales (session 51);
    # prints each rule's accuracy and its paired difference from the first rule (the last block's
    # features alone, s = 3, n = 30); `against --other <run>` pairs two networks of one split
"""

from __future__ import annotations

import argparse
import functools
import re
from collections.abc import Callable
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
# Positions' columns after those: block 3's 3x3, the last block's 3x3 before its maximum, block 2 at 3x3
POSITIONS = [list(range(WIDTH * 7 + 576 * i, WIDTH * 7 + 576 * (i + 1))) for i in range(3)]
SETTINGS = ((5, 1), (20, 1), (5, 5), (20, 5))
# scales: the same network fed its images at other sizes, decoded from the PNGs at that size or
# its own size's images upsampled; each adds WIDTH * 7 columns after the pooled ones, in this order
SCALES = (("decoded", 36), ("upsampled", 36), ("decoded", 22))


class EveryBlock(torch.nn.Module):
    """A Conv-4's blocks 1 to 4 max-pooled over their positions, then blocks 1 to 3 averaged."""

    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone, self.feature_dim = backbone, WIDTH * 7

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maxima, means = [], []
        for i in range(len(self.backbone.blocks)):
            x = self.backbone.run_blocks(x, i, i + 1)  # run_blocks: an -up<size> network resizes first
            maxima.append(x.amax((2, 3)))
            if i < 3:
                means.append(x.mean((2, 3)))
        return torch.cat(maxima + means, 1)


class Positions(torch.nn.Module):
    """A Conv-4's positions kept apart: block 3's 3x3 output, the last block's 3x3 map before its global
    maximum, and block 2's 7x7 output max-pooled to 3x3 (576 features each)."""

    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone, self.feature_dim = backbone, WIDTH * 9 * 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = self.backbone.blocks
        second = self.backbone.run_blocks(x, 0, 2)
        third = blocks[2](second)
        last = torch.relu(blocks[3][1](blocks[3][0](third)))  # conv and BatchNorm, before the pool
        pooled = torch.nn.functional.adaptive_max_pool2d(second, 3)
        return torch.cat([third.flatten(1), last.flatten(1), pooled.flatten(1)], 1)


def cached_features(run: Path, positions: bool = False, scales: bool = False) -> list[torch.Tensor]:
    """Base features, base labels, held-out features, held-out labels (float64 features); with
    ``positions``, :class:`Positions`' features after the pooled ones (columns ``POSITIONS``);
    with ``scales``, the same network's :class:`EveryBlock` features at the input sizes of
    ``SCALES`` after them instead (``WIDTH * 7`` columns each, in that order)."""
    pooled = _cached(run, "explore_blocks_features.pt", EveryBlock)
    extra = []
    if positions:
        extra = [_cached(run, "explore_blocks_positions.pt", Positions)]
    if scales:
        for how, size in SCALES:
            name = f"explore_blocks_{how}{size}.pt"
            if how == "decoded":
                extra.append(_cached(run, name, EveryBlock, image_size=size))
            else:
                extra.append(_cached(run, name, EveryBlock, upsample=size))
    if not extra:
        return pooled
    return [torch.cat([pooled[0]] + [e[0] for e in extra], 1), pooled[1]] + [
        torch.cat([pooled[2]] + [e[2] for e in extra], 1),
        pooled[3],
    ]


def _cached(
    run: Path,
    name: str,
    module: type[torch.nn.Module],
    image_size: int | None = None,
    upsample: int | None = None,
) -> list[torch.Tensor]:
    """``module``'s view-averaged features of the run's base and held-out characters, and their
    labels; the images decoded at ``image_size`` if given, else at the run's own size, and with
    ``upsample`` resized to that size inside the network (its ``-up<size>`` variant, replacing the
    run's own resize if it has one, after each view's warp)."""
    cache = run / name
    if cache.is_file():
        return torch.load(cache, weights_only=True)
    config = load_checkpoint(run / "best.pt")["config"]
    data = OmegaConf.create(config["data"])
    data.split.manifest = str(run / "split.json")
    data.rotations = data.reflections = False
    if image_size is not None:
        data.image_size = image_size
    splits = load_splits(data, required=("base", "val"))[0]
    architecture = config["model"]["backbone"]
    if upsample is not None:  # in place of the run's own -up<size>, if it has one
        architecture = re.sub(r"-up\d+$", "", architecture) + f"-up{upsample}"
    backbone = build_backbone(architecture, 1, data.image_size)
    load_backbone_weights(backbone, run / "best.pt")
    net = ViewAveraged(module(backbone), 16, 0).eval()
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


def score_groups(
    data: list[torch.Tensor], rules: dict[str, list[tuple]], count: int = 600
) -> dict[str, dict[str, torch.Tensor]]:
    """Print each rule's accuracy per setting and its paired difference from the first rule, and
    return the episodes' accuracies (``{setting: {rule: [count]}}``, to pair networks). A rule
    is ``[(columns, s, n, weight), ...]``, or ``(groups, classify)`` with a ``classify(support
    [N, K, D], queries [M, D]) -> predicted classes [M]`` other than the nearest class mean, both
    already whitened group by group and scaled by the square roots of the weights."""
    base_f, base_y, val_f, val_y = data
    rules = {name: rule if isinstance(rule, tuple) else (rule, nearest_mean) for name, rule in rules.items()}
    priors = {}
    for groups, _ in rules.values():
        for cols, s, _, _ in groups:
            key = (tuple(cols), s)
            if key not in priors:
                priors[key] = SupportWhitening(
                    within_class_covariance(base_f[:, cols], base_y), s, 1.0
                ).covariance
    scores = {}
    for n_way, k in SETTINGS:
        correct = {rule: [] for rule in rules}
        for support, query in episodes(val_y, n_way, k, 15, count, 0):
            truth = torch.arange(n_way).repeat_interleave(query.shape[1])
            for rule, (groups, classify) in rules.items():
                whitened_support, whitened_queries = [], []
                for cols, s, n, weight in groups:
                    f = val_f[:, cols]
                    xs, xq = f[support], f[query].reshape(-1, len(cols))
                    residuals = (xs - xs.mean(1, keepdim=True)).reshape(-1, len(cols))
                    pooled = (residuals.T @ residuals + n * priors[(tuple(cols), s)]) / (n_way * (k - 1) + n)
                    factor = torch.linalg.cholesky(pooled) / weight**0.5
                    whitened_support.append(
                        torch.linalg.solve_triangular(factor, xs.reshape(-1, len(cols)).T, upper=False).T
                    )
                    whitened_queries.append(torch.linalg.solve_triangular(factor, xq.T, upper=False).T)
                xs = torch.cat(whitened_support, 1).reshape(n_way, k, -1)
                predicted = classify(xs, torch.cat(whitened_queries, 1))
                correct[rule].append((predicted == truth).double().mean())
        _report(f"{n_way}w{k}s", correct)
        scores[f"{n_way}w{k}s"] = {rule: torch.stack(values) * 100 for rule, values in correct.items()}
    return scores


def nearest_mean(support: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """ProtoNet's rule: the class whose support mean is nearest."""
    return torch.cdist(queries, support.mean(1)).argmin(1)


def reweighted_mean(temperature: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The nearest class centre, each centre a mean of its support images weighted by
    ``exp(-d^2 / (2 temperature D))`` of their squared distance ``d^2`` from the plain mean (``D`` the
    dimension): an image drawn unlike its class's others counts less."""

    def classify(support: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        d2 = (support - support.mean(1, keepdim=True)).pow(2).sum(-1)  # [N, K]
        weights = (-d2 / (2 * temperature * support.shape[-1])).softmax(1)
        return torch.cdist(queries, (weights.unsqueeze(-1) * support).sum(1)).argmin(1)

    return classify


def logistic(
    temperature: float, steps: int, lr: float
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A linear classifier started at ProtoNet's head (``2 c``, ``-|c|^2``, over ``temperature``)
    and trained on the support set by ``steps`` steps of gradient descent on its cross-entropy."""

    def classify(support: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        n_way, k, _ = support.shape
        centres = support.mean(1)
        weight = (2 * centres / temperature).requires_grad_()
        bias = (-centres.pow(2).sum(-1) / temperature).requires_grad_()
        x, y = support.reshape(n_way * k, -1), torch.arange(n_way).repeat_interleave(k)
        for _ in range(steps):
            with torch.enable_grad():
                loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, y)
                gw, gb = torch.autograd.grad(loss, (weight, bias))
            with torch.no_grad():
                weight -= lr * gw
                bias -= lr * gb
        return (queries @ weight.T + bias).argmax(1)

    return classify


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


def blocks_at(weights: tuple[float, ...], s: float = 3.0, n: float = 30.0) -> list[tuple]:
    """The features, then blocks 3, 2, 1 max-pooled, weighted by ``weights`` in that order."""
    return [(MAX[3 - i], s, n, w) for i, w in enumerate(weights)]


CHOSEN = (1.0, 0.5, 0.25, 0.25)  # session 49's weights: the features, blocks 3, 2 and 1


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
                rules[f"blocks s{s:g} n{n:g}"] = blocks_at(CHOSEN, s, n)
    elif check == "mean":  # the blocks averaged over their positions, instead of or beside the maxima
        chosen = blocks_at(CHOSEN)
        rules["blocks, max-pooled"] = chosen
        rules["blocks, averaged"] = [chosen[0]] + [
            (MEAN[2 - i], 3.0, 30.0, w) for i, w in enumerate((0.5, 0.25, 0.25))
        ]
        for w in (0.1, 0.25, 0.5):
            rules[f"max + block 3 averaged, {w:g}"] = chosen + [(MEAN[2], 3.0, 30.0, w)]
    elif check == "heavier":  # more weight on the earlier blocks than the chosen 0.5 / 0.25 / 0.25
        for w3, w2, w1 in (
            (0.5, 0.25, 0.25),
            (0.5, 0.5, 0.25),
            (0.5, 0.5, 0.5),
            (0.75, 0.5, 0.5),
            (0.5, 0.75, 0.5),
            (1.0, 0.75, 0.5),
            (1.0, 1.0, 0.5),
            (1.0, 1.0, 1.0),
        ):
            rules[f"b3 {w3:g} b2 {w2:g} b1 {w1:g}"] = blocks_at((1.0, w3, w2, w1))
    elif check == "classify":  # other rules than the nearest mean, on the chosen blocks
        chosen = blocks_at(CHOSEN)
        rules["blocks"] = chosen
        for t in (0.05, 0.1, 0.2, 1.0):
            rules[f"blocks, reweighted mean {t:g}"] = (chosen, reweighted_mean(t))
        for t, steps, lr in ((8.0, 10, 0.01), (8.0, 10, 0.05), (8.0, 10, 1.0), (32.0, 10, 0.05)):
            rules[f"blocks, logistic T{t:g} {steps}x{lr:g}"] = (chosen, logistic(t, steps, lr))
    elif check == "positions":  # positions kept apart, as groups beside the chosen blocks
        chosen = blocks_at(CHOSEN)
        rules["blocks"] = chosen
        for i, name in enumerate(("block 3 at 3x3", "last at 3x3", "block 2 at 3x3")):
            for w in (0.25, 0.5):
                rules[f"blocks + {name}, {w:g}"] = chosen + [(POSITIONS[i], 3.0, 30.0, w)]
        rules["block 3 at 3x3 for its max, 0.5"] = chosen[:1] + [(POSITIONS[0], 3.0, 30.0, 0.5)] + chosen[2:]
    elif check == "scales":  # the same network at other input sizes, as groups beside the chosen blocks
        chosen = blocks_at(CHOSEN)
        rules["blocks"] = chosen
        for i, (how, size) in enumerate(SCALES):
            start = WIDTH * 7 * (i + 1)
            final = list(range(start + WIDTH * 3, start + WIDTH * 4))  # that size's last block
            for w in (0.5, 1.0):
                rules[f"blocks + final {how} {size}, {w:g}"] = chosen + [(final, 3.0, 30.0, w)]
            rules[f"blocks, and {how} {size}'s at 0.5"] = chosen + [
                ([c + start for c in cols], s, n, 0.5 * w) for cols, s, n, w in chosen
            ]
    return rules


def score_against(data: list[torch.Tensor], other: list[torch.Tensor], count: int = 600) -> None:
    """The last block alone and the chosen blocks on two networks trained on the same split (the
    same held-out characters, so the same episodes), and each rule's paired difference between them."""
    rules = {"final s3 n30": blocks_at((1.0,)), "b3 0.5 b2 0.25 b1 0.25": blocks_at(CHOSEN)}
    ours, theirs = score_groups(data, rules, count), score_groups(other, rules, count)
    print("this run - the other:")
    for setting, scores in ours.items():
        for rule, accuracy in scores.items():
            d = accuracy - theirs[setting][rule]
            ci = 1.96 * d.std() / len(d) ** 0.5
            print(f"  {setting} {rule:<28} {d.mean():+.3f} +- {ci:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "run", type=Path, help="a validation network's run directory (its best.pt and split.json)"
    )
    parser.add_argument(
        "check",
        choices=(
            "joined",
            "weights",
            "sn",
            "mean",
            "plda",
            "heavier",
            "classify",
            "positions",
            "scales",
            "against",
        ),
    )
    parser.add_argument(
        "--other", type=Path, help="against: another network's run directory, trained on the same split"
    )
    args = parser.parse_args()
    if (args.check == "against") != (args.other is not None):
        parser.error("--other <run> goes with the check against, and against needs it")
    for run in [args.run] + [args.other] * (args.other is not None):
        if not (run / "best.pt").is_file() or not (run / "split.json").is_file():
            parser.error(f"{str(run)!r} is not a run directory with best.pt and split.json")
    data = cached_features(args.run, positions=args.check == "positions", scales=args.check == "scales")
    if args.check == "plda":
        score_plda(data)
    elif args.check == "against":
        score_against(data, cached_features(args.other))
    else:
        score_groups(data, rules_for(args.check))


if __name__ == "__main__":
    main()
