"""The evaluation report: markdown tables, JSON, per-episode CSV, episode manifest, PNG plot.

Every file is written atomically (temporary file, then rename), so an interrupted run
never leaves a truncated report. ``results.csv`` has one row per method, setting and
episode, so any later analysis (other tests, other metrics) needs no rerun; the
``episode`` column pairs rows across methods, and ``episodes.json`` lists each episode's
classes and images. ``scores.pt`` holds the same metrics exactly (float tensors) with each
method's time, for a later evaluation to reuse (:mod:`fewshot.evaluation.reuse`).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import torch

from fewshot.evaluation.compare import Comparison
from fewshot.evaluation.metrics import METRICS
from fewshot.evaluation.reuse import scores_state
from fewshot.io import atomic_write, atomic_write_json, atomic_write_text

FILES = ("report.md", "report.json", "results.csv", "episodes.json", "accuracy.png", "scores.pt")


def _pct(x: float) -> float:
    return round(100 * x, 4) if math.isfinite(x) else x


def p_text(p_value: float) -> str:
    """A p-value as the tables print it (``p < 0.001`` below that, three decimals above)."""
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def to_json(c: Comparison) -> dict[str, Any]:
    """Everything the tables show, as numbers (percentages for metrics and differences)."""
    results: dict[str, Any] = {}
    for s in c.settings:
        results[s.key] = {}
        for m in c.methods:
            summary = c.summary(m, s)
            entry: dict[str, Any] = {
                name: {"mean": _pct(ci.mean), "ci95": _pct(ci.half_width)} for name, ci in summary.items()
            }
            entry["episodes_per_s"] = round(c.scores[s.key][m].episodes_per_s, 3)
            diff = c.paired(m, s)
            entry["vs_baseline"] = (
                None
                if diff is None
                else {
                    "mean_difference": _pct(diff.mean),
                    "ci95": _pct(diff.half_width),
                    "t": diff.t,
                    "p_value": diff.p_value,
                    "verdict": c.verdict(m, s),
                }
            )
            results[s.key][m] = entry
    return {
        "methods": c.methods,
        "baseline": c.baseline,
        "settings": [s.key for s in c.settings],
        "q_query": c.q_query,
        "episodes": c.episodes,
        "seed": c.seed,
        "units": "metrics and differences in percent; ci95 is the half-width of the 95% t-interval",
        "results": results,
        "reused": c.reused,
    }


def _table(c: Comparison, cell) -> list[str]:
    header = "| method | " + " | ".join(str(s) for s in c.settings) + " |"
    rule = "|---|" + "---|" * len(c.settings)
    return [header, rule] + [
        f"| {m} | " + " | ".join(cell(m, s) for s in c.settings) + " |" for m in c.methods
    ]


def markdown(c: Comparison) -> str:
    """Methods x settings: accuracy, difference from the baseline, macro F1 and speed."""
    lines = [
        f"## Accuracy (%) on {c.episodes} episodes, {c.q_query} queries per class, mean +- 95% CI",
        "",
        *_table(c, lambda m, s: "{:.2f} +- {:.2f}".format(*_mean_hw(c.summary(m, s)["accuracy"]))),
    ]
    if c.baseline is not None:

        def diff_cell(m, s) -> str:
            d = c.paired(m, s)
            if d is None:
                return "baseline"
            return f"{100 * d.mean:+.2f} +- {100 * d.half_width:.2f} ({p_text(d.p_value)}, {c.verdict(m, s)})"

        lines += [
            "",
            f"## Paired difference from {c.baseline} (accuracy points, same episodes, two-sided t-test)",
            "",
            *_table(c, diff_cell),
        ]
    lines += [
        "",
        "## Macro precision / recall / F1 (%) over each episode's queries, mean over episodes",
        "",
        *_table(
            c,
            lambda m, s: " / ".join(
                f"{100 * c.summary(m, s)[k].mean:.1f}" for k in ("precision", "recall", "f1")
            ),
        ),
        "",
        "## Speed (episodes/s, adaptation and prediction)",
        "",
        *_table(c, lambda m, s: f"{c.scores[s.key][m].episodes_per_s:.1f}"),
    ]
    if c.reused:
        lines += [
            "",
            "## Scores reused from earlier evaluations (same episodes; speed as measured there)",
            "",
        ]
        lines += [
            f"- {label}, {key}: {source}"
            for key, by_label in c.reused.items()
            for label, source in by_label.items()
        ]
    return "\n".join(lines) + "\n"


def _mean_hw(ci) -> tuple[float, float]:
    return 100 * ci.mean, 100 * ci.half_width


def results_csv(c: Comparison) -> str:
    """One row per (method, setting, episode): the raw material of every summary."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["method", "setting", "n_way", "k_shot", "episode", *METRICS])
    for s in c.settings:
        for m in c.methods:
            values = [c.scores[s.key][m].metrics[k].tolist() for k in METRICS]
            for i, row in enumerate(zip(*values, strict=True)):
                writer.writerow([m, s.key, s.n_way, s.k_shot, i, *(f"{v:.6f}" for v in row)])
    return out.getvalue()


