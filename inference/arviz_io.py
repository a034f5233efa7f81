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

import math
import warnings

import numpy as np
import torch
import xarray as xr

with warnings.catch_warnings():  # ArviZ 0.23 announces its 1.x refactor on every import
    warnings.filterwarnings("ignore", message="ArviZ is undergoing")
    warnings.filterwarnings("ignore", category=FutureWarning)
    import arviz as az
    from arviz.stats.stats_utils import ELPDData

MAX_LOG_LIKELIHOOD_CELLS = 200_000_000  # 1.6 GB of float64
MAX_PREDICTIVE_CELLS = 50_000_000  # replicated data held at once (400 MB of float64)


# -- dims ---------------------------------------------------------------------------------------
def _site_dims(fit, name: str, ndim: int) -> list[str]:
    """Dims of a parameter's value (without chain and draw): plate names where the program's
    trace put the site in a plate, else name_dim_i."""
    dims = [f"{name}_dim_{i}" for i in range(ndim)]
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
    first = fit.program.roles.data_plate if fit.program._roles is not None else None
    if first is None:
        first = "data" if fit.program.exchangeable else "time"
    return [first] + [f"x_dim_{i}" for i in range(1, ndim)]


def _dataset(fit, variables: dict, lead: list[str]) -> xr.Dataset:
    data = {}
    for name, value in variables.items():
        a = np.asarray(value)
        rest = _site_dims(fit, name, a.ndim - len(lead))
        dims = lead + rest
        coords = {d: np.arange(n) for d, n in zip(dims, a.shape)}
        data[name] = xr.DataArray(a, dims=dims, coords=coords)
    return xr.Dataset(data)


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


# -- the conversion -----------------------------------------------------------------------------
def to_inference_data(fit, *, posterior_predictive: bool = False, prior: bool = False,
                      start: int | None = None, log_likelihood: bool = True,
                      num_prior: int = 500, predictive_draws: int | None = None,
                      seed: int | None = 0) -> az.InferenceData:
    """InferenceData of `fit` (see the module docstring). `start`: for a series, score the
    steps t >= start only (0-based), so that fits of different orders share one sample.
    `num_prior`: prior draws when ``prior=True``. `predictive_draws`: replicate the data for
    the first that many draws of each chain only (default: every draw, up to
    MAX_PREDICTIVE_CELLS numbers; the group's attrs say how many). `seed` makes the replicated
    data and prior draws reproducible (None: the global RNG)."""
    from inference.result import seeded

    if not fit.draws:
        raise ValueError(f"{fit.program.label} fitted by {fit.method} holds no parameters to "
                         "draw (a sparse full joint keeps counts); fit it by method='exact' for "
                         "a posterior in ArviZ, or compare it on held-out data")
    groups = {"posterior": _dataset(fit, {k: _numpy(v) for k, v in fit.draws.items()},
                                    ["chain", "draw"])}
    obs = _numpy(fit.data)
    obs_dims = _data_dims(fit, obs.ndim)
    coords = {d: np.arange(n) for d, n in zip(obs_dims, obs.shape)}
    labels = _labels(fit)
    if labels is not None:
        coords[obs_dims[0]] = labels
    groups["observed_data"] = xr.Dataset({"x": xr.DataArray(obs, dims=obs_dims,
                                                            coords=coords)})
    if log_likelihood:
        groups["log_likelihood"] = _log_likelihood(fit, obs_dims[0], start)
    elif start is not None:
        raise ValueError("start applies to the log_likelihood group; drop log_likelihood=False")
    if fit.sample_stats:
        stats = {k: _numpy(v) for k, v in fit.sample_stats.items()}
        groups["sample_stats"] = xr.Dataset({
            k: xr.DataArray(v, dims=["chain", "draw"] + [f"{k}_dim_{i}" for i in
                                                       range(v.ndim - 2)])
            for k, v in stats.items()})
    with seeded(seed):
        if posterior_predictive:
            groups["posterior_predictive"] = _posterior_predictive(fit, obs_dims,
                                                                   predictive_draws)
        if prior:
            prior_draws, prior_data = _prior(fit, num_prior)
            groups["prior"] = _dataset(fit, prior_draws, ["chain", "draw"])
            dims = ["chain", "draw"] + obs_dims
            groups["prior_predictive"] = xr.Dataset({"x": xr.DataArray(
                prior_data, dims=dims, coords={d: np.arange(n) for d, n in
                                               zip(dims, prior_data.shape)})})
    attrs = _attrs(fit)
    for ds in groups.values():
        ds.attrs.update(attrs)
    return az.InferenceData(**groups)


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
             "point_estimate": int(not fit.bayesian)}
    try:
        attrs["factorization"] = p.factorization
    except ValueError:
        pass
    if fit.method == "svi":
        attrs["guide"] = str(fit.info.get("guide", ""))
    return attrs


