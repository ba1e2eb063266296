"""Method specs: ``[label=]kind[:checkpoint][@key=value ...]`` strings turned into ready learners.

A spec names how to use a checkpoint, so the same pretrained backbone can appear as a
linear probe, a partially or fully fine-tuned network, and a nearest-centroid classifier:

* ``maml``, ``fomaml``, ``metasgd``, ``anil``, ``reptile``, ``protonet``: a run of that
  learner (``python -m fewshot.train <learner>``), adapted as it was trained to adapt;
* ``finetune`` (= ``finetune-linear``, a linear probe), ``finetune-freeze<L>`` (freeze the
  first L blocks), ``finetune-full``: a new head on a pretrained backbone, trained with SGD;
* ``simpleshot``: nearest centroid on the backbone's centred, normalised features;
* ``scratch``: ``model.backbone`` from random initialization, fully fine-tuned (no checkpoint).

A checkpoint is a ``.pt`` file or a run directory (its ``best.pt``, else ``last.pt``), and
is read with ``weights_only=True``. A run's test-time adaptation can be changed without
retraining: ``maml10=maml:runs/maml@inner.test_steps=10`` adapts with 10 steps instead of the
run's own ``inner.test_steps`` (keys: ``inner.test_steps``, ``inner.test_lr``, and for the MAML
family ``inner.test_norm=running``: BatchNorm on the run's running statistics, so that each image
is classified on its own, instead of on each batch's; ``inner.test_norm=support``: each image on
its own too, normalised by the adapted network's statistics on the episode's support set). A fine-tuning
baseline's schedule can be changed the same way, for that method alone:
``ft=finetune-full:runs/pretrain@finetune.backbone_lr=0.0001`` (keys: ``finetune.lr``,
``finetune.backbone_lr``, ``finetune.epochs``; the evaluation's ``finetune`` group sets the
rest). Methods that see images only through frozen features (``protonet``, ``simpleshot``,
``finetune``) take ``@views=<V>``: each image's features averaged over the image and V - 1
fixed affine copies of it (test-time augmentation, :class:`fewshot.models.views.ViewAveraged`).
``maml``, ``fomaml`` and ``reptile`` runs take it too: there the views go through the backbone as
it adapts, so each inner step's support loss and the predictions use view-averaged features
(BatchNorm's batch statistics then span all the views).
A ``protonet`` run also takes ``@refine=<R>``: R rounds of soft k-means refine its class means
with the episode's unlabelled queries (transductive inference,
:func:`fewshot.learners.protonet.refined_prototypes`), and ``@whiten=<s>``: its features (after
any views) whitened by the within-class covariance of the run's own base classes, as drawn (no
rotated or mirrored copies), shrunk towards the identity by ``s`` times its mean variance
(:func:`fewshot.models.whiten.within_class_whitening`); the images are read from the run's
``data.root``. With ``@prior=<n>`` as well, that shrunk covariance is a prior worth n degrees
of freedom, pooled with each episode's support set's own within-class spread
(:class:`fewshot.models.SupportWhitening`); ``@rewhiten=<R>`` in place of ``@refine=<R>`` refines
the class means and that pooled whitening together with the episode's queries
(:func:`fewshot.learners.protonet.refined_with_whitening`, transductive). With ``@whiten=<s>@prior=<n>``,
``@block<i>=<w>`` (e.g. ``@block3=0.5``) puts the output of the backbone's block i (counted from 1,
before the last), max-pooled over its positions, beside the features, whitened on its own and
weighted w in the squared distances (:class:`fewshot.models.blocks.BlockFeatures`); several blocks
may be given. Everything is checked before any episode runs.

A ``protonet`` spec may name several runs joined by ``+``, ``protonet:runs/a+runs/b``: an
ensemble, each image's features from every run side by side
(:class:`fewshot.models.FeatureEnsemble`), so its logits are the sum of the runs' own;
``@views``, ``@refine``, ``@whiten``, ``@prior`` and ``@rewhiten`` (with the first run's base
classes) then apply to the ensemble.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fewshot.data import ImageSet, load_manifest
from fewshot.learners import FineTune, Learner, SimpleShot
from fewshot.learners.features import embed, embed_dataset
from fewshot.learners.maml import TEST_NORMS
from fewshot.models import (
    BlockFeatures,
    FeatureEnsemble,
    SupportWhitening,
    ViewAveraged,
    Whitened,
    build_backbone,
    load_backbone_weights,
    within_class_covariance,
    within_class_whitening,
)

RUN_KINDS = {
    "maml": ("maml", "fomaml"),  # test-time adaptation is the same for either order
    "fomaml": ("maml", "fomaml"),
    "metasgd": ("metasgd",),
    "anil": ("anil",),
    "reptile": ("reptile",),
    "protonet": ("protonet",),
}
BACKBONE_KINDS = ("finetune", "finetune-linear", "finetune-full", "finetune-freeze<L>", "simpleshot")
KINDS = (*RUN_KINDS, *BACKBONE_KINDS, "scratch")
STEPPED_KINDS = tuple(k for k in RUN_KINDS if k != "protonet")  # runs whose adaptation has steps
# what ``@key=value`` may change: a positive number, or one of a few names (MAML family only, not reptile)
ADAPT_KEYS = {"inner.test_steps": int, "inner.test_lr": float, "inner.test_norm": TEST_NORMS}
# ``@views=<V>`` applies: frozen features, and (M)AML and Reptile runs, whose views go through the
# adapting backbone
VIEW_KINDS = ("protonet", "simpleshot", "finetune", "maml", "fomaml", "reptile")
FINETUNE_KEYS = {
    "finetune.lr": float,
    "finetune.backbone_lr": float,
    "finetune.epochs": int,
}  # the same, fine-tuning


class MethodError(ValueError):
    """A method spec or checkpoint that cannot be evaluated, with what to do instead."""


@dataclass(frozen=True)
class MethodSpec:
    """A parsed spec; ``freeze_blocks`` for ``finetune-freeze<L>``, ``adapt`` from ``@key=value``,
    ``views`` from ``@views=<V>`` (1: the image alone), ``refine`` from ``@refine=<R>`` (0:
    inductive), ``members`` the runs after the first of a ``protonet:a+b`` ensemble, ``whiten``
    the shrinkage of ``@whiten=<s>`` (0: features as they are), ``prior`` the degrees of
    freedom of ``@prior=<n>`` (0: one matrix for every episode), ``rewhiten`` the rounds of
    ``@rewhiten=<R>`` (0: the whitening from the support set alone), ``blocks`` the
    ``(block, weight)`` of each ``@block<i>=<w>``."""

    label: str
    kind: str
    checkpoint: Path | None = None
    freeze_blocks: int = 0
    adapt: tuple[tuple[str, int | float | str], ...] = ()
    views: int = 1
    refine: int = 0
    members: tuple[Path, ...] = ()
    whiten: float = 0.0
    prior: float = 0.0
    rewhiten: int = 0
    blocks: tuple[tuple[int, float], ...] = ()

    @property
    def is_finetune(self) -> bool:
        return self.kind.startswith("finetune")


def parse_method(text: str) -> MethodSpec:
    """Parse one spec, e.g. ``maml:runs/maml``, ``probe=finetune:runs/pretrain/best.pt``, ``scratch``,
    ``maml10=maml:runs/maml@inner.test_steps=10``."""
    head, *changes = text.split("@")
    label, sep, rest = head.partition("=")
    if not sep:
        label, rest = "", head
    kind, _, path = rest.partition(":")
    kind = kind.strip()
    freeze = 0
    match = re.fullmatch(r"finetune-freeze(\d+)", kind)
    if match:
        freeze = int(match.group(1))
        if freeze < 1:
            raise MethodError(f"method {text!r}: freeze at least one block (finetune-freeze1, -freeze2, ...)")
    elif kind not in KINDS:
        close = difflib.get_close_matches(kind, KINDS, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise MethodError(
            f"method {text!r}: unknown kind {kind!r}; {hint}kinds are {', '.join(KINDS)} "
            "(written [label=]kind[:checkpoint])"
        )
    if kind == "scratch" and path:
        raise MethodError(f"method {text!r}: scratch starts from random weights and takes no checkpoint")
    if kind != "scratch" and not path:
        what = (
            "a run directory or checkpoint of that learner"
            if kind in RUN_KINDS
            else "a pretrained checkpoint"
        )
        raise MethodError(f"method {text!r}: {kind} needs {what}, e.g. {kind}:runs/<name>/best.pt")
    if kind == "finetune-linear":
        kind = "finetune"
    first, *members = path.split("+")
    if members and kind != "protonet":
        raise MethodError(
            f"method {text!r}: runs joined by + are an ensemble of ProtoNets' features, so only "
            "protonet takes them"
        )
    if members and not all([first, *members]):
        raise MethodError(f"method {text!r}: an empty checkpoint around +; write protonet:runs/a+runs/b")
    views = [c for c in changes if c.partition("=")[0] == "views"]
    refine = [c for c in changes if c.partition("=")[0] == "refine"]
    whiten = [c for c in changes if c.partition("=")[0] == "whiten"]
    prior = [c for c in changes if c.partition("=")[0] == "prior"]
    rewhiten = [c for c in changes if c.partition("=")[0] == "rewhiten"]
    block = [c for c in changes if re.fullmatch(r"block\d+", c.partition("=")[0])]
    adapt = tuple(
        _parse_adapt(text, kind, change)
        for change in changes
        if change not in views + refine + whiten + prior + rewhiten + block
    )
    default_label = (f"{kind}:{path}" if path else kind) + "".join(f"@{c}" for c in changes)
    n_views = (
        _parse_count(
            text,
            kind,
            views,
            VIEW_KINDS,
            "averages each image's features over views (frozen features, or a MAML or Reptile run's "
            "as it adapts)",
        )
        if views
        else 1
    )
    n_refine = (
        _parse_count(text, kind, refine, ("protonet",), "refines ProtoNet's class means") if refine else 0
    )
    n_rewhiten = (
        _parse_count(text, kind, rewhiten, ("protonet",), "refines ProtoNet's class means and whitening")
        if rewhiten
        else 0
    )
    if n_rewhiten and (refine or not prior):
        raise MethodError(
            f"method {text!r}: @rewhiten=<R> refines the class means and the support set's whitening "
            "together, so it needs @whiten=<s>@prior=<n> and takes the place of @refine=<R>"
        )
    blocks = tuple(
        (int(c.partition("=")[0].removeprefix("block")), _parse_positive(text, kind, [c], "w", "0.5"))
        for c in block
    )
    if blocks and (not prior or members or len({b for b, _ in blocks}) < len(blocks)):
        raise MethodError(
            f"method {text!r}: @block<i>=<w> whitens an earlier block's features on their own beside "
            "the run's, so it needs @whiten=<s>@prior=<n>, one run (not an ensemble), and each block once"
        )
    return MethodSpec(
        label.strip() or default_label,
        kind,
        Path(first) if first else None,
        freeze,
        adapt,
        n_views,
        n_refine,
        tuple(Path(m) for m in members),
        _parse_positive(text, kind, whiten, "s", "1") if whiten else 0.0,
        _parse_prior(text, kind, whiten, prior) if prior else 0.0,
        n_rewhiten,
        blocks,
    )


def _parse_count(text: str, kind: str, given: list[str], kinds: tuple[str, ...], does: str) -> int:
    """The positive integer of a spec's ``@views=<V>`` or ``@refine=<R>`` (``given``: each time it
    appears), checked to be given once and to a method of ``kinds``, which is what it ``does``."""
    key = given[0].partition("=")[0]
    if kind not in kinds:
        raise MethodError(f"method {text!r}: @{key}=<n> {does}, so it applies to {', '.join(kinds)} only")
    value = given[-1].partition("=")[2]
    if len(given) > 1 or not value.isdigit() or int(value) < 1:
        raise MethodError(f"method {text!r}: give @{key}=<n> once, n a positive integer, not {value!r}")
    return int(value)


def _parse_positive(text: str, kind: str, given: list[str], name: str, example: str) -> float:
    """The positive number of a spec's ``@whiten=<s>`` or ``@prior=<n>`` (``given``: each time it
    appears; ``name`` and ``example`` for the message)."""
    key = given[0].partition("=")[0]
    if kind != "protonet":
        raise MethodError(
            f"method {text!r}: @{key}=<{name}> whitens ProtoNet's features, so it applies to protonet only"
        )
    value = given[-1].partition("=")[2]
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if len(given) > 1 or not 0 < number < float("inf"):
        raise MethodError(
            f"method {text!r}: give @{key}=<{name}> once, {name} a positive number (e.g. {example}), "
            f"not {value!r}"
        )
    return number


def _parse_prior(text: str, kind: str, whiten: list[str], given: list[str]) -> float:
    """The degrees of freedom of a spec's ``@prior=<n>``, which needs ``@whiten=<s>``."""
    number = _parse_positive(text, kind, given, "n", "30")
    if not whiten:
        raise MethodError(
            f"method {text!r}: @prior=<n> weighs the base classes' covariance of @whiten=<s> against "
            "each support set's, so give @whiten=<s> too (e.g. @whiten=5@prior=30)"
        )
    return number


