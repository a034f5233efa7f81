"""The shared inference layer: gradient fits agree with closed forms, SVI and NUTS agree with
the exact posterior, and every fit reports, samples, converts to ArviZ and saves the same way."""

import math
import warnings

import arviz as az
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroSample

import inference
from ppl_models import FullJoint, Independent, LinearGaussian, Markov


def train_nats(f, x):
    return float(-f.log_density(x).mean())


@pytest.mark.parametrize(
    "make",
    [
        lambda: Independent(64),
        lambda: Markov(64, order=1),
        lambda: Markov(64, order=2),
        lambda: Markov(64, order=8),
    ],
    ids=["independent", "markov1", "markov2", "markov8"],
)
def test_gradient_mle_reaches_the_closed_form(digits, make):
    closed = inference.fit(make(), digits.train, "mle")
    grad = inference.fit(make(), digits.train, "mle", solver="lbfgs", max_epochs=300)
    assert grad.info["solver"] == "lbfgs" and closed.info["solver"] == "closed form"
    gap = train_nats(grad, digits.train) - train_nats(closed, digits.train)
    assert -1e-9 < gap < 1e-3


def test_adam_mle_reaches_the_closed_form(digits):
    closed = inference.fit(Independent(64), digits.train, "mle")
    adam = inference.fit(
        Independent(64),
        digits.train,
        "mle",
        solver="adam",
        lr=0.05,
        batch_size=200,
        max_epochs=400,
        patience=400,
    )
    gap = train_nats(adam, digits.train) - train_nats(closed, digits.train)
    assert 0 <= gap < 1e-2


def test_gradient_map_equals_the_closed_form_map(digits):
    """MAP with a Beta(2, 3) prior: closed form (k + 1) / (N + 3); L-BFGS on the log joint."""

    def make():
        m = Independent(64)
        m.probs = PyroSample(
            dist.Beta(
                torch.full((64,), 2.0, dtype=torch.float64),
                torch.full((64,), 3.0, dtype=torch.float64),
            ).to_event(1)
        )
        return m

    k, n = digits.train.sum(0).double(), len(digits.train)
    closed = inference.fit(make(), digits.train, "map")
    torch.testing.assert_close(closed.params["probs"], (k + 1) / (n + 3))
    grad = inference.fit(make(), digits.train, "map", solver="lbfgs")
    torch.testing.assert_close(grad.params["probs"], (k + 1) / (n + 3), atol=1e-6, rtol=1e-5)


def test_linear_gaussian_gradient_mle_matches_least_squares():
    x = torch.randn(300, 4, dtype=torch.float64) @ torch.randn(4, 4, dtype=torch.float64)
    closed = inference.fit(LinearGaussian(4), x)
    grad = inference.fit(LinearGaussian(4), x, solver="lbfgs", max_epochs=200)
    assert abs(train_nats(grad, x) - train_nats(closed, x)) < 1e-6


def beta_posterior(digits):
    k, n = digits.train.sum(0).double(), len(digits.train)
    a, b = k + 1, n - k + 1
    return a / (a + b), (a * b / ((a + b) ** 2 * (a + b + 1))).sqrt()


