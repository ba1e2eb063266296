"""Score methods on identical episodes and compare each with a baseline, episode by episode.

For every N-way K-shot setting one :class:`EpisodeSampler` with the evaluation seed
defines episodes ``0..E-1``; every method is scored on exactly those episodes (the
sampler is a pure function of seed and index). Episodes are adapted ``batch_episodes`` at
a time through :meth:`Learner.adapt_batch`; a CUDA out-of-memory error halves the batch
and retries, so a large model still runs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from fewshot import distributed
from fewshot.data import EpisodeSampler, ImageSet
from fewshot.evaluation.metrics import METRICS, query_metrics
from fewshot.evaluation.partial import PartialScores
from fewshot.learners import Learner
from fewshot.learners.features import embed_dataset
from fewshot.stats import MeanCI, PairedDifference, mean_ci, paired_difference


@dataclass(frozen=True, order=True)
class Setting:
    """An N-way K-shot setting, written ``"5w1s"``; ``"20w1s-within"`` draws each episode's
    classes from a single group (one alphabet: the harder original one-shot task)."""

    n_way: int
    k_shot: int
    within_group: bool = False

    @classmethod
    def parse(cls, text: str) -> Setting:
        match = re.fullmatch(r"\s*(\d+)w(\d+)s(-within)?\s*", str(text))
        if not match or int(match.group(1)) < 2 or int(match.group(2)) < 1:
            raise ValueError(
                f"setting {text!r} is not of the form <N>w<K>s[-within] with N >= 2 and K >= 1 "
                "(e.g. 5w1s, 20w5s, 20w1s-within)"
            )
        return cls(int(match.group(1)), int(match.group(2)), bool(match.group(3)))

    @property
    def key(self) -> str:
        return f"{self.n_way}w{self.k_shot}s" + ("-within" if self.within_group else "")

    def sampler(self, dataset: ImageSet, q_query: int, seed: int) -> EpisodeSampler:
        """The episodes of this setting on ``dataset``."""
        return EpisodeSampler(dataset, self.n_way, self.k_shot, q_query, seed, within_group=self.within_group)

    def __str__(self) -> str:
        return f"{self.n_way}-way {self.k_shot}-shot" + (" within a group" if self.within_group else "")


@dataclass
class Scores:
    """One method's per-episode metrics in one setting (tensors ``[E]``) and its run time."""

    metrics: dict[str, torch.Tensor]
    seconds: float

    @property
    def episodes_per_s(self) -> float:
        return len(self.metrics["accuracy"]) / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class Comparison:
    """Scores of methods x settings on shared episodes, with summaries and paired tests.

    ``scores[setting.key][label]`` holds the per-episode metrics; ``dataset`` (the classes
    evaluated on) lets the episodes be listed again (:func:`episode_manifest`).
    """

    methods: list[str]
    settings: list[Setting]
    baseline: str | None
    q_query: int
    episodes: int
    seed: int
    scores: dict[str, dict[str, Scores]]
    dataset: ImageSet = field(repr=False)
    reused: dict[str, dict[str, str]] = field(default_factory=dict)  # setting -> label -> where from

    def summary(self, method: str, setting: Setting) -> dict[str, MeanCI]:
        """Mean and 95% CI over episodes of every metric."""
        return {name: mean_ci(v) for name, v in self.scores[setting.key][method].metrics.items()}

    def paired(self, method: str, setting: Setting, metric: str = "accuracy") -> PairedDifference | None:
        """``method - baseline`` per episode, with CI and paired t-test (None for the baseline itself)."""
        if self.baseline is None or method == self.baseline:
            return None
        own = self.scores[setting.key]
        return paired_difference(own[method].metrics[metric], own[self.baseline].metrics[metric])

    def verdict(self, method: str, setting: Setting, alpha: float = 0.05) -> str:
        """``"baseline"``, ``"better"``, ``"worse"`` or ``"no significant difference"`` (at ``alpha``)."""
        diff = self.paired(method, setting)
        if diff is None:
            return "baseline" if method == self.baseline else "no baseline"
        if not diff.significant(alpha):
            return "no significant difference"
        return "better" if diff.mean > 0 else "worse"


