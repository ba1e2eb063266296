"""Per-episode query metrics: accuracy and macro-averaged precision, recall and F1."""

from __future__ import annotations

import torch
import torch.nn.functional as F

METRICS = ("accuracy", "precision", "recall", "f1")


def class_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Precision, recall, F1 and support of each class: ``logits [..., M, N]``, ``labels [..., M]``
    -> ``{name: [..., N]}`` (float64).

    A class that is never predicted has precision 0 (scikit-learn's ``zero_division=0``);
    F1 is ``2 TP / (predicted + actual)``.
    """
    n_way = logits.shape[-1]
    predicted = F.one_hot(logits.argmax(-1), n_way).to(torch.float64)  # [..., M, N]
    actual = F.one_hot(labels, n_way).to(torch.float64)
    tp = (predicted * actual).sum(-2)  # [..., N]
    n_predicted, n_actual = predicted.sum(-2), actual.sum(-2)
    return {
        "precision": torch.where(n_predicted > 0, tp / n_predicted.clamp(min=1), 0.0),
        "recall": torch.where(n_actual > 0, tp / n_actual.clamp(min=1), 0.0),
        "f1": torch.where(n_predicted + n_actual > 0, 2 * tp / (n_predicted + n_actual).clamp(min=1), 0.0),
        "support": n_actual,
    }


def query_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Metrics of each episode of a batch: ``logits [B, M, N]``, ``labels [B, M]`` -> ``{name: [B]}``.

    Precision, recall and F1 are computed per class over the episode's query set
    (:func:`class_metrics`) and averaged over its N classes (macro).
    """
    per_class = class_metrics(logits, labels)
    return {
        "accuracy": (logits.argmax(-1) == labels).to(torch.float64).mean(-1),
        **{name: per_class[name].mean(-1) for name in ("precision", "recall", "f1")},
    }