def _parse_adapt(text: str, kind: str, change: str) -> tuple[str, int | float | str]:
    """One ``key=value`` of a spec's ``@`` part: a change to a run's test-time adaptation, or to
    a fine-tuning baseline's schedule."""
    if kind in STEPPED_KINDS:
        keys = ADAPT_KEYS
    elif kind.startswith("finetune"):
        keys = FINETUNE_KEYS
    else:
        raise MethodError(
            f"method {text!r}: only runs that adapt by gradient steps ({', '.join(STEPPED_KINDS)}) and "
            f"the fine-tuning baselines take @key=value changes ({', '.join(VIEW_KINDS)} take @views=<V>, "
            "protonet also @refine=<R>, @whiten=<s>, @prior=<n> and @rewhiten=<R>); "
            "scratch takes finetune.<key>=... for the evaluation"
        )
    key, sep, value = change.partition("=")
    if not sep or key not in keys:
        raise MethodError(f"method {text!r}: {change!r} is not key=value with key one of {', '.join(keys)}")
    if isinstance(keys[key], tuple):  # a name, not a number
        if kind == "reptile" or value not in keys[key]:
            raise MethodError(
                f"method {text!r}: {key} is {', '.join(keys[key])} (BatchNorm on each batch, on "
                "the running statistics, or on the support set's), for maml, fomaml, metasgd and anil runs"
            )
        return key, value
    try:
        number = keys[key](value)
    except ValueError:
        number = 0
    if number <= 0:
        raise MethodError(f"method {text!r}: {key} must be a positive {keys[key].__name__}, not {value!r}")
    return key, number


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file: ``path`` itself, or a run directory's ``best.pt`` (else ``last.pt``)."""
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise MethodError(f"{str(path)!r} has no best.pt or last.pt; is it a finished fewshot run directory?")
    if not path.is_file():
        raise MethodError(
            f"checkpoint {str(path)!r} not found; train one with python -m fewshot.train <learner>, "
            "or give the path of a run directory or .pt file"
        )
    return path


