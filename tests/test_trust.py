"""Trust at every step (issue 24): SVI right on hierarchical programs or warned, the guide's
Pareto k against the posterior, the program's own names in ArviZ, a log_prior group, SVI draws
as chains, given= covariates in constant_data. References: a long NumPyro NUTS run of eight
schools, scipy's densities, ArviZ 0.23's own generalized Pareto fit."""

import math
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import stats

import inference
from inference.evaluation import arviz_generations as gen
from ppl_models import AutoRegressive, datasets
from ppl_models.example_programs import EIGHT_SIGMA, EIGHT_Y, eight_schools, eight_schools_pooled

SCHOOLS = {"given": {"J": 8, "sigma": EIGHT_SIGMA}, "data_arg": "y", "data_plate": "J"}
MU, MU_SD, TAU, TAU_SD = 4.392, 3.317, 3.608, 3.211  # NumPyro, 4 x 20,000 draws


def centred(J, sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0, 5))
    tau = pyro.sample("tau", dist.HalfCauchy(5))
    with pyro.plate("J", J):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        return pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def svi(program, seed):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = inference.fit(program, EIGHT_Y, "svi", seed=seed, progress_bar=False, **SCHOOLS)
    return f, [w for w in caught if "Pareto k" in str(w.message)]


@pytest.fixture(scope="module")
def schools():
    return {seed: svi(eight_schools, seed) for seed in (0, 1)}


def scipy_log_joint(d):
    """log p(mu, tau, eta, y) of the non-centred program at draws d (numpy, flat)."""
    mu, tau, eta = d["mu"], d["tau"], d["eta"]
    y, sigma = EIGHT_Y.numpy(), EIGHT_SIGMA.numpy()
    return (
        stats.norm(0, 5).logpdf(mu)
        + stats.halfcauchy(scale=5).logpdf(tau)
        + stats.norm.logpdf(eta).sum(-1)
        + stats.norm(mu[:, None] + tau[:, None] * eta, sigma).logpdf(y).sum(-1)
    )


# -- SVI on hierarchical programs ----------------------------------------------------------------
@pytest.mark.slow
def test_non_centred_eight_schools_svi_matches_nuts(schools):
    """The default guide from prior medians in the unconstrained space: mu and tau within 0.5
    posterior sd of the reference, every eta sd above 0.8 (from the MAP whitened there, tau
    came out 9 and eta sds 0.4-0.7)."""
    for seed, (f, _) in schools.items():
        d = {k: v.flatten(0, 1).numpy() for k, v in f.draws.items()}
        assert abs(d["mu"].mean() - MU) / MU_SD < 0.5, seed
        assert abs(d["tau"].mean() - TAU) / TAU_SD < 0.5, seed
        assert d["eta"].std(0).min() > 0.8, seed
        assert "prior medians" in f.info["init"]


@pytest.mark.slow
def test_centred_eight_schools_svi_is_right_or_warned():
    f, warned = svi(centred, 0)
    mu, tau = f.draws["mu"].flatten(), f.draws["tau"].flatten()
    close = abs(float(mu.mean()) - MU) / MU_SD < 0.5 and abs(float(tau.mean()) - TAU) / TAU_SD < 0.5
    assert close or (f.info["pareto_k"] > 0.7 and warned)
    if warned:
        assert "method='nuts'" in str(warned[0].message)


def test_the_guides_pareto_k_is_a_direct_psis_of_log_p_minus_log_q(schools):
    """log p(theta, y) of every draw equals scipy's (1e-10); the guide's k equals the
    generalized Pareto fit (ArviZ 0.23's own Zhang-Stephens `_gpdfit`, prior on k included) of
    the largest floor(3 sqrt(S)) importance ratios of log p - log q."""
    f, _ = schools[0]
    d = {k: v.flatten(0, 1).numpy() for k, v in f.draws.items()}
    log_p = f.sample_stats["log_p"].flatten().numpy()
    np.testing.assert_allclose(log_p, scipy_log_joint(d), rtol=1e-10)
    r = log_p - f.sample_stats["log_q"].flatten().numpy()
    S = len(r)
    M = int(np.floor(3 * np.sqrt(S)))
    r = np.sort(r - r.max())
    tail = np.exp(r[-M:]) - np.exp(r[-M - 1])
    if gen.MODERN:
        pytest.skip("ArviZ 0.23's _gpdfit is the reference (make test runs it)")
    from arviz.stats.stats import _gpdfit

    k, _ = _gpdfit(tail)
    assert f.info["pareto_k"] == pytest.approx(float(k), abs=1e-8)
    data = f.to_arviz()
    assert gen.groups(data)["posterior"].attrs["guide_pareto_k"] == f.info["pareto_k"]


