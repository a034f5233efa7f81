"""Bad input gets a clear ValueError at the API boundary that names the problem.

One table for the whole project: each case is (id, a callable that must raise, words the
message must contain). Add new cases to the section of the model they concern.
"""

import math

import numpy as np
import pytest
import torch

import inference
from ppl_models import FullJoint, Independent, Markov, datasets

bits = torch.randint(0, 2, (20, 4))
reals = torch.randn(20, 4)


def nan_data():
    x = bits.double().clone()
    x[3, 2] = math.nan
    return x


def inf_data():
    x = reals.clone()
    x[1, 0] = math.inf
    return x


CASES = [
    # -- data shape and values (discrete models) --------------------------------------------
    ("bernoulli non-binary", lambda: Independent(4).log_prob(bits * 3), ["not binary", "x[", "3"]),
    ("categorical too large", lambda: Markov(4, num_categories=2).log_prob(bits + 1),
     ["outside 0..1", "num_categories=2"]),
    ("categorical negative", lambda: FullJoint(4).log_prob(bits - 1), ["outside 0..1", "-1"]),
    ("float where integers required",
     lambda: Independent(4, "categorical", 3).log_prob(bits.double() + 0.5),
     ["float values where integers are required", "0.5"]),
    ("wrong number of dims", lambda: Markov(5).log_prob(bits), ["4 dimensions", "num_dims=5"]),
    ("one datum without batch dim", lambda: Independent(4).log_prob(bits[0]),
     ["(N, 4)", "x[None]"]),
    ("3-D data", lambda: Independent(4).log_prob(bits[None]), ["shape (N, D)"]),
    ("NaN", lambda: inference.fit(Independent(4), nan_data()), ["NaN", "x[3, 2]"]),
    ("inf", lambda: inference.fit(Independent(4, "normal"), inf_data()), ["inf", "x[1, 0]"]),
    ("empty data", lambda: inference.fit(Independent(4), bits[:0]), ["empty"]),
    ("non-numeric data", lambda: Independent(2).log_prob(np.array([["a", "b"]])), ["numeric"]),
    ("ragged lists", lambda: Independent(2).log_prob([[0, 1], [1]]), ["could not be read"]),
    # -- model construction -----------------------------------------------------------------
    ("order >= num_dims", lambda: Markov(4, order=4), ["order=4", "num_dims=4"]),
    ("dense FullJoint too large", lambda: FullJoint(64),
     ["18,446,744,073,709,551,615", "sparse=True"]),
    ("dense FullJoint just too large", lambda: FullJoint(25), ["33,554,431", "sparse=True"]),
    ("num_dims < 1", lambda: Independent(0), ["num_dims must be >= 1"]),
    ("unknown family", lambda: Independent(3, "poisson"), ["unknown family", "bernoulli"]),
    ("categorical without K", lambda: Independent(3, "categorical"), ["num_categories"]),
    ("alpha <= 0", lambda: FullJoint(3, alpha=0), ["alpha", "positive"]),
    # -- inference --------------------------------------------------------------------------
    ("unknown method", lambda: inference.fit(Independent(4), bits, "bfgs"),
     ["unknown method 'bfgs'", "nuts"]),
    ("unknown guide", lambda: inference.fit(Independent(4), bits, "svi", guide="flow"),
     ["unknown guide 'flow'", "multivariate_normal"]),
    ("option of another method", lambda: inference.fit(Independent(4), bits, "svi",
                                                       warmup_steps=3),
     ["warmup_steps", "method='svi'"]),
    ("unknown solver", lambda: inference.fit(Markov(4), bits, solver="newton"),
     ["unknown solver"]),
    ("exact without conjugate form", lambda: inference.fit(Independent(4, "normal"), reals,
                                                           "exact"),
     ["no conjugate form", "nuts"]),
    ("svi on sparse FullJoint", lambda: inference.fit(FullJoint(4, sparse=True), bits, "svi"),
     ["sparse=True", "exact"]),
    ("MAP with alpha < 1", lambda: inference.fit(FullJoint(4, alpha=0.5), bits, "map"),
     ["MAP does not exist", "exact"]),
    ("valid of another width", lambda: inference.fit(Independent(4), bits, valid=bits[:, :3],
                                                     solver="adam"),
     ["validation data", "3 dimensions"]),
    ("unknown dataset", lambda: datasets.load("mnist"), ["unknown dataset", "digits"]),
    ("load a file that is not a fit", lambda: inference.load(__file__), ["not a saved"]),
    ("sample n < 1", lambda: inference.fit(Independent(4), bits).sample(0), ["n must be >= 1"]),
    # -- AutoRegressive (issue 3) -----------------------------------------------------------
    # -- NADE (issue 4) ---------------------------------------------------------------------
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_names_the_problem(case):
    _, call, words = case
    with pytest.raises(ValueError) as err:
        call()
    message = str(err.value)
    for w in words:
        assert w in message, f"{w!r} not in: {message}"
