"""Reference numbers on the embedded data, reproduced to 1e-3.

The references are the exact Bayesian posterior predictive test NLL, measured independently
with numpy (counts and Beta/Dirichlet(1) smoothing per table row); see issue 2.
"""

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import inference
from ppl_models import FullJoint, Independent, Markov


def exact_nats(model, split):
    return inference.fit(model, split.train, "exact").report(split.test).nats


@pytest.mark.parametrize(
    "model, expected",
    [
        (lambda: FullJoint(64, alpha=1.0, sparse=True), 44.300),
        (lambda: FullJoint(64, alpha=1e-3, sparse=True), 44.038),
        (lambda: Independent(64), 24.992),
        (lambda: Markov(64, order=1), 23.961),
        (lambda: Markov(64, order=2), 23.232),
        (lambda: Markov(64, order=4), 23.002),
        (lambda: Markov(64, order=8), 19.596),
    ],
    ids=[
        "fulljoint-a1",
        "fulljoint-a1e-3",
        "independent",
        "markov1",
        "markov2",
        "markov4",
        "markov8",
    ],
)
def test_digits_reference(digits, model, expected):
    assert exact_nats(model(), digits) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize(
    "model, expected",
    [
        (lambda: FullJoint(3, 256, alpha=1.0), 14.163),
        (lambda: FullJoint(3, 256, alpha=0.01), 11.867),
        (lambda: Independent(3, "categorical", 256), 15.404),
        (lambda: Markov(3, order=1, num_categories=256), 12.722),
    ],
    ids=["fulljoint-a1", "fulljoint-a0.01", "independent", "markov-rgb"],
)
def test_pixels_reference(pixels, model, expected):
    assert exact_nats(model(), pixels) == pytest.approx(expected, abs=1e-3)


def test_digits_split_follows_the_documented_recipe(digits):
    x = (load_digits().data > 7).astype(np.int64)
    perm = np.random.default_rng(0).permutation(1797)
    assert [len(s) for s in digits] == [1297, 250, 250]
    np.testing.assert_array_equal(digits.test.numpy(), x[perm[1547:]])


def test_pixels_split_sizes(pixels):
    assert [len(s) for s in pixels] == [437_248, 0, 109_312]
    assert pixels.train.shape[1] == 3 and int(pixels.train.max()) <= 255


def test_dense_full_joint_holds_one_rgb_pixel(pixels):
    """256^3 cells dense: the MLE is the empirical distribution, checked against np.unique."""
    f = inference.fit(FullJoint(3, 256), pixels.train, "mle")
    rows, counts = np.unique(pixels.train[:5000].numpy(), axis=0, return_counts=True)
    all_rows, all_counts = np.unique(pixels.train.numpy(), axis=0, return_counts=True)
    lookup = {tuple(r): c for r, c in zip(all_rows, all_counts)}
    expected = np.log([lookup[tuple(r)] / len(pixels.train) for r in rows])
    np.testing.assert_allclose(f.log_density(torch.from_numpy(rows)).numpy(), expected, rtol=1e-9)


def test_full_joint_mle_reports_zero_probability_honestly(digits):
    """Test images never seen in training have probability 0 under the MLE: the report says
    infinite NLL and counts them (the count is checked by direct lookup)."""
    r = inference.fit(FullJoint(64, sparse=True), digits.train, "mle").report(digits.test)
    train = {tuple(row) for row in digits.train.tolist()}
    unseen = sum(tuple(row) not in train for row in digits.test.tolist())
    assert r.num_zero_prob == unseen > 200
    assert math.isinf(r.nats) and math.isinf(r.bits_per_dim)
    assert math.isfinite(r.nats_nonzero)
