"""Use a trained run on your own images: load it, adapt it to a few labelled images, predict.

    >>> model = fewshot.load("runs/maml")                  # any run, or a backbone checkpoint
    >>> adapted = model.adapt(["cat1.jpg", "dog1.jpg"], ["cat", "dog"])
    >>> adapted.predict(["photo.jpg"]).labels             # ['dog']

``load`` builds the same learners the evaluator scores (:mod:`fewshot.evaluation.methods`):
a meta-trained run adapts as it was trained to; a pretrained backbone (a ``pretrain`` run, or
a torchvision ``state_dict``) is used as a linear probe unless another ``method`` is named
(``simpleshot``, ``finetune-full``, ``finetune-freeze<L>``). Images are file paths, read and
resized as the run's training data was, or tensors ``[M, C, H, W]`` of that size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from fewshot.config import FineTuneConfig
from fewshot.data.decode import decode_many
from fewshot.data.imageset import to_pixels
from fewshot.evaluation.methods import (
    RUN_KINDS,
    BuildContext,
    MethodError,
    build_method,
    parse_method,
    resolve_checkpoint,
)
from fewshot.learners import Learner

Images = Sequence[str | Path] | torch.Tensor
"""Image files, or a tensor ``[M, C, H, W]`` (``uint8``, or float in ``[0, 1]``)."""


@dataclass(frozen=True)
class Preprocessing:
    """How images must look for a model: the size, channels and ink polarity it was trained on."""

    image_size: int
    channels: int
    invert: bool = False  # Omniglot-trained: dark ink on light paper becomes bright strokes

    def read(self, paths: Sequence[str | Path], on_error: str = "raise") -> tuple[torch.Tensor, list[str]]:
        """Decode image files into ``uint8 [M, C, S, S]``; also the names of unreadable files
        left out (``on_error="skip"``; with ``"raise"`` the first one is an error naming it)."""
        items = [(str(p), Path(p).read_bytes) for p in paths]
        decoded, skipped = decode_many(items, self.image_size, self.channels, self.invert, on_error)
        kept = [t for t in decoded if t is not None]
        if not kept:
            return torch.empty(0, self.channels, self.image_size, self.image_size, dtype=torch.uint8), skipped
        return torch.stack(kept), skipped

    def prepare(self, images: Images, device: torch.device | str) -> torch.Tensor:
        """Images as ``float32 [M, C, S, S]`` in ``[0, 1]`` on ``device``, checked against the model."""
        x = images if isinstance(images, torch.Tensor) else self.read(images)[0]
        expected = (self.channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"images of shape {tuple(x.shape)} do not fit this model, which takes [M, "
                f"{', '.join(map(str, expected))}]; pass image files to have them resized"
            )
        if len(x) == 0:
            raise ValueError("no images given")
        return to_pixels(x, device) if x.dtype == torch.uint8 else x.to(device, torch.float32)


@dataclass(frozen=True)
class Predictions:
    """Predicted classes of query images and each image's probability for every class."""

    classes: list[str]  # the support classes: the columns of ``scores``
    labels: list[str]  # the predicted class of each image
    scores: torch.Tensor  # [M, N] softmax probabilities
    logits: torch.Tensor  # [M, N]


class AdaptedModel:
    """A model adapted to one support set; :meth:`predict` classifies new images among its classes."""

    def __init__(self, model: FewShotModel, predict, classes: list[str]):
        self._model, self._predict, self.classes = model, predict, classes

    def predict(self, images: Images, batch_size: int = 256) -> Predictions:
        """Classify ``images`` (``batch_size`` at a time) among the support classes."""
        x = self._model.preprocessing.prepare(images, self._model.device)
        with torch.no_grad():
            logits = torch.cat([self._predict(chunk) for chunk in x.split(batch_size)]).cpu()
        return Predictions(
            classes=self.classes,
            labels=[self.classes[i] for i in logits.argmax(-1).tolist()],
            scores=logits.softmax(-1),
            logits=logits,
        )


