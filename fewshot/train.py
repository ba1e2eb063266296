"""Training recipe: ``python -m fewshot.train <learner> [group=choice ...] [key=value ...]``.

Read top to bottom: resolve the config, load and split the data, build the learner and
its optimizer, resume if asked, then loop over steps (one meta-batch each), validating on
fixed held-out episodes and writing checkpoints atomically; finish with a meta-test
summary on the novel classes. ``pretrain`` runs the same loop with ordinary
cross-entropy on batches of base-class images.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from fewshot import distributed
from fewshot.config import (
    LEARNERS,
    ConfigError,
    add_config_arguments,
    describe_groups,
    load_config,
    resume_config,
)
from fewshot.data import (
    EpisodeSampler,
    ImageSet,
    apply_split,
    episode_seed,
    load_image_folder,
    load_manifest,
    load_omniglot,
    make_split,
    make_synthetic,
    save_manifest,
)
from fewshot.data.augment import augment
from fewshot.evaluation import Setting, compare
from fewshot.io import atomic_write, atomic_write_text
from fewshot.learners import (
    ANIL,
    MAML,
    FineTune,
    MetaLearner,
    MetaSGD,
    ProtoNet,
    Reptile,
    SimpleShot,
    episode_accuracies,
)
from fewshot.models import (
    FeatureEnsemble,
    build_backbone,
    build_model,
    channels_last,
    load_backbone_weights,
)
from fewshot.stats import MeanCI, mean_ci


class TrainingError(RuntimeError):
    """A run that cannot go on (a non-finite loss, a run directory that does not fit)."""


# -- data ------------------------------------------------------------------------------
def load_dataset(data: DictConfig) -> ImageSet:
    """The whole image set named by the ``data`` config group."""
    if data.source == "synthetic":
        return make_synthetic(data.num_classes, data.samples_per_class, data.image_size, data.seed)
    if data.root is None:
        raise ConfigError(f"data.root is required for data.source={data.source} (data.root=<path>)")
    if data.source == "omniglot":
        return load_omniglot(*data.root.split(","), image_size=data.image_size)
    if data.source == "folder":
        return load_image_folder(data.root, data.image_size, data.channels, data.on_error)
    raise ConfigError(f"unknown data.source {data.source!r}; choose synthetic, omniglot or folder")


def load_splits(
    data: DictConfig, required: tuple[str, ...] = ("base", "val", "novel")
) -> tuple[dict[str, ImageSet], dict[str, Any]]:
    """The image set of each split, and the manifest that defines them (to save with a run)."""
    dataset = load_dataset(data)
    if data.split.manifest:
        manifest = load_manifest(data.split.manifest)
    else:
        sizes = {k: float(v) if isinstance(v, float) else int(v) for k, v in data.split.sizes.items()}
        manifest = make_split(dataset, sizes, by=data.split.by, seed=data.split.seed)
    splits = apply_split(dataset, manifest)
    for name in required:
        if name not in splits:
            raise ConfigError(f"the split needs a {name!r} part; data.split.sizes has {list(splits)}")
    if data.rotations and "base" in splits:
        splits["base"] = splits["base"].with_rotations()
    if data.reflections and "base" in splits:
        splits["base"] = splits["base"].with_reflections()
    return splits, manifest


# -- learner and optimizer -------------------------------------------------------------
def build_learner(cfg: DictConfig, channels: int, image_size: int, n_base: int) -> torch.nn.Module:
    """The learner named by ``cfg.learner``; ``pretrain`` gets a classifier over base classes."""
    m, inner = cfg.model, cfg.inner
    if cfg.learner == "pretrain":
        return build_model(m.backbone, n_base, channels, image_size, m.pretrained, m.get("head", "linear"))
    if cfg.learner == "protonet":
        backbone = build_backbone(m.backbone, channels, image_size)
        if m.pretrained:
            load_backbone_weights(backbone, m.pretrained)
        options = {  # runs saved before these options lack them
            "base_classes": n_base,
            "base_weight": cfg.get("base_head", {}).get("weight", 0.0),
            "train_shrink": cfg.get("train_whiten", {}).get("shrink"),
            "block_weights": cfg.get("train_blocks", {}).get("weights") or (),
            "blocks_apart": cfg.get("train_blocks", {}).get("apart", False),
        }
        distill = cfg.get("distill")
        if distill is None or distill.teacher is None:
            return ProtoNet(backbone, **options)
        members = []
        for path in distill.teacher.split(","):
            members.append(build_backbone(m.backbone, channels, image_size))
            load_backbone_weights(members[-1], path)
        teacher = members[0] if len(members) == 1 else FeatureEnsemble(members)
        return ProtoNet(
            backbone,
            teacher=teacher,
            distill_weight=distill.weight,
            temperature=distill.temperature,
            **options,
        )
    model = build_model(m.backbone, cfg.task.n_way, channels, image_size, m.pretrained)
    proto_head = inner.get("proto_head", False)  # runs saved before the option lack it
    if cfg.learner == "reptile":
        return Reptile(
            model,
            inner.lr,
            inner.steps,
            inner.optimizer,
            inner.test_steps,
            inner.test_lr,
            proto_head=proto_head,
            zero_head=inner.get("zero_head", False),
            step_shots=inner.get("step_shots"),
        )
    kinds = {"maml": MAML, "fomaml": MAML, "metasgd": MetaSGD, "anil": ANIL}
    first_order = inner.first_order or cfg.learner == "fomaml"
    extra = {"min_lr": inner.get("min_lr")} if cfg.learner == "metasgd" else {}
    return kinds[cfg.learner](
        model,
        inner.lr,
        inner_steps=inner.steps,
        first_order=first_order,
        test_steps=inner.test_steps,
        test_lr=inner.test_lr,
        proto_head=proto_head,
        zero_head=inner.get("zero_head", False),
        test_norm=inner.get("test_norm", "batch"),
        **extra,
    )


def parameter_groups(learner: torch.nn.Module, optim: DictConfig) -> list[dict]:
    """The learner's parameters for the outer optimizer: Meta-SGD's learned inner rates form a
    group of their own when ``optim.rates_lr`` gives them their own step size."""
    rates_lr = optim.get("rates_lr")  # runs saved before the option lack it
    if rates_lr is None:
        return [{"params": list(learner.parameters())}]
    rates = {id(p) for p in learner.lrs.parameters()}
    others = [p for p in learner.parameters() if id(p) not in rates]
    return [{"params": others}, {"params": list(learner.lrs.parameters()), "lr": rates_lr}]


def build_optimizer(optim: DictConfig, params, steps: int):
    if optim.name == "adam":
        opt = torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    elif optim.name == "sgd":
        opt = torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    else:
        raise ConfigError(f"unknown optim.name {optim.name!r}; choose adam or sgd")
    if optim.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    elif optim.schedule == "constant":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    else:
        raise ConfigError(f"unknown optim.schedule {optim.schedule!r}; choose constant or cosine")
    return opt, sched


class WeightAverage:
    """An exponential moving average of a learner's weights (parameters and floating-point
    buffers, so BatchNorm's running statistics are averaged with the weights they belong to).

    Averaging the last thousand or so steps' weights removes some of the noise of the final
    steps of stochastic training (Polyak averaging). The average is a full copy of the learner,
    so it validates and adapts exactly as the learner does. The decay at step ``t`` is
    ``min(decay, (1 + t) / (10 + t))``, as in TensorFlow's ExponentialMovingAverage with
    ``num_updates``: with a fixed decay the random initial weights would linger (5% of the
    average after 3,000 steps at 0.999, which cost a ProtoNet up to 2 points on held-out
    Omniglot alphabets)."""

    def __init__(self, learner: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.learner = copy.deepcopy(learner).eval()

    @torch.no_grad()
    def update(self, learner: torch.nn.Module, step: int) -> None:
        """Move the average towards the learner's weights after step ``step`` (from 0)."""
        keep = min(self.decay, (1 + step) / (10 + step))
        pairs = zip(self.learner.state_dict().values(), learner.state_dict().values(), strict=True)
        for mine, theirs in pairs:
            if mine.is_floating_point():
                mine.lerp_(theirs, 1.0 - keep)
            else:  # integer buffers (BatchNorm's count of batches) are copied
                mine.copy_(theirs)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but CUDA is not available; use train.device=cpu")
    return device


