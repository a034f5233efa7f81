"""Gaussians on constant dims and probabilities on the boundary (issue 11): a clear error at
fit time for a scale of 0; a probability of exactly 0, reported as such, for every model."""

import math

import pytest
import torch

import inference
from ppl_models import FullJoint, Independent, LinearGaussian, Markov

CONSTANT = [
    (
        "Independent normal",
        lambda x: inference.fit(Independent(64, "normal"), x),
        ["Independent(family='normal')", "dims 0, 8, 16", "standard deviation 0", "x[:, keep]"],
    ),
    (
        "LinearGaussian",
        lambda x: inference.fit(LinearGaussian(64), x),
        ["LinearGaussian", "dims 0, 8, 16", "residual standard deviation", "noise"],
    ),
]


@pytest.mark.parametrize("case", CONSTANT, ids=[c[0] for c in CONSTANT])
def test_gaussians_on_constant_dims(case, digits):
    _, call, words = case
    with pytest.raises(ValueError) as err:
        call(digits.train.double())
    for w in words:
        assert w in str(err.value), f"{w!r} not in {err.value}"


BOUNDARY = [
    ("Independent", lambda: Independent(64)),
    ("Independent categorical", lambda: Independent(64, "categorical", 2)),
    ("Markov order 1", lambda: Markov(64, order=1)),
    ("FullJoint", lambda: FullJoint(64, sparse=True)),
]


@pytest.mark.parametrize("case", BOUNDARY, ids=[c[0] for c in BOUNDARY])
def test_a_never_seen_value_has_probability_exactly_zero(case, digits):
    f = inference.fit(case[1](), digits.train, "mle")
    never = int((digits.train.sum(0) == 0).nonzero()[0])
    x = digits.train[:3].clone()  # seen images: finite under every model, the full joint too
    x[0, never] = 1
    lp = f.log_density(x)
    assert torch.isneginf(lp[0]) and torch.isfinite(lp[1:]).all()
    assert torch.isneginf(f.model.log_prob(x)[0])
    r = f.report(x)
    assert r.num_zero_prob == 1 and math.isinf(r.nats)
    for v in f.params.values():
        assert float(v.min()) == 0.0 or v.numel() == 0  # exactly 0, never 2.2e-308