class FewShotModel:
    """A learner ready to adapt to new classes, with the preprocessing its images need."""

    def __init__(
        self,
        learner: Learner,
        preprocessing: Preprocessing,
        method: str,
        device: torch.device,
        trained_ways: int | None = None,
    ):
        self.learner, self.preprocessing, self.method = learner, preprocessing, method
        self.device, self.trained_ways = device, trained_ways

    def adapt(self, images: Images, labels: Sequence[str | int]) -> AdaptedModel:
        """Adapt to labelled support images (any number per class, at least two classes).

        Classes are numbered in order of first appearance in ``labels``. A meta-learned head
        trained for another number of ways starts every class from the mean of its rows.
        """
        names = [str(label) for label in labels]
        classes = list(dict.fromkeys(names))
        if len(classes) < 2:
            raise ValueError(
                f"the support set needs at least two classes to tell apart, got {len(classes)} "
                f"({', '.join(classes) or 'none'})"
            )
        x = self.preprocessing.prepare(images, self.device)
        if len(x) != len(names):
            raise ValueError(f"{len(x)} support images but {len(names)} labels; give one label per image")
        y = torch.tensor([classes.index(n) for n in names], device=self.device)
        return AdaptedModel(self, self.learner.adapt(x, y), classes)


def load(
    checkpoint: str | Path,
    method: str | None = None,
    device: str | torch.device = "auto",
    backbone: str | None = None,
    image_size: int | None = None,
    channels: int = 3,
    seed: int = 0,
    **finetune: float | int | str,
) -> FewShotModel:
    """A :class:`FewShotModel` from a run directory or checkpoint.

    Args:
        checkpoint: a run directory (its ``best.pt``, else ``last.pt``) or a ``.pt`` file: a
            fewshot training checkpoint, or a bare backbone ``state_dict`` (e.g. torchvision's).
        method: how to use it, as in ``python -m fewshot.evaluate`` (``maml``, ``protonet``,
            ``finetune``, ``simpleshot``, ``finetune-full``, ``finetune-freeze<L>``, ...);
            default: a meta-trained run's own learner, else ``finetune`` (a linear probe).
        backbone, image_size, channels: for a bare ``state_dict`` only (a run's config says).
        finetune: fine-tuning settings (``epochs``, ``lr``, ``backbone_lr``, ...), defaults as
            ``python -m fewshot.evaluate`` has them (:class:`fewshot.config.FineTuneConfig`).
    """
    from fewshot.train import resolve_device  # the training recipe owns device selection

    path = resolve_checkpoint(Path(checkpoint))
    state = torch.load(path, map_location="cpu", weights_only=True)
    config = state.get("config") if isinstance(state, dict) else None
    if config is not None:
        data, trained = config["data"], config["learner"]
        backbone, image_size = config["model"]["backbone"], data["image_size"]
        channels = 1 if data["source"] in ("omniglot", "synthetic") else data["channels"]
        invert = data["source"] == "omniglot"
        default = trained if trained in RUN_KINDS else "finetune"
    else:
        if backbone is None or image_size is None:
            raise MethodError(
                f"{str(path)!r} is a bare state_dict without a config: say which network it belongs to "
                "and the image size it takes (backbone='resnet18', image_size=224)"
            )
        trained, invert, default = None, False, "finetune"
    spec = parse_method(f"{method or default}:{path}")
    try:
        ft = OmegaConf.merge(OmegaConf.structured(FineTuneConfig), finetune)
    except Exception as err:  # an unknown or ill-typed fine-tuning setting
        raise MethodError(f"fine-tuning settings {finetune}: {err}") from None
    dev = resolve_device(str(device))
    ctx = BuildContext(channels, image_size, backbone, ft, seed, device=dev)
    learner = build_method(spec, ctx)
    ways = config["task"]["n_way"] if config is not None and spec.kind in RUN_KINDS else None
    return FewShotModel(learner, Preprocessing(image_size, channels, invert), spec.kind, dev, ways)
