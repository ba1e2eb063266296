"""Learners: one interface (adapt, then predict; meta_loss for meta-learners)."""

from fewshot.learners.base import Learner, MetaLearner, Predictor, episode_accuracies
from fewshot.learners.finetune import FineTune
from fewshot.learners.maml import ANIL, MAML, MetaSGD
from fewshot.learners.protonet import ProtoNet, SimpleShot
from fewshot.learners.reptile import Reptile

__all__ = [
    "ANIL",
    "MAML",
    "FineTune",
    "Learner",
    "MetaLearner",
    "MetaSGD",
    "Predictor",
    "ProtoNet",
    "Reptile",
    "SimpleShot",
    "episode_accuracies",
]