def unscored(
    labels: Sequence[str],
    settings: Sequence[Setting | str],
    episodes: int,
    batch_episodes: int,
    known: Mapping[str, Mapping[str, object]] | None = None,
    partial: PartialScores | None = None,
) -> set[str]:
    """The ``labels`` that :func:`compare` would still score in some setting: neither ``known``
    there nor saved whole, every chunk, by an interrupted run (``partial``). The others need no
    learner: an evaluation that resumes or reuses scores need not build them."""
    chunks = _chunks(episodes, batch_episodes)
    keys = [(s if isinstance(s, Setting) else Setting.parse(s)).key for s in settings]
    return {
        label
        for label in labels
        for key in keys
        if label not in (known or {}).get(key, {})
        and len(_saved_chunks(partial, key, label, chunks)) < len(chunks)
    }


def compare(
    methods: Mapping[str, Learner | None],
    dataset: ImageSet,
    settings: Sequence[Setting | str] = ("5w1s", "5w5s", "20w1s", "20w5s"),
    q_query: int = 15,
    episodes: int = 600,
    seed: int = 0,
    baseline: str | None = None,
    batch_episodes: int = 20,
    device: torch.device | str = "cpu",
    progress: bool = True,
    embed_once: bool = True,
    known: Mapping[str, Mapping[str, Scores]] | None = None,
    partial: PartialScores | None = None,
) -> Comparison:
    """Score every method on the same ``episodes`` episodes of each setting.

    Args:
        methods: label -> learner (see :mod:`fewshot.evaluation.methods` to build them), or
            ``None`` for a method with nothing left to score (see :func:`unscored`).
        dataset: the classes to evaluate on (novel classes, never trained on).
        settings: ``Setting`` objects or strings like ``"5w1s"``.
        baseline: the label every other method is compared with, episode by episode.
        batch_episodes: episodes adapted together (halved automatically on CUDA OOM).
        Under ``torchrun`` every process scores a share of each setting's chunks of episodes
        and all of them receive the whole result (the same as one process).
        embed_once: for a learner with a :meth:`~fewshot.learners.Learner.feature_extractor`
            (SimpleShot, ProtoNet, linear probe), embed once every image that the episodes it
            still has to score draw (none if they are all known or saved) and give it the
            episodes' features: the same episodes and predictions (to float rounding), without
            embedding an image again in every episode that draws it. Its episodes/s then counts
            adaptation and prediction on those features.
        known: scores already measured, ``known[setting key][label]`` (an earlier evaluation's,
            see :mod:`fewshot.evaluation.reuse`); they are taken as they are, not measured again.
        partial: where each chunk of episodes is saved once scored, and the chunks an interrupted
            run of this same evaluation saved, which are not scored again
            (:mod:`fewshot.evaluation.partial`).

    Example:
        >>> result = compare({"maml": maml, "probe": FineTune(backbone)}, novel, ["5w1s"], baseline="probe")
        >>> result.paired("maml", Setting(5, 1))
    """
    if not methods:
        raise ValueError("give at least one method to compare")
    if baseline is not None and baseline not in methods:
        raise ValueError(f"baseline {baseline!r} is not one of the methods: {', '.join(methods)}")
    if batch_episodes < 1 or episodes < 1:
        raise ValueError("episodes and batch_episodes must be >= 1")
    parsed = [s if isinstance(s, Setting) else Setting.parse(s) for s in settings]
    samplers = {s: s.sampler(dataset, q_query, seed) for s in parsed}  # every setting is checked first
    scores: dict[str, dict[str, Scores]] = {s.key: {} for s in parsed}
    ctx = distributed.current()  # under torchrun, the chunks of episodes are shared out
    known = known or {}
    for key, by_label in known.items():
        for label, s in by_label.items():
            if len(s.metrics["accuracy"]) != episodes:
                raise ValueError(f"known scores of {label!r} in {key} are not of {episodes} episodes")
    chunks = _chunks(episodes, batch_episodes)
    done = {  # setting key -> label -> chunks an interrupted run of this evaluation saved
        s.key: {label: _saved_chunks(partial, s.key, label, chunks) for label in methods} for s in parsed
    }
    unbuilt = unscored(
        [label for label, learner in methods.items() if learner is None],
        parsed,
        episodes,
        batch_episodes,
        known,
        partial,
    )
    if unbuilt:
        raise ValueError(f"method(s) {sorted(unbuilt)} have episodes left to score; give their learners")
    mine = {  # setting key -> label -> chunks this process scores (none where the scores are known)
        s.key: {
            label: []
            if label in known.get(s.key, {})
            else [c for c in range(len(chunks)) if c not in done[s.key][label]][ctx.rank :: ctx.world]
            for label in methods
        }
        for s in parsed
    }
    features: dict[str, torch.Tensor] = {}  # label -> features of the images its episodes draw
    for label, learner in methods.items():
        todo = {s: [i for c in mine[s.key][label] for i in chunks[c]] for s in parsed}
        if not any(todo.values()):
            continue
        extract = learner.feature_extractor() if embed_once else None
        if extract is None:
            continue
        start = time.perf_counter()
        rows = torch.cat([samplers[s].rows(indices) for s, indices in todo.items() if indices]).unique()
        features[label] = embed_dataset(extract, dataset, device, rows=rows)
        if progress and ctx.main:
            tqdm.write(
                f"{label}: embedded the {len(rows)} images its episodes draw once "
                f"({time.perf_counter() - start:.1f} s)"
            )
    for setting, sampler in samplers.items():
        for label, learner in methods.items():
            if label in known.get(setting.key, {}):
                scores[setting.key][label] = known[setting.key][label]
                continue
            torch.manual_seed(seed)
            bar = tqdm(
                total=episodes,
                desc=f"{setting.key} {label}",
                unit="ep",
                disable=not progress or not ctx.main,
                leave=False,
            )
            saved = done[setting.key][label]
            before = partial.seconds(setting.key, label) if partial else 0.0
            bar.update(sum(len(chunks[c]) for c in saved))
            scored: dict[int, dict[str, torch.Tensor]] = {}
            start = time.perf_counter()
            for c in mine[setting.key][label]:
                scored[c] = _score(learner, sampler, chunks[c], device, features.get(label))
                if partial:
                    partial.record(setting.key, label, c, scored[c], before + time.perf_counter() - start)
                bar.update(len(chunks[c]) * ctx.world)
            shares = distributed.gather_objects(scored, ctx)
            parts = {**saved, **{c: part for share in shares for c, part in share.items()}}
            seconds = before + time.perf_counter() - start
            bar.close()
            metrics = {m: torch.cat([parts[c][m] for c in range(len(chunks))]) for m in METRICS}
            scores[setting.key][label] = Scores(metrics, seconds)
            if progress and ctx.main:
                tqdm.write(
                    f"{setting} {label}: accuracy {mean_ci(metrics['accuracy'])} "
                    f"({episodes / seconds:.1f} episodes/s)"
                )
    return Comparison(list(methods), parsed, baseline, q_query, episodes, seed, scores, dataset)