def test_a_poor_guide_is_flagged_in_report_and_compare():
    """Two schools' worth of SVI steps leave the guide far off: the fit warns, and its k
    reaches report() and compare's guide_pareto_k column (NaN for other methods)."""
    with pytest.warns(RuntimeWarning, match="Pareto k"):
        bad = inference.fit(
            centred, EIGHT_Y, "svi", steps=50, seed=0, progress_bar=False, **SCHOOLS
        )
    assert bad.info["pareto_k"] > 0.7
    rep = bad.report(EIGHT_Y)
    assert rep.guide_pareto_k == bad.info["pareto_k"] and "far from the posterior" in rep.flags
    point = inference.fit(eight_schools_pooled, EIGHT_Y, "map", **SCHOOLS)
    table = inference.compare(
        {"svi": bad, "map": point}, EIGHT_Y, given={"J": 8, "sigma": EIGHT_SIGMA}
    )
    assert table.loc["svi", "guide_pareto_k"] == bad.info["pareto_k"]
    assert math.isnan(table.loc["map", "guide_pareto_k"])
    assert "refit by nuts" in table.loc["svi", "flag"]


# -- ArviZ conventions ----------------------------------------------------------------------------
def test_svi_draws_arrive_as_two_chains_with_created_at_and_constant_data(schools):
    f, _ = schools[0]
    assert f.draws["mu"].shape == (2, 500)
    data = f.to_arviz()
    g = gen.groups(data)
    assert np.isfinite(f.r_hat) and f.r_hat < 1.05  # independent draws: two chains agree
    created = g["posterior"].attrs["created_at"]
    assert created.startswith("20") and "T" in created
    np.testing.assert_array_equal(g["constant_data"]["sigma"].values, EIGHT_SIGMA.numpy())
    assert g["constant_data"]["sigma"].dims == ("J",) and g["constant_data"].sizes["J"] == 8


def test_the_observed_site_keeps_the_programs_name(schools, tmp_path):
    f, _ = schools[0]
    data = f.to_arviz(posterior_predictive=True, prior=True, num_prior=40)
    g = gen.groups(data)
    for group in ("observed_data", "log_likelihood", "posterior_predictive", "prior_predictive"):
        assert list(g[group].data_vars) == ["obs"], group
    assert g["log_likelihood"]["obs"].dims == ("chain", "draw", "J")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isfinite(float(gen.field(az.loo(data, var_name="obs"), "elpd_loo")))
        pit = gen.loo_pit(data, "obs")
        assert pit.shape == (8,) and ((pit >= 0) & (pit <= 1)).all()
        if gen.MODERN:
            az.plot_ppc_dist(data, var_names=["obs"])
        else:
            az.plot_ppc(data, var_names=["obs"])
    # built-ins keep x
    ar = inference.fit(AutoRegressive(2), datasets.load("sunspots").train, "exact", num_samples=40)
    assert list(gen.groups(ar.to_arviz())["log_likelihood"].data_vars) == ["x"]


# -- log_prior ------------------------------------------------------------------------------------
def test_log_prior_of_eight_schools_is_scipys(schools):
    f, _ = schools[0]
    lp = gen.groups(f.to_arviz())["log_prior"]
    d = {k: v.numpy() for k, v in f.draws.items()}
    np.testing.assert_allclose(lp["mu"].values, stats.norm(0, 5).logpdf(d["mu"]), rtol=1e-8)
    np.testing.assert_allclose(
        lp["tau"].values, stats.halfcauchy(scale=5).logpdf(d["tau"]), rtol=1e-8
    )
    np.testing.assert_allclose(lp["eta"].values, stats.norm.logpdf(d["eta"]), rtol=1e-8)
    assert lp["eta"].dims == ("chain", "draw", "J")


