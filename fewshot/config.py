"""Typed configuration: dataclass schemas, YAML files in ``configs/``, ``key=value`` overrides.

A run is configured in layers, each merged over the last (torchtune/Hydra style):

1. the schema defaults below (:class:`Config`);
2. the config groups chosen by the learner's YAML ``defaults`` list, e.g.
   ``configs/data/synthetic.yaml`` and ``configs/model/conv4.yaml``, or by a command-line
   choice such as ``data=omniglot``;
3. the learner's own YAML, ``configs/<learner>.yaml``;
4. command-line overrides such as ``task.n_way=20 inner.steps=5``.

The schema is in struct mode: an unknown key or a value of the wrong type is an error
that names the key and suggests the closest valid one.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from fewshot.data.augment import AUGMENTATIONS
from fewshot.learners.maml import TEST_NORMS
from fewshot.models.classifier import HEADS

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
LEARNERS = ("maml", "fomaml", "metasgd", "anil", "reptile", "protonet", "pretrain")


@dataclass
class SplitConfig:
    by: str = "group"  # "group" keeps whole alphabets together; "class" splits characters
    sizes: dict[str, float] = field(default_factory=lambda: {"base": 0.7, "val": 0.1, "novel": 0.2})
    seed: int = 0
    manifest: str | None = None  # a saved split manifest to use instead


@dataclass
class DataConfig:
    source: str = "synthetic"  # synthetic | omniglot | folder
    root: str | None = None  # zip(s) or folder; comma-separated for several
    image_size: int = 28
    channels: int = 1
    num_classes: int = 1200  # synthetic only
    samples_per_class: int = 20  # synthetic only
    seed: int = 0  # synthetic only
    rotations: bool = False  # 90/180/270-degree copies of base classes as new classes
    reflections: bool = False  # mirror images of base classes (after rotations) as new classes
    on_error: str = "raise"  # folder: "skip" leaves unreadable images out with a warning
    augment: str = "none"  # training images: one of fewshot.data.augment.AUGMENTATIONS
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass
class TaskConfig:
    n_way: int = 5
    k_shot: int = 1
    q_query: int = 15
    meta_batch: int = 16
    within_group: bool = False  # training episodes: all classes from one group (e.g. one alphabet)


@dataclass
class ModelConfig:
    backbone: str = "conv4"
    pretrained: str | None = None  # checkpoint of a pretrain run, or a torchvision state_dict
    head: str = "linear"  # pretrain: linear | cosine (the classifier over the base classes)


@dataclass
class InnerConfig:
    lr: float = 0.4
    steps: int = 1
    first_order: bool = False
    test_lr: float | None = None  # default: lr
    test_steps: int | None = None  # default: steps
    proto_head: bool = False  # maml/fomaml/metasgd/anil/reptile: each task's head starts from class means
    zero_head: bool = False  # maml/fomaml/metasgd/anil/reptile: each task's head starts from zero
    optimizer: str = "sgd"  # reptile: sgd | adam
    step_shots: int | None = None  # reptile: images per class in each inner training step (default: all)
    min_lr: float | None = None  # metasgd: floor of the learned inner rates (default: none)
    test_norm: str = (
        "batch"  # maml/fomaml/metasgd/anil outside training: batch | running | support BN statistics
    )


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine
    rates_lr: float | None = None  # metasgd: outer lr of the learned inner rates (default: lr)
    # decay of an exponential moving average of the weights (e.g. 0.999, a horizon of about 1,000
    # steps), validated and saved as the run's model in place of the weights it averages; default: none
    ema: float | None = None


@dataclass
class DistillConfig:
    """protonet: also match a trained network's episode predictions (knowledge distillation)."""

    # checkpoint of the teacher (a run's best.pt/last.pt, or a state_dict); comma-separated for an
    # ensemble whose logits are the sum of its members' (fewshot.models.FeatureEnsemble)
    teacher: str | None = None
    weight: float = 0.5  # share of the loss that is the teacher's; the rest is cross-entropy
    temperature: float = 4.0  # both sets of logits are divided by it before the softmax


@dataclass
class BaseHeadConfig:
    """protonet: also classify every episode image among all base classes (a training-only head)."""

    weight: float = 0.0  # weight of that cross-entropy, added to the episode loss; 0 = no head


