"""Confidence intervals over episodes, on the Student t distribution.

Few-shot accuracy is reported as the mean over episodes with a 95% interval
``mean +- t_{0.975, n-1} * sd / sqrt(n)``. The t quantile is computed here (numerical
integration of the density, then bisection) so the core package needs no SciPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _t_cdf(x: float, df: int) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom, x >= 0 (Simpson's rule)."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    grid = torch.linspace(0.0, x, 2001, dtype=torch.float64)
    pdf = torch.exp(log_norm - (df + 1) / 2 * torch.log1p(grid**2 / df))
    h = x / 2000
    area = h / 3 * (pdf[0] + pdf[-1] + 4 * pdf[1:-1:2].sum() + 2 * pdf[2:-1:2].sum())
    return 0.5 + float(area)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (``0.5 <= p < 1``) of Student's t with ``df >= 1`` degrees of freedom."""
    if not 0.5 <= p < 1 or df < 1:
        raise ValueError(f"need 0.5 <= p < 1 and df >= 1, got p={p}, df={df}")
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class MeanCI:
    """A mean with the half-width of its confidence interval."""

    mean: float
    half_width: float
    n: int

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} +- {100 * self.half_width:.2f}%"


def mean_ci(values: torch.Tensor | list[float], confidence: float = 0.95) -> MeanCI:
    """Mean of per-episode values and the half-width of its t-interval."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = len(v)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    if n == 1:
        return MeanCI(float(v[0]), float("nan"), 1)
    half = t_quantile(0.5 + confidence / 2, n - 1) * float(v.std(unbiased=True)) / math.sqrt(n)
    return MeanCI(float(v.mean()), half, n)
