"""Pyro's everyday programs through every method (issue 15): covariates through `given=`, a
data argument other than x, sequential plates, mixed dtypes, honest flags
(tests/test_hierarchical.py: continuous local latents).

The programs (ppl_models/example_programs.py) are written as in Pyro's examples and tutorials
and ArviZ's
docs; the references are independent of the library: numpy least squares and counts, scipy's
densities, a numpy forward algorithm, a closed-form Gaussian posterior, a long NumPyro run,
and plain Pyro NUTS on the same program."""

import argparse
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy.special import logsumexp, xlog1py, xlogy
from scipy.stats import norm

import inference
from ppl_models.example_programs import (
    EIGHT_SIGMA,
    BayesianRegression,
    gmm,
    hmm_model_0,
    hmm_model_1,
    known_noise_regression,
    mixed_dtypes,
)

f64 = torch.float64
SCHOOLS = {"given": {"J": 8, "sigma": EIGHT_SIGMA}, "data_arg": "y", "data_plate": "J"}


# -- the Bayesian regression tutorial's PyroModule -------------------------------------------------
@pytest.fixture(scope="module")
def regression():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 3, generator=g, dtype=f64)
    y = (
        X @ torch.tensor([1.0, -2.0, 0.5], dtype=f64)
        + 0.3
        + 0.5 * torch.randn(60, generator=g, dtype=f64)
    )
    X_new = torch.randn(7, 3, generator=g, dtype=f64)
    y_new = X_new @ torch.tensor([1.0, -2.0, 0.5], dtype=f64) + 0.3
    return X, y, X_new, y_new


def test_regression_mle_is_least_squares_and_scores_new_covariates(regression):
    X, y, X_new, y_new = regression
    f = inference.fit(BayesianRegression(3, 1), y, "mle", given={"x": X}, data_arg="y")
    A = np.c_[X.numpy(), np.ones(len(X))]
    coef, rss = np.linalg.lstsq(A, y.numpy(), rcond=None)[:2]
    np.testing.assert_allclose(f.params["linear.weight"].numpy().ravel(), coef[:3], atol=1e-6)
    np.testing.assert_allclose(f.params["linear.bias"].numpy(), coef[3:], atol=1e-6)
    sigma = math.sqrt(float(rss[0]) / len(y))
    assert float(f.params["sigma"]) == pytest.approx(sigma, abs=1e-6)
    lp = f.log_density(y_new, given={"x": X_new}).numpy()
    ref = norm.logpdf(y_new.numpy(), X_new.numpy() @ coef[:3] + coef[3], sigma)
    np.testing.assert_allclose(lp, ref, rtol=0, atol=1e-8)
    assert f.sample(5, given={"x": X_new}).shape == (5, len(X_new))
    assert f.sample(4).shape == (4, len(X))  # the training covariates by default
    r = f.report(y_new, given={"x": X_new})
    assert r.n == 7 and r.num_parameters == 5 and r.flags == ""


def test_regression_minibatch_adam_slices_the_covariates(regression):
    X, y, _, _ = regression
    f = inference.fit(
        BayesianRegression(3, 1),
        y,
        "mle",
        given={"x": X},
        data_arg="y",
        solver="adam",
        batch_size=10,
        lr=0.05,
        max_epochs=300,
        patience=50,
    )
    coef = np.linalg.lstsq(np.c_[X.numpy(), np.ones(len(X))], y.numpy(), rcond=None)[0]
    np.testing.assert_allclose(f.params["linear.weight"].numpy().ravel(), coef[:3], atol=0.05)


def test_regression_svi_on_the_pyromodule(regression):
    X, y, X_new, _ = regression
    f = inference.fit(
        BayesianRegression(3, 1), y, "svi", given={"x": X}, data_arg="y", steps=500, num_samples=200
    )
    coef = np.linalg.lstsq(np.c_[X.numpy(), np.ones(len(X))], y.numpy(), rcond=None)[0]
    np.testing.assert_allclose(f.params["linear.weight"].numpy().ravel(), coef[:3], atol=0.1)
    assert f.sample(5, given={"x": X_new}).shape == (5, 7)
    idata = f.to_arviz(posterior_predictive=True)
    assert idata.posterior_predictive["obs"].shape == (2, 100, 60)