@dataclass(frozen=True)
class BuildContext:
    """What building a method needs to know about the evaluation."""

    channels: int
    image_size: int
    backbone: str  # model.backbone for scratch and for checkpoints that do not say
    finetune: DictConfig  # the evaluation's ``finetune`` group
    seed: int
    evaluated: ImageSet | None = None  # classes evaluated on, checked against each run's base classes
    base: ImageSet | None = None  # base classes, for SimpleShot's mean feature
    device: torch.device = torch.device("cpu")
    # base-class features of @whiten methods by (checkpoint, other runs, views): embedded once per
    # evaluation, however many shrinkages or priors are scored on them
    base_features: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, repr=False, compare=False
    )


def build_method(spec: MethodSpec, ctx: BuildContext) -> Learner:
    """The :class:`Learner` that ``spec`` describes, on ``ctx.device``, in eval mode."""
    if spec.kind == "scratch":
        torch.manual_seed(ctx.seed)
        backbone = build_backbone(ctx.backbone, ctx.channels, ctx.image_size)
        # random weights: every layer learns at the head's rate
        learner: Learner = _finetune(
            backbone, ctx, mode="full", batch_norm="batch", backbone_lr=ctx.finetune.lr
        )
        return learner.to(ctx.device).eval()
    path, state, config = _load(spec, spec.checkpoint, ctx)
    if spec.kind in RUN_KINDS:
        learner = _from_run(spec, path, state, config, ctx)
        if spec.members:  # a protonet ensemble
            others = [_from_run(spec, *_load(spec, member, ctx), ctx) for member in spec.members]
            learner.backbone = FeatureEnsemble([learner.backbone, *(o.backbone for o in others)])
        if spec.blocks:  # earlier blocks' pooled outputs beside the features, whitened group by group
            try:
                levels = BlockFeatures(learner.backbone, [b for b, _ in spec.blocks])
            except ValueError as err:
                raise MethodError(f"method {spec.label!r}: {err}") from None
            weights = dict(spec.blocks)
            groups = [(levels.backbone.feature_dim, 1.0)]
            groups += [(width, weights[b]) for b, width in zip(levels.blocks, levels.widths, strict=True)]
            learner.backbone = levels
        if spec.views > 1 and spec.kind == "protonet":
            learner.backbone = ViewAveraged(learner.backbone, spec.views, ctx.seed)
        elif spec.views > 1:  # maml, fomaml or reptile: every inner step and prediction sees the views
            learner.model.backbone = ViewAveraged(learner.model.backbone, spec.views, ctx.seed)
        if spec.refine or spec.rewhiten:  # the same
            learner.refine_steps = spec.refine or spec.rewhiten
            learner.refine_whitening = bool(spec.rewhiten)
        if spec.whiten:  # the same; it replaces any whitening a run learned in training
            learner.train_shrink = None
            key = (path, spec.members, spec.views, tuple(b for b, _ in spec.blocks))
            if key not in ctx.base_features:
                ctx.base_features[key] = _base_features(learner.backbone, spec, path, config, ctx.device)
            features, labels = ctx.base_features[key]
            if spec.prior:
                covariance = within_class_covariance(features, labels)
                learner.whitening = SupportWhitening(
                    covariance, spec.whiten, spec.prior, groups if spec.blocks else None
                )
            else:
                matrix = within_class_whitening(features, labels, spec.whiten)
                learner.backbone = Whitened(learner.backbone, matrix)
    else:
        name = config["model"]["backbone"] if config else ctx.backbone
        backbone = build_backbone(name, ctx.channels, ctx.image_size)
        try:
            load_backbone_weights(backbone, path)
        except ValueError as err:
            raise MethodError(f"method {spec.label!r}: {err}") from None
        if spec.views > 1:
            backbone = ViewAveraged(backbone, spec.views, ctx.seed)
        backbone.to(ctx.device)
        schedule = {key.removeprefix("finetune."): value for key, value in spec.adapt}
        if spec.kind == "simpleshot":
            learner = SimpleShot(backbone, _mean_feature(backbone, ctx.base, ctx.device))
        elif spec.kind == "finetune-full":
            learner = _finetune(backbone, ctx, mode="full", **schedule)
        elif spec.freeze_blocks:
            n_blocks = len(backbone.blocks)
            if spec.freeze_blocks > n_blocks:
                raise MethodError(
                    f"method {spec.label!r}: {name} has {n_blocks} blocks; freeze 1 to {n_blocks} of them"
                )
            learner = _finetune(backbone, ctx, mode="partial", freeze_blocks=spec.freeze_blocks, **schedule)
        else:
            learner = _finetune(backbone, ctx, mode="linear", **schedule)
            if spec.views > 1 and learner.feature_extractor() is None:
                raise MethodError(
                    f"method {spec.label!r}: @views=<V> needs frozen features, and with "
                    "finetune.batch_norm=batch the probe normalises each episode on its own images"
                )
    return learner.to(ctx.device).eval()


