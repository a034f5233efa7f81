"""The programs users write next (issue 25): masks, a change point summed out, soft
constraints (pyro.factor), deterministic sites, a data plate over the last values of a series,
compare tables that never fail whole. References: Pyro's own traces, numpy/scipy optima and
densities."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from scipy import optimize, stats
from scipy.special import gammaln, logsumexp

import inference
from inference.evaluation import arviz_generations as gen
from ppl_models import AutoRegressive, datasets
from ppl_models.example_programs import EIGHT_SIGMA, EIGHT_Y, eight_schools_pooled

f64 = torch.float64


# -- obs_mask -----------------------------------------------------------------------------------
def ar1_obs_mask(y, mask):
    c = pyro.sample("c", dist.Normal(0.0, 10.0))
    phi = pyro.sample("phi", dist.Uniform(-1.0, 1.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(10.0))
    prev = y[0]
    for t in range(1, len(y)):
        prev = pyro.sample(f"y_{t}", dist.Normal(c + phi * prev, sigma), obs=y[t], obs_mask=mask[t])
    return prev


def test_obs_mask_leaves_the_masked_values_out_as_pyro_does():
    """An AR(1) with 10% of its values missing (placeholders 0), Pyro's obs=y, obs_mask=m:
    the per-value log density has one entry per observed value and sums to Pyro's own trace
    of the observed sites at the fit's values (the masked placeholders used to enter it)."""
    g = torch.Generator().manual_seed(1)
    T = 40
    y = torch.zeros(T, dtype=f64)
    for t in range(1, T):
        y[t] = 8.0 + 0.6 * y[t - 1] + 2.0 * torch.randn((), generator=g, dtype=f64)
    mask = torch.rand(T, generator=g) > 0.1
    mask[0] = True
    y = torch.where(mask, y, torch.zeros((), dtype=f64))
    f = inference.fit(
        ar1_obs_mask, y, "map", data_arg="y", given={"mask": mask}, data_plate=None, max_epochs=5
    )
    lp = f.log_density(y)
    tr = poutine.trace(poutine.condition(ar1_obs_mask, data=dict(f.params))).get_trace(y, mask)
    tr.compute_log_prob()
    theirs = sum(float(s["log_prob_sum"]) for k, s in tr.nodes.items() if k.endswith("_observed"))
    assert lp.shape == (int(mask[1:].sum()),)
    assert float(lp.sum()) == pytest.approx(theirs, rel=1e-10)


# -- a change point summed out ---------------------------------------------------------------------
COUNTS = [4, 5, 4, 0, 1, 4, 3, 4, 0, 6, 3, 3, 4, 0, 2, 6, 3, 3, 5, 4, 5, 3, 1, 4, 4, 1, 5, 5, 3]
COUNTS += [4, 2, 5, 2, 2, 3, 4, 2, 1, 3, 2, 1, 1, 1, 1, 3, 0, 0, 1, 0, 1, 1, 0, 0, 3, 1, 0, 3]
COUNTS += [2, 2, 0, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 2, 1, 0, 0, 0, 1, 1, 0, 2, 3, 3, 1, 2, 1, 1]
COUNTS += [1, 1, 2, 4, 2, 0, 0, 0, 1, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 1]
DISASTERS = torch.tensor(COUNTS, dtype=f64)  # coal-mining disasters, 1851-1961 (2 missing)
YEARS = torch.arange(len(COUNTS), dtype=f64)


CHANGE_POINT = {"data_arg": "disasters", "given": {"years": YEARS}, "data_plate": "years"}


def change_point(years, disasters=None):
    early = pyro.sample("early_rate", dist.Exponential(1.0))
    late = pyro.sample("late_rate", dist.Exponential(1.0))
    s = pyro.sample("switchpoint", dist.Categorical(logits=torch.zeros(len(years))))
    rate = torch.where(years < years[s], early, late)
    with pyro.plate("years", len(years)):
        return pyro.sample("obs", dist.Poisson(rate), obs=disasters)


def exact_change_point_mle():
    d, n = DISASTERS.numpy(), len(COUNTS)

    def nll(log_rates):
        e, late = np.exp(log_rates)
        per = [
            (d * np.log(np.where(np.arange(n) < s, e, late))).sum()
            - np.where(np.arange(n) < s, e, late).sum()
            - gammaln(d + 1).sum()
            for s in range(n)
        ]
        return -(logsumexp(per) - np.log(n))

    best = optimize.minimize(nll, [1.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-10})
    return -best.fun


