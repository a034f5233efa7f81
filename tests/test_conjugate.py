"""Local latents conjugate to their one observation, integrated out of NUTS and drawn from
their conditional (`inference.conjugate`). References: the marginal posterior on a grid from
scipy's beta-binomial and negative binomial densities; the detection on programs that read the
latent elsewhere or through another parameter."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from nuts_engines import ENGINES, engine_options
from quadrature import assert_matches
from scipy import optimize
from scipy.special import logsumexp
from scipy.stats import betabinom, halfcauchy, nbinom, norm

import inference
from inference import compound, conjugate
from ppl_models.example_programs import (
    BASEBALL_AT_BATS,
    BASEBALL_HITS,
    EIGHT_SIGMA,
    EIGHT_Y,
    eight_schools,
    partially_pooled,
)
from ppl_models.programs.program import Program

BASEBALL = {"given": {"at_bats": BASEBALL_AT_BATS}, "data_arg": "hits"}
EIGHT = {"given": {"J": 8, "sigma": EIGHT_SIGMA}, "data_arg": "y", "data_plate": "J"}


def baseball_grid():
    """Posterior means and sds of m, log kappa and each player's phi by quadrature of
    p(m, kappa | hits) = prod_i BetaBinomial(hits_i | m kappa, (1 - m) kappa, at_bats_i) x
    Pareto(kappa | 1, 1.5) on a grid of m and u = log(kappa - 1) (Jacobian e^u)."""
    m = np.linspace(0.0005, 0.9995, 400)[:, None]
    u = np.linspace(-6.0, 16.0, 900)[None, :]
    kappa = 1.0 + np.exp(u)
    n, k = BASEBALL_AT_BATS.numpy(), BASEBALL_HITS.numpy()
    a, b = m * kappa, (1 - m) * kappa
    logp = np.log(1.5) - 2.5 * np.log(kappa) + u
    for ni, ki in zip(n, k):
        logp = logp + betabinom.logpmf(ki, ni, a, b)
    w = np.exp(logp - logsumexp(logp))
    out = {}
    for name, v in (("m", m + 0 * u), ("log_kappa", np.log(kappa) + 0 * m)):
        mean = float((w * v).sum())
        out[name] = (mean, float(np.sqrt((w * (v - mean) ** 2).sum())))
    phi = []
    for ni, ki in zip(n, k):
        cm = (a + ki) / (a + b + ni)  # E[phi | m, kappa, hits], and its variance
        cv = cm * (1 - cm) / (a + b + ni + 1)
        mean = float((w * cm).sum())
        phi.append((mean, float(np.sqrt((w * (cv + (cm - mean) ** 2)).sum()))))
    out["phi"] = phi
    return out


@pytest.fixture(scope="module", params=ENGINES)
def baseball(request):
    return inference.fit(
        partially_pooled,
        BASEBALL_HITS,
        "nuts",
        num_samples=500,
        warmup_steps=500,
        seed=0,
        data_plate="num_players",
        **BASEBALL,
        **engine_options(request.param),
    )


def test_baseball_collapsed_matches_quadrature(baseball):
    """m, log kappa and every phi: means within 0.15 posterior sd of the quadrature, sds within
    15% (m and log kappa) and 10% (phi); the 18 phi's drawn per draw, as the program has them."""
    ref = baseball_grid()
    d = {k: v.flatten(0, 1).double() for k, v in baseball.draws.items()}
    got = {"m": d["m"], "log_kappa": d["kappa"].log()}
    for name, (mean, sd) in ((k, ref[k]) for k in ("m", "log_kappa")):
        assert abs(float(got[name].mean()) - mean) < 0.15 * sd, name
        assert float(got[name].std()) == pytest.approx(sd, rel=0.15), name
    for i, (mean, sd) in enumerate(ref["phi"]):
        assert abs(float(d["phi"][:, i].mean()) - mean) < 0.15 * sd, i
        assert float(d["phi"][:, i].std()) == pytest.approx(sd, rel=0.1), i
    assert baseball.draws["phi"].shape == (2, 500, 18)
    assert "phi (a Beta prior, Binomial 'obs') integrated out" in baseball.info["init"]
    assert baseball.info["divergences"] == 0


def poisson_rates(y):
    """lam_i ~ Gamma(2, beta), beta ~ Gamma(2, 1), y_i ~ Poisson(lam_i)."""
    beta = pyro.sample("beta", dist.Gamma(y.new_tensor(2.0), y.new_tensor(1.0)))
    with pyro.plate("data", len(y)):
        lam = pyro.sample("lam", dist.Gamma(y.new_tensor(2.0), beta))
        pyro.sample("y", dist.Poisson(lam), obs=y)


