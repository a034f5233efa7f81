"""Pareto-smoothed importance sampling, one implementation for both ArviZ generations.

ArviZ 0.23's `psislw` and arviz-stats' (1.x) differ in the length of the tail they fit and in
which draws count as the tail, so the same draws gave Pareto k 0.820 and 0.809 and elpd_loo
3e-4 nats apart. This module follows the current algorithm (Vehtari, Simpson, Gelman, Yao and
Gabry 2024, "Pareto smoothed importance sampling", JMLR 25(72)), which is what arviz-stats and
R's loo 2.x compute; under ArviZ 0.23 it gives the numbers ArviZ 1.x gives, so a saved fit has
the same LOO in both legs (tests/test_arviz_generations.py checks it against arviz-stats to
1e-10 in the 1.x leg, and across the legs to 1e-8).

Per row of log importance ratios r (S draws):
1. tail length M = floor(3 sqrt(S / r_eff)) where S r_eff > 225, else floor(S / 5);
2. the M largest ratios (after subtracting the row's maximum) are the tail, the next largest
   is the threshold u; the excesses exp(r) - exp(u) are fitted by a generalized Pareto
   distribution (Zhang and Stephens 2009's empirical Bayes estimate, with a weakly
   informative prior for k: k = (M k + 10 * 0.5) / (M + 10));
3. where k is finite the tail draws are replaced, in their order, by the fitted quantiles at
   (j - 1/2) / M, truncated at the largest raw ratio; the row is normalised (log-sum-exp 0).

Vectorised over rows (one datum per row): 307 AR residuals or 1,297 digits at once.
"""

from __future__ import annotations

import numpy as np

PROPOSAL_K = 0.7  # above it, importance weights from an approximate posterior are unreliable
PRIOR_BS = 3.0  # Zhang-Stephens grid scale (the quartile divisor)
PRIOR_K = 10.0  # weight of the prior k = 0.5, in pseudo-observations


def tail_length(n_draws: int, r_eff: float = 1.0) -> int:
    if n_draws * r_eff > 225:
        return int(np.floor(3 * np.sqrt(n_draws / r_eff)))
    return int(np.floor(n_draws / 5))


def logsumexp(a: np.ndarray, axis: int = -1) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def gpd_fit(excess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Generalized Pareto (k, sigma) of each row of `excess` (sorted ascending, >= 0), by
    Zhang and Stephens' posterior-mean estimate with the prior on k. Rows whose first
    quartile is not above their minimum get k = NaN (far from a generalized Pareto)."""
    x = np.asarray(excess, dtype=float)
    n = x.shape[-1]
    m = 30 + int(np.sqrt(n))
    xstar = x[:, int(n / 4 + 0.5) - 1]
    fits = xstar > x[:, 0]
    safe_star = np.where(fits, xstar, 1.0)
    safe_max = np.where(fits, x[:, -1], 1.0)
    grid = 1 - np.sqrt(m / (np.arange(1, m + 1, dtype=float) - 0.5))  # (m,)
    b = grid[None, :] / (PRIOR_BS * safe_star[:, None]) + 1 / safe_max[:, None]  # (R, m)
    xs = np.where(fits[:, None], x, 0.0)
    k_grid = np.mean(np.log1p(-b[:, :, None] * xs[:, None, :]), axis=-1)  # (R, m)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lik = n * (np.log(-b / k_grid) - k_grid - 1)
        w = np.exp(log_lik - logsumexp(log_lik)[:, None])
        w = np.where(w >= 10 * np.finfo(float).eps, w, 0.0)  # negligible grid points out
        w = w / w.sum(axis=1, keepdims=True)
        b_post = np.sum(b * w, axis=1)
        k = np.mean(np.log1p(-b_post[:, None] * xs), axis=1)
        sigma = -k / b_post
    k = (n * k + PRIOR_K * 0.5) / (n + PRIOR_K)
    k = np.where(np.isnan(k), np.inf, k)
    return np.where(fits, k, np.nan), np.where(fits, sigma, np.nan)


def gpd_quantile(p: np.ndarray, k: np.ndarray, sigma: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Quantiles p (M,) of generalized Paretos with rows' k, sigma, location mu: (R, M)."""
    k, sigma, mu = k[:, None], sigma[:, None], mu[:, None]
    log1m = np.log1p(-p)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(
            k == 0, mu - sigma * log1m, mu + sigma * np.expm1(-k * log1m) / np.where(k == 0, 1.0, k)
        )
    return np.where(sigma > 0, q, np.nan)


def psis(log_ratios, r_eff: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Pareto-smoothed, normalised log weights and Pareto k along the last axis of
    `log_ratios` (any leading shape). k is NaN where the tail is no generalized Pareto (no
    smoothing then) and 0 where the tail is constant (nothing to smooth)."""
    r = np.asarray(log_ratios, dtype=float)
    lead, S = r.shape[:-1], r.shape[-1]
    r = r.reshape(-1, S)
    M = tail_length(S, r_eff)
    if M < 5:
        raise ValueError(
            f"PSIS needs at least 5 tail draws; {S} draws give {M}: draw more "
            "(at least 25 draws, 76 where r_eff is 1)"
        )
    r = r - r.max(axis=1, keepdims=True)
    order = np.argsort(r, axis=1)
    tail_idx = order[:, S - M :]
    rows = np.arange(r.shape[0])[:, None]
    tail = r[rows, tail_idx]  # ascending, log scale, the largest is 0
    cutoff = r[np.arange(r.shape[0]), order[:, S - M - 1]]
    # a tail equal to rounding (an exact Gaussian proposal: log ratios equal to 1e-14) is flat
    constant = (tail[:, -1] - tail[:, 0]) < 1e-10
    k, sigma = gpd_fit(np.exp(tail) - np.exp(cutoff)[:, None])
    smooth = np.isfinite(k) & ~constant
    if smooth.any():
        p = (np.arange(M) + 0.5) / M
        with np.errstate(divide="ignore", invalid="ignore"):
            fitted = np.log(gpd_quantile(p, k[smooth], sigma[smooth], np.exp(cutoff[smooth])))
        top = tail[smooth, -1:]
        fitted = np.where(fitted > top, top, fitted)
        r[rows[smooth], tail_idx[smooth]] = fitted
    k = np.where(constant, 0.0, k)
    r = r - logsumexp(r)[:, None]
    return r.reshape(*lead, S), k.reshape(lead)


def importance_diagnostics(log_ratios) -> tuple[float, float]:
    """(Pareto k, effective draws) of one set of log importance ratios over all draws (any
    shape, e.g. (chain, draw) of log p - log q): how well a proposal stands in for the target
    (Yao et al. 2018 for a variational guide; Vehtari et al. 2024, section 3)."""
    lw, k = psis(np.asarray(log_ratios, dtype=float).reshape(-1))
    w = np.exp(lw - lw.max())
    return float(k), float(w.sum() ** 2 / (w**2).sum())