@pytest.mark.slow
def test_change_point_mle_with_the_default_options_reaches_the_optimum():
    """The switchpoint (a discrete latent outside the data plate) summed out: the per-year
    terms are log p(y_t | y_<t) and sum to the exact marginal; the default solver (Adam, then
    L-BFGS from where Adam stalls) within 1e-3 of numpy's optimum."""
    f = inference.fit(change_point, DISASTERS, "mle", progress_bar=False, **CHANGE_POINT)
    lp = f.log_density(DISASTERS)
    assert lp.shape == (len(COUNTS),)
    assert float(lp.sum()) == pytest.approx(exact_change_point_mle(), abs=1e-3)
    assert f.info["gradient"] < 1e-3


@pytest.mark.slow
def test_the_change_points_posterior_is_the_exact_gamma_poisson_marginal():
    """NUTS on the rates with the switchpoint summed out, then the switchpoint drawn from its
    conditional posterior at each draw (infer_discrete): its distribution over 1,000 draws is
    the exact marginal posterior (rates ~ Exponential(1) = Gamma(1, 1) integrated in closed
    form) within total variation 0.05; it reaches the ArviZ posterior."""
    f = inference.fit(
        change_point, DISASTERS, "nuts", num_samples=500, warmup_steps=300, **CHANGE_POINT
    )
    s = f.discrete["switchpoint"].flatten().numpy()
    y, n = DISASTERS.numpy(), len(COUNTS)
    log_post = np.array(
        [
            gammaln(1 + y[:k].sum())
            - (1 + y[:k].sum()) * np.log(1 + k)
            + gammaln(1 + y[k:].sum())
            - (1 + y[k:].sum()) * np.log(1 + n - k)
            for k in range(n)
        ]
    )
    exact = np.exp(log_post - logsumexp(log_post))
    empirical = np.bincount(s, minlength=n) / len(s)
    assert 0.5 * np.abs(empirical - exact).sum() < 0.05
    post = gen.groups(f.to_arviz())["posterior"]
    assert post["switchpoint"].shape == (2, 500)


# -- pyro.factor ---------------------------------------------------------------------------------
GROUP = torch.arange(30) % 3
Y_GROUPS = torch.randn(30, generator=torch.Generator().manual_seed(0), dtype=f64) + GROUP


