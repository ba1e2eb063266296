"""Data: class-indexed image sets, their sources and splits, and seeded episode samplers."""

from fewshot.data.decode import ImageReadError
from fewshot.data.folder import load_image_folder
from fewshot.data.imageset import ImageSet
from fewshot.data.omniglot import download_omniglot, load_omniglot
from fewshot.data.sampler import Episode, EpisodeIndices, EpisodeSampler, episode_seed
from fewshot.data.splits import apply_split, load_manifest, make_split, save_manifest
from fewshot.data.synthetic import make_synthetic

__all__ = [
    "Episode",
    "EpisodeIndices",
    "EpisodeSampler",
    "ImageReadError",
    "ImageSet",
    "apply_split",
    "download_omniglot",
    "episode_seed",
    "load_image_folder",
    "load_manifest",
    "load_omniglot",
    "make_split",
    "make_synthetic",
    "save_manifest",
]