def episode_manifest(c: Comparison) -> dict[str, Any]:
    """Each episode's classes and, per class, the indices of its support and query images.

    Image indices count within a class (``dataset.class_images(c)[i]``), so the manifest
    is meaningful without this process; the sampler seed regenerates it exactly.
    """
    data = c.dataset
    settings = {}
    for s in c.settings:
        sampler = s.sampler(data, c.q_query, c.seed)
        listed = []
        for i in range(c.episodes):
            ep = sampler.indices(i)
            offsets = data.offsets[ep.classes]
            support = (ep.support.view(s.n_way, -1) - offsets[:, None]).tolist()
            query = (ep.query.view(s.n_way, -1) - offsets[:, None]).tolist()
            listed.append(
                {
                    "classes": [data.class_names[k] for k in ep.classes.tolist()],
                    "support": support,
                    "query": query,
                }
            )
        settings[s.key] = {
            "n_way": s.n_way,
            "k_shot": s.k_shot,
            "within_group": s.within_group,
            "q_query": c.q_query,
            "episodes": listed,
        }
    return {"seed": c.seed, "settings": settings}


def plot_png(c: Comparison) -> bytes:
    """Accuracy against shots, one panel per N-way (and within-group N-way), with 95% CI bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(s.n_way, s.within_group) for s in c.settings})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    # one colour and marker per method, told apart even beyond the 10 colours of the default cycle
    colours = plt.get_cmap("tab10" if len(c.methods) <= 10 else "tab20").colors
    markers = "osD^vP*Xh<>p"
    for ax, (n, within) in zip(axes[0], panels, strict=True):
        shown = sorted(s for s in c.settings if (s.n_way, s.within_group) == (n, within))
        for i, m in enumerate(c.methods):
            acc = [c.summary(m, s)["accuracy"] for s in shown]
            ax.errorbar(
                [s.k_shot for s in shown],
                [100 * a.mean for a in acc],
                yerr=[100 * a.half_width if math.isfinite(a.half_width) else 0.0 for a in acc],
                color=colours[i % len(colours)],
                marker=markers[i % len(markers)],
                capsize=3,
                label=m,
            )
        ax.set_title(f"{n}-way{' within a group' if within else ''}, {c.episodes} episodes")
        ax.set_xlabel("shots per class (K)")
        ax.set_xticks([s.k_shot for s in shown])
        ax.set_ylabel("accuracy (%), 95% CI")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    # beside the panels, not over a curve
    axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def save_report(c: Comparison, out_dir: str | Path) -> dict[str, Path]:
    """Write :data:`FILES` into ``out_dir`` (atomically, each); return their paths."""
    out = Path(out_dir)
    paths = {
        "report.md": atomic_write_text(out / "report.md", markdown(c)),
        "report.json": atomic_write_json(out / "report.json", to_json(c)),
        "results.csv": atomic_write_text(out / "results.csv", results_csv(c)),
        "episodes.json": atomic_write_json(out / "episodes.json", episode_manifest(c)),
    }
    state = scores_state(c.scores)
    paths["scores.pt"] = atomic_write(out / "scores.pt", lambda f: torch.save(state, f))
    png = plot_png(c)
    paths["accuracy.png"] = atomic_write(out / "accuracy.png", lambda f: f.write(png))
    return paths