@pytest.mark.slow
def test_nuts_matches_the_exact_beta_posterior(digits):
    """seed 0, 2 chains of 500 warm-up + 1,000 draws: every posterior mean within 0.2
    posterior sd of the exact Beta(k + 1, N - k + 1) mean; sds within 20%. (At 400 + 400 the
    sd of a pixel never on, Beta(1, 1,298), moved by up to 27% between seeds: its logit has
    an exponential tail; at 1,000 draws seeds 0-3 give 5-8%.)"""
    mean, sd = beta_posterior(digits)
    f = inference.fit(
        Independent(64), digits.train, "nuts", num_samples=1000, warmup_steps=500, seed=0
    )
    assert float(((f.params["probs"] - mean).abs() / sd).max()) < 0.2
    draw_sd = f.draws["probs"].flatten(0, 1).std(0)
    assert float((draw_sd / sd - 1).abs().max()) < 0.2
    assert f.info["divergences"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("guide", ["normal", "multivariate_normal"])
def test_svi_matches_the_exact_beta_posterior(digits, guide):
    """seed 0: every posterior mean within 0.5 posterior sd of the exact Beta mean."""
    mean, sd = beta_posterior(digits)
    f = inference.fit(Independent(64), digits.train, "svi", guide=guide, steps=1500, seed=0)
    assert float(((f.params["probs"] - mean).abs() / sd).max()) < 0.5


def test_svi_delta_guide_is_the_map(digits):
    f = inference.fit(Independent(64), digits.train, "svi", guide="delta", steps=1500, lr=0.05)
    k, n = digits.train.sum(0).double(), len(digits.train)
    interior = (k > 0) & (k < n)
    torch.testing.assert_close(f.params["probs"][interior], (k / n)[interior], atol=2e-3, rtol=0)


def test_svi_and_nuts_run_on_markov(digits):
    x = digits.train[:300, :16]
    exact = inference.fit(Markov(16, order=2), x, "exact")
    for method, opts in [
        ("svi", {"steps": 300}),
        ("nuts", {"num_samples": 60, "warmup_steps": 60}),
    ]:
        f = inference.fit(Markov(16, order=2), x, method, **opts)
        assert f.draws["probs"].shape[-2:] == (1 + 2 + 4 * 14, 2)
        # posterior predictive density close to the exact one on the training data
        assert abs(train_nats(f, x) - train_nats(exact, x)) < 0.3


def test_exact_draws_follow_the_posterior(digits):
    f = inference.fit(Markov(64, order=1), digits.train, "exact", num_samples=4000)
    draws = f.draws["probs"].flatten(0, 1)  # exact draws come as 2 chains (issue 16)
    assert f.draws["probs"].shape == (2, 2000, 127, 2)
    conc = f.posterior.concentration["probs"]
    sd = (conc[..., 0] * conc[..., 1] / (conc.sum(-1) ** 2 * (conc.sum(-1) + 1))).sqrt()
    z = (draws[..., 0].mean(0) - f.params["probs"][..., 0]) / (sd / math.sqrt(4000))
    assert float(z.abs().max()) < 5


def test_full_joint_exact_draws_and_predictive(digits):
    """Aggregated Dirichlet draws: the mean of probs_seen matches (c + alpha) / (N + alpha K^D)
    and the pointwise log-likelihood of the training data is log probs_seen[config]."""
    f = inference.fit(FullJoint(64, sparse=True), digits.train, "exact", num_samples=3000)
    seen = f.draws["probs_seen"].flatten(0, 1)
    counts = f.posterior.table.counts
    expected = (counts + 1) / (len(digits.train) + 2.0**64)
    torch.testing.assert_close(seen.mean(0), expected, rtol=0.2, atol=0)
    assert float(f.draws["probs_other"].min()) > 1 - 1e-12
    ll = f.pointwise_log_likelihood()
    assert ll.shape == (2, 1500, len(digits.train)) and torch.isfinite(ll).all()
    # an unseen configuration takes an exact share of the 'other' mass: mean theta = alpha/total
    unseen = 1 - digits.test[:1]
    lu = f.pointwise_log_likelihood(unseen)[..., 0]
    assert abs(float(lu.exp().mean()) / math.exp(-math.log(1297 + 2.0**64)) - 1) < 0.1


def test_fit_reports_the_same_numbers_for_every_model(digits):
    for model in [Independent(64), Markov(64, order=2), FullJoint(64, sparse=True)]:
        f = inference.fit(model, digits.train, "exact")
        r = f.report(digits.test)
        lp = f.log_density(digits.test)
        assert r.n == 250 and r.num_parameters == model.num_parameters
        assert r.nats == pytest.approx(float(-lp.mean()))
        assert r.bits_per_dim == pytest.approx(r.nats / (64 * math.log(2)))
        assert r.fit_seconds > 0


def test_fit_does_not_touch_the_users_model_or_global_rng(digits):
    m = Markov(64, order=1)
    before = m.probs.detach().clone()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    inference.fit(m, digits.train, "svi", steps=20)
    torch.testing.assert_close(torch.rand(3), expected_next)
    torch.testing.assert_close(m.probs.detach(), before)


def test_seed_makes_fits_reproducible(digits):
    a = inference.fit(Independent(64), digits.train, "svi", steps=50, seed=7)
    b = inference.fit(Independent(64), digits.train, "svi", steps=50, seed=7)
    c = inference.fit(Independent(64), digits.train, "svi", steps=50, seed=8)
    torch.testing.assert_close(a.draws["probs"], b.draws["probs"])
    assert not torch.equal(a.draws["probs"], c.draws["probs"])


def test_two_models_with_the_same_parameter_names_never_share_values(digits):
    """Pyro's global param store would give both models the site name 'probs'."""
    a = inference.fit(Independent(64), digits.train, "mle")
    b = inference.fit(Independent(64), 1 - digits.train, "mle")
    torch.testing.assert_close(a.model.probs + b.model.probs, torch.ones(64, dtype=torch.float64))
    a.model(digits.train), b.model(digits.train)  # running the programs syncs nothing
    torch.testing.assert_close(a.model.probs + b.model.probs, torch.ones(64, dtype=torch.float64))


def test_to_arviz_supports_loo_and_compare(digits):
    x = digits.train[:400]
    fits = {
        "independent": inference.fit(Independent(64), x, "exact", num_samples=500),
        "markov2": inference.fit(Markov(64, order=2), x, "exact", num_samples=500),
    }
    idatas = {k: f.to_arviz() for k, f in fits.items()}
    for idata in idatas.values():
        assert {"posterior", "log_likelihood", "observed_data"} <= set(idata.groups())
        assert idata.log_likelihood["x"].shape == (2, 250, 400)  # two chains (issue 16)
        assert idata.observed_data["x"].shape == (400, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare(idatas)
        loo = az.loo(idatas["independent"])
    # LOO's elpd is close to the exact leave-one-out predictive, computed by refitting
    exact_loo = 0.0
    for i in range(0, 400, 40):  # 10 of them, scaled
        keep = torch.ones(400, dtype=torch.bool)
        keep[i] = False
        f = inference.fit(Independent(64), x[keep], "exact")
        exact_loo += float(f.log_density(x[i : i + 1]))
    assert loo.elpd_loo / 400 == pytest.approx(exact_loo / 10, abs=1.0)
    assert table.index[0] == "markov2"


def test_nuts_sample_stats_in_arviz(digits):
    f = inference.fit(
        Independent(8),
        digits.train[:, 20:28],
        "nuts",
        num_samples=200,
        warmup_steps=100,
        num_chains=2,
    )
    idata = f.to_arviz()
    assert idata.sample_stats["diverging"].shape == (2, 200)
    assert idata.posterior["probs"].shape == (2, 200, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = az.summary(idata)
    assert summary["r_hat"].max() < 1.1


@pytest.mark.parametrize(
    "method, opts",
    [("mle", {}), ("exact", {"num_samples": 20}), ("svi", {"steps": 30, "num_samples": 20})],
)
def test_save_and_load_round_trip(tmp_path, digits, method, opts):
    for model in [Markov(64, order=2), FullJoint(64, sparse=True)]:
        if method == "svi" and isinstance(model, FullJoint):
            continue
        f = inference.fit(model, digits.train, method, **opts)
        path = tmp_path / f"{method}.pt"
        f.save(path)
        g = inference.load(path)
        torch.testing.assert_close(g.log_density(digits.test), f.log_density(digits.test))
        assert g.method == method and g.fit_seconds == f.fit_seconds
        for k in f.draws:
            torch.testing.assert_close(g.draws[k], f.draws[k])


def test_adam_keeps_the_best_parameters_and_stops_early(digits):
    f = inference.fit(
        Markov(64, order=8),
        digits.train,
        "mle",
        solver="adam",
        lr=0.1,
        valid=digits.valid,
        max_epochs=60,
        patience=5,
    )
    curve = f.info["valid_curve"]
    assert f.info["valid_nats"] == min(curve)
    assert float(-f.log_density(digits.valid).mean()) == pytest.approx(min(curve))
    assert "early stopping" in f.info["stop"]


def test_nan_loss_stops_with_a_warning_and_keeps_the_best(digits, monkeypatch):
    model = Independent(64)
    calls = {"n": 0}
    original = Independent._log_prob

    def flaky(self, x):
        calls["n"] += 1
        out = original(self, x)
        return out * math.nan if calls["n"] > 40 else out

    monkeypatch.setattr(Independent, "_log_prob", flaky)
    with pytest.warns(RuntimeWarning, match="loss became nan"):
        f = inference.fit(
            model, digits.train, "mle", solver="adam", lr=0.05, batch_size=100, max_epochs=10
        )
    monkeypatch.setattr(Independent, "_log_prob", original)
    assert torch.isfinite(f.model.probs).all()
    assert f.info["epochs"] >= 1


def test_posterior_predictive_samples_of_bayesian_fits(digits):
    f = inference.fit(Independent(64), digits.train, "svi", steps=200, num_samples=50)
    x = f.sample(5000, seed=0)
    assert x.shape == (5000, 64)
    assert float((x.mean(0) - digits.train.double().mean(0)).abs().max()) < 0.05
