"""Discrete models: exact normalisation, parameter counts, the Pyro program equals the fast
log-density, and samples follow the model."""

import itertools
import math

import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.nn import PyroSample
from scipy import stats

import inference
from ppl_models import FullJoint, Independent, Markov


def all_configs(D, K):
    return torch.tensor(list(itertools.product(range(K), repeat=D)))


def random_data(D, K, n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    # correlated data: a random walk over categories, so Markov tables differ from row to row
    steps = torch.randint(0, 2, (n, D), generator=g)
    return steps.cumsum(1) % K


MODELS = [
    ("fulljoint-dense", 8, 2, lambda: FullJoint(8)),
    ("fulljoint-sparse", 10, 2, lambda: FullJoint(10, sparse=True)),
    ("fulljoint-k3", 4, 3, lambda: FullJoint(4, 3, alpha=0.5)),
    ("fulljoint-sparse-k3", 4, 3, lambda: FullJoint(4, 3, sparse=True)),
    ("independent", 10, 2, lambda: Independent(10)),
    ("independent-categorical", 4, 3, lambda: Independent(4, "categorical", 3)),
    ("markov1", 10, 2, lambda: Markov(10, order=1)),
    ("markov2", 9, 2, lambda: Markov(9, order=2)),
    ("markov3", 8, 2, lambda: Markov(8, order=3)),
    ("markov2-k3", 4, 3, lambda: Markov(4, order=2, num_categories=3)),
    ("markov3-k3", 4, 3, lambda: Markov(4, order=3, num_categories=3)),
]


@pytest.mark.parametrize("method", ["mle", "map", "exact"])
@pytest.mark.parametrize("name, D, K, make", MODELS, ids=[m[0] for m in MODELS])
def test_probabilities_of_all_configurations_sum_to_one(name, D, K, make, method):
    model = make()
    if method == "map" and getattr(model, "alpha", 1.0) < 1:
        pytest.skip("MAP does not exist for alpha < 1 (tested in test_bad_input)")
    f = inference.fit(model, random_data(D, K), method)
    total = f.log_density(all_configs(D, K)).exp().sum()
    assert abs(float(total) - 1.0) < 1e-6


def test_unfitted_sparse_full_joint_is_uniform():
    m = FullJoint(784, sparse=True)
    x = torch.randint(0, 2, (3, 784))
    torch.testing.assert_close(
        m.log_prob(x), torch.full((3,), -784 * math.log(2), dtype=torch.float64)
    )


@pytest.mark.parametrize(
    "model, expected",
    [
        (FullJoint(64, sparse=True), 2**64 - 1),
        (FullJoint(784, sparse=True), 2**784 - 1),
        (FullJoint(3, 256), 256**3 - 1),
        (Independent(64), 64),
        (Independent(3, "categorical", 256), 3 * 255),
        (Independent(63, "normal"), 126),
        (Markov(64, order=1), 127),
        (Markov(64, order=2), 251),
        (Markov(64, order=4), 975),
        (Markov(64, order=8), 14_591),
        (Markov(3, order=1, num_categories=256), 255 + 2 * 256 * 255),
        (Markov(3, order=2, num_categories=256), 256**3 - 1),  # order D - 1 is the full joint
    ],
    ids=str,
)
def test_num_parameters_matches_the_formula(model, expected):
    assert model.num_parameters == expected
    assert isinstance(model.num_parameters, int)


@pytest.mark.parametrize(
    "make",
    [
        lambda: FullJoint(6),
        lambda: Independent(7),
        lambda: Independent(4, "categorical", 5),
        lambda: Markov(7, order=3),
        lambda: Markov(5, 2, 3),
    ],
    ids=["fulljoint", "independent", "categorical", "markov", "markov-k3"],
)
def test_num_parameters_counts_the_unconstrained_coordinates(make):
    """An independent count: the dimension of each parameter's support, i.e. the number of
    coordinates of its bijection to R^n (a simplex of K cells has K - 1)."""
    model = make()
    free = 0
    for value, constraint, _ in model._inits.values():
        free += biject_to(constraint).inverse_shape(value.shape).numel()
    assert free == model.num_parameters


def program_log_likelihood(model, x):
    """Sum of the log-probabilities of the observed sites of the Pyro program `model(x)`."""
    tr = poutine.trace(model).get_trace(x)
    tr.compute_log_prob()
    return sum(
        site["log_prob"].sum()
        for site in tr.nodes.values()
        if site["type"] == "sample" and site["is_observed"]
    )


@pytest.mark.parametrize("name, D, K, make", MODELS, ids=[m[0] for m in MODELS])
def test_pyro_program_equals_vectorised_log_density(name, D, K, make):
    x = random_data(D, K, n=40, seed=1)
    model = make()
    no_map = getattr(model, "alpha", 1) < 1 or "sparse" in name
    f = inference.fit(model, x, "exact" if no_map else "map")
    model = f.model
    expected = program_log_likelihood(model, x)
    torch.testing.assert_close(
        model.log_prob(x).sum(), expected.to(torch.float64), rtol=1e-10, atol=1e-9
    )


def chi_square_against_enumeration(fit, D, K, n=20_000):
    """Pearson chi-square of n samples against the exact probabilities of all K^D
    configurations (cells with expected count < 5 pooled); returns (statistic, dof)."""
    x = fit.sample(n, seed=3).long()
    codes = (x * K ** torch.arange(D - 1, -1, -1)).sum(-1)
    observed = torch.bincount(codes, minlength=K**D).double()
    expected = n * fit.log_density(all_configs(D, K)).exp()
    small = expected < 5
    obs = torch.cat([observed[~small], observed[small].sum()[None]])
    exp = torch.cat([expected[~small], expected[small].sum()[None]])
    keep = exp > 0
    stat = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    return stat, int(keep.sum()) - 1


@pytest.mark.parametrize("method", ["mle", "exact"])
@pytest.mark.parametrize("name, D, K, make", MODELS, ids=[m[0] for m in MODELS])
def test_samples_follow_the_model(name, D, K, make, method):
    """20,000 samples: the Pearson chi-square over all configurations stays below the 0.9999
    quantile of its chi-square distribution (a false alarm once in 10,000 runs)."""
    f = inference.fit(make(), random_data(D, K, n=200, seed=2), method)
    stat, dof = chi_square_against_enumeration(f, D, K)
    assert stat < stats.chi2.ppf(0.9999, dof), (stat, dof)


def test_digit_samples_match_per_pixel_marginals(digits):
    """Markov order 2 on digits: per-pixel frequencies of 20,000 samples against the exact
    marginals from the forward recursion over the (x_(d-1), x_d) state."""
    f = inference.fit(Markov(64, order=2), digits.train, "exact")
    m = f.model
    p = m.probs.detach()  # (R, 2)
    x = f.sample(20_000, seed=0).double()
    # joint over (x_(d-2), x_(d-1)) propagated dim by dim: 4 states
    marg = torch.zeros(64, dtype=torch.float64)
    p0 = p[m.offsets[0]]
    marg[0] = p0[1]
    pair = torch.stack([p0[0] * p[m.offsets[1] + 0], p0[1] * p[m.offsets[1] + 1]])  # [x0, x1]
    marg[1] = pair[:, 1].sum()
    for d in range(2, 64):
        new = torch.zeros(2, 2, dtype=torch.float64)
        for a, b in itertools.product(range(2), range(2)):
            row = m.offsets[d] + b + 2 * a  # x_(d-1) = b least significant
            new[b] += pair[a, b] * p[row]
        pair = new
        marg[d] = pair[:, 1].sum()
    sd = (marg * (1 - marg) / len(x)).sqrt().clamp_min(1e-4)
    z = (x.mean(0) - marg).abs() / sd
    assert float(z.max()) < 5.0


def test_user_prior_changes_the_exact_posterior(digits):
    """Assigning a PyroSample prior is the documented way to change the prior: the exact
    posterior mean becomes (k + 2) / (N + 4) under Beta(2, 2)."""
    m = Independent(64)
    m.probs = PyroSample(
        dist.Beta(
            torch.full((64,), 2.0, dtype=torch.float64), torch.full((64,), 2.0, dtype=torch.float64)
        ).to_event(1)
    )
    f = inference.fit(m, digits.train, "exact")
    k, n = digits.train.sum(0).double(), len(digits.train)
    torch.testing.assert_close(f.params["probs"], (k + 2) / (n + 4))
    mapped = inference.fit(m, digits.train, "map")
    torch.testing.assert_close(mapped.params["probs"], (k + 1) / (n + 2))
