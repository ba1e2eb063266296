"""Seeded N-way K-shot Q-query episodes, each a pure function of ``(seed, index)``.

Purity is what makes comparisons fair: episode ``i`` of a sampler is the same tensor
whichever method asks for it, in whatever order, in whichever process, with whatever
version of torch. The sampler draws no state from a random generator: every random
choice is ordering by a *key*, a SplitMix64 hash of ``(seed, i, class, slot)``. The N
classes with the smallest keys form the episode (in key order, which is the random
label order); within each class the K+Q images with the smallest keys are the support
and then the query images. Keys for a whole batch of episodes are computed in a few
vectorised ``uint64`` numpy operations, and the images are gathered from the in-memory
``uint8`` tensor with one index operation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fewshot.data.augment import AUGMENTATIONS, augment
from fewshot.data.imageset import ImageSet

_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1
_CLASS_SALT, _IMAGE_SALT, _SLOT_SALT = 0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0
_GROUP_SALT = 0x082EFA98EC4E6C89
_AUGMENT_SALT = 0x452821E638D01377


def _fmix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a ``uint64`` array: a bijection that mixes every bit."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _salts(count: int, salt: int) -> np.ndarray:
    """``count`` unrelated 64-bit constants, one per class or slot."""
    return _fmix(np.arange(count, dtype=np.uint64) + np.uint64(salt))


def episode_seed(seed: int, index: int) -> int:
    """The 64-bit key of episode ``index`` of a sampler seeded ``seed``.

    Every random choice of the episode is derived from this key alone.
    """
    base = int(_fmix(np.array([seed & _MASK64], dtype=np.uint64))[0])
    return int(_fmix(np.array([(base + index * _GOLDEN) & _MASK64], dtype=np.uint64))[0])


@dataclass(frozen=True)
class EpisodeIndices:
    """Which images make up an episode, before any pixel is touched.

    Attributes:
        classes: ``int64 [N]`` class ids of the image set; class ``classes[j]`` gets label ``j``.
        support: ``int64 [N*K]`` image rows, class-major (``K`` of label 0, then label 1, ...).
        query: ``int64 [N*Q]`` image rows, class-major, disjoint from ``support``.
    """

    classes: torch.Tensor
    support: torch.Tensor
    query: torch.Tensor


@dataclass(frozen=True)
class Episode:
    """One task, or a batch of tasks with a leading dimension ``B``.

    Images are ``float32`` in ``[0, 1]``; labels are ``int64`` in ``0..N-1``.
    Shapes: ``support_x [(B,) N*K, C, H, W]``, ``support_y [(B,) N*K]``,
    ``query_x [(B,) N*Q, C, H, W]``, ``query_y [(B,) N*Q]``, ``classes [(B,) N]``.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.support_x, self.support_y, self.query_x, self.query_y, self.classes)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Episode:
        """The same episode with every tensor on ``device``."""
        return Episode(*(t.to(device, non_blocking=non_blocking) for t in self._tensors()))

    def unbind(self) -> list[Episode]:
        """The single episodes of a batch (views, no copy)."""
        return [Episode(*parts) for parts in zip(*(t.unbind(0) for t in self._tensors()), strict=True)]


