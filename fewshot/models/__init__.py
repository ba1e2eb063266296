"""Networks: backbones (Conv-4, ResNet-12, torchvision ResNets), the N-way classifier, a
backbone whose features are averaged over fixed affine views of each image, one with earlier
blocks' outputs beside its features, several
backbones' features side by side, and features whitened by known classes' within-class spread
(pooled with each episode's support set, if asked)."""

from fewshot.models.backbones import Conv4, ResNet12, TorchvisionBackbone, channels_last
from fewshot.models.blocks import BlockFeatures
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
from fewshot.models.whiten import (
    SupportWhitening,
    Whitened,
    whiten_by_own_spread,
    whitening_matrix,
    within_class_covariance,
    within_class_whitening,
)

__all__ = [
    "BACKBONES",
    "BlockFeatures",
    "HEADS",
    "Classifier",
    "Conv4",
    "CosineHead",
    "FeatureEnsemble",
    "ResNet12",
    "SupportWhitening",
    "TorchvisionBackbone",
    "ViewAveraged",
    "Whitened",
    "build_backbone",
    "channels_last",
    "build_model",
    "load_backbone_weights",
    "within_class_covariance",
    "within_class_whitening",
    "whiten_by_own_spread",
    "whitening_matrix",
]
