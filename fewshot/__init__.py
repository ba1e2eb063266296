"""fewshot: meta-learning and few-shot image recognition, measured on identical episodes."""

from fewshot.data import (
    Episode,
    EpisodeSampler,
    ImageSet,
    load_image_folder,
    load_omniglot,
    make_synthetic,
)
from fewshot.evaluation import Comparison, Setting, compare
from fewshot.inference import load
from fewshot.learners import (
    ANIL,
    MAML,
    FineTune,
    Learner,
    MetaLearner,
    MetaSGD,
    ProtoNet,
    Reptile,
    SimpleShot,
    episode_accuracies,
)
from fewshot.models import (
    BlockFeatures,
    FeatureEnsemble,
    SupportWhitening,
    ViewAveraged,
    Whitened,
    build_backbone,
    build_model,
)

__version__ = "0.1.0"

__all__ = [
    "ANIL",
    "MAML",
    "BlockFeatures",
    "Comparison",
    "Episode",
    "EpisodeSampler",
    "FeatureEnsemble",
    "FineTune",
    "ImageSet",
    "Learner",
    "MetaLearner",
    "MetaSGD",
    "ProtoNet",
    "Reptile",
    "Setting",
    "SimpleShot",
    "SupportWhitening",
    "ViewAveraged",
    "Whitened",
    "build_backbone",
    "build_model",
    "compare",
    "episode_accuracies",
    "load",
    "load_image_folder",
    "load_omniglot",
    "make_synthetic",
]