def gaussian_posterior(X, y, sigma=0.5, prior_sd=2.0):
    """The exact posterior of w under known noise: N(m, S), S = (X'X / s^2 + I / p^2)^-1."""
    X, y = X.numpy(), y.numpy()
    S = np.linalg.inv(X.T @ X / sigma**2 + np.eye(X.shape[1]) / prior_sd**2)
    return S @ X.T @ y / sigma**2, np.sqrt(np.diag(S))


@pytest.mark.slow
def test_known_noise_regression_nuts_and_svi_match_the_closed_form(regression):
    X, y, _, _ = regression
    mean, sd = gaussian_posterior(X, y)
    nuts = inference.fit(
        known_noise_regression,
        y,
        "nuts",
        given={"X": X},
        data_arg="y",
        num_samples=500,
        warmup_steps=300,
        seed=0,
    )
    assert np.abs((nuts.params["w"].numpy() - mean) / sd).max() < 0.2
    svi = inference.fit(
        known_noise_regression, y, "svi", given={"X": X}, data_arg="y", steps=1000, seed=0
    )
    assert np.abs((svi.params["w"].numpy() - mean) / sd).max() < 0.5


# -- HMMs: a sequential plate (model_0) and a vectorised one (model_1) -----------------------------
@pytest.fixture(scope="module")
def songs():
    """Six binary sequences over 3 tones, lengths 4..9, from a 2-state HMM."""
    rng = np.random.default_rng(0)
    px, py = np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([[0.9, 0.1, 0.2], [0.1, 0.8, 0.6]])
    lengths = np.array([9, 4, 7, 9, 5, 6])
    seqs = np.zeros((6, 9, 3))
    for i, n in enumerate(lengths):
        x = 0
        for t in range(n):
            x = rng.choice(2, p=px[x])
            seqs[i, t] = rng.random(3) < py[x]
    return (
        torch.tensor(seqs, dtype=f64),
        torch.tensor(lengths),
        argparse.Namespace(hidden_dim=2, jit=False),
    )


def forward_algorithm(seqs, lengths, px, py) -> np.ndarray:
    """log p(sequence) of each sequence by the forward recursion, in numpy (x_0 ~ px[0])."""
    out = []
    for s, n in zip(seqs, lengths):
        emit = xlogy(s[:n, None, :], py).sum(-1) + xlog1py(1 - s[:n, None, :], -py).sum(-1)
        alpha = np.log(px[0]) + emit[0]
        for t in range(1, n):
            alpha = logsumexp(alpha[:, None] + np.log(px), axis=0) + emit[t]
        out.append(logsumexp(alpha))
    return np.array(out)


@pytest.mark.parametrize("program", [hmm_model_0, hmm_model_1], ids=["model_0", "model_1"])
def test_hmm_mle_log_density_is_the_forward_algorithm(songs, program):
    seqs, lengths, args = songs
    f = inference.fit(
        program,
        seqs,
        "mle",
        given={"lengths": lengths, "args": args},
        data_arg="sequences",
        data_plate="sequences",
        solver="lbfgs",
        max_epochs=3,
    )
    ref = forward_algorithm(
        seqs.numpy(), lengths.numpy(), f.params["probs_x"].numpy(), f.params["probs_y"].numpy()
    )
    lp = f.log_density(seqs).numpy()
    assert lp.shape == (6,)
    np.testing.assert_allclose(lp, ref, rtol=0, atol=1e-6)
    assert f.report(seqs).num_parameters == 2 + 6


def test_a_mixture_posterior_is_searched_from_several_starts(monkeypatch):
    """NUTS on a mixture (the GMM tutorial, its assignments summed out) with every parameter
    random: no MAP; the Laplace search keeps the lowest of 5 L-BFGS ends from the program's
    start values, and that is the lowest mode scipy's L-BFGS reaches from 20 random starts
    in the unconstrained space on the eager potential (to 1e-6 nats). Beyond MAX_DENSE values
    (no Laplace search) the MAP is the start, as before."""
    from scipy import optimize

    made = []

    class Recorded(inference.nuts.Whitened):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    def no_map(program, x):
        raise AssertionError("the MAP ran")

    monkeypatch.setattr(inference.nuts, "Whitened", Recorded)
    data = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0], dtype=torch.float64)
    short = {"seed": 0, "data_arg": "data", "engine": "pyro"}
    with monkeypatch.context() as m:
        m.setattr(inference.start, "_mode", no_map)
        f = inference.fit(gmm, data, "nuts", num_samples=30, warmup_steps=30, **short)
    assert f.info["init"].startswith("the lowest mode of 5 searches")
    (w,) = made
    # beyond MAX_DENSE values (here 2 for the test) no Laplace search runs: the MAP it is
    monkeypatch.setattr(inference.nuts, "MAX_DENSE", 2)
    big = inference.fit(gmm, data, "nuts", num_samples=10, warmup_steps=10, **short)
    assert big.info["init"].startswith("MAP")

    def value_and_grad(u):
        t = torch.tensor(u, dtype=torch.float64, requires_grad=True)
        value = w.potential_u(t)
        (grad,) = torch.autograd.grad(value, t)
        return float(value), grad.numpy()

    rng = np.random.default_rng(0)
    lows = []
    for _ in range(20):
        start = rng.normal(0.0, 2.0, w.dim)
        end = optimize.minimize(value_and_grad, start, jac=True, method="L-BFGS-B")
        if np.isfinite(end.fun):
            lows.append(end.fun)
    found = float(w.potential_u(w.mu))
    assert w.found_mode
    assert found <= min(lows) + 1e-6


