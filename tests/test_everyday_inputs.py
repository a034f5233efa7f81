"""Input types (issue 11): pandas, numpy memmaps and plain lists are read quietly, a series'
dates are kept for ArviZ and forecasts."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import inference
from ppl_models import AutoRegressive, Independent, datasets


@pytest.fixture(scope="module")
def y():
    return datasets.load("sunspots").train


def test_a_pandas_series_with_dates(y, tmp_path):
    s = pd.Series(y.numpy(), index=pd.date_range("1700", periods=len(y), freq="YS"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "not writable" warning included
        f = inference.fit(AutoRegressive(2), s)
    ref = inference.fit(AutoRegressive(2), y)
    assert torch.equal(f.params["phi"], ref.params["phi"])
    fc = f.forecast(3)
    assert [str(d.date()) for d in fc.index] == ["2009-01-01", "2010-01-01", "2011-01-01"]
    coords = f.to_arviz().log_likelihood["x"].coords["time"].values
    assert str(coords[0])[:10] == "1702-01-01" and len(coords) == len(y) - 2
    path = tmp_path / "ar.pt"
    f.save(path)
    g = inference.load(path)
    assert list(g.forecast(3).index) == list(fc.index)


INPUTS = [
    ("numpy", lambda x: x.numpy()),
    (
        "read-only numpy",
        lambda x: np.frombuffer(x.numpy().tobytes(), dtype=np.int64).reshape(x.shape),
    ),
    ("pandas DataFrame", lambda x: pd.DataFrame(x.numpy())),
    ("list of lists", lambda x: x.tolist()),
    ("bool tensor", lambda x: x.bool()),
]


@pytest.mark.parametrize("case", INPUTS, ids=[c[0] for c in INPUTS])
def test_data_of_every_everyday_type(case, digits):
    data = case[1](digits.train[:200])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = inference.fit(Independent(64), data)
    torch.testing.assert_close(f.params["probs"], digits.train[:200].double().mean(0))


def test_a_numpy_memmap(digits, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, digits.train.numpy())
    x = np.load(path, mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = inference.fit(Independent(64), x, "mle")
    torch.testing.assert_close(f.params["probs"], digits.train.double().mean(0))
