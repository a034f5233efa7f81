"""AutoRegressive (issue 3) against statsmodels (AutoReg, ARIMA) and closed forms: likelihoods,
MLE, forecasts, the conjugate posterior, NUTS and SVI against it, stationarity of draws."""

import math

import arviz as az
import numpy as np
import pytest
import scipy.stats
import torch
from pyro import poutine
from pyro.infer.autoguide import init_to_value
from pyro.infer.mcmc.util import initialize_model
from statsmodels.tsa.ar_model import AutoReg
from statsmodels.tsa.arima.model import ARIMA
from statsmodels.tsa.arima_process import arma_acovf

import inference
from inference.laplace import Whitened
from inference.start import initial_values
from ppl_models import AutoRegressive, Independent, LinearGaussian, Markov, datasets
from ppl_models.models.base import local_params
from ppl_models.models.gaussian_steps import log_prob_steps
from ppl_models.models.stationary import PacfToPhi, is_stationary, levinson, pacf_to_phi
from ppl_models.programs.program import Program


@pytest.fixture(scope="module")
def y():
    return datasets.load("sunspots").train


def roots_outside_unit_circle(phi: np.ndarray) -> bool:
    """Independent check: every root of 1 - phi_1 z - ... - phi_p z^p has |z| > 1."""
    return bool(np.all(np.abs(np.roots(np.r_[-phi[::-1], 1.0])) > 1))


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


# -- likelihoods and MLE ------------------------------------------------------------------------
def test_conditional_mle_equals_autoreg_for_orders_1_to_12(y):
    for p in range(1, 13):
        f = inference.fit(AutoRegressive(p), y)
        ref = AutoReg(y.numpy(), lags=p, trend="c").fit()
        coef = torch.cat([f.params["const"][None], f.params["phi"]]).numpy()
        assert rel(coef, ref.params) < 1e-6, p
        assert rel(float(f.params["sigma"]) ** 2, ref.sigma2) < 1e-6, p
        llf = float(f.model.log_prob(y).detach().sum())
        assert rel(llf, ref.llf) < 1e-6, p
        assert f.report(y).n == len(y) - p and f.info["solver"] == "closed form"


def test_ar2_reference_numbers(y):
    f = inference.fit(AutoRegressive(2), y)
    assert float(f.params["const"]) == pytest.approx(14.9071, abs=5e-5)
    assert f.params["phi"].tolist() == pytest.approx([1.3918, -0.6903], abs=5e-5)
    assert float(f.params["sigma"]) ** 2 == pytest.approx(275.436, abs=5e-4)
    assert float(f.model.log_prob(y).detach().sum()) == pytest.approx(-1298.032, abs=5e-4)


def test_mle_without_constant_equals_autoreg(y):
    f = inference.fit(AutoRegressive(3, constant=False), y)
    ref = AutoReg(y.numpy(), lags=3, trend="n").fit()
    assert "const" not in f.params and f.model.num_parameters == 4
    assert rel(f.params["phi"].numpy(), ref.params) < 1e-6
    assert rel(float(f.model.log_prob(y).detach().sum()), ref.llf) < 1e-6


def test_gradient_mle_reaches_the_closed_form(y):
    closed = inference.fit(AutoRegressive(2), y)
    grad = inference.fit(AutoRegressive(2), y, solver="lbfgs")
    assert grad.info["solver"] == "lbfgs"
    for k in ("const", "phi", "sigma"):
        torch.testing.assert_close(grad.params[k], closed.params[k], rtol=1e-5, atol=0)


@pytest.mark.parametrize("p, reference", [(2, -1307.319), (9, None)])
def test_exact_mle_equals_arima(y, p, reference):
    f = inference.fit(AutoRegressive(p, likelihood="exact"), y)
    ref = ARIMA(y.numpy(), order=(p, 0, 0)).fit()
    llf = float(f.model.log_prob(y).detach().sum())
    assert abs(llf - ref.llf) < 0.01
    assert f.model.log_prob(y).shape == (len(y),)
    if reference is not None:
        assert abs(llf - reference) < 0.01
    # ARIMA reports the process mean; ours is const / (1 - sum phi)
    mu = float(f.params["const"] / (1 - f.params["phi"].sum()))
    assert abs(mu - ref.params[0]) < 0.05 * abs(ref.params[0])