def _log_likelihood(fit, dim: str, start) -> xr.Dataset:
    n = fit.data.shape[0]
    cells = fit.num_draws * n
    if cells > MAX_LOG_LIKELIHOOD_CELLS:
        raise ValueError(f"the pointwise log-likelihood would hold {fit.num_draws:,} draws x {n:,} "
                         f"data = {cells:,} numbers, too many to hold; refit with fewer draws "
                         "(num_samples=...) or on a subsample of the data, or pass "
                         "log_likelihood=False")
    ll = _numpy(fit.pointwise_log_likelihood())
    index = np.arange(ll.shape[-1])
    if not fit.program.exchangeable:  # a series: entries are the last modelled time steps
        index = index + (n - ll.shape[-1])
        if start is not None:
            first = int(index[0])
            if isinstance(start, bool) or not isinstance(start, int) or start < first or \
                    start >= n:
                raise ValueError(f"start={start!r}: this fit scores time steps {first}..{n - 1} "
                                 f"(0-based; {fit.program.label} conditions on the first "
                                 f"{first}); pass an int from {first} to {n - 1}, the largest "
                                 "order among the fits you compare")
            keep = index >= start
            ll, index = ll[..., keep], index[keep]
    elif start is not None:
        raise ValueError("start= applies to a series (a program without a data plate); this fit "
                         "models independent rows")
    labels = _labels(fit)
    return xr.Dataset({"x": xr.DataArray(ll, dims=["chain", "draw", dim],
                                         coords={dim: index if labels is None
                                                 else labels[index]})})


def _labels(fit):
    """The data's own labels (a pandas index: the dates of a series) as coordinates."""
    index = getattr(fit, "index", None)
    return None if index is None or len(index) != fit.data.shape[0] else np.asarray(index)