@dataclass
class TrainWhitenConfig:
    """protonet: distances in training measured after whitening each episode's features."""

    # shrinkage of the episode's within-class covariance towards the identity (as @whiten=<s> at
    # test time); null = plain squared Euclidean distances
    shrink: float | None = None


@dataclass
class TrainBlocksConfig:
    """protonet: earlier blocks' outputs beside the features in training's distances."""

    # one weight per block before the last (Conv-4: blocks 1, 2, 3), e.g. [0.25, 0.25, 0.5]: each
    # block's output, max-pooled over its positions, joins the features and its squared distances
    # count that many times (as @block<i>=<w> at test time, without the whitening); 0 leaves a block
    # out, and null trains on the features alone
    weights: list[float] | None = None
    # true: each such block has a ProtoNet loss of its own, added that many times to the features'
    # (deep supervision), instead of joining the features' distances
    apart: bool = False


@dataclass
class TrainConfig:
    steps: int = 1000
    seed: int = 0
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:1 ...
    bf16: bool = False  # bf16 autocast (CUDA, or a CPU with bf16 instructions)
    batch_size: int = 64  # pretrain: images per step
    log_every: int = 10
    val_every: int = 200
    val_episodes: int = 100
    val_setting: str | None = None  # validation episodes, e.g. 20w1s (default: task.n_way, task.k_shot)
    checkpoint_every: int | None = None  # default: val_every
    out_dir: str = "runs"
    name: str | None = None  # default: the learner's name
    resume: str | None = None  # a run directory to continue
    quiet: bool = False  # no progress bar; one log line per log_every steps


@dataclass
class SummaryConfig:
    """The closing meta-test: trained initialization against fine-tuning from scratch."""

    episodes: int = 200
    n_way: int = 5
    k_shot: int = 1
    q_query: int = 15
    seed: int = 1000
    finetune_epochs: int = 20