def test_exact_likelihood_is_the_stationary_gaussian_of_the_whole_series(y):
    """Sum of the per-step densities = log N(x | mu, Toeplitz(autocovariances)), the
    autocovariances from statsmodels' arma_acovf and the density from scipy."""
    phi, const, sigma = np.array([1.2, -0.5, 0.1]), 10.0, 15.0
    x = y[:60].numpy()
    acov = arma_acovf(np.r_[1, -phi], np.array([1.0]), nobs=len(x), sigma2=sigma**2)
    cov = scipy.linalg.toeplitz(acov)
    mu = const / (1 - phi.sum())
    ref = scipy.stats.multivariate_normal(np.full(len(x), mu), cov).logpdf(x)
    ours = log_prob_steps(
        torch.from_numpy(x),
        torch.tensor(const, dtype=torch.float64),
        torch.from_numpy(phi),
        torch.tensor(sigma, dtype=torch.float64),
        True,
    )
    assert ours.shape == (60,)
    assert float(ours.sum()) == pytest.approx(ref, rel=1e-10)


def test_nonstationary_parameters_get_minus_inf_not_nan(y):
    model = AutoRegressive(2, likelihood="exact")
    draws = {
        "const": torch.tensor([[5.0, 5.0]], dtype=torch.float64),
        "phi": torch.tensor([[[0.5, 0.6], [1.3, -0.6]]], dtype=torch.float64),
        "sigma": torch.tensor([[10.0, 10.0]], dtype=torch.float64),
    }
    ll = model.log_likelihood(y, draws)  # (1, 2, T)
    assert torch.isneginf(ll[0, 0]).all() and torch.isfinite(ll[0, 1]).all()
    phi = torch.tensor([0.5, 0.6], dtype=torch.float64, requires_grad=True)
    lp = log_prob_steps(
        y,
        torch.tensor(5.0, dtype=torch.float64),
        phi,
        torch.tensor(10.0, dtype=torch.float64),
        True,
    ).sum()
    lp.backward()
    assert torch.isneginf(lp) and not torch.isnan(phi.grad).any()
    with pytest.raises(ValueError, match="not stationary"):
        model.set_params({"phi": torch.tensor([0.5, 0.6])})


# -- the program --------------------------------------------------------------------------------
@pytest.mark.parametrize("likelihood", ["conditional", "exact"])
@pytest.mark.parametrize("p, constant", [(1, True), (3, True), (2, False)])
def test_forward_program_equals_vectorised_log_prob(y, likelihood, p, constant):
    model = AutoRegressive(p, constant=constant, likelihood=likelihood)
    phi = pacf_to_phi(torch.tensor([0.8, -0.5, 0.3][:p], dtype=torch.float64))
    model.set_params({"phi": phi, "sigma": torch.tensor(12.0)})
    if constant:
        model.set_params({"const": torch.tensor(7.0)})
    with local_params():
        trace = poutine.trace(model).get_trace(y)
    sites = [s for s in trace.nodes.values() if s["type"] == "sample"]
    assert len(sites) == (len(y) if likelihood == "exact" else len(y) - p)
    per_step = torch.stack([s["fn"].log_prob(s["value"]) for s in sites])
    torch.testing.assert_close(per_step, model.log_prob(y).detach(), rtol=1e-12, atol=1e-9)


def test_generated_series_follow_the_stationary_process():
    """Simulated AR(2) series: sample autocovariances close to the theoretical ones."""
    model = AutoRegressive(2)
    phi = np.array([1.0, -0.5])
    model.set_params(
        {"const": torch.tensor(2.0), "phi": torch.from_numpy(phi), "sigma": torch.tensor(1.0)}
    )
    torch.manual_seed(1)
    x = model(num_samples=6000).detach().numpy()
    acov = arma_acovf(np.r_[1, -phi], np.array([1.0]), nobs=3, sigma2=1.0)
    z = x - x.mean()
    sample = [np.mean(z[k:] * z[: len(z) - k]) for k in range(3)]
    assert np.allclose(sample, acov, rtol=0.1)
    assert x.mean() == pytest.approx(2.0 / 0.5, rel=0.05)


