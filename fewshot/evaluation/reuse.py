"""Reuse the per-episode scores of an earlier evaluation instead of measuring them again.

Episode ``i`` of a setting is a pure function of the evaluation seed and ``i``, so the scores
an earlier evaluation measured for a method are the ones this evaluation would measure,
provided the method is the same (its kind, and the bytes of its checkpoint) and so is the
protocol (data, split, seed, queries per class, backbone, fine-tuning settings). A long
comparison can then be built in parts: score slow methods once (or on another machine, or
episodes 0..E-1 of a longer run) and add methods later, still paired episode by episode.

Every evaluation directory holds what reuse needs: ``config.yaml``, ``split.json``,
``methods.json`` (:func:`method_records`) and ``scores.pt`` (exact per-episode metrics).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fewshot.config import EvalConfig, saved_config
from fewshot.data import load_manifest
from fewshot.evaluation.compare import Scores, Setting
from fewshot.evaluation.methods import MethodSpec, resolve_checkpoint
from fewshot.evaluation.metrics import METRICS

PROTOCOL = ("data", "split", "seed", "q_query", "model", "finetune")  # config keys that must agree


class ReuseError(ValueError):
    """An earlier evaluation that cannot be reused, and why."""


@dataclass
class Reused:
    """Scores taken from earlier evaluations: ``scores[setting][label]``, and where from."""

    scores: dict[str, dict[str, Scores]] = field(default_factory=dict)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)


def method_records(specs: list[MethodSpec]) -> dict[str, dict[str, Any]]:
    """What identifies each method's predictions: kind, frozen blocks, checkpoint and its SHA-256,
    and the changes to its test-time adaptation, its averaged views, its refinement rounds, its
    whitening (and its rounds), its earlier blocks' weights and the other runs of an ensemble
    (only where there are some)."""
    records = {}
    for spec in specs:
        path = resolve_checkpoint(spec.checkpoint) if spec.checkpoint is not None else None
        records[spec.label] = {
            "kind": spec.kind,
            "freeze_blocks": spec.freeze_blocks,
            "checkpoint": str(path) if path else None,
            "sha256": _sha256(path) if path else None,
        }
        if spec.members:
            members = [resolve_checkpoint(m) for m in spec.members]
            records[spec.label]["members"] = [{"checkpoint": str(m), "sha256": _sha256(m)} for m in members]
        if spec.adapt:
            records[spec.label]["adapt"] = dict(spec.adapt)
        if spec.views > 1:
            records[spec.label]["views"] = spec.views
        if spec.refine:
            records[spec.label]["refine"] = spec.refine
        if spec.whiten:
            records[spec.label]["whiten"] = spec.whiten
        if spec.prior:
            records[spec.label]["prior"] = spec.prior
        if spec.rewhiten:
            records[spec.label]["rewhiten"] = spec.rewhiten
        if spec.blocks:
            records[spec.label]["blocks"] = {str(b): w for b, w in sorted(spec.blocks)}
    return records


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scores_state(scores: dict[str, dict[str, Scores]]) -> dict[str, Any]:
    """``scores.pt``'s content: per setting and method, the metric tensors and the seconds taken."""
    return {
        key: {label: {**s.metrics, "seconds": s.seconds} for label, s in by_label.items()}
        for key, by_label in scores.items()
    }


def load_reused(
    earlier: list[str],
    cfg: DictConfig,
    manifest: dict[str, Any],
    records: dict[str, dict[str, Any]],
    settings: list[Setting],
) -> Reused:
    """The scores of this evaluation's methods that the ``earlier`` directories already hold.

    A method is reused from the first directory that scored it under the same label with the
    same kind, checkpoint bytes and adaptation (:func:`method_records`; the checkpoint may have moved) on at
    least ``cfg.episodes`` episodes of a setting; its first ``cfg.episodes`` episodes are taken.
    A directory whose protocol differs is an error.
    """
    reused = Reused()
    for name in earlier:
        d = Path(name)
        needed = [d / f for f in ("config.yaml", "split.json", "methods.json", "scores.pt")]
        missing = [p.name for p in needed if not p.is_file()]
        if missing == ["scores.pt"] and (d / "partial").is_dir():
            raise ReuseError(
                f"reuse={name}: it is an unfinished evaluation; finish it first with "
                f"python -m fewshot.evaluate resume={name}"
            )
        if missing:
            raise ReuseError(
                f"reuse={name}: {', '.join(missing)} not found; give the output directory of an "
                "evaluation made by this version of fewshot.evaluate"
            )
        # over the defaults, so a key added since it was made counts as its default
        old, _ = saved_config(d, EvalConfig, "an output directory of fewshot.evaluate")
        for key in PROTOCOL:
            theirs, ours = (OmegaConf.to_container(OmegaConf.create({key: c.get(key)})) for c in (old, cfg))
            if theirs != ours:
                raise ReuseError(
                    f"reuse={name}: its {key} differs from this evaluation's ({theirs[key]} against "
                    f"{ours[key]}); reuse only evaluations of the same data, split, seed, q_query, model "
                    "and finetune settings"
                )
        if load_manifest(d / "split.json") != manifest:
            raise ReuseError(f"reuse={name}: it evaluated other classes (split.json differs)")
        old_records = json.loads((d / "methods.json").read_text())
        state = torch.load(d / "scores.pt", weights_only=True)
        for label, record in records.items():
            if _identity(old_records.get(label)) != _identity(record):
                continue
            for s in settings:
                entry = state.get(s.key, {}).get(label)
                done = reused.scores.get(s.key, {})
                if entry is None or label in done or len(entry["accuracy"]) < cfg.episodes:
                    continue
                n = cfg.episodes
                fraction = n / len(entry["accuracy"])
                metrics = {m: entry[m][:n] for m in METRICS}
                reused.scores.setdefault(s.key, {})[label] = Scores(metrics, entry["seconds"] * fraction)
                reused.sources.setdefault(s.key, {})[label] = name
    return reused


def _identity(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """What must match for a method's scores to be reused: not where its checkpoints lie."""
    if record is None:
        return None
    identity = {k: v for k, v in record.items() if k != "checkpoint"}
    if "members" in identity:
        identity["members"] = [m["sha256"] for m in identity["members"]]
    return identity