def _load(spec: MethodSpec, checkpoint: Path, ctx: BuildContext) -> tuple[Path, Any, dict | None]:
    """A checkpoint's file, its content and its run config (``None`` for a bare state_dict),
    refused if the run was trained on the evaluated classes."""
    path = resolve_checkpoint(checkpoint)
    state = torch.load(path, map_location="cpu", weights_only=True)
    config = state.get("config") if isinstance(state, dict) else None
    if config is not None:
        _check_image_size(spec, path, config, ctx)
    if config is not None and ctx.evaluated is not None:
        _check_unseen(spec, path, ctx.evaluated)
    return path, state, config


def _check_image_size(spec: MethodSpec, path: Path, config: dict, ctx: BuildContext) -> None:
    """Refuse a run trained on images of another size than the evaluated ones. A backbone that pools
    whatever map is left (``conv4-globalmax``, the ResNets) takes any size with the same weights, so
    without this check such a run would be scored, without an error, on images it never saw."""
    trained = (config.get("data") or {}).get("image_size")
    if trained is not None and trained != ctx.image_size:
        raise MethodError(
            f"method {spec.label!r}: {str(path)!r} was trained on {trained}x{trained} images and this "
            f"evaluation reads {ctx.image_size}x{ctx.image_size}; evaluate it with data.image_size={trained}"
        )