# -- stationarity through partial autocorrelations ------------------------------------------
def test_pacf_transform_roundtrip_jacobian_and_stationarity():
    gen = torch.Generator().manual_seed(0)
    for p in (1, 2, 3, 5, 8):
        r = torch.rand(p, generator=gen, dtype=torch.float64) * 1.9 - 0.95
        phi = pacf_to_phi(r)
        assert roots_outside_unit_circle(phi.numpy())
        torch.testing.assert_close(levinson(phi)[0], r)
        jac = torch.autograd.functional.jacobian(pacf_to_phi, r)
        assert float(PacfToPhi().log_abs_det_jacobian(r, phi)) == pytest.approx(
            float(torch.linalg.slogdet(jac)[1]), abs=1e-10
        )
    bad = torch.tensor([[0.5, 0.6], [1.2, -0.1], [0.0, -1.0]], dtype=torch.float64)
    assert not is_stationary(bad).any()


@pytest.mark.slow
def test_stationary_prior_and_posterior_draws_are_all_stationary(y):
    model = AutoRegressive(3, stationary=True)
    prior = inference.fit(model, y, "map").model.priors()["phi"]  # priors in the data's units
    draws = prior.sample((1000,))
    assert all(roots_outside_unit_circle(d) for d in draws.numpy())
    f = inference.fit(
        model, y, "nuts", num_samples=500, warmup_steps=200, jit_compile=True, seed=0
    )  # 2 chains (the default): 1,000 draws
    post = f.draws["phi"].flatten(0, 1)
    assert post.shape == (1000, 3)
    assert all(roots_outside_unit_circle(d) for d in post.numpy())
    # the stationary MLE is the unconstrained one here (it is inside the region)
    torch.testing.assert_close(
        inference.fit(model, y).params["phi"], inference.fit(AutoRegressive(3), y).params["phi"]
    )


# -- forecasts ------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [2, 9])
def test_mle_forecast_equals_autoreg(y, p):
    fc = inference.fit(AutoRegressive(p), y).forecast(10, prob=0.9)
    ref = AutoReg(y.numpy(), lags=p, trend="c").fit()
    frame = ref.get_prediction(start=len(y), end=len(y) + 9).summary_frame(alpha=0.1)
    assert rel(fc.mean.numpy(), ref.forecast(10)) < 1e-6
    width = (frame.mean_ci_upper - frame.mean_ci_lower).to_numpy()
    assert rel((fc.upper - fc.lower).numpy(), width) < 1e-6
    assert rel(fc.lower.numpy(), frame.mean_ci_lower.to_numpy()) < 1e-6


def test_bayesian_forecast_is_the_posterior_predictive(y):
    """One step ahead the exact posterior predictive is a Student t: the mixture over 1000
    exact draws gives its interval to Monte Carlo accuracy; wider than the MLE's."""
    f = inference.fit(AutoRegressive(2), y, "exact", num_samples=4000)
    fc = f.forecast(5, prob=0.9)
    post = f.posterior
    z = torch.tensor([1.0, float(y[-1]), float(y[-2])], dtype=torch.float64)
    scale = math.sqrt(float(post.c / post.a * (1 + (z @ post.cov_chol).pow(2).sum())))
    t = scipy.stats.t(df=float(2 * post.a), loc=float(z @ post.b), scale=scale)
    assert float(fc.mean[0]) == pytest.approx(t.mean(), abs=0.05 * scale)
    assert float(fc.lower[0]) == pytest.approx(t.ppf(0.05), abs=0.05 * scale)
    assert float(fc.upper[0]) == pytest.approx(t.ppf(0.95), abs=0.05 * scale)
    mle = inference.fit(AutoRegressive(2), y).forecast(5, prob=0.9)
    assert ((fc.upper - fc.lower) > (mle.upper - mle.lower)).all()