def test_gamma_poisson_collapsed_matches_quadrature():
    """beta and every lam_i against quadrature of p(beta | y) = Gamma(beta | 2, 1) x
    prod_i NegativeBinomial(y_i | 2, beta / (beta + 1)): means within 0.15 sd, sds within 10%."""
    y = torch.tensor([0.0, 3.0, 1.0, 7.0, 2.0, 0.0, 4.0, 12.0, 1.0, 5.0], dtype=torch.float64)
    f = inference.fit(
        poisson_rates, y, "nuts", num_samples=500, warmup_steps=300, seed=0, data_arg="y"
    )
    assert "lam (a Gamma prior, Poisson 'y') integrated out" in f.info["init"]
    beta = np.linspace(1e-4, 15.0, 20001)
    logp = np.log(beta) - beta + nbinom.logpmf(y.numpy()[:, None], 2.0, beta / (beta + 1)).sum(0)
    w = np.exp(logp - logsumexp(logp))
    mean = float((w * beta).sum())
    sd = float(np.sqrt((w * (beta - mean) ** 2).sum()))
    draws = f.draws["beta"].flatten()
    assert abs(float(draws.mean()) - mean) < 0.15 * sd
    assert float(draws.std()) == pytest.approx(sd, rel=0.1)
    lam = f.draws["lam"].flatten(0, 1)
    for i, yi in enumerate(y.numpy()):
        cm = (2.0 + yi) / (beta + 1)  # E[lam_i | beta, y_i], and its variance
        m_i = float((w * cm).sum())
        sd_i = float(np.sqrt((w * (cm / (beta + 1) + (cm - m_i) ** 2)).sum()))
        assert abs(float(lam[:, i].mean()) - m_i) < 0.15 * sd_i, i
        assert float(lam[:, i].std()) == pytest.approx(sd_i, rel=0.1), i


def _coins(read):
    def coins(y):
        m = pyro.sample("m", dist.Beta(y.new_tensor(2.0), y.new_tensor(2.0)))
        with pyro.plate("data", len(y)):
            p = pyro.sample("p", dist.Beta(5 * m, 5 * (1 - m)))
            read(p, y)

    return coins


def _found(read):
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    p = Program(_coins(read), "data", None, "y")
    x = p.validate(y)
    p.discover(x)
    return conjugate.find(p, x, dict(p.values))


def test_only_a_latent_read_once_as_the_parameter_itself_is_integrated():
    """Bernoulli(probs=p) qualifies; Bernoulli(logits=logit p), probs=0.9 p, or p read again
    by a factor do not (sampled as before)."""
    found = _found(lambda p, y: pyro.sample("y", dist.Bernoulli(probs=p), obs=y))
    assert found == [conjugate.Pair("p", "y", "beta-binomial")]
    others = [
        lambda p, y: pyro.sample("y", dist.Bernoulli(logits=torch.logit(p)), obs=y),
        lambda p, y: pyro.sample("y", dist.Bernoulli(probs=0.9 * p), obs=y),
        lambda p, y: (
            pyro.sample("y", dist.Bernoulli(probs=p), obs=y),
            pyro.factor("pull", -p),
        ),
    ]
    for read in others:
        assert _found(read) == []