def _finetune(backbone: torch.nn.Module, ctx: BuildContext, **kwargs: Any) -> FineTune:
    """FineTune with the evaluation's ``finetune`` settings; ``kwargs`` override them."""
    f = ctx.finetune
    settings = {
        "head": f.head,
        "lr": f.lr,
        "backbone_lr": f.backbone_lr,
        "momentum": f.momentum,
        "weight_decay": f.weight_decay,
        "epochs": f.epochs,
        "batch_size": f.batch_size,
        "seed": ctx.seed,
    }
    return FineTune(backbone, **{**settings, **kwargs})


def _from_run(spec: MethodSpec, path: Path, state: Any, config: dict | None, ctx: BuildContext) -> Learner:
    """A meta-trained learner rebuilt from its run's saved config and weights."""
    from fewshot.train import build_learner  # the training recipe owns how a learner is built

    if config is None or "learner" not in config:
        raise MethodError(
            f"method {spec.label!r}: {str(path)!r} is not a fewshot training checkpoint (it has no "
            "config); use finetune:/simpleshot: for a bare backbone state_dict"
        )
    trained = config["learner"]
    if trained not in RUN_KINDS[spec.kind]:
        fix = f"{trained}:{path}" if trained in RUN_KINDS else f"finetune:{path}"
        raise MethodError(
            f"method {spec.label!r}: {str(path)!r} is a {trained} checkpoint; write it as {fix}"
        )
    cfg = OmegaConf.create(config)
    cfg.model.pretrained = None  # the run's own weights follow
    model_state = state["model"]
    if cfg.get("distill") is not None:
        cfg.distill.teacher = None  # a teacher shapes training only
    if cfg.get("base_head") is not None:  # and so does a head over the base classes
        cfg.base_head.weight = 0.0
        model_state = {k: v for k, v in model_state.items() if not k.startswith("base_head.")}
    for key, value in spec.adapt:
        OmegaConf.update(cfg, key, value)
    learner = build_learner(cfg, ctx.channels, ctx.image_size, n_base=1)
    try:
        learner.load_state_dict(model_state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise MethodError(
            f"method {spec.label!r}: the weights in {str(path)!r} do not fit {ctx.channels}-channel "
            f"{ctx.image_size}x{ctx.image_size} images ({first}); evaluate on data like the training "
            "data (data.image_size, data.channels)"
        ) from None
    return learner


def _base_features(
    backbone: torch.nn.Module, spec: MethodSpec, path: Path, config: dict, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``backbone``'s features of its run's base classes as drawn, and their class labels."""
    from fewshot.train import load_splits  # the training recipe owns how a run's data is read

    data = OmegaConf.create(config["data"])
    if (path.parent / "split.json").is_file():
        data.split.manifest = str(path.parent / "split.json")
    data.rotations = data.reflections = False  # the characters as drawn, as the evaluated ones are
    try:
        base = load_splits(data, required=("base",))[0]["base"]
    except (OSError, ValueError) as err:  # ConfigError is a ValueError
        raise MethodError(
            f"method {spec.label!r}: @whiten reads the base classes of {str(path)!r} from its data.root "
            f"{data.get('root')!r}, and could not: {err}"
        ) from None
    features = embed_dataset(functools.partial(embed, backbone), base, device)
    return features, torch.arange(base.num_classes).repeat_interleave(base.counts).to(device)


def _check_unseen(spec: MethodSpec, path: Path, evaluated: ImageSet) -> None:
    """Refuse to score a run on classes it was trained on (its run directory's split.json)."""
    manifest_path = path.parent / "split.json"
    if not manifest_path.is_file():
        return
    trained_on = set(load_manifest(manifest_path)["splits"].get("base", []))
    seen = [c for c in evaluated.class_names if c in trained_on]
    if seen:
        raise MethodError(
            f"method {spec.label!r}: {len(seen)} of the evaluated classes (e.g. {seen[0]!r}) are base "
            f"classes that {str(path)!r} was trained on; evaluate on its novel classes with "
            f"data.split.manifest={manifest_path} split=novel"
        )


def _mean_feature(
    backbone: torch.nn.Module, base: ImageSet | None, device: torch.device
) -> torch.Tensor | None:
    """SimpleShot's centring vector: the mean backbone feature of the base-class images."""
    if base is None:
        return None
    return embed_dataset(functools.partial(embed, backbone), base, device).double().mean(0).float()
