import math

import pytest
import torch

from fewshot.stats import mean_ci, t_quantile


@pytest.mark.parametrize("df", [1, 2, 5, 30, 599])
def test_t_quantile_matches_scipy(df):
    scipy_stats = pytest.importorskip("scipy.stats")
    for p in (0.9, 0.975, 0.995):
        assert t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-6)


def test_mean_ci_by_hand():
    values = [0.6, 0.8, 1.0, 0.8]  # mean 0.8, sample sd sqrt(0.08/3)
    ci = mean_ci(values)
    assert ci.mean == pytest.approx(0.8)
    # t_{0.975, 3} = 3.182446305284263 (tables)
    assert ci.half_width == pytest.approx(3.182446305284263 * math.sqrt(0.08 / 3) / 2, rel=1e-6)
    assert str(ci) == f"80.00 +- {100 * ci.half_width:.2f}%"


def test_mean_ci_edge_cases():
    assert math.isnan(mean_ci([0.5]).half_width)
    assert mean_ci(torch.ones(10)).half_width == 0.0
    with pytest.raises(ValueError):
        mean_ci([])