def soft_sum_to_zero(group, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    a = pyro.sample("a", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    pyro.factor("sum_to_zero", dist.Normal(0.0, 0.01).log_prob(a.sum()))
    with pyro.plate("data", len(group)):
        return pyro.sample("obs", dist.Normal(mu + a[group], 1.0), obs=y)


def test_a_factor_enters_the_joint_density_not_the_per_datum_likelihood():
    f = inference.fit(soft_sum_to_zero, Y_GROUPS, "map", data_arg="y", given={"group": GROUP})
    v = {k: t.numpy() for k, t in f.params.items()}
    ll = stats.norm(v["mu"] + v["a"][GROUP.numpy()], 1.0).logpdf(Y_GROUPS.numpy())
    lp = f.log_density(Y_GROUPS)
    assert lp.shape == (30,)
    np.testing.assert_allclose(lp.numpy(), ll, rtol=1e-10)
    p = f.program
    joint = float(p.log_joint(p.validate(Y_GROUPS), p.values))
    hand = (
        ll.sum()
        + stats.norm(0, 5).logpdf(v["mu"])
        + stats.norm.logpdf(v["a"]).sum()
        + stats.norm(0, 0.01).logpdf(v["a"].sum())
    )
    assert joint == pytest.approx(hand, rel=1e-10)
    assert abs(v["a"].sum()) < 1e-3  # the constraint holds at the MAP


# -- deterministic sites ------------------------------------------------------------------------
def schools_theta(J, sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0, 5))
    tau = pyro.sample("tau", dist.HalfCauchy(5))
    with pyro.plate("J", J):
        eta = pyro.sample("eta", dist.Normal(0, 1))
        theta = pyro.deterministic("theta", mu + tau * eta)
        return pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def test_deterministic_sites_reach_the_posterior():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = inference.fit(
            schools_theta,
            EIGHT_Y,
            "svi",
            given={"J": 8, "sigma": EIGHT_SIGMA},
            data_arg="y",
            data_plate="J",
            steps=200,
            num_samples=40,
        )
    d = f.draws
    theta = d["mu"][..., None] + d["tau"][..., None] * d["eta"]
    torch.testing.assert_close(f.deterministic["theta"], theta, rtol=1e-12, atol=1e-12)
    post = gen.groups(f.to_arviz())["posterior"]
    assert post["theta"].dims == ("chain", "draw", "J")
    np.testing.assert_allclose(post["theta"].values, theta.numpy(), rtol=1e-12)


# -- a data plate over the last values of a series ----------------------------------------------
def ar2_student_t(y):
    c = pyro.sample("c", dist.Normal(0.0, 100.0))
    phi = pyro.sample("phi", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(100.0))
    nu = pyro.sample("nu", dist.Gamma(2.0, 0.1))
    with pyro.plate("time", len(y) - 2):
        mean = c + phi[0] * y[1:-1] + phi[1] * y[:-2]
        return pyro.sample("obs", dist.StudentT(nu, mean, sigma), obs=y[2:])


@pytest.mark.slow
def test_a_plate_over_the_last_values_is_a_conditional_likelihood_beside_the_builtin():
    """The built-in AR(2) rewritten with Student-t noise over pyro.plate("time", len(y) - 2):
    the first two values are context; its log density at fixed values is scipy's over the
    307 modelled steps, and compare ranks it beside the built-in without repeating data_arg
    (PSIS-LOO on the common steps, and leave-future-out, which refits it)."""
    y = datasets.load("sunspots").train.double()
    opts = {"num_samples": 150, "warmup_steps": 150, "progress_bar": False, "seed": 0}
    t = inference.fit(ar2_student_t, y, "nuts", data_arg="y", data_plate="time", **opts)
    assert not t.program.exchangeable and t.program.roles.context == 2
    v = {k: x.numpy() for k, x in t.params.items()}
    yy = y.numpy()
    ref = stats.t(v["nu"], v["c"] + v["phi"][0] * yy[1:-1] + v["phi"][1] * yy[:-2], v["sigma"])
    np.testing.assert_allclose(
        t.program.log_prob(t.program.validate(y), t.program.values).numpy(),
        ref.logpdf(yy[2:]),
        rtol=1e-10,
    )
    assert 3 < v["nu"] < 15  # heavy tails (scipy's MLE: nu 4.8)
    # the MLE with the default options: scipy's optimum of the same conditional likelihood
    mle = inference.fit(ar2_student_t, y, "mle", data_arg="y", data_plate="time")

    def nll(q):
        c, p1, p2, log_s, log_nu = q
        mean = c + p1 * yy[1:-1] + p2 * yy[:-2]
        return -stats.t(np.exp(log_nu), mean, np.exp(log_s)).logpdf(yy[2:]).sum()

    best = optimize.minimize(nll, [12.0, 1.4, -0.7, 2.5, 1.6], method="BFGS")
    ours = float(mle.program.log_prob(mle.program.validate(y), mle.program.values).sum())
    assert ours == pytest.approx(-best.fun, abs=1e-3)
    assert float(mle.params["nu"]) == pytest.approx(np.exp(best.x[4]), rel=1e-3)
    builtin = inference.fit(AutoRegressive(2), y, "nuts", **opts)
    table = inference.compare({"AR(2)": builtin, "Student-t": t}, criterion="loo")
    assert (table["flag"] == "").all() and table.loc["Student-t", "rank"] == 0
    assert table["n"].tolist() == [307, 307]


# -- compare never fails whole --------------------------------------------------------------------
def test_compare_flags_a_fit_it_cannot_score_and_ranks_the_rest():
    """An MLE at a boundary has no Laplace approximation: its row says why, the others rank."""
    x = datasets.load("digits").train[:100, :8]
    from ppl_models import Independent

    boundary = inference.fit(Independent(8), x, "mle")  # a pixel never on: probability 0
    good = inference.fit(Independent(8), x, "exact", num_samples=200)
    table = inference.compare({"mle": boundary, "exact": good})
    assert table.loc["exact", "rank"] == 0 and table.loc["exact", "flag"] == ""
    assert (
        table.loc["mle", "flag"].startswith("not ranked:")
        and "boundary" in table.loc["mle", "flag"]
    )
    assert math.isnan(table.loc["mle", "elpd_loo"])


def test_data_plate_none_means_one_series():
    f = inference.fit(
        eight_schools_pooled,
        EIGHT_Y,
        "map",
        data_arg="y",
        given={"J": 8, "sigma": EIGHT_SIGMA},
        data_plate=None,
    )
    assert not f.program.exchangeable and f.log_density(EIGHT_Y).shape == (8,)


def test_svi_takes_jit_compile_as_nuts_does(monkeypatch):
    """SVI's potential is traced where that is proven equal (AR(2)), eager on request, and not
    traced automatically where one eager evaluation is slow (the bound set to 0 s here)."""
    import inference.laplace

    x = datasets.load("sunspots").train
    options = {"steps": 50, "num_samples": 40}
    eager = inference.fit(AutoRegressive(2), x, "svi", jit_compile=False, **options)
    auto = inference.fit(AutoRegressive(2), x, "svi", **options)
    assert eager.info["potential"] == "eager"
    assert auto.info["potential"].startswith("jit-compiled")
    torch.testing.assert_close(eager.draws["phi"], auto.draws["phi"], rtol=1e-6, atol=1e-6)
    monkeypatch.setattr(inference.laplace, "AUTO_TRACE_SECONDS", 0.0)
    slow = inference.fit(AutoRegressive(2), x, "svi", **options)
    assert "one evaluation takes" in slow.info["potential"]


def stochastic_volatility(T, y=None):
    sigma = pyro.sample("sigma", dist.HalfNormal(0.2))
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    innov = pyro.sample("innov", dist.Normal(0.0, 1.0).expand([T]).to_event(1))
    h = mu + torch.cumsum(sigma * innov, -1)
    with pyro.plate("data", T):
        return pyro.sample("y", dist.Normal(0.0, torch.exp(h / 2)), obs=y)


def test_sampling_with_a_new_size_draws_the_resized_latents_from_their_prior():
    """A latent path of T steps fitted on T = 120: new series of T = 50 draw their path from
    its prior (the fit's 120-step path cannot be reused), the parameters from the posterior."""
    y = torch.randn(120, generator=torch.Generator().manual_seed(0), dtype=f64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = inference.fit(
            stochastic_volatility,
            y,
            "svi",
            data_arg="y",
            given={"T": 120},
            steps=50,
            num_samples=20,
        )
    assert f.sample(3).shape == (3, 120)
    new = f.sample(3, given={"T": 50}, seed=0)
    assert new.shape == (3, 50) and torch.isfinite(new).all()


# -- subsampled data plates --------------------------------------------------------------------
def poisson_glmm(group, y=None, subsample_size=None):
    b0 = pyro.sample("b0", dist.Normal(0.0, 5.0))
    s = pyro.sample("s", dist.HalfNormal(1.0))
    with pyro.plate("groups", 20):
        u = pyro.sample("u", dist.Normal(0.0, s))
    with pyro.plate("data", len(group), subsample_size=subsample_size) as idx:
        rate = torch.exp(b0 + u[group[idx]])
        return pyro.sample("obs", dist.Poisson(rate), obs=None if y is None else y[idx])


def test_a_subsampled_data_plate_runs_whole_and_minibatches_by_batch_size():
    """Pyro's minibatching idiom, pyro.plate("data", N, subsample_size=500): every method runs
    the plate whole (the same MAP and log density as the program without subsample_size, to
    1e-12), and minibatch SVI (batch_size=500) gives the same draws as for that program."""
    g = torch.Generator().manual_seed(0)
    group = torch.randint(20, (3000,), generator=g)
    y = torch.poisson(torch.exp(1.0 + 0.5 * torch.randn(20, generator=g, dtype=f64)[group]))
    fits = {}
    for size in (None, 500):
        given = {"group": group, "subsample_size": size}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits[size] = (
                inference.fit(poisson_glmm, y, "map", data_arg="y", given=given),
                inference.fit(
                    poisson_glmm,
                    y,
                    "svi",
                    data_arg="y",
                    given=given,
                    batch_size=500,
                    steps=100,
                    num_samples=40,
                ),
            )
    (map_a, svi_a), (map_b, svi_b) = fits[None], fits[500]
    assert float(map_b.log_density(y).sum()) == pytest.approx(
        float(map_a.log_density(y).sum()), rel=1e-12
    )
    assert map_b.log_density(y).shape == (3000,)
    torch.testing.assert_close(svi_b.draws["u"], svi_a.draws["u"], rtol=1e-10, atol=1e-10)
