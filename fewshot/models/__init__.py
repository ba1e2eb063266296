"""Networks: backbones (Conv-4, ResNet-12, torchvision ResNets) and the N-way classifier."""

from fewshot.models.backbones import Conv4, ResNet12, TorchvisionBackbone, channels_last
from fewshot.models.classifier import (
    BACKBONES,
    Classifier,
    build_backbone,
    build_model,
    load_backbone_weights,
)

__all__ = [
    "BACKBONES",
    "Classifier",
    "Conv4",
    "ResNet12",
    "TorchvisionBackbone",
    "build_backbone",
    "channels_last",
    "build_model",
    "load_backbone_weights",
]