# -- the conjugate posterior ----------------------------------------------------------------
def test_conjugate_posterior_is_prior_times_likelihood(y):
    """log NIG posterior density - (log prior + log likelihood) is the same constant at random
    parameter values (densities in terms of sigma)."""
    model = inference.fit(AutoRegressive(2), y, "exact").model
    post = model.posterior(y)
    gaps = []
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        theta = {
            "const": 14 + 3 * torch.randn((), generator=gen, dtype=torch.float64),
            "phi": torch.tensor([1.39, -0.69], dtype=torch.float64)
            + 0.05 * torch.randn(2, generator=gen, dtype=torch.float64),
            "sigma": 16 + torch.rand((), generator=gen, dtype=torch.float64),
        }
        m = model.point().set_params(theta)
        joint = float(m.log_prior() + m.log_prob(y).sum())
        beta = torch.cat([theta["const"][None], theta["phi"]])
        s2 = theta["sigma"] ** 2
        cov = s2 * torch.cholesky_inverse(torch.linalg.cholesky(post.precision))
        log_post = (
            scipy.stats.multivariate_normal(post.b.numpy(), cov.numpy()).logpdf(beta.numpy())
            + scipy.stats.invgamma(float(post.a), scale=float(post.c)).logpdf(float(s2))
            + math.log(2 * float(theta["sigma"]))
        )
        gaps.append(log_post - joint)
    assert np.ptp(gaps) < 1e-8


def test_exact_draws_posterior_predictive_and_map(y):
    f = inference.fit(AutoRegressive(2), y, "exact", num_samples=20000)
    draws = {k: v.flatten(0, 1) for k, v in f.draws.items()}
    for k in ("const", "phi", "sigma"):  # the mean of exact draws is the posterior mean
        se = draws[k].std(0) / math.sqrt(20000)
        assert float(((draws[k].mean(0) - f.params[k]).abs() / se).max()) < 5
    # Student t predictive = log mean_s N(x_t | past, theta_s) (Monte Carlo over the draws)
    ll = f.pointwise_log_likelihood(y[:40]).flatten(0, 1)
    mc = torch.logsumexp(ll, 0) - math.log(ll.shape[0])
    torch.testing.assert_close(f.log_density(y[:40]), mc, atol=0.01, rtol=0)
    closed = inference.fit(AutoRegressive(2), y, "map")
    grad = inference.fit(AutoRegressive(2), y, "map", solver="lbfgs")
    assert closed.info["solver"] == "closed form"
    for k in ("const", "phi", "sigma"):
        torch.testing.assert_close(grad.params[k], closed.params[k], rtol=1e-4, atol=0)
    # weak default priors: posterior means of const and phi within 0.05 sd of the MLE
    mle = inference.fit(AutoRegressive(2), y).params
    for k in ("const", "phi"):
        assert float(((f.params[k] - mle[k]).abs() / draws[k].std(0)).max()) < 0.05


def exact_reference(y):
    f = inference.fit(AutoRegressive(2), y, "exact", num_samples=20000)
    draws = {k: v.flatten(0, 1) for k, v in f.draws.items()}
    return f.params, {k: v.std(0) for k, v in draws.items()}


@pytest.mark.slow
def test_nuts_matches_the_exact_posterior(y):
    """2 chains x (500 warm-up + 500 draws): r_hat <= 1.01, bulk ESS >= 400, every posterior
    mean within 0.2 posterior sd of the exact conjugate posterior under the same prior."""
    mean, sd = exact_reference(y)
    f = inference.fit(
        AutoRegressive(2), y, "nuts", num_chains=2, num_samples=500, warmup_steps=500, seed=0
    )
    summary = az.summary(f.to_arviz(), kind="diagnostics")
    assert summary["r_hat"].max() <= 1.01
    assert summary["ess_bulk"].min() >= 400
    for k in ("const", "phi", "sigma"):
        assert float(((f.params[k] - mean[k]).abs() / sd[k]).max()) < 0.2, k
    assert f.info["divergences"] == 0


@pytest.mark.slow
def test_svi_multivariate_normal_matches_the_exact_posterior(y):
    mean, sd = exact_reference(y)
    f = inference.fit(AutoRegressive(2), y, "svi", guide="multivariate_normal", steps=1000, seed=0)
    for k in ("const", "phi", "sigma"):
        assert float(((f.params[k] - mean[k]).abs() / sd[k]).max()) < 0.5, k
        draw_sd = f.draws[k].flatten(0, 1).std(0)
        assert float((draw_sd / sd[k] - 1).abs().max()) < 0.2, k