def test_log_prior_of_ar2_is_scipys():
    """AR(2)'s Normal-Inverse-Gamma prior in the data's units (m, s): sigma^2 ~ InvGamma(1/2,
    s^2 / 2) as a density of sigma, phi_j ~ N(0, 5 sigma / s), const ~ N(m (1 - sum phi),
    5 sigma); by NUTS and exact, log_prior elementwise per parameter."""
    x = datasets.load("sunspots").train
    m, s = float(x.mean()), float(x.std())
    for method, options in (("exact", {"num_samples": 100}), ("map", {})):
        f = inference.fit(AutoRegressive(2), x, method, seed=0, **options)
        data = f.to_arviz()
        lp, post = gen.groups(data)["log_prior"], gen.groups(data)["posterior"]
        sigma, phi, const = (post[k].values for k in ("sigma", "phi", "const"))
        assert f.program.model.units() == pytest.approx((m, s), rel=1e-12)
        expected = {
            "sigma": stats.invgamma(0.5, scale=s**2 / 2).logpdf(sigma**2) + np.log(2 * sigma),
            "phi": stats.norm(0, 5 * sigma[..., None] / s).logpdf(phi),
            "const": stats.norm(m * (1 - phi.sum(-1)), 5 * sigma).logpdf(const),
        }
        for k, v in expected.items():
            np.testing.assert_allclose(lp[k].values, v, rtol=1e-8, err_msg=f"{method} {k}")
    mle = inference.fit(AutoRegressive(2), x, "mle")
    assert "log_prior" not in gen.groups(mle.to_arviz())  # a flat prior: nothing to scale


@pytest.mark.arviz
def test_power_scaling_sensitivity_runs(schools):
    f, _ = schools[0]
    x = datasets.load("sunspots").train
    ar = inference.fit(AutoRegressive(2), x, "exact", num_samples=400, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fit in (f, ar):
            data = fit.to_arviz()
            if gen.MODERN:
                summary = az.psense_summary(data)
                assert len(summary) >= 2
            else:
                sens = az.psens(data, component="prior")
                assert all(np.isfinite(sens[v].values).all() for v in sens.data_vars)


@pytest.mark.arviz
def test_loo_pit_of_image_models(tmp_path):
    """Images hold a per-datum statistic (pixels on, x_total) with its own log_likelihood
    entry beside the predictive: LOO-PIT, its plot and the PPC-PIT plot run in either
    generation, and az.loo still finds one log-likelihood without a predictive."""
    from ppl_models import Independent, Markov

    x = datasets.load("digits").train[:200]
    for model in (Independent(64), Markov(64)):
        f = inference.fit(model, x, "exact", num_samples=100)
        data = f.to_arviz(posterior_predictive=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pit = gen.loo_pit(data, "x_total")
            assert pit.shape == (200,) and 0.2 < pit.mean() < 0.8
            if gen.MODERN:
                az.plot_loo_pit(data, var_names=["x_total"])
                az.plot_ppc_pit(data, var_names=["x_total"])
            else:
                az.plot_loo_pit(data, y="x_total")
            assert np.isfinite(float(gen.field(az.loo(f.to_arviz()), "elpd_loo")))


def test_svi_that_diverges_says_to_lower_lr():
    """Adam at lr=1e6 throws the guide's scale to 0 within a few steps: torch's argument check
    raised from deep inside the guide ("Expected parameter scale ..."); the fit now stops
    with a ValueError naming the step and the fix, and lr=0.05 on the same data fits."""
    y = torch.linspace(-1.0, 3.0, 20, dtype=torch.float64)

    def normal_mean(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(y)):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)

    with pytest.raises(ValueError, match=r"SVI diverged at step \d+ of 2000: .*lower lr"):
        inference.fit(normal_mean, y, "svi", data_arg="y", lr=1e6, progress_bar=False)
    f = inference.fit(normal_mean, y, "svi", data_arg="y", lr=0.05, progress_bar=False)
    assert abs(float(f.params["mu"]) - float(y.sum()) / 20.01) < 0.05
