"""Evaluation recipe: ``python -m fewshot.evaluate methods=[...] [group=choice ...] [key=value ...]``.

Read top to bottom: resolve the config (``configs/evaluate.yaml``), parse the settings and
method specs, load the data and its split, build every method (checking checkpoints
before any episode runs), then score all methods on the same episodes of each setting
(taking the scores that earlier evaluations in ``reuse=[...]`` hold for the same methods),
write the report into a new output directory and print its tables. ``resume=DIR`` continues
an evaluation that was killed, in its own directory, from the chunks of episodes it saved
(:mod:`fewshot.evaluation.partial`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fewshot import distributed
from fewshot.config import (
    RESUME_OVERRIDES,
    ConfigError,
    add_config_arguments,
    describe_groups,
    load_eval_config,
    resume_eval_config,
)
from fewshot.data import load_manifest, save_manifest
from fewshot.evaluation import (
    KINDS,
    BuildContext,
    Comparison,
    MethodError,
    Setting,
    build_method,
    compare,
    parse_method,
    save_report,
    unscored,
)
from fewshot.evaluation.partial import PartialScores
from fewshot.evaluation.reuse import load_reused, method_records
from fewshot.io import atomic_write_json, atomic_write_text
from fewshot.train import load_splits, new_run_dir, resolve_device


def evaluate(cfg: DictConfig) -> tuple[Path, Comparison]:
    """Run the evaluation ``cfg`` describes; return the output directory and the results."""
    try:
        settings = [Setting.parse(s) for s in cfg.settings]
    except ValueError as err:
        raise ConfigError(str(err)) from None
    specs = [parse_method(m) for m in cfg.methods]
    labels = [s.label for s in specs]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise ConfigError(
            f"method label(s) {repeated} appear twice; name them apart with label=kind:checkpoint"
        )
    baseline = cfg.baseline or next((s.label for s in specs if s.is_finetune), None)
    if baseline is not None and baseline not in labels:
        raise ConfigError(f"baseline={baseline!r} is not a method label; labels are {labels}")
    dist, device = distributed.init(resolve_device(cfg.device))  # torchrun: episodes shared out

    splits, manifest = load_splits(cfg.data, required=(cfg.split,))
    evaluated = splits[cfg.split]
    for s in settings:  # enough classes and images for every setting, before anything is written
        s.sampler(evaluated, cfg.q_query, cfg.seed)
    channels, size = evaluated.image_shape[0], evaluated.image_shape[1]
    base = splits.get("base") if cfg.split != "base" else None
    ctx = BuildContext(channels, size, cfg.model.backbone, cfg.finetune, cfg.seed, evaluated, base, device)
    records = method_records(specs)
    reused = load_reused(list(cfg.reuse), cfg, manifest, records, settings)
    partial = None
    if cfg.resume:
        _check_resumable(cfg, Path(cfg.resume), manifest, records)
        partial = _partial(Path(cfg.resume), dist)
    # every method with episodes to score is built (and so checked) before anything is written;
    # one whose scores are all reused or saved needs no learner
    pending = unscored(labels, settings, cfg.episodes, cfg.batch_episodes, reused.scores, partial)
    methods = {spec.label: build_method(spec, ctx) if spec.label in pending else None for spec in specs}
    if cfg.resume:
        out = Path(cfg.resume)
    else:
        made = new_run_dir(cfg.out_dir, cfg.name or "evaluate") if dist.main else None  # rank 0 writes
        out = Path(distributed.broadcast_object(str(made), dist))
        partial = _partial(out, dist)
    if dist.main:
        if not cfg.resume:
            atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg))
            save_manifest(manifest, out / "split.json")
            atomic_write_json(out / "methods.json", records)
        print(
            f"evaluating {len(methods)} method(s) on {evaluated.num_classes} {cfg.split} classes: "
            f"{', '.join(s.key for s in settings)}, {cfg.episodes} episodes each, baseline {baseline}",
            flush=True,
        )
    result = compare(
        methods,
        evaluated,
        settings,
        q_query=cfg.q_query,
        episodes=cfg.episodes,
        seed=cfg.seed,
        baseline=baseline,
        batch_episodes=cfg.batch_episodes,
        device=device,
        progress=not cfg.quiet,
        embed_once=cfg.embed_once,
        known=reused.scores,
        partial=partial,
    )
    result.reused = reused.sources
    if dist.main:
        save_report(result, out)
        partial.remove()
    return out, result


def _partial(out: Path, dist: distributed.Context) -> PartialScores:
    """The chunks of episodes an interrupted run of the evaluation in ``out`` saved (rank 0's
    view, in every process)."""
    partial = PartialScores(out, dist.rank)
    partial.state = distributed.broadcast_object(partial.state, dist)
    return partial


def _check_resumable(cfg: DictConfig, out: Path, manifest: dict, records: dict) -> None:
    """Refuse to resume a finished evaluation, or one whose configuration, classes or methods
    have changed (what ``cfg`` may change is :data:`~fewshot.config.RESUME_OVERRIDES`)."""
    if (out / "scores.pt").is_file():
        raise ConfigError(f"cannot resume {out}: it is finished (its report is {out}/report.md)")
    saved = resume_eval_config(out)
    free = (*RESUME_OVERRIDES, "resume", "out_dir", "name")
    changed = [k for k in cfg if k not in free and cfg[k] != saved[k]]
    if changed:
        raise ConfigError(
            f"cannot resume {out}: {', '.join(changed)} differ from its config.yaml; resume it with "
            f"resume={out} alone, or start a new evaluation"
        )
    if load_manifest(out / "split.json") != manifest:
        raise ConfigError(f"cannot resume {out}: its classes differ from this data's (split.json)")
    if json.loads((out / "methods.json").read_text()) != records:
        raise ConfigError(
            f"cannot resume {out}: a method's checkpoint has changed since it started (methods.json); "
            "start a new evaluation"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fewshot.evaluate",
        description="Compare few-shot methods on identical episodes. Config: configs/evaluate.yaml, "
        + describe_groups()
        + ", and key=value overrides. Methods are [label=]kind[:checkpoint][@key=value ...] with kind "
        + "one of "
        + ", ".join(KINDS)
        + "; a checkpoint is a .pt file or a run directory; @inner.test_steps=N or @inner.test_lr=X "
        + "changes how a run adapts; @finetune.lr=X, @finetune.backbone_lr=X or @finetune.epochs=N "
        + "one fine-tuning baseline's schedule.",
        epilog="example: python -m fewshot.evaluate methods=[maml:runs/maml,finetune:runs/pretrain,scratch] "
        "settings=[5w1s,5w5s] episodes=600; continue a killed one: "
        "python -m fewshot.evaluate resume=eval/evaluate",
    )
    parser.add_argument("overrides", nargs="*", help="group=choice or key=value")
    add_config_arguments(parser)
    args = parser.parse_intermixed_args(argv)
    try:
        resume = [o.split("=", 1)[1] for o in args.overrides if o.startswith("resume=")]
        if resume and args.config:
            raise ConfigError("--config cannot be given with resume=: the evaluation keeps its own config")
        if resume:
            rest = [o for o in args.overrides if not o.startswith("resume=")]
            cfg = resume_eval_config(resume[-1], rest)
        else:
            cfg = load_eval_config(args.overrides, check=not args.print_config, files=args.config)
        if args.print_config:
            print(OmegaConf.to_yaml(cfg), end="")
            return
        out, result = evaluate(cfg)
    except (ConfigError, MethodError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    ctx = distributed.current()
    if ctx.main:
        print()
        print((out / "report.md").read_text(), end="")
        print(f"\nreport: {out}/report.md, report.json, results.csv, episodes.json, accuracy.png, scores.pt")
    distributed.close(ctx)


if __name__ == "__main__":
    main()
