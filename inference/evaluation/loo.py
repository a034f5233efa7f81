"""PSIS-LOO of any fit and other elpd for ArviZ's compare.

`loo(fit)` is PSIS-LOO, with an SVI fit's draws importance-weighted by log p(theta, y) -
log q(theta) (Magnusson et al. 2019); `elpd(pointwise, ...)` packs any pointwise elpd
(held-out, leave-future-out) so `az.compare` ranks it beside LOO.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from inference.evaluation import arviz_generations as generations
from inference.evaluation.arviz_generations import noted
from inference.evaluation.arviz_io import numpy_of, to_inference_data
from inference.evaluation.psis import PROPOSAL_K, importance_diagnostics, psis
from inference.optimize import point_fit
from inference.result import Fit


def psis_log_weights(log_ratios):
    """Pareto-smoothed importance sampling of one set of log importance ratios over draws (a
    1-D tensor): (normalised log weights as a tensor, Pareto k)."""
    lw, k = psis(numpy_of(log_ratios).astype(float))
    return torch.from_numpy(np.asarray(lw, dtype=float)), float(k)


def elpd(pointwise, *, n_samples: int, p_eff: float = 0.0, pareto_k=None, name: str = "x"):
    """Pointwise expected log predictive densities packed as ArviZ's LOO result, so that
    ArviZ's compare and plot_compare rank them (held-out data or leave-future-out: p_eff 0,
    no penalty to estimate)."""
    return generations.held_out(
        numpy_of(pointwise),
        n_samples=n_samples,
        p_eff=p_eff,
        pareto_k=None if pareto_k is None else numpy_of(pareto_k),
        name=name,
    )


PROPOSAL_ESS = 100  # below it (effective draws of those weights), too
# Laplace draws tried, in turn, where a proposal is unreliable. Measured on digits (1,297
# images): Independent(64)'s SVI guide gives a corrected elpd 6.3 nats above the exact
# posterior's with an ESS of 36 of 1,000 draws (k 0.70); its Laplace approximation with 1,000
# draws is as far off (ESS 24), with 4,000 draws 0.67 nats off (ESS 158); AR(2) on sunspots,
# any proposal: ESS 970 of 1,000, within 0.2 nats
LAPLACE_LADDER = (4000, 16000)


def loo(fit, start: int | None = None):
    """PSIS-LOO of a fit on its training data. Exact and NUTS draws: ArviZ's `loo`. Draws
    from an approximation of the posterior (an SVI guide; a point fit's Laplace
    approximation, `Fit.laplace`) are importance-weighted first (Magnusson et al. 2019:
    arviz-stats' `loo_approximate_posterior`, the same formula under ArviZ 0.23): per datum
    log w_s = log p(theta_s, y) - log q(theta_s) - log p(y_i | theta_s), Pareto-smoothed. The
    result carries the proposal's own weights' (log p - log q) Pareto k and effective sample
    size (``proposal_k``, ``proposal_ess``; `arviz_generations.noted`): with k above 0.7 or
    fewer than 100 effective draws the correction is not to be trusted. Then draws of the
    Laplace approximation (at the point estimate, or at the MAP of an SVI fit's program) are
    tried, 4,000 and then 16,000, and the proposal with the most effective draws is used
    (``proposal``); `inference.compare` flags one that is still unreliable and ranks it below
    every trusted fit."""
    if not fit.bayesian:
        fit = fit.laplace()
    idata = to_inference_data(fit, start=start)
    stats = fit.sample_stats
    if "log_q" not in stats:
        if fit.method == "svi":
            raise ValueError(
                "this SVI fit kept no log_p / log_q per draw (a delta guide is a "
                "point estimate); refit with an autoguide or a guide with a "
                "density"
            )
        return generations.loo(idata, fit.program.observed_name)
    best = _corrected(idata, stats["log_p"], stats["log_q"], fit.approximation or fit.method)
    for draws in LAPLACE_LADDER:
        if reliable(best):
            break
        alternative = _laplace_proposal(fit, start, draws)
        if alternative is None:
            break
        if noted(alternative, "proposal_ess") > noted(best, "proposal_ess"):
            best = alternative
    return best


def reliable(e) -> bool:
    """An importance-corrected LOO whose proposal is close enough to the posterior."""
    k = noted(e, "proposal_k")
    return k is None or (k <= PROPOSAL_K and noted(e, "proposal_ess") >= PROPOSAL_ESS)


def _corrected(idata, log_p, log_q, proposal: str):
    """Importance-corrected PSIS-LOO of `idata`'s draws of a proposal q with log p and log q
    per draw (chain, draw), noted with the proposal's own weights' Pareto k and ESS."""
    log_p, log_q = numpy_of(log_p), numpy_of(log_q)
    var = next(iter(generations.groups(idata)["log_likelihood"].data_vars))
    out = generations.loo_approximate(idata, log_p, log_q, var)
    k, ess = importance_diagnostics(log_p - log_q)
    generations.note(out, proposal=proposal, proposal_k=k, proposal_ess=ess)
    return out


def _laplace_proposal(fit, start, draws: int):
    """The corrected LOO with `draws` draws of the Laplace approximation at the fit's point
    estimate (a point fit) or at the MAP of its program (SVI), or None where it has none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fit.method in ("mle", "map"):
                point = fit.program
                mode = Fit(point, fit.method, fit.data, info=fit.info)
            else:
                mode = point_fit(fit.program, fit.data, "map", progress_bar=False)
            lap = mode.laplace(num_samples=draws)
    except ValueError:
        return None
    return _corrected(
        to_inference_data(lap, start=start),
        lap.sample_stats["log_p"],
        lap.sample_stats["log_q"],
        "laplace",
    )


def compare_elpd(elpds: dict):
    return generations.compare(elpds)
