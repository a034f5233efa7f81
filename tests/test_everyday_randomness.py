"""Randomness (issue 11): without a seed, fresh draws from the global RNG on every call; with
one, reproducible draws that leave the global RNG alone."""

import pytest
import torch

import inference
from ppl_models import NADE, AutoRegressive, Independent, Markov, datasets

FITS = [
    ("Independent exact", lambda d: inference.fit(Independent(64), d, "exact")),
    ("Markov mle", lambda d: inference.fit(Markov(64, order=2), d, "mle")),
    (
        "Independent svi",
        lambda d: inference.fit(Independent(64), d, "svi", steps=20, num_samples=20),
    ),
    ("NADE map", lambda d: inference.fit(NADE(64, 5), d, "map", max_epochs=1)),
    (
        "AR(2) mle",
        lambda d: inference.fit(AutoRegressive(2), datasets.load("sunspots").train, "mle"),
    ),
]


@pytest.mark.parametrize("case", FITS, ids=[c[0] for c in FITS])
def test_samples_without_a_seed_are_fresh_and_with_one_reproducible(case, digits):
    f = case[1](digits.train[:300])
    a, b = f.sample(4), f.sample(4)
    assert not torch.equal(a, b)  # the global RNG advances
    torch.manual_seed(11)
    c = f.sample(4)
    torch.manual_seed(11)
    assert torch.equal(f.sample(4), c)  # ... and follows torch.manual_seed
    state = torch.get_rng_state()
    d, e = f.sample(4, seed=3), f.sample(4, seed=3)
    assert torch.equal(d, e)
    assert torch.equal(torch.get_rng_state(), state)  # a seeded call leaves it alone


def test_a_fit_without_a_seed(digits):
    a = inference.fit(Independent(64), digits.train, "svi", steps=20, num_samples=10, seed=None)
    b = inference.fit(Independent(64), digits.train, "svi", steps=20, num_samples=10, seed=None)
    assert not torch.equal(a.draws["probs"], b.draws["probs"])
    assert a.info["seed"] is None
    c = inference.fit(Independent(64), digits.train, "svi", steps=20, num_samples=10, seed=5)
    d = inference.fit(Independent(64), digits.train, "svi", steps=20, num_samples=10, seed=5)
    assert torch.equal(c.draws["probs"], d.draws["probs"])
    a.to_arviz()  # a missing seed is still a valid attribute


@pytest.mark.parametrize("seed", ["7", 1.5, True], ids=["string", "float", "bool"])
def test_a_seed_that_is_not_an_integer(seed, digits):
    with pytest.raises(ValueError, match="seed must be an integer"):
        inference.fit(Independent(64), digits.train, seed=seed)
    f = inference.fit(Independent(64), digits.train)
    with pytest.raises(ValueError, match="seed must be an integer"):
        f.sample(3, seed=seed)