def _chunks(episodes: int, batch_episodes: int) -> list[range]:
    """Episodes ``0..episodes-1`` in the chunks that are adapted together and saved as they finish."""
    return [range(lo, min(lo + batch_episodes, episodes)) for lo in range(0, episodes, batch_episodes)]


def _saved_chunks(
    partial: PartialScores | None, key: str, label: str, chunks: list[range]
) -> dict[int, dict[str, torch.Tensor]]:
    """The chunks of ``label`` in setting ``key`` that an interrupted run saved whole."""
    saved = partial.chunks(key, label) if partial else {}
    return {c: m for c, m in saved.items() if c < len(chunks) and len(m["accuracy"]) == len(chunks[c])}


def _score(
    learner: Learner,
    sampler: EpisodeSampler,
    indices: range,
    device: torch.device | str,
    features: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Metrics of episodes ``indices`` (of images, or of ``features`` of the dataset's images);
    on CUDA out-of-memory, the two halves one after the other."""
    try:
        batch = sampler.batch(indices, features).to(device)
        logits = learner.adapt_batch(batch.support_x, batch.support_y)(batch.query_x)
        return {k: v.cpu() for k, v in query_metrics(logits, batch.query_y).items()}
    except torch.OutOfMemoryError:
        if len(indices) == 1:
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(indices) // 2
        first = _score(learner, sampler, indices[:half], device, features)
        second = _score(learner, sampler, indices[half:], device, features)
        return {k: torch.cat((first[k], second[k])) for k in first}
