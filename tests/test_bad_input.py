"""Bad input gets a clear ValueError at the API boundary that names the problem.

One table for the whole project: each case is (id, a callable that must raise, words the
message must contain). Add new cases to the section of the model they concern.
"""

import math

import numpy as np
import pytest
import torch

import inference
from ppl_models import AutoRegressive, FullJoint, Independent, Markov, datasets
from ppl_models.models.nade import NADE

_g = torch.Generator().manual_seed(0)
bits = torch.randint(0, 2, (20, 4), generator=_g)
bits[0, 0] = 0
reals = torch.randn(20, 4, generator=_g)


def nan_data():
    x = bits.double().clone()
    x[3, 2] = math.nan
    return x


def series():
    """A short, smooth series of 40 values."""
    return torch.sin(torch.arange(40.0) / 3)


def series_with(bad):
    x = series()
    x[5] = bad
    return x


def inf_data():
    x = reals.clone()
    x[1, 0] = math.inf
    return x


CASES = [
    # -- data shape and values (discrete models) --------------------------------------------
    ("bernoulli non-binary", lambda: Independent(4).log_prob(bits * 3), ["not binary", "x[", "3"]),
    (
        "categorical too large",
        lambda: Markov(4, num_categories=2).log_prob(bits + 1),
        ["outside 0..1", "num_categories=2"],
    ),
    ("categorical negative", lambda: FullJoint(4).log_prob(bits - 1), ["outside 0..1", "-1"]),
    (
        "float where integers required",
        lambda: Independent(4, "categorical", 3).log_prob(bits.double() + 0.5),
        ["float values where integers are required", "0.5"],
    ),
    ("wrong number of dims", lambda: Markov(5).log_prob(bits), ["4 dimensions", "num_dims=5"]),
    (
        "one datum without batch dim",
        lambda: Independent(4).log_prob(bits[0]),
        ["(N, 4)", "x[None]"],
    ),
    ("3-D data", lambda: Independent(4).log_prob(bits[None]), ["shape (N, D)"]),
    ("NaN", lambda: inference.fit(Independent(4), nan_data()), ["NaN", "x[3, 2]"]),
    ("inf", lambda: inference.fit(Independent(4, "normal"), inf_data()), ["inf", "x[1, 0]"]),
    ("empty data", lambda: inference.fit(Independent(4), bits[:0]), ["empty"]),
    ("non-numeric data", lambda: Independent(2).log_prob(np.array([["a", "b"]])), ["numeric"]),
    ("ragged lists", lambda: Independent(2).log_prob([[0, 1], [1]]), ["could not be read"]),
    # -- model construction -----------------------------------------------------------------
    ("order >= num_dims", lambda: Markov(4, order=4), ["order=4", "num_dims=4"]),
    (
        "dense FullJoint too large",
        lambda: FullJoint(64),
        ["18,446,744,073,709,551,615", "sparse=True"],
    ),
    ("dense FullJoint just too large", lambda: FullJoint(25), ["33,554,431", "sparse=True"]),
    ("num_dims < 1", lambda: Independent(0), ["num_dims must be >= 1"]),
    ("unknown family", lambda: Independent(3, "poisson"), ["unknown family", "bernoulli"]),
    ("categorical without K", lambda: Independent(3, "categorical"), ["num_categories"]),
    ("alpha <= 0", lambda: FullJoint(3, alpha=0), ["alpha", "positive"]),
    # -- inference --------------------------------------------------------------------------
    (
        "unknown method",
        lambda: inference.fit(Independent(4), bits, "bfgs"),
        ["unknown method 'bfgs'", "nuts"],
    ),
    (
        "unknown guide",
        lambda: inference.fit(Independent(4), bits, "svi", guide="flow"),
        ["unknown guide 'flow'", "multivariate_normal"],
    ),
    (
        "option of another method",
        lambda: inference.fit(Independent(4), bits, "svi", warmup_steps=3),
        ["warmup_steps", "method='svi'"],
    ),
    ("unknown solver", lambda: inference.fit(Markov(4), bits, solver="newton"), ["unknown solver"]),
    (
        "exact without conjugate form",
        lambda: inference.fit(Independent(4, "normal"), reals, "exact"),
        ["no conjugate form", "nuts"],
    ),
    (
        "svi on sparse FullJoint",
        lambda: inference.fit(FullJoint(4, sparse=True), bits, "svi"),
        ["sparse=True", "exact"],
    ),
    (
        "MAP with alpha < 1",
        lambda: inference.fit(FullJoint(4, alpha=0.5), bits, "map"),
        ["MAP does not exist", "exact"],
    ),
    (
        "valid of another width",
        lambda: inference.fit(Independent(4), bits, valid=bits[:, :3], solver="adam"),
        ["validation data", "3 dimensions"],
    ),
    ("unknown dataset", lambda: datasets.load("mnist"), ["unknown dataset", "digits"]),
    ("load a file that is not a fit", lambda: inference.load(__file__), ["not a saved"]),
    ("sample n < 1", lambda: inference.fit(Independent(4), bits).sample(0), ["n must be >= 1"]),
    # -- AutoRegressive (issue 3) -----------------------------------------------------------
    (
        "AR series shorter than order + 1",
        lambda: AutoRegressive(3).log_prob([1.0, 2.0, 3.0]),
        ["has 3 values", "at least 4", "lower the order"],
    ),
    (
        "AR NaN",
        lambda: inference.fit(AutoRegressive(2), series_with(math.nan)),
        ["NaN", "x[5]", "impute"],
    ),
    ("AR inf", lambda: inference.fit(AutoRegressive(2), series_with(math.inf)), ["inf", "x[5]"]),
    (
        "AR 2-D input",
        lambda: inference.fit(AutoRegressive(2), reals),
        ["one series of shape (T,)", "(20, 4)", "fit each series separately", "x[:, k]"],
    ),
    (
        "AR single column",
        lambda: AutoRegressive(2).log_prob(reals[:, :1]),
        ["shape (20, 1)", "x.reshape(-1)"],
    ),
    ("AR order < 1", lambda: AutoRegressive(0), ["order must be >= 1"]),
    (
        "AR non-numeric",
        lambda: AutoRegressive(1).log_prob(np.array(["a", "b", "c"])),
        ["numeric", "dtype"],
    ),
    (
        "AR unknown likelihood",
        lambda: AutoRegressive(2, likelihood="full"),
        ["unknown likelihood 'full'", "'conditional'", "'exact'"],
    ),
    (
        "AR forecast steps < 1",
        lambda: inference.fit(AutoRegressive(2), series()).forecast(0),
        ["steps must be >= 1"],
    ),
    (
        "AR forecast prob",
        lambda: inference.fit(AutoRegressive(2), series()).forecast(3, 90),
        ["prob", "between 0 and 1"],
    ),
    (
        "AR exact needs the conjugate prior",
        lambda: inference.fit(AutoRegressive(2, stationary=True), series(), "exact"),
        ["method='exact'", "stationary=False", "nuts"],
    ),
    (
        "AR non-stationary phi where stationarity is required",
        lambda: AutoRegressive(2, likelihood="exact").set_params({"phi": torch.tensor([0.5, 0.6])}),
        ["not stationary", "unit circle"],
    ),
    (
        "forecast from a model of rows",
        lambda: inference.fit(Independent(4), bits).forecast(3),
        ["does not forecast", "AutoRegressive"],
    ),
    (
        "select_order criterion",
        lambda: inference.select_order(series(), 3, "hqic"),
        ["unknown criterion 'hqic'", "'aic'"],
    ),
    (
        "lfo min_train too large",
        lambda: inference.lfo(AutoRegressive(1), series(), 40),
        ["min_train=40", "nothing to predict", "min_train < 40"],
    ),
    # -- NADE (issue 4) ---------------------------------------------------------------------
    (
        "NADE non-binary data",
        lambda: NADE(4, 3).log_prob(bits * 3),
        ["not binary", "NADE(output='bernoulli')", "x > threshold"],
    ),
    ("NADE NaN", lambda: inference.fit(NADE(4, 3), nan_data()), ["NaN", "x[3, 2]"]),
    ("NADE inf", lambda: NADE(4, 3, "mog", components=2).log_prob(inf_data()), ["inf", "x[1, 0]"]),
    (
        "NADE wrong number of dims",
        lambda: inference.fit(NADE(5, 3), bits),
        ["4 dimensions", "num_dims=5"],
    ),
    ("NADE hidden < 1", lambda: NADE(4, 0), ["hidden must be >= 1"]),
    ("NADE unknown output", lambda: NADE(4, 3, "poisson"), ["unknown output", "'mog'"]),
    (
        "NADE mog without components",
        lambda: NADE(4, 3, "mog"),
        ["output='mog' needs components", "components=10"],
    ),
    ("NADE components < 1", lambda: NADE(4, 3, "mog", components=0), ["components must be >= 1"]),
    (
        "NADE components for bernoulli",
        lambda: NADE(4, 3, components=2),
        ["components=2 applies to output='mog'"],
    ),
    (
        "NADE order not a permutation",
        lambda: NADE(4, 3, order=[0, 1, 1, 3]),
        ["not a permutation of 0..3", "missing [2]", "repeated [1]"],
    ),
    (
        "NADE order too short",
        lambda: NADE(4, 3, order=[2, 0, 1]),
        ["not a permutation", "3 entries for num_dims=4", "missing [3]"],
    ),
    (
        "NADE order out of range",
        lambda: NADE(3, 3, order=[1, 2, 3]),
        ["outside 0..2: [3]", "missing [0]"],
    ),
    (
        "NADE valid of another width",
        lambda: inference.fit(NADE(4, 3), bits, valid=bits[:, :3]),
        ["validation data", "3 dimensions", "num_dims=4"],
    ),
    (
        "lr_decay above 1",
        lambda: inference.fit(NADE(4, 3), bits, valid=bits, lr_decay=1.5),
        ["lr_decay must be in (0, 1]", "1.5"],
    ),
    (
        "lr_decay with lbfgs",
        lambda: inference.fit(NADE(4, 3), bits, lr_decay=0.9, solver="lbfgs"),
        ["lr_decay apply to solver='adam'"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_names_the_problem(case):
    _, call, words = case
    with pytest.raises(ValueError) as err:
        call()
    message = str(err.value)
    for w in words:
        assert w in message, f"{w!r} not in: {message}"
