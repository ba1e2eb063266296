"""Pick the test-time method with the largest mean gain over several validation grids.

Each grid is a ``python -m fewshot.evaluate`` report (a run directory's ``report.json``, or
that file itself) that scored the same method labels on the held-out alphabets of one
validation network. A method's gain in a grid is its accuracy less the baseline's, averaged
over the grid's settings; its score is that gain averaged over the grids, so every split
counts alike however hard its alphabets are. Prints a markdown table, best first.

    python experiments/omniglot/choose_whitening.py --baseline v16 \\
        runs/omniglot/val-whiten-grid1 runs/omniglot/val-whiten-grid2 runs/omniglot/val-whiten-grid3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load_accuracies(path: Path) -> dict[str, dict[str, float]]:
    """``{setting: {method: mean accuracy %}}`` of one evaluation report."""
    report = path / "report.json" if path.is_dir() else path
    if not report.is_file():
        raise SystemExit(
            f"error: {str(report)!r} not found; give an evaluation's directory or its report.json"
        )
    try:
        results = json.loads(report.read_text())["results"]
        return {
            s: {m: r["accuracy"]["mean"] for m, r in by_method.items()} for s, by_method in results.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise SystemExit(
            f"error: {str(report)!r} is not an evaluation's report.json ({type(err).__name__}: {err}); "
            "it must hold results with each method's accuracy by setting"
        ) from None


def mean_gains(grids: list[dict[str, dict[str, float]]], baseline: str) -> dict[str, list[float]]:
    """Each method's mean gain over the baseline in each grid (settings averaged), for the methods
    that every grid scored."""
    methods = set.intersection(*(set(acc) for grid in grids for acc in grid.values()))
    if baseline not in methods:
        raise SystemExit(f"error: the baseline {baseline!r} is not scored in every setting of every grid")
    return {
        method: [sum(acc[method] - acc[baseline] for acc in grid.values()) / len(grid) for grid in grids]
        for method in sorted(methods - {baseline})
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grids", nargs="+", type=Path, help="evaluation directories or report.json files")
    parser.add_argument("--baseline", required=True, help="the label every gain is measured against")
    args = parser.parse_args()
    gains = mean_gains([load_accuracies(path) for path in args.grids], args.baseline)
    ranked = sorted(gains.items(), key=lambda item: -sum(item[1]) / len(item[1]))
    names = " | ".join(f"grid {i + 1}" for i in range(len(args.grids)))
    print(f"| method | {names} | mean over grids |")
    print("|---" * (len(args.grids) + 2) + "|")
    for method, per_grid in ranked:
        cells = " | ".join(f"{g:+.3f}" for g in per_grid)
        print(f"| {method} | {cells} | {sum(per_grid) / len(per_grid):+.3f} |")


if __name__ == "__main__":
    main()
