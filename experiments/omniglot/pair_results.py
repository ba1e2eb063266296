"""Paired differences between methods scored in two different evaluations of the same episodes.

``reuse=`` pairs methods across evaluations when their directories (with ``scores.pt``) are
still there. The committed results keep only the per-episode ``results.csv.gz`` and
``report.json``, and a remade checkpoint (another machine, another CPU) has other bytes, so
``reuse`` rightly refuses it. Episode i of a setting is still a pure function of the seed and
i, so two evaluations with the same seed, queries and data score the same episodes, and this
pairs their per-episode accuracies directly. It checks seed, queries per class and episode
count in both ``report.json`` files; the data and class split are the caller's to keep equal
(every evaluation of this study uses ``evaluate.yaml``'s).

``--a`` and ``--b`` repeat: a side given several runs (seeds of one config, say) scores each
episode by their mean accuracy, so the paired difference is that of the seed means, and its
interval is still over episodes.

    python experiments/omniglot/pair_results.py \
        --a runs/omniglot/eval-remade linear-probe --b experiments/omniglot/results linear-probe
    python experiments/omniglot/pair_results.py \
        --a experiments/omniglot/results/reflections protonet-flip \
        --a experiments/omniglot/results/variants protonet-flip-s1 \
        --b experiments/omniglot/results/reflections protonet \
        --b experiments/omniglot/results/variants protonet-s1
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
from pathlib import Path

from fewshot.evaluation.report import p_text
from fewshot.stats import mean_ci, paired_difference

PROTOCOL = ("seed", "q_query", "episodes")


def per_episode(folder: Path, method: str) -> dict[str, list[float]]:
    """Accuracy per episode of ``method``, by setting, from ``folder``'s results CSV."""
    path = folder / "results.csv"
    if not path.is_file():
        path = folder / "results.csv.gz"
    if not path.is_file():
        raise SystemExit(f"error: {folder} has no results.csv or results.csv.gz; give an evaluation's folder")
    scores: dict[str, dict[int, float]] = {}
    try:
        with gzip.open(path, "rt") if path.suffix == ".gz" else path.open() as f:
            for row in csv.DictReader(f):
                if row["method"] == method:
                    scores.setdefault(row["setting"], {})[int(row["episode"])] = float(row["accuracy"])
    except (OSError, KeyError, ValueError) as err:
        raise SystemExit(
            f"error: cannot read {path} ({type(err).__name__}: {err}); it must be an evaluation's "
            "per-episode results (columns method, setting, episode, accuracy)"
        ) from None
    if not scores:
        raise SystemExit(f"error: {path} has no rows of method {method!r}")
    return {setting: [by_episode[i] for i in sorted(by_episode)] for setting, by_episode in scores.items()}


def protocol(folder: Path) -> dict[str, object]:
    """The keys of ``folder``'s ``report.json`` that decide which episodes were scored."""
    path = folder / "report.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; give an evaluation's folder")
    try:
        report = json.loads(path.read_text())
        return {key: report[key] for key in PROTOCOL}
    except (ValueError, KeyError, TypeError) as err:
        raise SystemExit(
            f"error: {path} is not an evaluation's report.json ({type(err).__name__}: {err}); "
            f"it must hold {', '.join(PROTOCOL)}"
        ) from None


def side(runs: list[list[str]]) -> tuple[str, dict[str, list[float]]]:
    """A side's name and accuracy per episode, by setting: the mean over its ``runs``
    (``[folder, method]`` pairs), over the settings they all have."""
    scores = [per_episode(Path(folder), method) for folder, method in runs]
    mean: dict[str, list[float]] = {}
    for setting in scores[0]:
        if all(setting in s for s in scores):
            lengths = {len(s[setting]) for s in scores}
            if len(lengths) > 1:
                raise SystemExit(f"error: {setting}: runs of one side have {sorted(lengths)} episodes")
            runs_of_setting = [s[setting] for s in scores]
            mean[setting] = [sum(accs) / len(accs) for accs in zip(*runs_of_setting, strict=True)]
    name = " + ".join(f"{method} ({folder})" for folder, method in runs)
    return (name if len(runs) == 1 else f"mean of {name}"), mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag in ("--a", "--b"):
        parser.add_argument(flag, nargs=2, metavar=("FOLDER", "METHOD"), required=True, action="append")
    args = parser.parse_args()
    protocols = [protocol(Path(folder)) for folder, _ in args.a + args.b]
    if any(p != protocols[0] for p in protocols):
        others = " against ".join(sorted({str(p) for p in protocols}))
        raise SystemExit(f"error: the evaluations scored different episodes: {others}")
    (name_a, a), (name_b, b) = side(args.a), side(args.b)
    common = [setting for setting in a if setting in b]
    if not common:
        raise SystemExit(f"error: no setting in common ({sorted(a)} against {sorted(b)})")
    print(f"{name_a} against {name_b}, accuracy (%), 95% CI")
    print("| setting | a | b | a - b (paired) | two-sided t-test |")
    print("|---|---|---|---|---|")
    for setting in common:
        if len(a[setting]) != len(b[setting]):
            raise SystemExit(f"error: {setting}: {len(a[setting])} episodes against {len(b[setting])}")
        ma, mb = mean_ci(a[setting]), mean_ci(b[setting])
        d = paired_difference(a[setting], b[setting])
        print(
            f"| {setting} | {100 * ma.mean:.2f} +- {100 * ma.half_width:.2f} "
            f"| {100 * mb.mean:.2f} +- {100 * mb.half_width:.2f} "
            f"| {100 * d.mean:+.2f} +- {100 * d.half_width:.2f} | {p_text(d.p_value)} |"
        )


if __name__ == "__main__":
    main()
