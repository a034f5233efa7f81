"""The Gaussian steps of an AR(p): each step's mean and sd given the values before it
(conditional or exact likelihood), their log-densities, and forecasts with intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro.distributions as dist
import torch

from ppl_models.models.stationary import levinson

f64 = torch.float64


@dataclass
class Forecast:
    """Forecasts of the next steps: mean and the central `prob` interval per step."""

    mean: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    prob: float
    index: object = None  # the forecast periods, where the series came with a dated index


def step_moments(x, const, phi, sigma, exact: bool):
    """(mean, sd, ok) of x_t given the values before it, per modelled step, vectorised over
    leading parameter dims: const (...), phi (..., p), sigma (...) -> (..., T - p), or (..., T)
    when `exact` (the first p steps from the stationary distribution; ok: phi stationary)."""
    p, T = phi.shape[-1], x.shape[0]
    lags = torch.stack([x[p - j - 1 : T - j - 1] for j in range(p)], -1)  # (T - p, p)
    mean = const[..., None] + (lags * phi[..., None, :]).sum(-1)
    sd = sigma[..., None].expand(mean.shape)
    if not exact:
        return mean, sd, torch.ones(phi.shape[:-1], dtype=torch.bool, device=phi.device)
    r, coefs, ok = levinson(phi)
    safe_phi = torch.where(ok[..., None], phi, torch.zeros_like(phi))
    mu = const / (1 - safe_phi.sum(-1))
    # prediction variance of x_(k+1) from the k before: sigma^2 / prod_(j>k) (1 - r_j^2)
    shrink = torch.flip(torch.cumprod(torch.flip(1 - r**2, [-1]), -1), [-1])  # (..., p)
    means, sds = [], []
    for k in range(p):
        prev = x[:k].flip(0)  # x_k, ..., x_1
        means.append(mu + (coefs[k] * (prev - mu[..., None])).sum(-1))
        sds.append(sigma / shrink[..., k].sqrt())
    return (
        torch.cat([torch.stack(means, -1), mean], -1),
        torch.cat([torch.stack(sds, -1), sd], -1),
        ok,
    )


def log_prob_steps(x, const, phi, sigma, exact: bool) -> torch.Tensor:
    """log N(x_t | E[x_t | past], Var) per modelled step, vectorised over leading parameter
    dims: const (...), phi (..., p), sigma (...) -> (..., T - p), or (..., T) when `exact`."""
    mean, sd, ok = step_moments(x, const, phi, sigma, exact)
    ll = dist.Normal(mean, sd).log_prob(x[x.shape[0] - mean.shape[-1] :])
    if not exact:
        return ll
    return torch.where(ok[..., None], ll, torch.full_like(ll, -math.inf))


def gaussian_forecast(x, const, phi, sigma, steps: int):
    """Mean and sd (S, steps) of the h-step forecasts after `x` for S parameter draws."""
    p = phi.shape[-1]
    history = x[-p:].flip(0).expand(phi.shape[0], p).to(f64)  # newest first
    psi = [torch.ones_like(sigma)]  # MA(inf) weights: psi_j = sum_i phi_i psi_(j-i)
    means = []
    for h in range(steps):
        m = const + (phi * history).sum(-1)
        means.append(m)
        history = torch.cat([m[:, None], history[:, :-1]], -1)
        if h + 1 < steps:
            psi.append(sum(phi[:, i - 1] * psi[-i] for i in range(1, min(len(psi), p) + 1)))
    var = torch.stack(psi, -1).pow(2).cumsum(-1) * sigma[:, None] ** 2
    return torch.stack(means, -1), var.sqrt()


def mixture_quantile(mean, sd, q: float, iterations: int = 80) -> torch.Tensor:
    """The q-quantile per step of the equal-weight Gaussian mixture over draws (rows)."""
    lo = (mean - 12 * sd).min(0).values
    hi = (mean + 12 * sd).max(0).values
    normal = dist.Normal(mean, sd)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        below = normal.cdf(mid).mean(0) < q
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2
