"""Sampler trouble is said, not hidden (issue 11): divergences and poor mixing warn with what
to try; NUTS runs 2 chains by default so r_hat means something."""

import warnings

import arviz as az
import pyro
import pyro.distributions as dist
import pytest
import torch

import inference
from ppl_models import Independent

f64 = torch.float64
Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], dtype=f64)
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], dtype=f64)


def eight_schools(x=None, num_samples=None):
    """The centred eight schools: a funnel between tau and theta, NUTS's classic trouble."""
    n = 8 if x is None else len(x)
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=f64), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(torch.full((), 5.0, dtype=f64)))
    with pyro.plate("schools", 8, dim=-1):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
    with pyro.plate("data", n, dim=-1):
        return pyro.sample("x", dist.Normal(theta, SIGMA), obs=x)


def funnel(x=None, num_samples=None):
    """Neal's funnel: v ~ N(0, 3), z_i ~ N(0, exp(v / 2)); the data do not inform it, so the
    posterior is the funnel itself, whose neck NUTS cannot follow without diverging."""
    n = len(x) if x is not None else num_samples
    v = pyro.sample("v", dist.Normal(torch.zeros((), dtype=f64), 3.0))
    with pyro.plate("dims", 9):
        pyro.sample("z", dist.Normal(torch.zeros((), dtype=f64), torch.exp(v / 2)))
    with pyro.plate("data", n):
        return pyro.sample("x", dist.Normal(torch.zeros((), dtype=f64), 1.0), obs=x)


def test_divergences_warn_with_what_to_try():
    with pytest.warns(
        RuntimeWarning,
        match=r"(?s)NUTS draws diverged.*target_accept_prob=0.95"
        r".*reparameterised",
    ):
        # a low target acceptance: adaptation picks large steps, which the neck cannot take
        f = inference.fit(
            funnel,
            Y / 10,
            "nuts",
            num_samples=100,
            warmup_steps=100,
            max_tree_depth=5,
            target_accept_prob=0.25,
            seed=0,
        )
    assert f.info["divergences"] > 0
    assert int(f.sample_stats["diverging"].sum()) == f.info["divergences"]


def test_a_funnel_that_does_not_move_says_so():
    """The centred eight schools from its degenerate MAP (tau -> 0) used to freeze both chains
    (r_hat 1e16); the chains now start from the priors, and poor mixing is still reported."""
    with pytest.warns(RuntimeWarning, match="r_hat"):
        f = inference.fit(
            eight_schools, Y, "nuts", num_samples=100, warmup_steps=100, max_tree_depth=4, seed=0
        )
    assert float(f.draws["tau"].std()) > 0.1
    assert "no posterior mode" in f.info["init"]


def test_poor_mixing_warns_with_r_hat_and_ess(digits):
    with pytest.warns(RuntimeWarning, match="r_hat.*ESS"):
        inference.fit(
            Independent(8),
            digits.train[:200, 20:28],
            "nuts",
            num_samples=15,
            warmup_steps=5,
            seed=0,
        )


def test_two_chains_by_default_and_no_noise_when_all_is_well(digits):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither our warnings nor Pyro's available_cpu one
        f = inference.fit(
            Independent(8),
            digits.train[:300, 20:28],
            "nuts",
            num_samples=1000,  # 300 draws: max r_hat over 8 values above 1.01 in most seeds
            warmup_steps=300,
            seed=0,
        )
        summary = az.summary(f.to_arviz())
    assert f.draws["probs"].shape[:2] == (2, 1000)
    assert not summary["r_hat"].isna().any() and summary["r_hat"].max() < 1.02
