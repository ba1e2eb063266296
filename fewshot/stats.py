"""Confidence intervals and paired tests over episodes, on the Student t distribution.

Few-shot accuracy is reported as the mean over episodes with a 95% interval
``mean +- t_{0.975, n-1} * sd / sqrt(n)``. Two methods scored on the same episodes are
compared by the per-episode differences: the same interval around their mean, and the
two-sided paired t-test. The t distribution is computed here (its tail is a regularised
incomplete beta function, evaluated by a continued fraction) so the core package needs
no SciPy; the tests check it against SciPy.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz method)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 1000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return result


def regularized_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``, the regularised incomplete beta function, for ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = a * math.log(x) + b * math.log1p(-x) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    if x < (a + 1) / (a + b + 2):  # where the fraction converges quickly; else use symmetry
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1 - x) / b


def t_sf(x: float, df: float) -> float:
    """``P(T > x)`` for Student's t with ``df`` degrees of freedom."""
    if math.isinf(x):
        return 0.0 if x > 0 else 1.0
    tail = 0.5 * regularized_beta(df / 2, 0.5, df / (df + x * x))
    return tail if x >= 0 else 1.0 - tail


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (``0.5 <= p < 1``) of Student's t with ``df >= 1`` degrees of freedom.

    Cached: a report asks for the same few (``p``, ``df``) pairs thousands of times, and each
    is a 100-step bisection."""
    if not 0.5 <= p < 1 or df < 1:
        raise ValueError(f"need 0.5 <= p < 1 and df >= 1, got p={p}, df={df}")
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > 1 - p:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_sf(mid, df) > 1 - p else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class MeanCI:
    """A mean with the half-width of its confidence interval."""

    mean: float
    half_width: float
    n: int

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} +- {100 * self.half_width:.2f}%"


def _as_values(values: torch.Tensor | list[float]) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64).flatten()


def mean_ci(values: torch.Tensor | list[float], confidence: float = 0.95) -> MeanCI:
    """Mean of per-episode values and the half-width of its t-interval."""
    v = _as_values(values)
    n = len(v)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    if n == 1:
        return MeanCI(float(v[0]), float("nan"), 1)
    half = t_quantile(0.5 + confidence / 2, n - 1) * float(v.std(unbiased=True)) / math.sqrt(n)
    return MeanCI(float(v.mean()), half, n)


@dataclass(frozen=True)
class PairedDifference:
    """Mean of per-episode differences ``a - b``, its CI, and the paired t-test.

    Attributes:
        mean, half_width, n: as in :class:`MeanCI`, of the differences.
        t: the paired t statistic (``0`` when every difference is zero).
        p_value: two-sided p-value of "no difference on average".
    """

    mean: float
    half_width: float
    n: int
    t: float
    p_value: float

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha

    def __str__(self) -> str:
        return f"{100 * self.mean:+.2f} +- {100 * self.half_width:.2f} points (p = {self.p_value:.2g})"


def paired_difference(
    a: torch.Tensor | list[float], b: torch.Tensor | list[float], confidence: float = 0.95
) -> PairedDifference:
    """Compare two methods scored on the same episodes (``a[i]`` and ``b[i]`` share episode ``i``)."""
    a, b = _as_values(a), _as_values(b)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same episodes, got {len(a)} and {len(b)} values")
    if len(a) < 2:
        raise ValueError("a paired comparison needs at least two episodes")
    diff = a - b
    ci = mean_ci(diff, confidence)
    sd = float(diff.std(unbiased=True))
    if sd == 0.0:
        t = 0.0 if ci.mean == 0.0 else math.copysign(math.inf, ci.mean)
    else:
        t = ci.mean / (sd / math.sqrt(ci.n))
    p = min(1.0, 2 * t_sf(abs(t), ci.n - 1))
    return PairedDifference(ci.mean, ci.half_width, ci.n, t, p)