# -- reporting, sampling, saving ------------------------------------------------------------
def test_report_arviz_sample_and_save(y, tmp_path):
    f = inference.fit(AutoRegressive(2), y, "exact", num_samples=500)
    idata = f.to_arviz()
    assert idata.log_likelihood["x"].shape == (2, 250, len(y) - 2)  # two chains (issue 16)
    loo = az.loo(idata)
    assert math.isfinite(loo.elpd_loo)
    s = f.sample(50, seed=0)
    assert s.shape == (50,) and torch.isfinite(s).all()
    f.save(tmp_path / "ar.pt")
    g = inference.load(tmp_path / "ar.pt")
    torch.testing.assert_close(g.log_density(y), f.log_density(y))
    m = inference.fit(AutoRegressive(2, likelihood="exact"), y)
    m.save(tmp_path / "ar_mle.pt")
    torch.testing.assert_close(
        inference.load(tmp_path / "ar_mle.pt").log_density(y), m.log_density(y)
    )
    assert m.report(y).n == len(y) and m.model.num_dims == 1


# -- linear-Gaussian autoregression over dimensions -----------------------------------------
def test_linear_gaussian_order_d_minus_1_is_the_full_covariance_gaussian():
    """D = 5: the MLE log-likelihood of the autoregression over dimensions equals that of a
    full-covariance Gaussian (sample mean, covariance divided by N), computed by scipy."""
    gen = torch.Generator().manual_seed(3)
    A = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    x = torch.randn(400, 5, generator=gen, dtype=torch.float64) @ A.T + torch.arange(5.0)
    f = inference.fit(LinearGaussian(5), x)
    assert f.model.num_parameters == 5 * 8 // 2
    cov = np.cov(x.numpy(), rowvar=False, bias=True)
    ref = scipy.stats.multivariate_normal(x.numpy().mean(0), cov).logpdf(x.numpy()).sum()
    assert float(f.model.log_prob(x).sum()) == pytest.approx(ref, rel=1e-10)


# -- the potential NUTS and SVI run on --------------------------------------------------------
@pytest.mark.parametrize(
    "make, data",
    [
        (lambda: AutoRegressive(2), "sunspots"),
        (lambda: AutoRegressive(3, stationary=True, likelihood="exact"), "sunspots"),
        (lambda: Independent(3, "normal"), "normal"),
        (lambda: Markov(6, order=2), "bits"),
    ],
    ids=["ar", "ar-stationary-exact", "independent-normal", "markov"],
)
def test_whitened_potential_equals_pyros_trace_potential(y, make, data):
    """`inference.laplace.Whitened` evaluates the log joint by the model's vectorised path and
    its prior hook; Pyro's `initialize_model` computes it from a trace of the `forward` program
    of the Bayesian copy. Same numbers at random unconstrained points, and the whitening is the
    inverse Hessian at the mode."""
    gen = torch.Generator().manual_seed(0)
    x = {
        "sunspots": y,
        "normal": torch.randn(50, 3, generator=gen, dtype=torch.float64) + 2,
        "bits": torch.randint(0, 2, (80, 6), generator=gen),
    }[data]
    program = Program(make())
    x = program.validate(x)
    program = program.init_from_data(x)
    program.discover(x)
    init, _ = initial_values(program, x)
    w = Whitened(program, x, init)
    bayes = program.bayesian()
    _, pyro_potential, transforms, _ = initialize_model(
        lambda: bayes(x=x), init_strategy=init_to_value(values=init)
    )
    for _ in range(3):
        u = w.mu + 0.3 * torch.randn(w.dim, generator=gen, dtype=torch.float64)
        theirs = pyro_potential(w.unflatten(u))
        assert float(w.potential_u(u)) == pytest.approx(float(theirs), rel=1e-10, abs=1e-8)
    hess = torch.autograd.functional.hessian(w.potential_u, w.mu)
    torch.testing.assert_close(
        w.L @ w.L.T @ hess, torch.eye(w.dim, dtype=torch.float64), atol=1e-6, rtol=0
    )
