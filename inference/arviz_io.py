"""ArviZ conversion and PSIS-LOO, the one module that knows ArviZ (0.23 InferenceData).

Built by hand rather than with `az.from_pyro`, which accepts only an MCMC object and drops
`log_likelihood` for models that do not vectorise over draws; and neither Pyro nor ArviZ
converts an SVI fit. Here every fit of every program converts the same way:

- ``posterior``: the draws (chain, draw, ...); a point estimate (mle, map) as one draw, flagged
  ``point_estimate`` in the attributes; named dims from the program's plates;
- ``log_likelihood``: one variable ``x`` with one entry per datum (a series: per modelled
  time step, ``start`` restricting it to a common sample), so `az.loo` and `az.compare` work;
- ``observed_data``; ``sample_stats`` (NUTS: diverging, step_size, tree_depth, n_steps,
  energy, acceptance_rate, lp; SVI: log_p and log_q per draw, for the LOO correction);
- ``posterior_predictive`` (replicated data of the observed shape, one per posterior draw),
  ``prior`` and ``prior_predictive`` on request.

A group that was asked for and cannot be built raises; none is dropped silently.

`loo(fit)` is PSIS-LOO, with an SVI fit's draws importance-weighted by log p(theta, y) -
log q(theta) (Magnusson et al. 2019); `elpd(pointwise, ...)` packs any pointwise elpd
(held-out, leave-future-out) so `az.compare` ranks it beside LOO.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import xarray as xr

from inference import arviz_generations as generations
from inference.arviz_generations import az, noted
from inference.psis import psis

MAX_LOG_LIKELIHOOD_CELLS = 200_000_000  # 1.6 GB of float64
MAX_PREDICTIVE_CELLS = 50_000_000  # replicated data held at once (400 MB of float64)


# -- dims ---------------------------------------------------------------------------------------
def _site_dims(fit, name: str, ndim: int) -> list[str]:
    """Dims of a site's value (without chain and draw): a built-in model's own names (dims,
    lags, categories, hidden units), else the plate names where the program's trace put the
    site in a plate, else name_dim_i."""
    dims = [f"{name}_dim_{i}" for i in range(ndim)]
    own = getattr(fit.program.model, "param_dims", None)
    if isinstance(own, dict) and name in own and len(own[name]) == ndim:
        return list(own[name])
    roles = fit.program._roles
    site = roles.sites.get(name) if roles is not None else None
    if site is not None:
        batch = ndim - site.event_dim
        for plate, dim, _ in site.plates:
            axis = batch + dim
            if 0 <= axis < ndim:
                dims[axis] = plate
    return dims


def _data_dims(fit, ndim: int) -> list[str]:
    """Dims of the observed data: the data plate (or "data", "time" for a series), then a
    built-in's own names for a datum's dims (x_dim_i for a program's)."""
    first = fit.program.roles.data_plate if fit.program._roles is not None else None
    if first is None:
        first = "data" if fit.program.exchangeable else "time"
    own = tuple(getattr(fit.program.model, "data_dims", ()) or ())
    rest = list(own) if len(own) == ndim - 1 else [f"x_dim_{i}" for i in range(1, ndim)]
    return [first] + rest


def _coords(dims, shape, given: dict | None = None) -> dict:
    """Integer coordinates for every dim (chain and draw included), `given` where known."""
    out = {d: np.arange(n) for d, n in zip(dims, shape)}
    out.update({k: v for k, v in (given or {}).items() if k in out})
    return out


def _dataset(fit, variables: dict, lead: list[str]) -> xr.Dataset:
    data = {}
    for name, value in variables.items():
        a = np.asarray(value)
        rest = _site_dims(fit, name, a.ndim - len(lead))
        dims = lead + rest
        data[name] = xr.DataArray(a, dims=dims, coords=_coords(dims, a.shape))
    return xr.Dataset(data)


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


# -- the conversion -----------------------------------------------------------------------------
def to_inference_data(fit, *, posterior_predictive: bool = False, prior: bool = False,
                      start: int | None = None, log_likelihood: bool = True,
                      num_prior: int = 500, predictive_draws: int | None = None,
                      simulate: bool = False, seed: int | None = 0):
    """InferenceData of `fit` (see the module docstring). `start`: for a series, score the
    steps t >= start only (0-based), so that fits of different orders share one sample.
    `num_prior`: prior draws when ``prior=True``. `predictive_draws`: replicate the data for
    the first that many draws of each chain only (default: every draw, up to
    MAX_PREDICTIVE_CELLS numbers; the group's attrs say how many). `simulate`: for a series,
    also a free-running simulation per draw (``x_simulated``, from the observed start).
    `seed` makes the replicated data and prior draws reproducible (None: the global RNG)."""
    from inference.result import seeded

    fit.require_draws()
    groups = {"posterior": _dataset(fit, {k: _numpy(v) for k, v in fit.draws.items()},
                                    ["chain", "draw"])}
    obs = _numpy(fit.data)
    obs_dims = _data_dims(fit, obs.ndim)
    first = _first_scored(fit, start)
    groups["observed_data"] = _observed(fit, obs[first:], obs_dims, first)
    if first:  # the values a series' likelihood conditions on
        groups["constant_data"] = xr.Dataset({"x_start": xr.DataArray(
            obs[:first], dims=["start"], coords={"start": np.arange(first)})})
    if log_likelihood:
        groups["log_likelihood"] = _log_likelihood(fit, obs_dims[0], first)
    if fit.sample_stats:
        stats = {k: _numpy(v) for k, v in fit.sample_stats.items()}
        groups["sample_stats"] = xr.Dataset({
            k: xr.DataArray(v, dims=(dims := ["chain", "draw"] + [f"{k}_dim_{i}" for i in
                                                                 range(v.ndim - 2)]),
                            coords=_coords(dims, v.shape))
            for k, v in stats.items()})
    with seeded(seed):
        if posterior_predictive:
            groups["posterior_predictive"] = _posterior_predictive(
                fit, obs_dims, first, predictive_draws, simulate)
        if prior:
            prior_draws, prior_data = _prior(fit, num_prior, first)
            groups["prior"] = _dataset(fit, prior_draws, ["chain", "draw"])
            groups["prior_predictive"] = _predictive(fit, prior_data, obs_dims, first)
    attrs = _attrs(fit)
    for ds in groups.values():
        ds.attrs.update(attrs)
    return generations.wrap(groups)


def _first_scored(fit, start) -> int:
    """The first time step a series' log-likelihood scores (its order; `start` if given,
    checked), 0 for independent rows: where the aligned groups begin."""
    n = fit.data.shape[0]
    if fit.program.exchangeable:
        if start is not None:
            raise ValueError("start= applies to a series (a program without a data plate); "
                             "this fit models independent rows")
        return 0
    first = n - fit.pointwise_log_likelihood().shape[-1]
    if start is None:
        return first
    if isinstance(start, bool) or not isinstance(start, int) or start < first or start >= n:
        raise ValueError(f"start={start!r}: this fit scores time steps {first}..{n - 1} "
                         f"(0-based; {fit.program.label} conditions on the first {first}); "
                         f"pass an int from {first} to {n - 1}, the largest order among the "
                         "fits you compare")
    return start


def _observed(fit, obs, dims, first) -> xr.Dataset:
    coords = _coords(dims, obs.shape, _index_coords(fit, dims[0], first, len(obs)))
    data = {"x": xr.DataArray(obs, dims=dims, coords=coords)}
    if obs.ndim > 1:  # a per-datum statistic for LOO-PIT: the sum of the datum's values
        data["x_total"] = xr.DataArray(obs.reshape(len(obs), -1).sum(-1), dims=dims[:1],
                                       coords={dims[0]: coords[dims[0]]})
    return xr.Dataset(data)


def _index_coords(fit, dim, first, count) -> dict:
    index = np.arange(first, first + count)
    labels = _labels(fit)
    return {dim: index if labels is None else labels[index]}


def _predictive(fit, data, obs_dims, first, attrs=None) -> xr.Dataset:
    """A predictive group from (chain, draw, ...) replicates aligned with observed_data."""
    dims = ["chain", "draw"] + obs_dims
    coords = _coords(dims, data.shape, _index_coords(fit, obs_dims[0], first, data.shape[2]))
    out = {"x": xr.DataArray(data, dims=dims, coords=coords)}
    if data.ndim > 3:
        out["x_total"] = xr.DataArray(data.reshape(*data.shape[:3], -1).sum(-1),
                                      dims=dims[:3], coords={d: coords[d] for d in dims[:3]})
    ds = xr.Dataset(out)
    ds.attrs.update(attrs or {})
    return ds


def _attrs(fit) -> dict:
    import platform

    import pyro

    import ppl_models

    p = fit.program
    attrs = {"inference_library": "pyro", "inference_library_version": str(pyro.__version__),
             "ppl_models_version": ppl_models.__version__, "torch_version": str(torch.__version__),
             "arviz_version": az.__version__, "python_version": platform.python_version(),
             "model": p.label, "method": fit.method, "num_parameters": int(p.num_parameters),
             "fit_seconds": float(fit.fit_seconds), "seed": fit.info.get("seed", -1),
             "point_estimate": int(fit.method in ("mle", "map"))}
    if fit.approximation is not None:  # what the draws are: ArviZ cannot tell otherwise
        attrs["posterior_approximation"] = fit.info.get("posterior", fit.approximation)
    try:
        attrs["factorization"] = p.factorization
    except ValueError:
        pass
    if fit.method == "svi":
        attrs["guide"] = str(fit.info.get("guide", ""))
    return attrs


def _log_likelihood(fit, dim: str, first: int) -> xr.Dataset:
    n = fit.data.shape[0]
    cells = fit.num_draws * n
    if cells > MAX_LOG_LIKELIHOOD_CELLS:
        raise ValueError(f"the pointwise log-likelihood would hold {fit.num_draws:,} draws x {n:,} "
                         f"data = {cells:,} numbers, too many to hold; refit with fewer draws "
                         "(num_samples=...) or on a subsample of the data, or pass "
                         "log_likelihood=False")
    ll = _numpy(fit.pointwise_log_likelihood())
    ll = ll[..., first - (n - ll.shape[-1]):] if first else ll
    dims = ["chain", "draw", dim]
    return xr.Dataset({"x": xr.DataArray(ll, dims=dims, coords=_coords(
        dims, ll.shape, _index_coords(fit, dim, first, ll.shape[-1])))})


def _labels(fit):
    """The data's own labels (a pandas index: the dates of a series) as coordinates."""
    index = getattr(fit, "index", None)
    return None if index is None or len(index) != fit.data.shape[0] else np.asarray(index)


def _posterior_predictive(fit, obs_dims, first, limit=None, simulate=False) -> xr.Dataset:
    """One replicate per log-likelihood entry and draw, aligned with observed_data: for
    independent rows, the data generated again with each draw (the same units: local latents
    at the draw's values); for a series, each modelled step drawn given the observed values
    before it (`Program.replicates`), and with `simulate` a free-running simulation too."""
    draws = fit.draws
    chains, total = next(iter(draws.values())).shape[:2]
    shape = tuple(fit.data.shape)
    per = int(np.prod(shape))
    keep = max(1, min(total, MAX_PREDICTIVE_CELLS // max(1, per * chains)))
    if limit is not None:
        keep = max(1, min(keep, int(limit)))
    used = {k: v[:, :keep] for k, v in draws.items()}
    attrs = {"draws_used": f"{keep} of {total} per chain"}
    program = fit.program
    if not program.exchangeable:
        n = shape[0]
        rep = _numpy(program.replicates(fit.data, used))
        ds = _predictive(fit, rep[..., first - (n - rep.shape[-1]):], obs_dims, first, attrs)
        if simulate:
            sim = _numpy(program.simulations(fit.data, used))
            ds["x_simulated"] = xr.DataArray(sim, dims=["chain", "draw", "simulated_time"],
                                             coords=_coords(["chain", "draw", "simulated_time"],
                                                            sim.shape))
        return ds
    if simulate:
        raise ValueError("simulate=True is for a series; independent rows are replicated whole")
    values = program.values
    out = np.empty((chains, keep) + shape, dtype=_numpy(fit.data[:1]).dtype
                   if fit.data.is_floating_point() else np.float64)
    own = set(values)
    for c in range(chains):
        for s in range(keep):
            theta = {k: v[c, s] for k, v in used.items()}
            if fit.posterior is not None and not set(theta) <= own:
                x = fit.posterior.sample_predictive(shape[0])  # aggregated draws (FullJoint)
            else:  # the observed units again: local latents at the draw's values
                x = program.generate(shape[0], {**values, **theta})
            if tuple(x.shape) != shape:
                raise ValueError(f"the program generated data of shape {tuple(x.shape)} for a "
                                 f"posterior predictive of the observed shape {shape}; return "
                                 "the data in the observed shape from the program")
            out[c, s] = _numpy(x)
    return _predictive(fit, out, obs_dims, first, attrs)


def _prior(fit, num: int, first: int):
    """(prior draws of the random parameters and latents (2, num/2, ...), prior predictive
    data aligned with observed_data) from the program run forward with its priors; a series
    is simulated from its observed start (`Program.simulations`)."""
    program = fit.program
    source = getattr(fit.posterior, "model", None)
    if source is not None and source is not program.model:  # exact: the model, not its
        from ppl_models.program import Program  # aggregated predictive

        program = Program(source, program.data_plate)
    program.discover(fit.data)
    bayes = program.bayesian()
    names = program.sampled
    if not names:
        raise ValueError(f"{program.label} has no prior to draw from: no parameter has a prior "
                         "(pyro.sample / PyroSample); call to_arviz(prior=False)")
    n = fit.data.shape[0]
    draws = {k: [] for k in names}
    data = []
    import pyro
    from pyro import poutine

    for _ in range(num):  # (a series generated from an explosive prior draw may overflow)
        with poutine.block(), torch.no_grad(), pyro.validation_enabled(
                program.exchangeable):
            tr = poutine.trace(bayes).get_trace(
                num_samples=n if program.args.takes_num_samples else None)
        for k in names:
            draws[k].append(tr.nodes[k]["value"])
        if program.exchangeable:
            data.append(_numpy(program._generated(tr, n)))
    chains = 2 if num >= 4 else 1
    per = num // chains
    stacked = {k: torch.stack(v[:chains * per]).reshape(chains, per, *v[0].shape)
               for k, v in draws.items()}
    if program.exchangeable:
        out = np.stack(data[:chains * per]).reshape(chains, per, *data[0].shape)
    else:
        sim = _numpy(program.simulations(fit.data, stacked))
        out = sim[..., first - (n - sim.shape[-1]):]
    return {k: _numpy(v) for k, v in stacked.items()}, out


# -- PSIS-LOO and other elpd ----------------------------------------------------------------------
def psis_log_weights(log_ratios):
    """Pareto-smoothed importance sampling of one set of log importance ratios over draws (a
    1-D tensor): (normalised log weights as a tensor, Pareto k)."""
    lw, k = psis(_numpy(log_ratios).astype(float))
    return torch.from_numpy(np.asarray(lw, dtype=float)), float(k)


def elpd(pointwise, *, n_samples: int, p_eff: float = 0.0, pareto_k=None, name: str = "x"):
    """Pointwise expected log predictive densities packed as ArviZ's LOO result, so that
    ArviZ's compare and plot_compare rank them (held-out data or leave-future-out: p_eff 0,
    no penalty to estimate)."""
    return generations.held_out(_numpy(pointwise), n_samples=n_samples, p_eff=p_eff,
                                pareto_k=None if pareto_k is None else _numpy(pareto_k),
                                name=name)


PROPOSAL_K = 0.7  # above it, importance weights from an approximate posterior are unreliable
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
            raise ValueError("this SVI fit kept no log_p / log_q per draw (a delta guide is a "
                             "point estimate); refit with an autoguide or a guide with a "
                             "density")
        return generations.loo(idata)
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
    log_p, log_q = _numpy(log_p), _numpy(log_q)
    out = generations.loo_approximate(idata, log_p, log_q)
    lw_all, k_all = psis((log_p - log_q).reshape(-1))
    w = np.exp(lw_all - lw_all.max())
    generations.note(out, proposal=proposal, proposal_k=float(k_all),
                     proposal_ess=float(w.sum() ** 2 / (w ** 2).sum()))
    return out


def _laplace_proposal(fit, start, draws: int):
    """The corrected LOO with `draws` draws of the Laplace approximation at the fit's point
    estimate (a point fit) or at the MAP of its program (SVI), or None where it has none."""
    from inference.optimize import point_fit

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fit.method in ("mle", "map"):
                point = fit.program
                from inference.result import Fit

                mode = Fit(point, fit.method, fit.data, info=fit.info)
            else:
                mode = point_fit(fit.program, fit.data, "map", progress_bar=False)
            lap = mode.laplace(num_samples=draws)
    except ValueError:
        return None
    return _corrected(to_inference_data(lap, start=start), lap.sample_stats["log_p"],
                      lap.sample_stats["log_q"], "laplace")


def convergence(draws: dict) -> tuple[float, float]:
    """(largest r_hat, smallest bulk ESS) over every parameter entry of (chain, draw, ...)
    draws."""
    ds = xr.Dataset({k: xr.DataArray(_numpy(v), dims=["chain", "draw"] + [
        f"{k}_dim_{i}" for i in range(v.dim() - 2)]) for k, v in draws.items()})
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        r_hat = az.rhat(ds)
        ess = az.ess(ds, method="bulk")
    r = max(float(np.nanmax(r_hat[k].values)) for k in r_hat.data_vars)
    e = min(float(np.nanmin(ess[k].values)) for k in ess.data_vars)
    return r, e


def compare_elpd(elpds: dict):
    return generations.compare(elpds)
