"""fewshot: meta-learning and few-shot image recognition, measured on identical episodes."""

from fewshot.data import (
    Episode,
    EpisodeSampler,
    ImageSet,
    load_image_folder,
    load_omniglot,
    make_synthetic,
)

__version__ = "0.1.0"

__all__ = [
    "Episode",
    "EpisodeSampler",
    "ImageSet",
    "load_image_folder",
    "load_omniglot",
    "make_synthetic",
]