class EpisodeSampler:
    """N-way K-shot Q-query episodes from an :class:`ImageSet`.

    Example:
        >>> sampler = EpisodeSampler(imageset, n_way=5, k_shot=1, q_query=15, seed=0)
        >>> ep = sampler.episode(0)                  # one task
        >>> batch = sampler.batch(range(32))         # 32 tasks stacked: [32, N*K, C, H, W]
        >>> for batch in sampler.stream(32): ...     # endless meta-training batches
        >>> eval_set = sampler.episodes(600)         # a fixed, reproducible evaluation set

    Args:
        dataset: the classes to draw from (typically one split).
        n_way: classes per episode.
        k_shot: labelled support images per class.
        q_query: query images per class, disjoint from the support images.
        seed: episode ``i`` depends on ``(seed, i)`` only.
        within_group: draw all ``n_way`` classes of an episode from one group (e.g. one
            Omniglot alphabet, the harder original one-shot task); the group is drawn per
            episode among those with at least ``n_way`` classes.
        augment: meta-training augmentation of every image (``fewshot.data.augment``; default
            none), random per image and still a pure function of ``(seed, index)``.

    Raises:
        ValueError: if a size is not positive, if ``n_way`` exceeds the classes available
            (in every group, with ``within_group``), if ``within_group`` is asked of classes
            that are all in one group (it would change nothing), or if a class has fewer than
            ``k_shot + q_query`` images (the error names it).
    """

    def __init__(
        self,
        dataset: ImageSet,
        n_way: int,
        k_shot: int,
        q_query: int,
        seed: int = 0,
        within_group: bool = False,
        augment: str = "none",
    ):
        for name, value, low in (("n_way", n_way, 1), ("k_shot", k_shot, 1), ("q_query", q_query, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if n_way > dataset.num_classes:
            raise ValueError(
                f"n_way={n_way} but the dataset has only {dataset.num_classes} classes; "
                f"lower n_way to at most {dataset.num_classes} or use a split with more classes"
            )
        need = k_shot + q_query
        counts = dataset.counts
        short = (counts < need).nonzero().flatten().tolist()
        if short:
            listed = ", ".join(f"{dataset.class_names[c]!r} ({int(counts[c])})" for c in short[:5])
            more = f" and {len(short) - 5} more" if len(short) > 5 else ""
            raise ValueError(
                f"k_shot + q_query = {need} images are needed per class, but {len(short)} "
                f"class(es) have fewer: {listed}{more}; lower k_shot or q_query to at most "
                f"{int(counts.min())}, or drop those classes"
            )
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
        self.augment = augment
        self.dataset = dataset
        self.n_way, self.k_shot, self.q_query, self.seed = n_way, k_shot, q_query, seed
        self.within_group = within_group
        if within_group:
            if len(dataset.group_names) == 1:
                only = dataset.group_names[0]
                raise ValueError(
                    f"within_group (task.within_group=true, or a -within setting) draws each "
                    f"episode's classes from one group, but all {dataset.num_classes} classes are in "
                    + (f"the one group {only!r}" if only else "no group")
                    + ", so it would change nothing; use data whose classes have groups (Omniglot's "
                    "alphabets, or folders root/<group>/<class>/) or leave it off"
                )
            index = {g: i for i, g in enumerate(dataset.group_names)}
            group_of = np.array([index[g] for g in dataset.groups], dtype=np.int64)
            sizes = np.bincount(group_of, minlength=len(index))
            self._eligible = np.flatnonzero(sizes >= n_way)
            if len(self._eligible) == 0:
                raise ValueError(
                    f"n_way={n_way} within one group, but the largest group has {int(sizes.max())} "
                    f"classes; lower n_way to at most {int(sizes.max())} or sample across groups"
                )
            self._group_of = group_of
            self._group_salt = _salts(len(self._eligible), _GROUP_SALT)
        self._base = np.uint64(int(_fmix(np.array([seed & _MASK64], dtype=np.uint64))[0]))
        self._offsets = dataset.offsets.numpy()
        self._counts = counts.numpy()
        self._max_count = int(counts.max())
        self._uniform = bool((counts == self._max_count).all())
        self._class_salt = _salts(dataset.num_classes, _CLASS_SALT)
        self._image_salt = _salts(dataset.num_classes, _IMAGE_SALT)
        self._slot_salt = _salts(self._max_count, _SLOT_SALT)
        self._support_y = torch.arange(n_way).repeat_interleave(k_shot)
        self._query_y = torch.arange(n_way).repeat_interleave(q_query)

    def _choose(self, indices: Sequence[int] | range) -> tuple[np.ndarray, np.ndarray]:
        """Classes ``[B, N]`` and image rows ``[B, N, K+Q]`` of the given episodes."""
        ep = np.asarray(indices, dtype=np.int64)
        if ep.ndim != 1 or len(ep) == 0:
            raise ValueError("give at least one episode index")
        if (ep < 0).any():
            raise ValueError(f"episode indices must be >= 0, got {int(ep.min())}")
        with np.errstate(over="ignore"):
            key = _fmix(self._base + ep.astype(np.uint64) * np.uint64(_GOLDEN))[:, None]
            class_keys = _fmix(key ^ self._class_salt)  # [B, C]
            if self.within_group:  # one eligible group per episode; other classes are never chosen
                group = self._eligible[np.argmin(_fmix(key ^ self._group_salt), axis=1)]  # [B]
                class_keys[self._group_of[None, :] != group[:, None]] = np.uint64(_MASK64)
            n = self.n_way
            if n < class_keys.shape[1]:
                smallest = np.argpartition(class_keys, n - 1, axis=1)[:, :n]
            else:
                smallest = np.broadcast_to(np.arange(n), class_keys.shape).copy()
            order = np.argsort(np.take_along_axis(class_keys, smallest, axis=1), axis=1)
            classes = np.take_along_axis(smallest, order, axis=1)  # [B, N], in key order
            image_keys = _fmix((key ^ self._image_salt[classes])[:, :, None] ^ self._slot_salt)
        if not self._uniform:
            too_far = np.arange(self._max_count) >= self._counts[classes][:, :, None]
            image_keys[too_far] = np.uint64(_MASK64)
        picks = np.argsort(image_keys, axis=2, kind="stable")[:, :, : self.k_shot + self.q_query]
        return classes, picks + self._offsets[classes][:, :, None]

    def indices(self, index: int) -> EpisodeIndices:
        """The classes and image rows of episode ``index`` (no pixels gathered)."""
        classes, rows = self._choose([index])
        rows_t = torch.from_numpy(rows[0])
        return EpisodeIndices(
            classes=torch.from_numpy(classes[0]),
            support=rows_t[:, : self.k_shot].reshape(-1),
            query=rows_t[:, self.k_shot :].reshape(-1),
        )

    def rows(self, indices: Sequence[int] | range) -> torch.Tensor:
        """The distinct image rows that episodes ``indices`` draw, in increasing order."""
        return torch.from_numpy(np.unique(self._choose(indices)[1]))

    def episode(self, index: int) -> Episode:
        """Episode ``index`` as float images in ``[0, 1]``."""
        return self.batch([index]).unbind()[0]

    def batch(self, indices: Sequence[int] | range, features: torch.Tensor | None = None) -> Episode:
        """Episodes ``indices`` stacked along a leading task dimension ``B``.

        The keys of all episodes are computed together, and all images of the batch are
        gathered and converted with one operation each. With ``features`` (one row per image
        of the dataset, e.g. ``[M, D]`` embeddings) the episodes hold those rows in place of
        the images: the same episodes, for a learner that only sees images through features.
        """
        classes, rows = self._choose(indices)
        b, nk, nq = len(classes), self.n_way * self.k_shot, self.n_way * self.q_query
        support, query = rows[:, :, : self.k_shot], rows[:, :, self.k_shot :]
        flat = torch.from_numpy(np.concatenate((support.reshape(b, nk), query.reshape(b, nq)), axis=1))
        # index_select is many times faster than advanced indexing for this gather.
        if features is None:
            x = self.dataset.pixels(flat)
        elif len(features) != len(self.dataset.images):
            raise ValueError(f"features have {len(features)} rows for {len(self.dataset.images)} images")
        else:
            x = features.index_select(0, flat.view(-1).to(features.device))
        x = x.view(b, nk + nq, *x.shape[1:])
        if self.augment != "none" and features is None:
            x = torch.stack(
                [
                    augment(im, self.augment, self._augment_generator(i))
                    for i, im in zip(indices, x, strict=True)
                ]
            )
        return Episode(
            support_x=x[:, :nk],
            support_y=self._support_y.expand(b, nk).clone(),
            query_x=x[:, nk:],
            query_y=self._query_y.expand(b, nq).clone(),
            classes=torch.from_numpy(classes),
        )

    def _augment_generator(self, index: int) -> torch.Generator:
        """The random source of episode ``index``'s augmentation (derived from its key)."""
        return torch.Generator().manual_seed(episode_seed(self.seed, index) ^ _AUGMENT_SALT)

    def stream(self, batch_size: int, start: int = 0) -> Iterator[Episode]:
        """Endless meta-training batches: episodes ``start..start+B-1``, then the next ``B``, ...

        Resuming training at step ``s`` is ``stream(B, start=s * B)``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        i = start
        while True:
            yield self.batch(range(i, i + batch_size))
            i += batch_size

    def episodes(self, count: int, batch_size: int = 1, start: int = 0) -> Iterator[Episode]:
        """The fixed evaluation set: episodes ``start..start+count-1`` in order.

        With ``batch_size=1`` each item is a single, unbatched episode; they are still
        drawn in chunks of 64, which is several times faster than one at a time.
        """
        chunk = batch_size if batch_size > 1 else 64
        stop = start + count
        for lo in range(start, stop, chunk):
            batch = self.batch(range(lo, min(lo + chunk, stop)))
            if batch_size > 1:
                yield batch
            else:
                yield from batch.unbind()

    def __repr__(self) -> str:
        return (
            f"EpisodeSampler({self.n_way}-way {self.k_shot}-shot {self.q_query}-query, "
            f"seed={self.seed}{', within groups' if self.within_group else ''}, {self.dataset!r})"
        )
