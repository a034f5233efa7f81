"""Convergence of draws: the largest r_hat and the smallest bulk ESS, as ArviZ computes them."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import xarray as xr

from inference.evaluation.arviz_generations import az


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


def convergence(draws: dict) -> tuple[float, float]:
    """(largest r_hat, smallest bulk ESS) over every parameter entry of (chain, draw, ...)
    draws."""
    ds = xr.Dataset(
        {
            k: xr.DataArray(
                _numpy(v), dims=["chain", "draw"] + [f"{k}_dim_{i}" for i in range(v.dim() - 2)]
            )
            for k, v in draws.items()
        }
    )
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        r_hat = az.rhat(ds)
        ess = az.ess(ds, method="bulk")
    r = max(float(np.nanmax(r_hat[k].values)) for k in r_hat.data_vars)
    e = min(float(np.nanmin(ess[k].values)) for k in ess.data_vars)
    return r, e
