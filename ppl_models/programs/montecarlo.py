"""Monte Carlo over continuous local latents: the density of data with a latent per datum.

A hierarchical program's likelihood of a datum, p(x_i | theta) = E_(z_i ~ p(z_i | theta))
p(x_i | z_i, theta), has no closed form in general. `marginal_log_prob` estimates
log mean over posterior draws theta_s and particles z_(s,k) ~ p(z | theta_s) of
p(x_i | z_(s,k), theta_s), with its Monte Carlo standard error (delta method), streaming over
draws so memory stays at particles x data.
"""

from __future__ import annotations

import math

import torch

from ppl_models import checks
from ppl_models.programs.densities import LogMeanExp
from ppl_models.programs.roles import ProgramError

PARTICLE_BUDGET = 100_000  # Monte Carlo particles per datum for local latents (all draws)
PARTICLE_CELLS = 20_000_000  # particles x data evaluated at once


@torch.no_grad()
def marginal_log_prob(
    program, x: torch.Tensor, draws: dict | None = None, particles: int | None = None, args=None
):
    """(log p(x_i) (N,), its standard error (N,), particles per datum): the local latents
    integrated from their prior given each draw of the globals (draws: name -> (chain, draw,
    ...); None: the program's values), ``particles`` per draw (default: PARTICLE_BUDGET over
    all draws)."""
    local = set(program.local)
    globals_ = {k: v for k, v in program.values.items() if k not in local}
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in (draws or {}).items() if k not in local}
    S = next(iter(flat.values())).shape[0] if flat else 1
    n = len(x)
    K = particles if particles is not None else max(1, math.ceil(PARTICLE_BUDGET / S))
    K = checks.positive_int(K, "particles")
    chunk = max(1, min(K, PARTICLE_CELLS // max(1, n)))
    acc = LogMeanExp()
    for s in range(S):
        values = {**globals_, **{k: v[s] for k, v in flat.items()}}
        left = K
        while left:
            k = min(chunk, left)
            acc.add(particle_log_lik(program, x, values, k, args))
            left -= k
    lp, se = acc.result()
    return lp, se, S * K


def particle_log_lik(program, x, values, k: int, args=None) -> torch.Tensor:
    """(k, N) log p(x_i | z_i, theta) at k draws z of the local latents from their prior.
    Three ways, the first that works (remembered on the program): one trace under an outer
    particle plate (a program that broadcasts over an extra batch dim); one trace on the data
    repeated k times (rows are independent given the globals, so each copy draws its own
    latents; per-datum covariates are repeated with them); one trace per particle."""
    n = len(x)
    args = program.args if args is None else args
    way = program._particle_way
    if way in (None, "plate"):
        out = _try(lambda: program.pointwise_of(x, values, args, particles=k), (k, n))
        if out is not None:
            program._particle_way = "plate"
            return out
    if way in (None, "rows") and not program.roles.sequential:
        idx = torch.arange(n, device=x.device).repeat(k)
        out = _try(
            lambda: program.pointwise_of(x[idx], values, args.rows(idx, n)).reshape(k, n), (k, n)
        )
        if out is not None:
            program._particle_way = "rows"
            return out
    program._particle_way = "loop"
    return torch.stack([program.pointwise_of(x, values, args) for _ in range(k)])


def _try(fn, shape):
    try:
        out = fn()
    except (ProgramError, RuntimeError, ValueError, IndexError):
        return None  # the program does not run this way
    if out.dim() != 2 or out.shape[-1] != shape[1] or out.shape[0] not in (1, shape[0]):
        return None
    return out.expand(shape)


__all__ = ["PARTICLE_BUDGET", "marginal_log_prob", "particle_log_lik"]