def _posterior_predictive(fit, obs_dims, limit=None) -> xr.Dataset:
    """One replicated data set of the observed shape per posterior draw (all draws while
    they fit in MAX_PREDICTIVE_CELLS numbers, else the first draws of each chain; the attrs
    say how many)."""
    shape = tuple(fit.data.shape)
    per = int(np.prod(shape))
    draws = {k: v for k, v in fit.draws.items()}
    chains, total = next(iter(draws.values())).shape[:2] if draws else (1, 1)
    keep = max(1, min(total, MAX_PREDICTIVE_CELLS // max(1, per * chains)))
    if limit is not None:
        keep = max(1, min(keep, int(limit)))
    program, values = fit.program, fit.program.values
    out = np.empty((chains, keep) + shape, dtype=_numpy(fit.data[:1]).dtype
                   if fit.data.is_floating_point() else np.float64)
    own = set(values)
    for c in range(chains):
        for s in range(keep):
            theta = {k: v[c, s] for k, v in draws.items()}
            if fit.posterior is not None and not set(theta) <= own:
                x = fit.posterior.sample_predictive(shape[0])  # aggregated draws (FullJoint)
            else:
                x = program.sample(shape[0], {**values, **theta})
            if tuple(x.shape) != shape:
                raise ValueError(f"the program generated data of shape {tuple(x.shape)} for a "
                                 f"posterior predictive of the observed shape {shape}; return "
                                 "the data in the observed shape from the program")
            out[c, s] = _numpy(x)
    dims = ["chain", "draw"] + obs_dims
    ds = xr.Dataset({"x": xr.DataArray(out, dims=dims, coords={d: np.arange(n) for d, n in
                                                             zip(dims, out.shape)})})
    ds.attrs["draws_used"] = f"{keep} of {total} per chain"
    return ds


def _prior(fit, num: int):
    """(prior draws of the random parameters (1, num, ...), prior predictive data (1, num,
    *observed shape)) from the program run forward with its priors."""
    program = fit.program
    program.discover(fit.data)
    bayes = program.bayesian()
    names = program.random
    if not names:
        raise ValueError(f"{program.label} has no prior to draw from: no parameter has a prior "
                         "(pyro.sample / PyroSample); call to_arviz(prior=False)")
    n = fit.data.shape[0]
    draws = {k: [] for k in names}
    data = []
    from pyro import poutine

    for _ in range(num):
        with poutine.block(), torch.no_grad():
            tr = poutine.trace(bayes).get_trace(num_samples=n)
        for k in names:
            draws[k].append(_numpy(tr.nodes[k]["value"]))
        data.append(_numpy(program._generated(tr, n)))
    return ({k: np.stack(v)[None] for k, v in draws.items()}, np.stack(data)[None])


# -- PSIS-LOO and other elpd ----------------------------------------------------------------------
def psis_log_weights(log_ratios):
    """Pareto-smoothed importance sampling (ArviZ's `psislw`) of one set of log importance
    ratios over draws (a 1-D tensor): (normalised log weights as a tensor, Pareto k)."""
    lw, k = az.psislw(_numpy(log_ratios).astype(float))
    return torch.from_numpy(np.asarray(lw, dtype=float)), float(k)


def elpd(pointwise, *, n_samples: int, p_eff: float = 0.0, pareto_k=None,
         name: str = "x") -> ELPDData:
    """Pointwise expected log predictive densities packed as ArviZ's LOO result, so that
    `az.compare` and `az.plot_compare` rank them (held-out data or leave-future-out: p_eff 0,
    no penalty to estimate)."""
    pointwise = np.asarray(_numpy(pointwise), dtype=float)
    n = len(pointwise)
    total = float(pointwise.sum())
    se = float(np.sqrt(n * np.var(pointwise))) if n > 1 else math.nan
    k = np.zeros(n) if pareto_k is None else np.asarray(_numpy(pareto_k), dtype=float)
    good_k = min(1 - 1 / np.log10(max(n_samples, 11)), 0.7)
    return ELPDData(
        data=[total, se, float(p_eff), n_samples, n, bool((k > good_k).any()),
              xr.DataArray(pointwise, dims=[f"{name}_dim_0"], name="loo_i"),
              xr.DataArray(k, dims=[f"{name}_dim_0"]), "log", good_k],
        index=["elpd_loo", "se", "p_loo", "n_samples", "n_data_points", "warning", "loo_i",
               "pareto_k", "scale", "good_k"])


def loo(fit, start: int | None = None) -> ELPDData:
    """PSIS-LOO of a Bayesian fit; an SVI fit's draws are importance-weighted by
    log p(theta, y) - log q(theta) first (Magnusson et al. 2019), per datum
    log w_s = log p_s - log q_s - log p(y_i | theta_s), Pareto-smoothed."""
    if not fit.bayesian:
        raise ValueError(f"a {fit.method} fit is a point estimate: it has no posterior for "
                         "leave-one-out; compare it on held-out data (data=...)")
    idata = to_inference_data(fit, start=start)
    stats = fit.sample_stats
    if fit.method != "svi":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return az.loo(idata, pointwise=True)
    if "log_p" not in stats or "log_q" not in stats:
        raise ValueError("this SVI fit kept no log_p / log_q per draw (a delta guide is a point "
                         "estimate); refit with an autoguide or a guide with a density")
    ll = idata.log_likelihood["x"].values.reshape(-1, idata.log_likelihood["x"].shape[-1])
    ratio = (_numpy(stats["log_p"]) - _numpy(stats["log_q"])).reshape(-1).astype(float)
    S, n = ll.shape
    with warnings.catch_warnings():  # psislw smooths along the last axis: the draws
        warnings.simplefilter("ignore")
        lw_all, _ = az.psislw(ratio)
        lw, k = az.psislw(ratio[None, :] - ll.T)  # (n, S): one set of weights per datum
    elpd_i = _logsumexp(lw + ll.T, 1)
    lppd_i = _logsumexp(lw_all[None, :] + ll.T, 1)
    return elpd(elpd_i, n_samples=S, p_eff=float(lppd_i.sum() - elpd_i.sum()), pareto_k=k)


def _logsumexp(a, axis):
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


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


def compare_elpd(elpds: dict) -> az.InferenceData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.compare(elpds, ic="loo")
