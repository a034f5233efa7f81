"""ArviZ conversion, the one module that knows ArviZ (0.23 InferenceData).

Built by hand rather than with `az.from_pyro`, which accepts only an MCMC object and drops
`log_likelihood` for models that do not vectorise over draws: here the pointwise
log-likelihood is one variable ``x`` with one entry per datum, so `az.loo` and `az.compare`
work for every model and every method.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

with warnings.catch_warnings():  # ArviZ 0.23 announces its 1.x refactor on every import
    warnings.filterwarnings("ignore", message="ArviZ is undergoing")
    import arviz as az

MAX_LOG_LIKELIHOOD_CELLS = 200_000_000  # 1.6 GB of float64


def _dataset(variables: dict, sample_dims: bool) -> xr.Dataset:
    data = {}
    for name, value in variables.items():
        a = np.asarray(value)
        lead = ["chain", "draw"] if sample_dims else []
        rest = [f"{name}_dim_{i}" for i in range(a.ndim - len(lead))]
        coords = {d: np.arange(n) for d, n in zip(lead + rest, a.shape)}
        data[name] = xr.DataArray(a, dims=lead + rest, coords=coords)
    return xr.Dataset(data)


def to_inference_data(fit) -> az.InferenceData:
    n = fit.data.shape[0]
    cells = fit.num_draws * n
    if cells > MAX_LOG_LIKELIHOOD_CELLS:
        raise ValueError(f"the pointwise log-likelihood would hold {fit.num_draws:,} draws x {n:,} "
                         f"data = {cells:,} numbers, too many to hold; refit with fewer draws "
                         "(num_samples=...) or on a subsample of the data")
    ll = fit.pointwise_log_likelihood().numpy()
    posterior = _dataset({k: v.numpy() for k, v in fit.draws.items()}, True)
    log_likelihood = xr.Dataset({"x": xr.DataArray(ll, dims=["chain", "draw", "datum"])})
    obs = fit.data.numpy()
    observed = xr.Dataset({"x": xr.DataArray(obs, dims=["datum"] + [f"x_dim_{i}" for i in
                                                                   range(obs.ndim - 1)])})
    groups = {"posterior": posterior, "log_likelihood": log_likelihood, "observed_data": observed}
    if fit.sample_stats:
        groups["sample_stats"] = _dataset({k: v.numpy() for k, v in fit.sample_stats.items()},
                                          True)
    for ds in groups.values():
        ds.attrs.update({"inference_library": "pyro", "method": fit.method,
                         "model": type(fit.model).__name__})
    return az.InferenceData(**groups)


def psis_log_weights(log_ratios):
    """Pareto-smoothed importance sampling (ArviZ's `psislw`) of one set of log importance
    ratios over draws (a 1-D tensor): (normalised log weights as a tensor, Pareto k)."""
    import torch

    lw, k = az.psislw(log_ratios.detach().numpy().astype(float))
    return torch.from_numpy(np.asarray(lw, dtype=float)), float(k)