def test_a_sequential_plate_without_enumeration(songs):
    def seq(x=None, num_samples=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=f64), 10.0))
        for i in pyro.plate("data", len(x) if x is not None else num_samples):
            pyro.sample(
                f"x_{i}",
                dist.Normal(mu, 1.0).expand([2]).to_event(1),
                obs=None if x is None else x[i],
            )

    x = torch.tensor([[0.5, 1.0], [2.0, 1.5], [-0.5, 0.0]], dtype=f64)
    f = inference.fit(seq, x, "mle")
    assert float(f.params["mu"]) == pytest.approx(float(x.mean()), abs=1e-8)
    np.testing.assert_allclose(
        f.log_density(x).numpy(), norm.logpdf(x.numpy(), float(x.mean()), 1.0).sum(1), atol=1e-10
    )


# -- dtypes ----------------------------------------------------------------------------------------
def test_a_float32_prior_beside_float64_data_fits_by_every_method(digits):
    x = digits.train[:300, :2].double()
    counts = x.mean(0).numpy()
    f = inference.fit(mixed_dtypes, x, "mle")
    assert f.params["p0"].dtype == f64
    np.testing.assert_allclose([float(f.params["p0"]), float(f.params["p1"])], counts, atol=1e-6)
    for method, options in [
        ("map", {}),
        ("svi", {"steps": 200, "num_samples": 50}),
        ("nuts", {"num_samples": 50, "warmup_steps": 50}),
    ]:
        g = inference.fit(mixed_dtypes, x, method, **options)
        assert abs(float(g.params["p0"]) - counts[0]) < 0.05, method
        assert np.isfinite(g.report(x).nats)


# -- bad input -------------------------------------------------------------------------------------
def test_a_given_key_the_program_does_not_take(regression):
    X, y, _, _ = regression
    with pytest.raises(ValueError, match=r"given names 'X'.*does not take; it takes x, y"):
        inference.fit(BayesianRegression(3, 1), y, "mle", given={"X": X}, data_arg="y")


def test_a_data_arg_the_program_does_not_have(regression):
    X, y, _, _ = regression
    with pytest.raises(
        ValueError,
        match=r"no argument 'x' to receive the data \(pass "
        r"data_arg='y'\?\)",
    ):
        inference.fit(known_noise_regression, y, "mle", given={"X": X})
    with pytest.raises(ValueError, match="no argument 'target'"):
        inference.fit(known_noise_regression, y, "mle", given={"X": X}, data_arg="target")


def test_covariates_of_another_length_than_the_data(regression):
    X, y, _, _ = regression
    with pytest.raises(
        ValueError,
        match=r"given\['x'\] has 60 rows but the data \(y\) have "
        "50 rows",
    ):
        inference.fit(BayesianRegression(3, 1), y[:50], "mle", given={"x": X}, data_arg="y")


class TooLikely(dist.Poisson):
    """A Poisson whose log_prob is off by +3 nats: a broken discrete likelihood."""

    def log_prob(self, value):
        return super().log_prob(value) + 3.0


def poisson(x=None, num_samples=None, family=dist.Poisson):
    rate = pyro.sample("rate", dist.Gamma(torch.tensor(2.0, dtype=f64), 1.0))
    with pyro.plate("data", len(x) if x is not None else num_samples):
        return pyro.sample("x", family(rate), obs=x)


