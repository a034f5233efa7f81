"""Posterior draws held to quadrature on a grid: a parameter's value on the grid, or a local
latent's conditional mean and variance at each grid point, mixed by the grid's weights."""

import numpy as np
import pytest


def assert_matches(w: np.ndarray, refs, mean_within: float = 0.15, sd_within: float = 0.1):
    """For each (name, draws, value, variance) in `refs` (value and variance on the grid of
    normalised weights `w`; variance 0 for a grid axis itself): the draws' mean within
    `mean_within` reference sds of the reference mean, their sd within `sd_within` of it."""
    for name, draws, v, cv in refs:
        mean = float((w * v).sum())
        sd = float(np.sqrt((w * (cv + (v - mean) ** 2)).sum()))
        assert abs(float(draws.mean()) - mean) < mean_within * sd, name
        assert float(draws.std()) == pytest.approx(sd, rel=sd_within), name
