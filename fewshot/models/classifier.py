"""A backbone plus an N-way head (linear or cosine), built by name, optionally from a checkpoint."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fewshot.models.backbones import Conv4, ResNet12, TorchvisionBackbone

BACKBONES = (
    "conv4",
    "conv4-<width>",
    "conv4[-<width>][-ceil]-nopool",
    "conv4[-<width>][-ceil]-globalmax",
    "conv4[-<width>][-ceil]-globalavg",
    "conv4[-<width>]-ceil",
    "conv4[...]-up<size>",
    "resnet12",
    "resnet18",
    "resnet34",
    "resnet50",
)


HEADS = ("linear", "cosine")


class CosineHead(nn.Module):
    """Logits ``scale * cos(feature, weight_c)`` (the cosine classifier of Chen et al. 2019).

    Every class is scored by direction alone, so training it pulls each class's features
    towards one direction whatever their length: the geometry a nearest-centroid classifier
    on normalised features (SimpleShot) relies on later. ``learn_scale``: the scale is a
    parameter (``log_scale``, from ``scale``), as pretraining over hundreds of classes needs:
    with a fixed 10 the softmax over them cannot grow confident and the features suffer.
    """

    def __init__(self, in_features: int, n_way: int, scale: float = 10.0, learn_scale: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_way, in_features) * 0.01)
        self.scale = scale
        if learn_scale:
            self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.log_scale.exp() if hasattr(self, "log_scale") else self.scale
        return scale * F.normalize(x, dim=-1) @ F.normalize(self.weight, dim=-1).t()


class Classifier(nn.Module):
    """``head(backbone(x))``: the network every learner adapts.

    Attributes:
        backbone: images ``[B, C, H, W]`` to features ``[B, feature_dim]``.
        head: ``nn.Linear(feature_dim, n_way)``, or a :class:`CosineHead` with a learned scale
            with ``head="cosine"`` (for supervised pretraining; the meta-learners adapt a linear
            head); its parameters are named ``head.*``.
    """

    def __init__(self, backbone: nn.Module, n_way: int, head: str = "linear"):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        self.backbone = backbone
        dim = backbone.feature_dim
        self.head = nn.Linear(dim, n_way) if head == "linear" else CosineHead(dim, n_way, learn_scale=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_backbone(name: str, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """A backbone by name: ``conv4`` (64 filters a block), ``conv4-<width>`` (e.g. ``conv4-128``),
    optionally ``-ceil`` (the first three blocks' pools keep odd maps' last row and column),
    then either ``-nopool`` (no max-pool in the last block: spatial features, see Conv4),
    ``-globalmax`` or ``-globalavg`` (the last block's max or mean over all its positions),
    and last ``-up<size>`` (the input resized to ``size`` x ``size`` first, e.g.
    ``conv4-globalmax-up36``); ``resnet12`` or a torchvision ResNet. Width, pooling and
    input size live in the name, so a checkpoint's saved ``model.backbone`` rebuilds the
    same network."""
    pattern = r"conv4(?:-(\d+))?(-ceil)?(?:-(nopool|globalmax|globalavg))?(?:-up(\d+))?"
    if match := re.fullmatch(pattern, name):
        width = int(match.group(1) or 64)
        if width < 1:
            raise ValueError(f"backbone {name!r}: the width must be at least 1, e.g. conv4-128")
        last_pool = {None: "max", "nopool": "none"}.get(match.group(3), match.group(3))
        ceil, upsample = match.group(2) is not None, int(match.group(4)) if match.group(4) else None
        return Conv4(in_channels, width, image_size, last_pool=last_pool, ceil=ceil, upsample=upsample)
    if name == "resnet12":
        return ResNet12(in_channels)
    if name.startswith("resnet"):
        return TorchvisionBackbone(name, in_channels)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load backbone weights from a checkpoint, never unpickling code.

    Accepts this project's checkpoints (``{"model": state_dict}`` whose keys contain
    ``backbone.``: pretrain, ProtoNet and meta-learner runs alike),
    a bare backbone ``state_dict``, or a torchvision ``state_dict`` (its ``fc.*`` is ignored).
    Missing or unexpected keys and shape mismatches raise an error that lists them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint {str(path)!r} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if any("backbone." in k for k in state):  # a pretrain, ProtoNet or meta-learner run
        state = {k.split("backbone.", 1)[1]: v for k, v in state.items() if "backbone." in k}
    if isinstance(backbone, TorchvisionBackbone) and not any(k.startswith("net.") for k in state):
        state = {f"net.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        lines = [f"checkpoint {str(path)!r} does not fit this {type(backbone).__name__} backbone:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:8])}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}")
        for k in wrong[:8]:
            lines.append(f"  {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        lines.append("  check model.backbone, in_channels and image_size match the pretraining run")
        raise ValueError("\n".join(lines))
    backbone.load_state_dict(state)


def build_model(
    backbone: str = "conv4",
    n_way: int = 5,
    in_channels: int = 1,
    image_size: int = 28,
    pretrained: str | Path | None = None,
    head: str = "linear",
) -> Classifier:
    """A :class:`Classifier`; ``pretrained`` loads the backbone (the head stays freshly initialised)."""
    net = build_backbone(backbone, in_channels, image_size)
    if pretrained is not None:
        load_backbone_weights(net, pretrained)
    return Classifier(net, n_way, head)
