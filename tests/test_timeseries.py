"""Order selection on a common sample and leave-future-out cross-validation, against statsmodels
(AutoReg, ar_select_order) and one-step-ahead predictions computed independently."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from statsmodels.tsa.ar_model import AutoReg, ar_select_order

import inference
from ppl_models import AutoRegressive, datasets


@pytest.fixture(scope="module")
def y():
    return datasets.load("sunspots").train


@pytest.mark.parametrize("criterion", ["aic", "bic"])
def test_select_order_picks_9_as_statsmodels(y, criterion):
    sel = inference.select_order(y, 12, criterion)
    ref = ar_select_order(y.numpy(), 12, ic=criterion, trend="c")
    assert sel.order == 9 == len(ref.ar_lags) and sel.nobs == len(y) - 12
    ours = getattr(sel, criterion)
    for p in range(1, 13):
        # the same numbers as AutoReg on the common sample (hold back 12 values) ...
        fit = AutoReg(y.numpy(), lags=p, trend="c", hold_back=12).fit()
        assert ours[p] == pytest.approx(getattr(fit, criterion), rel=1e-9)
        assert sel.llf[p] == pytest.approx(fit.llf, rel=1e-9)
    # ... and ar_select_order's up to a constant: it counts one parameter fewer (its OLS
    # df_model leaves out the constant), which changes no ranking
    table = ref.aic if criterion == "aic" else ref.bic
    penalty = 2.0 if criterion == "aic" else math.log(len(y) - 12)
    for lags, value in table.items():
        if lags:
            assert ours[len(lags)] - value == pytest.approx(penalty, abs=1e-6)


def test_lfo_with_exact_refits_equals_one_step_forecasts_of_autoreg(y):
    """Each pointwise value is log N(x_t | AutoReg(x_1..x_(t-1)) one-step forecast, sigma^2)."""
    res = inference.lfo(AutoRegressive(2), y, min_train=250)
    assert res.pointwise.shape == (len(y) - 250,) and res.refits == len(y) - 250
    ref = []
    for t in range(250, len(y)):
        fit = AutoReg(y[:t].numpy(), lags=2, trend="c").fit()
        ref.append(scipy.stats.norm(fit.forecast(1)[0], math.sqrt(fit.sigma2)).logpdf(float(y[t])))
    np.testing.assert_allclose(res.pointwise.numpy(), ref, rtol=1e-8)
    assert res.elpd == pytest.approx(sum(ref), rel=1e-10)
    assert res.se == pytest.approx(np.std(ref, ddof=1) * math.sqrt(len(ref)), rel=1e-8)


def test_psis_lfo_agrees_with_exact_refits(y):
    """PSIS-LFO from exact posterior draws vs refitting the exact posterior at every step:
    the same elpd within 0.5 nats over 209 predictions, with only a few refits."""
    exact = inference.lfo(AutoRegressive(2), y, min_train=100, method="exact")
    psis = inference.lfo(
        AutoRegressive(2), y, min_train=100, method="exact", psis=True, num_samples=2000
    )
    assert exact.refits == 209 and psis.refits <= 10
    assert abs(psis.elpd - exact.elpd) < 0.5
    assert float((psis.pointwise - exact.pointwise).abs().max()) < 0.2
    assert psis.pareto_k is not None and float(psis.pareto_k.max()) < 1.0


def test_lfo_accepts_fits_and_dicts_and_prefers_the_true_order(y):
    fit9 = inference.fit(AutoRegressive(9), y[:150])
    res = inference.lfo({"ar2": AutoRegressive(2), "ar9": fit9}, y, min_train=150)
    assert set(res) == {"ar2", "ar9"} and res["ar9"].method == "mle"
    assert res["ar9"].elpd > res["ar2"].elpd  # the order AIC and BIC choose predicts better
    assert res["ar2"].mean == pytest.approx(res["ar2"].elpd / (len(y) - 150))


def test_lfo_of_an_exact_likelihood_model_scores_every_step(y):
    res = inference.lfo(AutoRegressive(1, likelihood="exact"), y[:80], min_train=60)
    assert res.pointwise.shape == (20,) and torch.isfinite(res.pointwise).all()
