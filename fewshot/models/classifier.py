"""A backbone plus a linear N-way head, built by name, optionally from a checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from fewshot.models.backbones import Conv4, ResNet12, TorchvisionBackbone

BACKBONES = (
    "conv4",
    "conv4-<width>",
    "conv4[-<width>]-nopool",
    "resnet12",
    "resnet18",
    "resnet34",
    "resnet50",
)


class Classifier(nn.Module):
    """``head(backbone(x))``: the network every learner adapts.

    Attributes:
        backbone: images ``[B, C, H, W]`` to features ``[B, feature_dim]``.
        head: ``nn.Linear(feature_dim, n_way)``; its parameters are named ``head.*``.
    """

    def __init__(self, backbone: nn.Module, n_way: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_dim, n_way)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_backbone(name: str, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """A backbone by name: ``conv4`` (64 filters a block), ``conv4-<width>`` (e.g. ``conv4-128``),
    either with ``-nopool`` (no max-pool in the last block: spatial features, see Conv4),
    ``resnet12`` or a torchvision ResNet. Width and pooling live in the name, so a
    checkpoint's saved ``model.backbone`` rebuilds the same network."""
    if match := re.fullmatch(r"conv4(?:-(\d+))?(-nopool)?", name):
        width = int(match.group(1) or 64)
        if width < 1:
            raise ValueError(f"backbone {name!r}: the width must be at least 1, e.g. conv4-128")
        return Conv4(in_channels, width, image_size, pool_last=match.group(2) is None)
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
) -> Classifier:
    """A :class:`Classifier`; ``pretrained`` loads the backbone (the head stays freshly initialised)."""
    net = build_backbone(backbone, in_channels, image_size)
    if pretrained is not None:
        load_backbone_weights(net, pretrained)
    return Classifier(net, n_way)
