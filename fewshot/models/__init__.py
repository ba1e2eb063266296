"""Networks: backbones (Conv-4, ResNet-12, torchvision ResNets), the N-way classifier, a
backbone whose features are averaged over fixed affine views of each image, and several
backbones' features side by side."""

from fewshot.models.backbones import Conv4, ResNet12, TorchvisionBackbone, channels_last
from fewshot.models.classifier import (
    BACKBONES,
    HEADS,
    Classifier,
    CosineHead,
    build_backbone,
    build_model,
    load_backbone_weights,
)
from fewshot.models.ensemble import FeatureEnsemble
from fewshot.models.views import ViewAveraged

__all__ = [
    "BACKBONES",
    "HEADS",
    "Classifier",
    "Conv4",
    "CosineHead",
    "FeatureEnsemble",
    "ResNet12",
    "TorchvisionBackbone",
    "ViewAveraged",
    "build_backbone",
    "channels_last",
    "build_model",
    "load_backbone_weights",
]