@dataclass
class Config:
    learner: str = "maml"
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    inner: InnerConfig = field(default_factory=InnerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    base_head: BaseHeadConfig = field(default_factory=BaseHeadConfig)
    train_whiten: TrainWhitenConfig = field(default_factory=TrainWhitenConfig)
    train_blocks: TrainBlocksConfig = field(default_factory=TrainBlocksConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    summary: SummaryConfig = field(default_factory=SummaryConfig)


@dataclass
class FineTuneConfig:
    """How ``finetune*`` and ``scratch`` methods train on each support set (Chen et al. 2019)."""

    epochs: int = 100
    lr: float = 0.01
    # Pretrained layers (finetune-freeze<L>, finetune-full) step 10x slower than the new head,
    # as usual in transfer learning; scratch trains every layer at lr.
    backbone_lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 1e-3
    batch_size: int = 4
    head: str = "linear"  # linear | cosine


@dataclass
class EvalConfig:
    """``python -m fewshot.evaluate``: methods x settings on identical episodes."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)  # backbone of `scratch` and bare state_dicts
    methods: list[str] = field(default_factory=list)  # [label=]kind[:checkpoint], see fewshot.evaluation
    baseline: str | None = None  # label compared against; default: the first finetune* method
    settings: list[str] = field(default_factory=lambda: ["5w1s", "5w5s", "20w1s", "20w5s"])
    q_query: int = 15
    episodes: int = 600
    seed: int = 0
    split: str = "novel"  # which part of data.split to evaluate on
    batch_episodes: int = 20  # episodes adapted together
    embed_once: bool = True  # frozen-feature methods: embed each image once, not once per episode
    # earlier evaluation directories whose scores of the same methods are taken (evaluation.reuse)
    reuse: list[str] = field(default_factory=list)
    finetune: FineTuneConfig = field(default_factory=FineTuneConfig)
    device: str = "auto"
    out_dir: str = "eval"
    name: str | None = None  # default: "evaluate"
    quiet: bool = False
    resume: str | None = None  # an unfinished evaluation directory to continue (resume_eval_config)


class ConfigError(ValueError):
    """A configuration problem, explained for the person who typed it."""


def groups(config_dir: Path = CONFIG_DIR) -> dict[str, list[str]]:
    """Config groups and their choices: ``{"data": ["folder", "omniglot", "synthetic"], ...}``."""
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(config_dir.iterdir()) if d.is_dir()
    }


def describe_groups(config_dir: Path = CONFIG_DIR) -> str:
    """The config groups for ``--help``: ``data={folder,omniglot,synthetic}, model={...}``."""
    return ", ".join(f"{g}={{{','.join(c)}}}" for g, c in groups(config_dir).items())


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--print-config`` and ``--config FILE`` (repeatable), shared by the command-line recipes."""
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="extra YAML merged after the built-in config, before overrides (repeatable)",
    )


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        keys.append(f"{prefix}{k}")
        if isinstance(v, DictConfig):
            keys += _all_keys(v, f"{prefix}{k}.")
    return keys


def _explain(err: OmegaConfBaseException, schema: DictConfig, where: str) -> ConfigError:
    key = getattr(err, "full_key", None) or ""
    if isinstance(err, ConfigKeyError | ConfigAttributeError):
        close = difflib.get_close_matches(key, _all_keys(schema), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else "; see --print-config for the valid keys"
        return ConfigError(f"unknown config key {key!r} in {where}{hint}")
    if isinstance(err, ValidationError):
        msg = str(err).splitlines()[0]
        return ConfigError(f"bad value for {key!r} in {where}: {msg}")
    return ConfigError(f"{where}: {err}")


def _merge(cfg: DictConfig, other: Any, schema: DictConfig, where: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, other)
    except OmegaConfBaseException as err:
        raise _explain(err, schema, where) from None


def load_config(
    learner: str,
    overrides: list[str] | tuple[str, ...] = (),
    config_dir: Path = CONFIG_DIR,
    files: Sequence[str | Path] = (),
) -> DictConfig:
    """The resolved configuration of ``learner`` with command-line ``overrides`` applied.

    ``files`` are extra YAML files (an experiment's configs, ``--config``) merged after
    ``configs/<learner>.yaml`` and before the overrides.
    """
    if learner not in LEARNERS:
        close = difflib.get_close_matches(learner, LEARNERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown learner {learner!r}{hint}; choose one of {', '.join(LEARNERS)}")
    cfg = _compose(Config, learner, [f"learner={learner}", *overrides], config_dir, files)
    _check(cfg)
    return cfg


def load_eval_config(
    overrides: list[str] | tuple[str, ...] = (),
    config_dir: Path = CONFIG_DIR,
    check: bool = True,
    files: Sequence[str | Path] = (),
) -> DictConfig:
    """The resolved ``configs/evaluate.yaml`` with command-line ``overrides`` applied.

    ``methods`` and ``settings`` take a list (``methods=[a,b]``) or comma-separated values.
    ``check=False`` skips the value checks (to print a config that is not complete yet);
    ``files`` as in :func:`load_config`.
    """
    listed = []
    for item in overrides:
        key, _, value = item.partition("=")
        if key in ("methods", "settings") and not value.startswith("["):
            item = f"{key}=[{value}]"
        listed.append(item)
    cfg = _compose(EvalConfig, "evaluate", listed, config_dir, files)
    if check:
        _check_eval(cfg)
    return cfg


def _compose(
    schema_type: type,
    name: str,
    overrides: list[str] | tuple[str, ...],
    config_dir: Path,
    files: Sequence[str | Path] = (),
) -> DictConfig:
    """Schema defaults, then the chosen groups, then ``configs/<name>.yaml``, then ``files``,
    then overrides. A file's ``defaults`` list chooses groups like the command line does."""
    schema = OmegaConf.structured(schema_type)
    OmegaConf.set_struct(schema, True)
    layers = [(f"{name}.yaml", OmegaConf.load(config_dir / f"{name}.yaml"))]
    for file in files:
        if not Path(file).is_file():
            raise ConfigError(f"config file {str(file)!r} not found")
        layers.append((str(file), OmegaConf.load(file)))
    chosen: dict[str, str] = {}
    for _, layer in layers:
        for entry in layer.pop("defaults", []) or []:
            chosen.update(dict(entry))
    available = groups(config_dir)
    dotlist = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. task.n_way=20)")
        key, value = item.split("=", 1)
        if key in available:
            chosen[key] = value
        else:
            dotlist.append(item)
    cfg = schema
    for group, choice in chosen.items():
        if choice not in available.get(group, []):
            options = ", ".join(available.get(group, [])) or "none"
            raise ConfigError(f"no config {group}={choice!r}; {group} can be: {options}")
        cfg = _merge(
            cfg,
            {group: OmegaConf.load(config_dir / group / f"{choice}.yaml")},
            schema,
            f"{group}/{choice}.yaml",
        )
    for where, layer in layers:
        cfg = _merge(cfg, layer, schema, where)
    return _merge(cfg, OmegaConf.from_dotlist(dotlist), schema, "the command line")


def saved_config(run_dir: str | Path, schema_type: type, what: str) -> tuple[DictConfig, DictConfig]:
    """The ``config.yaml`` that ``run_dir`` saved, over ``schema_type``'s defaults, and that schema."""
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"cannot resume {str(run_dir)!r}: it has no config.yaml (not {what}?)")
    schema = OmegaConf.structured(schema_type)
    OmegaConf.set_struct(schema, True)
    return _merge(schema, OmegaConf.load(saved), schema, str(saved)), schema


def resume_config(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The saved configuration of a run, with explicit ``key=value`` overrides on top.

    Resuming continues the run as it was configured (``train.steps=...`` may extend it).
    """
    cfg, schema = saved_config(run_dir, Config, "a fewshot run directory")
    cfg = _merge(cfg, OmegaConf.from_dotlist(list(overrides)), schema, "the command line")
    cfg.train.resume = str(run_dir)
    _check(cfg)
    return cfg


# What may be given with resume=DIR: nothing that changes the scores its chunks already hold.
RESUME_OVERRIDES = ("quiet", "device", "reuse")


def resume_eval_config(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The saved configuration of an unfinished evaluation, to continue it in its own directory.

    Only :data:`RESUME_OVERRIDES` may be given: any other change would make the chunks of
    episodes it has saved (:mod:`fewshot.evaluation.partial`) scores of another evaluation.
    """
    cfg, schema = saved_config(run_dir, EvalConfig, "an output directory of fewshot.evaluate")
    changed = [o for o in overrides if o.partition("=")[0] not in RESUME_OVERRIDES]
    if changed:
        raise ConfigError(
            f"resume={run_dir} continues that evaluation as its config.yaml says; "
            f"{', '.join(changed)} cannot be given with it (only {', '.join(RESUME_OVERRIDES)} can); "
            "start a new evaluation instead"
        )
    cfg = _merge(cfg, OmegaConf.from_dotlist(list(overrides)), schema, "the command line")
    cfg.resume = str(run_dir)
    _check_eval(cfg)
    return cfg


_CHOICES = {
    "data.source": ("synthetic", "omniglot", "folder"),
    "data.split.by": ("group", "class"),
    "data.on_error": ("raise", "skip"),
    "data.augment": AUGMENTATIONS,
    "inner.optimizer": ("sgd", "adam"),
    "optim.name": ("adam", "sgd"),
    "optim.schedule": ("constant", "cosine"),
}


def _check_data(cfg: DictConfig) -> None:
    for key, options in _CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value not in options:
            raise ConfigError(f"{key}={value!r} is not one of: {', '.join(options)}")
    if cfg.data.source != "synthetic" and not cfg.data.root:
        raise ConfigError(f"data.root is required for data={cfg.data.source} (data.root=<path>)")
    if cfg.data.source == "synthetic" and cfg.data.root:
        raise ConfigError(
            f"data.root={cfg.data.root} is given, but data.source=synthetic reads no files; "
            "add data.source=omniglot (Omniglot zips) or data.source=folder (a folder per class), "
            "or drop data.root for the built-in synthetic set"
        )


def _check_positive(cfg: DictConfig, keys: tuple[str, ...]) -> None:
    for key in keys:
        if OmegaConf.select(cfg, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {OmegaConf.select(cfg, key)}")


def _check_eval(cfg: DictConfig) -> None:
    _check_data(cfg)
    if cfg.finetune.head not in HEADS:
        raise ConfigError(f"finetune.head={cfg.finetune.head!r} is not one of: linear, cosine")
    if not cfg.methods:
        raise ConfigError(
            "no methods to evaluate; give methods=[...], e.g. "
            "methods=[maml:runs/maml,finetune:runs/pretrain] (kinds: see python -m fewshot.evaluate --help)"
        )
    if not cfg.settings:
        raise ConfigError("no settings to evaluate; give settings=[...], e.g. settings=[5w1s,5w5s]")
    _check_positive(cfg, ("episodes", "batch_episodes", "finetune.epochs", "finetune.batch_size"))
    if cfg.q_query < 1:
        raise ConfigError(f"q_query must be >= 1, got {cfg.q_query}")


# How each task's head can start, the learners that honour it, and what those learners do.
HEAD_STARTS = {
    "proto_head": (("maml", "fomaml", "metasgd", "anil", "reptile"), "adapt a head"),
    "zero_head": (("maml", "fomaml", "metasgd", "anil", "reptile"), "start each task's head from zero"),
}


def _check(cfg: DictConfig) -> None:
    """Values a type cannot check, caught before a run writes anything."""
    _check_data(cfg)
    _check_positive(
        cfg,
        (
            "task.n_way",
            "task.k_shot",
            "task.meta_batch",
            "inner.steps",
            "train.steps",
            "train.log_every",
            "train.val_every",
            "train.val_episodes",
            "train.batch_size",
        ),
    )
    if cfg.task.within_group and cfg.learner == "pretrain":
        raise ConfigError(
            "task.within_group=true shapes training episodes, and pretrain trains on batches of images; "
            "drop the override or pick an episodic learner"
        )
    if cfg.inner.test_norm not in TEST_NORMS:
        raise ConfigError(f"inner.test_norm={cfg.inner.test_norm} is not one of {', '.join(TEST_NORMS)}")
    if cfg.inner.test_norm != "batch" and cfg.learner not in ("maml", "fomaml", "metasgd", "anil"):
        raise ConfigError(
            f"inner.test_norm={cfg.inner.test_norm} has no effect on {cfg.learner}: only maml, fomaml, "
            "metasgd and anil normalise by batch at test; drop the override or pick one of them"
        )
    for key, (learners, what) in HEAD_STARTS.items():
        if cfg.inner[key] and cfg.learner not in learners:
            raise ConfigError(
                f"inner.{key}=true has no effect on {cfg.learner}: only {', '.join(learners)} {what}; "
                "drop the override or pick one of them"
            )
    step_shots = cfg.inner.step_shots
    if step_shots is not None:
        if cfg.learner != "reptile":
            raise ConfigError(
                f"inner.step_shots={step_shots} has no effect on {cfg.learner}: only reptile trains on "
                "minibatches of the support set; drop the override"
            )
        if not 1 <= step_shots <= cfg.task.k_shot:
            raise ConfigError(
                f"inner.step_shots={step_shots} must be between 1 and task.k_shot={cfg.task.k_shot} "
                "(the images per class a support set has); pick a value in that range or raise task.k_shot"
            )
    rates_lr = cfg.optim.get("rates_lr")  # runs saved before the option lack it
    for key, lr in (("optim.lr", cfg.optim.lr), ("optim.rates_lr", rates_lr)):
        if lr is not None and lr < 0:
            raise ConfigError(
                f"{key}={lr} is negative; give a step size >= 0 (0 leaves those parameters as they are)"
            )
    if rates_lr is not None and cfg.learner != "metasgd":
        raise ConfigError(
            f"optim.rates_lr={rates_lr} sets the outer lr of Meta-SGD's learned inner rates, which "
            f"{cfg.learner} does not have: drop the override or use learner metasgd"
        )
    ema = cfg.optim.get("ema")  # runs saved before the option lack it
    if ema is not None and not 0 < ema < 1:
        raise ConfigError(
            f"optim.ema={ema} is not a decay between 0 and 1; give e.g. optim.ema=0.999 "
            "(each step keeps that share of the average) or optim.ema=null for none"
        )
    min_lr = cfg.inner.get("min_lr")  # runs saved before the option lack it
    if min_lr is not None:
        if cfg.learner != "metasgd":
            raise ConfigError(
                f"inner.min_lr={min_lr} is a floor for Meta-SGD's learned inner rates, which "
                f"{cfg.learner} does not have: drop the override or use learner metasgd"
            )
        if cfg.inner.lr < min_lr:
            raise ConfigError(
                f"inner.lr={cfg.inner.lr} is below inner.min_lr={min_lr}; the rates start at inner.lr, "
                "so raise inner.lr or lower inner.min_lr"
            )
    _check_distill(cfg)
    base_weight = cfg.get("base_head", {}).get("weight", 0.0)  # runs saved before the option lack it
    if base_weight < 0:
        raise ConfigError(f"base_head.weight={base_weight} must be >= 0 (0 turns the head off)")
    if base_weight > 0 and cfg.learner != "protonet":
        raise ConfigError(
            f"base_head.weight={base_weight} adds a head over the base classes to ProtoNet's episode "
            f"loss; {cfg.learner} does not use it: drop the override or use learner protonet"
        )
    shrink = cfg.get("train_whiten", {}).get("shrink")  # runs saved before the option lack it
    if shrink is not None and shrink <= 0:
        raise ConfigError(f"train_whiten.shrink={shrink} must be > 0 (3 is usual), or null for none")
    if shrink is not None and cfg.learner != "protonet":
        raise ConfigError(
            f"train_whiten.shrink={shrink} whitens ProtoNet's episode features in training; "
            f"{cfg.learner} does not use it: drop the override or use learner protonet"
        )
    weights = cfg.get("train_blocks", {}).get("weights")  # runs saved before the option lack it
    if weights is None and cfg.get("train_blocks", {}).get("apart", False):
        raise ConfigError(
            "train_blocks.apart=true gives each block of train_blocks.weights a loss of its own; "
            "set the weights too, e.g. train_blocks.weights=[0.25,0.25,0.5]"
        )
    if weights is not None:
        if cfg.learner != "protonet":
            raise ConfigError(
                f"train_blocks.weights={list(weights)} puts earlier blocks in ProtoNet's episode "
                f"distances; {cfg.learner} does not use it: drop the override or use learner protonet"
            )
        if min(weights, default=0) < 0 or max(weights, default=0) <= 0:
            raise ConfigError(
                f"train_blocks.weights={list(weights)} needs one weight >= 0 per block before the last, "
                "at least one of them > 0 (e.g. [0.25,0.25,0.5] for a Conv-4), or null for none"
            )
        if shrink is not None:
            raise ConfigError(
                "train_blocks.weights and train_whiten.shrink are two metrics for training's distances; "
                "set one of them to null"
            )
    head = cfg.model.get("head", "linear")  # runs saved before the option lack it
    if head not in HEADS:
        raise ConfigError(f"model.head={head!r} is not one of: {', '.join(HEADS)}")
    if head != "linear" and cfg.learner != "pretrain":
        raise ConfigError(
            f"model.head={head} sets pretrain's classifier over the base classes, which {cfg.learner} "
            "does not train (meta-learners adapt a linear head of their own): drop the override"
        )
    if cfg.inner.zero_head and cfg.inner.proto_head:
        raise ConfigError(
            "inner.zero_head=true and inner.proto_head=true are two starts for the head; "
            "set one of them to false"
        )


def _check_distill(cfg: DictConfig) -> None:
    distill = cfg.get("distill")  # runs saved before the option lack it
    if distill is None or distill.teacher is None:
        return
    if cfg.learner != "protonet":
        raise ConfigError(
            f"distill.teacher={distill.teacher} trains a ProtoNet to match the teacher's episode "
            f"predictions; {cfg.learner} does not use it: drop the override or use learner protonet"
        )
    for path in distill.teacher.split(","):
        if not Path(path).is_file():
            raise ConfigError(
                f"distill.teacher: {path} is not a file; give a trained run's checkpoint, "
                "e.g. distill.teacher=runs/protonet/last.pt (comma-separated for several)"
            )
    if not 0 <= distill.weight <= 1:
        raise ConfigError(
            f"distill.weight={distill.weight} must be between 0 (labels only) and 1 (the teacher only)"
        )
    if distill.temperature <= 0:
        raise ConfigError(f"distill.temperature={distill.temperature} must be > 0 (4 is usual)")