def eight_schools_centred(J, sigma, y=None):
    """The centred eight schools, theta in the data plate: a funnel between tau and theta
    where theta is sampled."""
    mu = pyro.sample("mu", dist.Normal(sigma.new_tensor(0.0), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(sigma.new_tensor(5.0)))
    with pyro.plate("J", J):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        return pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def test_centred_eight_schools_collapsed_matches_quadrature():
    """theta integrated out: mu, tau and every theta_j against quadrature of p(mu, tau | y) =
    N(mu | 0, 5) HalfCauchy(tau | 5) prod_j N(y_j | mu, sqrt(sigma_j^2 + tau^2)): means within
    0.15 sd, sds within 10%, and no divergence (the funnel is gone)."""
    f = inference.fit(
        eight_schools_centred,
        EIGHT_Y,
        "nuts",
        num_samples=1000,
        warmup_steps=500,
        seed=0,
        **EIGHT,
    )
    assert "theta (a Normal prior, Normal 'y') integrated out" in f.info["init"]
    assert f.info["divergences"] == 0
    y, s = EIGHT_Y.numpy()[:, None, None], EIGHT_SIGMA.numpy()[:, None, None]
    mu = np.linspace(-25.0, 35.0, 600)[:, None]
    tau = np.linspace(1e-4, 60.0, 1200)[None, :]
    logp = norm.logpdf(mu, 0.0, 5.0) + halfcauchy.logpdf(tau, scale=5.0)
    logp = logp + norm.logpdf(y, mu, np.sqrt(s**2 + tau**2)).sum(0)
    w = np.exp(logp - logsumexp(logp))
    d = {k: v.flatten(0, 1).double().numpy() for k, v in f.draws.items()}
    precision = 1 / tau**2 + 1 / s**2
    cm = (mu / tau**2 + y / s**2) / precision  # E[theta_j | mu, tau, y_j], (8, mu, tau)
    refs = [("mu", d["mu"], mu + 0 * tau, 0), ("tau", d["tau"], tau + 0 * mu, 0)]
    refs += [(f"theta{j}", d["theta"][:, j], cm[j], 1 / precision[j]) for j in range(8)]
    assert_matches(w, refs)


def eight_schools_tau_point(J, sigma, y=None):
    """Eight schools with tau a point parameter (empirical Bayes): its MAP is needed."""
    mu = pyro.sample("mu", dist.Normal(sigma.new_tensor(0.0), 5.0))
    tau = pyro.param("tau", sigma.new_tensor(3.0), constraint=dist.constraints.positive)
    with pyro.plate("J", J):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        return pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def test_a_collapsed_posterior_is_searched_from_the_programs_starts(monkeypatch):
    """Every local latent integrated out and every parameter random: no joint MAP (it would
    run tau to 0); the Laplace search of the collapsed posterior starts from the program's
    start values and finds its mode, against scipy's optimum of log N(mu | 0, 5) +
    log HalfCauchy(tau | 5) + log tau + sum_j log N(y_j | mu, sqrt(sigma_j^2 + tau^2)) over
    (mu, log tau) (to 2e-4 of the Laplace sds). A point parameter (tau by pyro.param) still
    needs the MAP."""
    made = []

    class Recorded(conjugate.Collapsed):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    def no_map(program, x):
        raise AssertionError("the joint MAP ran")

    monkeypatch.setattr(inference.nuts.conjugate, "Collapsed", Recorded)
    short = {"num_samples": 30, "warmup_steps": 30, "seed": 0, "engine": "pyro"}
    with monkeypatch.context() as m:
        m.setattr(inference.start, "_mode", no_map)
        f = inference.fit(eight_schools, EIGHT_Y, "nuts", **short, **EIGHT)
    assert f.info["init"].startswith("the program's start values")
    y, s = EIGHT_Y.numpy(), EIGHT_SIGMA.numpy()

    def minus_log_post(v):
        mu, tau = v[0], np.exp(v[1])
        lp = norm.logpdf(mu, 0.0, 5.0) + halfcauchy.logpdf(tau, scale=5.0) + v[1]
        return -(lp + norm.logpdf(y, mu, np.sqrt(s**2 + tau**2)).sum())

    ref = optimize.minimize(minus_log_post, [0.0, 0.0], method="BFGS", options={"gtol": 1e-10})
    (w,) = made
    assert w.found_mode
    # Newton stops at a decrement below 1e-8: within 1e-4 Laplace sds of the mode
    gap = torch.linalg.solve_triangular(w.L, (w.mu - torch.tensor(ref.x))[:, None], upper=False)
    assert float(gap.norm()) < 2e-4
    point = inference.fit(eight_schools_tau_point, EIGHT_Y, "nuts", **short, **EIGHT)
    assert point.info["init"].startswith("joint MAP")


def test_latents_drawn_by_the_traced_program_equal_those_of_pyros_trace(monkeypatch):
    """The conditionals' arguments by the jit-traced program equal one Pyro trace a draw: the
    same seed, the same draws of lam (to 1e-12)."""
    y = torch.tensor([0.0, 3.0, 1.0, 7.0], dtype=torch.float64)
    p = Program(poisson_rates, "data", None, "y")
    x = p.validate(y)
    p.discover(x)
    pairs = conjugate.find(p, x, dict(p.values))
    draws = {"beta": torch.linspace(0.5, 3.0, 12, dtype=torch.float64).reshape(2, 6)}
    torch.manual_seed(0)
    traced = conjugate.draw_latents(p, x, dict(p.values), draws, pairs)
    monkeypatch.setattr(conjugate, "_traced", lambda fn, first, checks: fn)
    torch.manual_seed(0)
    eager = conjugate.draw_latents(p, x, dict(p.values), draws, pairs)
    assert traced["lam"].shape == (2, 6, 4)
    torch.testing.assert_close(traced["lam"], eager["lam"], rtol=1e-12, atol=0.0)


def _schools(read):
    def schools(J, sigma, y=None):
        mu = pyro.sample("mu", dist.Normal(sigma.new_tensor(0.0), 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(sigma.new_tensor(5.0)))
        with pyro.plate("J", J):
            return read(mu, tau, sigma, y)

    p = Program(schools, "J", {"J": 8, "sigma": EIGHT_SIGMA}, "y")
    x = p.validate(EIGHT_Y)
    p.discover(x)
    return conjugate.find(p, x, dict(p.values))


def test_a_normal_read_through_an_affine_loc_is_integrated():
    """loc = mu + tau eta (the non-centred eight schools) qualifies; loc = mu + tau eta^2
    does not; where two latents enter one loc as a product (eta delta), only the first is
    integrated (jointly affine latents: tests/test_gaussian_blocks.py)."""

    def noncentred(mu, tau, sigma, y):
        eta = pyro.sample("eta", dist.Normal(sigma.new_tensor(0.0), 1.0))
        return pyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=y)

    def squared(mu, tau, sigma, y):
        eta = pyro.sample("eta", dist.Normal(sigma.new_tensor(0.0), 1.0))
        return pyro.sample("obs", dist.Normal(mu + tau * eta**2, sigma), obs=y)

    def two(mu, tau, sigma, y):
        eta = pyro.sample("eta", dist.Normal(sigma.new_tensor(0.0), 1.0))
        delta = pyro.sample("delta", dist.Normal(sigma.new_tensor(0.0), 1.0))
        return pyro.sample("obs", dist.Normal(mu + tau * eta * delta, sigma), obs=y)

    assert _schools(noncentred) == [conjugate.Pair("eta", "obs", "normal-normal")]
    assert _schools(squared) == []
    assert _schools(two) == [conjugate.Pair("eta", "obs", "normal-normal")]


def test_compound_densities_hold_at_large_concentrations():
    """The beta-binomial of the baseball data equals scipy's at kappa = 10 and 1,000 (1e-10)
    and tends to its limit, the binomial at m, where lgamma differences cancel (kappa = 1e8,
    1e12, 7.8e15: within 1e-6 nats; lgamma's form is 396 nats off at the last); the
    gamma-Poisson equals scipy's negative binomial, and tends to the Poisson at rate 3 as
    the concentration grows (a = 1e12, rate a / 3)."""
    n, k = BASEBALL_AT_BATS.double(), BASEBALL_HITS.double()
    m = torch.tensor(0.26, dtype=torch.float64)
    binomial = dist.Binomial(n, m.expand(18)).log_prob(k).sum()
    for kappa in (10.0, 1e3, 1e8, 1e12, 7.8e15):
        prior = dist.Beta(m * kappa * torch.ones(18, dtype=torch.float64), (1 - m) * kappa)
        got = compound.compound_log_prob("beta-binomial", prior, dist.Binomial(n, 0.5), k)
        if kappa <= 1e3:
            want = betabinom.logpmf(k.numpy(), n.numpy(), 0.26 * kappa, 0.74 * kappa)
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
        else:
            assert float(got.sum()) == pytest.approx(float(binomial), abs=1e-6)
    y = torch.tensor([0.0, 3.0, 1.0, 7.0], dtype=torch.float64)
    prior = dist.Gamma(torch.full((4,), 2.0, dtype=torch.float64), 0.7)
    got = compound.compound_log_prob("gamma-poisson", prior, dist.Poisson(1.0), y)
    np.testing.assert_allclose(got.numpy(), nbinom.logpmf(y.numpy(), 2.0, 0.7 / 1.7), rtol=1e-10)
    a = torch.full((4,), 1e12, dtype=torch.float64)
    got = compound.compound_log_prob("gamma-poisson", dist.Gamma(a, a / 3), dist.Poisson(1.0), y)
    want = dist.Poisson(torch.tensor(3.0, dtype=torch.float64)).log_prob(y)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_nothing_is_integrated_where_the_rest_differs_from_the_programs_density(monkeypatch):
    """The kept densities are checked against the program's own log joint (less the pair's
    two): a density holding something the trace does not (here, 1 nat more) keeps p sampled."""
    read = lambda p, y: pyro.sample("y", dist.Bernoulli(probs=p), obs=y)  # noqa: E731
    assert _found(read) == [conjugate.Pair("p", "y", "beta-binomial")]
    own = Program.log_joint
    monkeypatch.setattr(Program, "log_joint", lambda self, *a, **k: own(self, *a, **k) + 1.0)
    assert _found(read) == []