def test_a_discrete_likelihood_above_zero_is_flagged_and_ranked_last():
    x = torch.tensor([0.0, 1.0, 2.0, 1.0, 0.0, 3.0] * 3, dtype=f64)
    good = inference.fit(poisson, x, "nuts", num_samples=200, warmup_steps=200)
    bad = inference.fit(
        poisson, x, "nuts", num_samples=200, warmup_steps=200, given={"family": TooLikely}
    )
    r = bad.report(x)
    assert "discrete likelihood above 0" in r.flags and good.report(x).flags == ""
    table = inference.compare({"broken": bad, "poisson": good})
    assert list(table.index) == ["poisson", "broken"]  # above 0 would win: it is ranked last
    assert "discrete likelihood above 0" in table.loc["broken", "flag"]
    assert table.loc["poisson", "flag"] == "" and table.loc["broken", "weight"] == 0


def test_chains_that_did_not_mix_are_flagged():
    x = torch.tensor([0.0, 1.0, 2.0], dtype=f64)
    f = inference.fit(poisson, x, "nuts", num_samples=20, warmup_steps=20)
    f._r_hat = 2.2  # as a stuck run reports it
    assert "chains did not mix (max r_hat 2.2 > 1.1)" in f.report(x).flags


class PooledModule(pyro.nn.PyroModule):
    """PyroSample attributes read first inside the data plate: Pyro makes them per datum."""

    def __init__(self):
        super().__init__()
        self.loc = pyro.nn.PyroSample(dist.Normal(torch.tensor(0.0, dtype=f64), 1.0))

    def forward(self, x=None, num_samples=None):
        with pyro.plate("data", len(x) if x is not None else num_samples):
            return pyro.sample("x", dist.Normal(self.loc, 1.0), obs=x)


def test_a_pyrosample_read_inside_the_plate_is_named_as_a_local_latent():
    x = torch.tensor([0.1, 0.4, -0.2], dtype=f64)
    with pytest.raises(
        ValueError,
        match=r"'loc' are continuous latent variables inside the "
        r"data plate 'data'.*method='nuts'",
    ):
        inference.fit(PooledModule(), x, "mle")
    f = inference.fit(PooledModule(), x, "svi", steps=100, num_samples=20)
    assert f.draws["loc"].shape == (2, 10, 3)


def test_regressions_on_different_covariates_compare_on_held_out_data(regression):
    X, y, X_new, y_new = regression
    full = inference.fit(known_noise_regression, y, "mle", given={"X": X}, data_arg="y")
    two = inference.fit(known_noise_regression, y, "mle", given={"X": X[:, :2]}, data_arg="y")
    table = inference.compare(
        {"all": full, "two": two}, y_new, given={"all": {"X": X_new}, "two": {"X": X_new[:, :2]}}
    )
    assert list(table.index) == ["all", "two"]
    for label, f, cols in (("all", full, X_new), ("two", two, X_new[:, :2])):
        ref = norm.logpdf(y_new.numpy(), cols.numpy() @ f.params["w"].numpy(), 0.5).sum()
        assert float(table.loc[label, "elpd_loo"]) == pytest.approx(ref, abs=1e-8)


def test_given_arguments_are_saved_with_the_fit(regression, songs, tmp_path):
    X, y, X_new, y_new = regression
    f = inference.fit(BayesianRegression(3, 1), y, "mle", given={"x": X}, data_arg="y")
    f.save(tmp_path / "regression.pt")
    g = inference.load(tmp_path / "regression.pt", model=BayesianRegression(3, 1))
    torch.testing.assert_close(
        g.log_density(y_new, given={"x": X_new}),
        f.log_density(y_new, given={"x": X_new}),
        rtol=0,
        atol=1e-12,
    )
    seqs, lengths, args = songs
    h = inference.fit(
        hmm_model_1,
        seqs,
        "mle",
        given={"lengths": lengths, "args": args},
        data_arg="sequences",
        data_plate="sequences",
        max_epochs=1,
    )
    h.save(tmp_path / "hmm.pt")
    with pytest.raises(
        ValueError,
        match=r"given argument\(s\) 'args' that a saved file cannot "
        r"hold.*given=\{'args': \.\.\.\}",
    ):
        inference.load(tmp_path / "hmm.pt", model=hmm_model_1)
    k = inference.load(tmp_path / "hmm.pt", model=hmm_model_1, given={"args": args})
    torch.testing.assert_close(k.log_density(seqs), h.log_density(seqs), rtol=0, atol=1e-12)