# -- checkpoints -----------------------------------------------------------------------
def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint in place."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint without unpickling code (``weights_only=True``)."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    return torch.load(path, map_location="cpu", weights_only=True)


def new_run_dir(out_dir: str | Path, name: str) -> Path:
    """``out_dir/name``, or ``name-2``, ``name-3``, ... if taken: never overwrite a run."""
    base = Path(out_dir) / name
    run, i = base, 1
    while run.exists():
        i += 1
        run = base.with_name(f"{base.name}-{i}")
    run.mkdir(parents=True)
    return run


def tensorboard_writer(run_dir: Path):
    """A TensorBoard writer for the run directory when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


# -- one step of each kind -------------------------------------------------------------
def pretrain_step(
    model, base: ImageSet, step: int, cfg: DictConfig, device, part: range | None = None
) -> dict[str, torch.Tensor]:
    """Cross-entropy on a batch of base images, augmented as ``data.augment`` says; the batch
    is a pure function of (seed, step). ``part``: the images of it that this process trains on."""
    g = torch.Generator().manual_seed(episode_seed(cfg.train.seed, step))
    rows = torch.randint(0, len(base.images), (cfg.train.batch_size,), generator=g)
    x = augment(base.pixels(rows, device), cfg.data.augment, g)
    if part is not None:
        rows, x = rows[part.start : part.stop], x[part.start : part.stop]
    labels = torch.searchsorted(base.offsets, rows, right=True) - 1
    logits = model(channels_last(x))
    loss = F.cross_entropy(logits, labels.to(device))
    loss.backward()
    return {"loss": loss.detach(), "accuracy": (logits.argmax(1) == labels.to(device)).float().mean()}


def validate(learner, sampler: EpisodeSampler, episodes: int, device, pretrain: bool) -> MeanCI:
    """Mean accuracy with 95% CI on the fixed validation episodes."""
    evaluated = SimpleShot(learner.backbone) if pretrain else learner
    return mean_ci(episode_accuracies(evaluated, sampler.episodes(episodes), device))


# -- the run ---------------------------------------------------------------------------
def train(cfg: DictConfig) -> Path:
    """Run (or resume) training as configured; return the run directory."""
    task = cfg.task
    try:  # before anything is written
        val_setting = Setting.parse(cfg.train.val_setting or f"{task.n_way}w{task.k_shot}s")
    except ValueError as err:
        raise ConfigError(f"train.val_setting: {err}") from None
    pretrain = cfg.learner == "pretrain"
    ctx, device = distributed.init(resolve_device(cfg.train.device))  # torchrun: one process of many
    if cfg.train.bf16 and device.type not in ("cpu", "cuda"):
        raise ConfigError(f"train.bf16=true autocasts on cpu or cuda, not {device}; use train.bf16=false")
    items = cfg.train.batch_size if pretrain else task.meta_batch  # per step, shared among processes
    if items < ctx.world:
        raise ConfigError(f"{items} items per step cannot be shared among {ctx.world} processes; use more")
    resuming = cfg.train.resume is not None
    if resuming:  # cfg comes from resume_config: the run's own, plus explicit overrides
        run_dir = Path(cfg.train.resume)
        ckpt = load_checkpoint(run_dir / "last.pt")
    torch.manual_seed(cfg.train.seed)

    # Data and every checkpoint the learner starts from are read before the run directory is
    # made, so a bad path or a checkpoint of another architecture leaves nothing half-written.
    summary = not pretrain and cfg.summary.episodes > 0  # the closing meta-test needs novel classes
    splits, manifest = load_splits(cfg.data, required=("base", "val", "novel")[: 3 if summary else 2])
    channels, size = splits["base"].image_shape[0], splits["base"].image_shape[1]
    learner = build_learner(cfg, channels, size, splits["base"].num_classes).to(device)
    train_sampler = (
        None
        if pretrain
        else EpisodeSampler(
            splits["base"],
            task.n_way,
            task.k_shot,
            task.q_query,
            seed=cfg.train.seed,
            within_group=task.within_group,
            augment=cfg.data.augment,
        )
    )
    val_sampler = val_setting.sampler(splits["val"], max(task.q_query, 1), seed=cfg.train.seed + 1)
    if not resuming:
        made = new_run_dir(cfg.train.out_dir, cfg.train.name or cfg.learner) if ctx.main else None
        run_dir = Path(distributed.broadcast_object(str(made), ctx))
    if ctx.main:
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
        save_manifest(manifest, run_dir / "split.json")
    opt, sched = build_optimizer(cfg.optim, parameter_groups(learner, cfg.optim), cfg.train.steps)

    start, best = 0, -1.0
    ema = cfg.optim.get("ema")  # runs saved before the option lack it
    if resuming:
        # with optim.ema, "model" is the average (what is validated and evaluated) and "trained"
        # the weights the optimizer steps
        learner.load_state_dict(ckpt["trained" if ema is not None else "model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        start, best = ckpt["step"], ckpt["best"]
    distributed.broadcast_parameters([*learner.parameters(), *learner.buffers()], ctx)
    average = None if ema is None else WeightAverage(learner, ema)
    if average is not None and resuming:
        average.learner.load_state_dict(ckpt["model"])
    scored = learner if average is None else average.learner  # what validation and checkpoints see
    part = distributed.share(items, ctx)  # this process's items of every step
    weight = len(part) / items

    def checkpoint(step: int, name: str) -> None:
        if not ctx.main:
            return
        save_checkpoint(
            run_dir / name,
            {
                "model": scored.state_dict(),
                **({} if average is None else {"trained": learner.state_dict()}),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "rng": torch.get_rng_state(),
                "step": step,
                "best": best,
                "config": OmegaConf.to_container(cfg, resolve=True),
            },
        )

    log = (run_dir / "metrics.jsonl").open("a") if ctx.main else None
    board = tensorboard_writer(run_dir) if ctx.main else None
    every = cfg.train.checkpoint_every or cfg.train.val_every
    bar = tqdm(
        total=cfg.train.steps,
        initial=start,
        disable=cfg.train.quiet or not ctx.main,
        desc=f"{cfg.learner}",
        dynamic_ncols=True,
    )
    tick, done_since = time.perf_counter(), 0
    first_bad = torch.tensor(-1, device=device)  # step of the first non-finite loss, if any
    bad_loss = torch.tensor(0.0, device=device)

    def stop_if_non_finite(bad_step: int, value: float) -> None:
        if bad_step < 0:
            return
        last = run_dir / "last.pt"
        kept = (
            f"the last good checkpoint {last} is intact" if last.exists() else "no checkpoint was written yet"
        )
        raise TrainingError(
            f"loss became {value} at step {bad_step}; stopped ({kept}). Try a lower optim.lr or inner.lr."
        )

    # bf16 autocast on GPU and CPU alike: convolutions and matrix products in bf16, losses and
    # distances in float32, weights and optimizer state in float32 (on CPUs with AVX512-BF16 or
    # AMX conv-4 ProtoNet steps ran 1.7 times as fast on Omniglot; without them it can be slower).
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.bf16)
    for step in range(start, cfg.train.steps):
        learner.train()
        opt.zero_grad(set_to_none=True)
        with autocast:
            if pretrain:
                metrics = pretrain_step(learner, splits["base"], step, cfg, device, part)
            else:
                first = step * task.meta_batch
                batch = train_sampler.batch(range(first + part.start, first + part.stop))
                metrics = learner.meta_backward(batch.to(device, non_blocking=True))
        distributed.reduce_gradients(learner.parameters(), weight, ctx)
        metrics = distributed.reduce_metrics(metrics, weight, ctx)
        # Non-finite losses are noted on the device and checked (a host sync) only where the
        # run logs or writes: no checkpoint ever holds the weights they produce.
        newly = ~torch.isfinite(metrics["loss"]) & (first_bad < 0)
        first_bad = torch.where(newly, step + 1, first_bad)
        bad_loss = torch.where(newly, metrics["loss"].detach().float(), bad_loss)
        opt.step()
        if isinstance(learner, MetaSGD):
            learner.clamp_rates_()  # projected onto inner.min_lr, where set
        sched.step()
        if average is not None:
            average.update(learner, step)
        done_since += 1
        bar.update(1)
        last_step = step + 1 == cfg.train.steps
        logging = (step + 1) % cfg.train.log_every == 0 or last_step
        validating = (step + 1) % cfg.train.val_every == 0 or last_step
        if logging or validating or (step + 1) % every == 0:
            stop_if_non_finite(int(first_bad), float(bad_loss))
        if not ctx.main:  # rank 0 alone logs, validates and writes checkpoints
            continue
        if logging:
            loss = float(metrics["loss"])
            now = time.perf_counter()
            per_step = task.meta_batch if not pretrain else cfg.train.batch_size
            rate = done_since * per_step / (now - tick)
            record = {
                "step": step + 1,
                "loss": loss,
                "accuracy": float(metrics["accuracy"]),
                "items_per_s": rate,
                "lr": sched.get_last_lr()[0],
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            if board is not None:
                for key in ("loss", "accuracy", "items_per_s", "lr"):
                    board.add_scalar(f"train/{key}", record[key], step + 1)
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{record['accuracy']:.3f}", per_s=f"{rate:.1f}")
            if cfg.train.quiet:
                print(json.dumps(record), flush=True)
            tick, done_since = now, 0
        if validating:
            scored.eval()
            val = validate(scored, val_sampler, cfg.train.val_episodes, device, pretrain)
            log.write(
                json.dumps({"step": step + 1, "val_accuracy": val.mean, "val_ci95": val.half_width}) + "\n"
            )
            log.flush()
            tqdm.write(f"step {step + 1}: validation {val} on {cfg.train.val_episodes} episodes")
            if board is not None:
                board.add_scalar("val/accuracy", val.mean, step + 1)
            if val.mean > best:
                best = val.mean
                checkpoint(step + 1, "best.pt")
            checkpoint(step + 1, "last.pt")
        elif (step + 1) % every == 0:
            checkpoint(step + 1, "last.pt")
    bar.close()
    if not ctx.main:
        return run_dir
    log.close()
    if board is not None:
        board.close()
    if summary:
        summarize(cfg, learner, splits["novel"], device, run_dir)
    return run_dir


def summarize(cfg: DictConfig, learner: MetaLearner, novel: ImageSet, device, run_dir: Path) -> None:
    """Meta-test: the trained learner against fine-tuning the same backbone from scratch,
    on the same episodes, with the paired difference (``python -m fewshot.evaluate`` does more)."""
    s = cfg.summary
    best = load_checkpoint(run_dir / "best.pt")
    learner.load_state_dict(best["model"])
    learner.eval()
    channels, size = novel.image_shape[0], novel.image_shape[1]
    torch.manual_seed(cfg.train.seed)
    scratch = FineTune(
        build_backbone(cfg.model.backbone, channels, size).to(device),
        mode="full",
        epochs=s.finetune_epochs,
        batch_norm="batch",  # an untrained network has no meaningful running statistics
    )
    ours, base = (
        f"{cfg.learner} (trained, best validation checkpoint)",
        f"fine-tuning {cfg.model.backbone} from scratch",
    )
    setting = Setting(s.n_way, s.k_shot)
    result = compare(
        {ours: learner, base: scratch},
        novel,
        [setting],
        q_query=s.q_query,
        episodes=s.episodes,
        seed=s.seed,
        baseline=base,
        device=device,
        progress=False,
    )
    lines = [
        f"meta-test on {novel.num_classes} novel classes: {s.episodes} episodes of {setting}, "
        f"{s.q_query} queries each (95% CI)",
        *(f"  {m:<46} {result.summary(m, setting)['accuracy']}" for m in (ours, base)),
    ]
    if s.episodes > 1:
        lines.append(f"  {'difference (paired, same episodes)':<46} {result.paired(ours, setting)}")
    atomic_write_text(run_dir / "summary.txt", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fewshot.train",
        description="Train a few-shot learner. Config: configs/<learner>.yaml, config groups "
        + describe_groups()
        + ", and key=value overrides (e.g. task.n_way=20 inner.steps=5).",
    )
    parser.add_argument("learner", choices=LEARNERS, metavar="learner", help=", ".join(LEARNERS))
    parser.add_argument("overrides", nargs="*", help="group=choice or key=value")
    add_config_arguments(parser)
    args = parser.parse_intermixed_args(argv)
    try:
        resume = [o.split("=", 1)[1] for o in args.overrides if o.startswith("train.resume=")]
        if resume:
            rest = [o for o in args.overrides if not o.startswith("train.resume=")]
            cfg = resume_config(resume[-1], rest)
            if cfg.learner != args.learner:
                raise ConfigError(f"{resume[-1]} is a {cfg.learner} run, not {args.learner}")
        else:
            cfg = load_config(args.learner, args.overrides, files=args.config)
        if args.print_config:
            print(OmegaConf.to_yaml(cfg), end="")
            return
        run_dir = train(cfg)
    except (ConfigError, TrainingError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    ctx = distributed.current()
    if ctx.main:
        print(f"run directory: {run_dir}")
    distributed.close(ctx)


if __name__ == "__main__":
    main()
