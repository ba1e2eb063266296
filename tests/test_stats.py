import math

import pytest
import torch

from fewshot.stats import mean_ci, paired_difference, t_quantile, t_sf


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


@pytest.mark.parametrize("df", [1, 3, 29, 599])
def test_t_tail_matches_scipy_far_into_the_tail(df):
    scipy_stats = pytest.importorskip("scipy.stats")
    for x in (0.0, 0.5, 2.0, 8.0, 40.0, 1e3):
        expected = scipy_stats.t.sf(x, df)
        assert t_sf(x, df) == pytest.approx(expected, rel=1e-8, abs=1e-300)
        assert t_sf(-x, df) == pytest.approx(1 - expected, rel=1e-12)


def test_paired_difference_by_hand():
    a, b = [0.9, 0.8, 1.0, 0.7], [0.8, 0.8, 0.8, 0.6]  # differences 0.1, 0, 0.2, 0.1
    d = paired_difference(a, b)
    sd = math.sqrt(0.02 / 3)  # mean 0.1, squared deviations 0, 0.01, 0.01, 0
    assert d.mean == pytest.approx(0.1)
    assert d.t == pytest.approx(0.1 / (sd / 2))
    assert d.half_width == pytest.approx(3.182446305284263 * sd / 2, rel=1e-6)
    # two-sided p of t = 2.449 with 3 degrees of freedom (tables: between 0.05 and 0.1)
    assert 0.05 < d.p_value < 0.1 and not d.significant()
    same = paired_difference(a, a)
    assert (same.mean, same.t, same.p_value) == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference(a, b[:3])
