"""ArviZ conversion: every fit of every program to InferenceData (or a DataTree under 1.x).

Built by hand rather than with `az.from_pyro`, which accepts only an MCMC object and drops
`log_likelihood` for models that do not vectorise over draws; and neither Pyro nor ArviZ
converts an SVI fit. Here every fit of every program converts the same way:

- ``posterior``: the draws (chain, draw, ...); a point estimate (mle, map) as one draw, flagged
  ``point_estimate`` in the attributes; named dims from the program's plates;
- ``log_likelihood``: one variable with one entry per datum (a series: per modelled time step,
  ``start`` restricting it to a common sample), so `az.loo` and `az.compare` work. Variables
  are named as the program names its observed site (``obs``, ``y``; ``x`` for built-ins);
- ``log_prior``: the log prior density of every random parameter at each draw (not for mle);
- ``constant_data``: the program's ``given=`` tensors and numbers (covariates, known scales);
- ``observed_data``; ``sample_stats`` (NUTS: diverging, step_size, tree_depth, n_steps,
  energy, acceptance_rate, lp; SVI: log_p and log_q per draw, for the LOO correction);
- ``posterior_predictive`` (replicated data of the observed shape, one per posterior draw),
  ``prior`` and ``prior_predictive`` on request.

A group that was asked for and cannot be built raises; none is dropped silently.

PSIS-LOO and other elpd live in `inference.evaluation.loo`; r_hat and ESS in `diagnostics`.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from inference.evaluation import arviz_generations as generations
from inference.evaluation.arviz_generations import az

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
    roles = fit.program.discovered
    site = (roles.sites.get(name) or roles.deterministic.get(name)) if roles is not None else None
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
    first = fit.program.roles.data_plate if fit.program.discovered is not None else None
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


def numpy_of(t) -> np.ndarray:
    """A tensor (or array-like) as a numpy array on the host."""
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


# -- the conversion -----------------------------------------------------------------------------
def to_inference_data(
    fit,
    *,
    posterior_predictive: bool = False,
    prior: bool = False,
    start: int | None = None,
    log_likelihood: bool = True,
    log_prior: bool | None = None,
    num_prior: int = 500,
    predictive_draws: int | None = None,
    simulate: bool = False,
    seed: int | None = 0,
):
    """InferenceData of `fit` (see the module docstring). `start`: for a series, score the
    steps t >= start only (0-based), so that fits of different orders share one sample.
    `num_prior`: prior draws when ``prior=True``. `predictive_draws`: replicate the data for
    the first that many draws of each chain only (default: every draw, up to
    MAX_PREDICTIVE_CELLS numbers; the group's attrs say how many). `simulate`: for a series,
    also a free-running simulation per draw (``x_simulated``, from the observed start).
    `seed` makes the replicated data and prior draws reproducible (None: the global RNG).
    `log_prior` (default: wherever the fit has a prior, i.e. all but mle): the log prior
    density of every random parameter and local latent at each draw, for ArviZ's
    power-scaling sensitivity (`psense`, `psense_summary`, `psens`)."""
    from ppl_models.runtime import seeded

    fit.require_draws()
    derived = {**fit.deterministic, **fit.discrete}
    groups = {
        "posterior": _dataset(
            fit,
            {k: numpy_of(v) for k, v in {**fit.draws, **derived}.items()},
            ["chain", "draw"],
        )
    }
    obs = numpy_of(fit.data)
    obs_dims = _data_dims(fit, obs.ndim)
    first = _first_scored(fit, start)
    groups["observed_data"] = _observed(fit, obs[first:], obs_dims, first)
    constant = _constant(fit, obs_dims[0])
    if first:  # the values a series' likelihood conditions on
        constant[f"{fit.program.observed_name}_start"] = xr.DataArray(
            obs[:first], dims=["start"], coords={"start": np.arange(first)}
        )
    if constant:
        groups["constant_data"] = xr.Dataset(constant)
    if log_likelihood:
        # images: the per-datum log-likelihood under `x_total`'s name too, where LOO-PIT of
        # that statistic can run (with the posterior predictive; `az.loo` then needs var_name)
        groups["log_likelihood"] = _log_likelihood(
            fit, obs_dims[0], first, total=posterior_predictive and obs.ndim > 1
        )
    if log_prior is None:
        log_prior = fit.method != "mle" and bool(fit.program.sampled)
    if log_prior:
        groups["log_prior"] = _log_prior(fit)
    if fit.sample_stats:
        stats = {k: numpy_of(v) for k, v in fit.sample_stats.items()}
        groups["sample_stats"] = xr.Dataset(
            {
                k: xr.DataArray(
                    v,
                    dims=(dims := ["chain", "draw"] + [f"{k}_dim_{i}" for i in range(v.ndim - 2)]),
                    coords=_coords(dims, v.shape),
                )
                for k, v in stats.items()
            }
        )
    with seeded(seed):
        if posterior_predictive:
            groups["posterior_predictive"] = _posterior_predictive(
                fit, obs_dims, first, predictive_draws, simulate
            )
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
            raise ValueError(
                "start= applies to a series (a program without a data plate); "
                "this fit models independent rows"
            )
        return 0
    first = n - fit.pointwise_log_likelihood().shape[-1]
    if start is None:
        return first
    if isinstance(start, bool) or not isinstance(start, int) or start < first or start >= n:
        raise ValueError(
            f"start={start!r}: this fit scores time steps {first}..{n - 1} "
            f"(0-based; {fit.program.label} conditions on the first {first}); "
            f"pass an int from {first} to {n - 1}, the largest order among the "
            "fits you compare"
        )
    return start


def _observed(fit, obs, dims, first) -> xr.Dataset:
    coords = _coords(dims, obs.shape, _index_coords(fit, dims[0], first, len(obs)))
    name = fit.program.observed_name
    data = {name: xr.DataArray(obs, dims=dims, coords=coords)}
    if obs.ndim > 1:  # a per-datum statistic for LOO-PIT: the sum of the datum's values
        data[f"{name}_total"] = xr.DataArray(
            obs.reshape(len(obs), -1).sum(-1), dims=dims[:1], coords={dims[0]: coords[dims[0]]}
        )
    return xr.Dataset(data)


def _index_coords(fit, dim, first, count) -> dict:
    index = np.arange(first, first + count)
    labels = _labels(fit)
    return {dim: index if labels is None else labels[index]}


def _predictive(fit, data, obs_dims, first, attrs=None) -> xr.Dataset:
    """A predictive group from (chain, draw, ...) replicates aligned with observed_data."""
    dims = ["chain", "draw"] + obs_dims
    coords = _coords(dims, data.shape, _index_coords(fit, obs_dims[0], first, data.shape[2]))
    name = fit.program.observed_name
    out = {name: xr.DataArray(data, dims=dims, coords=coords)}
    if data.ndim > 3:
        out[f"{name}_total"] = xr.DataArray(
            data.reshape(*data.shape[:3], -1).sum(-1),
            dims=dims[:3],
            coords={d: coords[d] for d in dims[:3]},
        )
    ds = xr.Dataset(out)
    ds.attrs.update(attrs or {})
    return ds


def _attrs(fit) -> dict:
    import datetime
    import platform

    import pyro

    import ppl_models

    p = fit.program
    attrs = {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "inference_library": "pyro",
        "inference_library_version": str(pyro.__version__),
        "ppl_models_version": ppl_models.__version__,
        "torch_version": str(torch.__version__),
        "arviz_version": az.__version__,
        "python_version": platform.python_version(),
        "model": p.label,
        "method": fit.method,
        "num_parameters": int(p.num_parameters),
        "fit_seconds": float(fit.fit_seconds),
        "seed": fit.info.get("seed", -1),
        "point_estimate": int(fit.method in ("mle", "map")),
    }
    if fit.approximation is not None:  # what the draws are: ArviZ cannot tell otherwise
        attrs["posterior_approximation"] = fit.info.get("posterior", fit.approximation)
    try:
        attrs["factorization"] = p.factorization
    except ValueError:
        pass
    if fit.method == "svi":
        attrs["guide"] = str(fit.info.get("guide", ""))
        if "pareto_k" in fit.info:  # the guide against the posterior (`inference.svi.checked`)
            attrs["guide_pareto_k"] = float(fit.info["pareto_k"])
            attrs["guide_importance_ess"] = float(fit.info["importance_ess"])
    return attrs


def _log_likelihood(fit, dim: str, first: int, total: bool = False) -> xr.Dataset:
    n = fit.data.shape[0]
    cells = fit.num_draws * n
    if cells > MAX_LOG_LIKELIHOOD_CELLS:
        raise ValueError(
            f"the pointwise log-likelihood would hold {fit.num_draws:,} draws x {n:,} "
            f"data = {cells:,} numbers, too many to hold; refit with fewer draws "
            "(num_samples=...) or on a subsample of the data, or pass "
            "log_likelihood=False"
        )
    ll = numpy_of(fit.pointwise_log_likelihood())
    ll = ll[..., first - (n - ll.shape[-1]) :] if first else ll
    dims = ["chain", "draw", dim]
    name = fit.program.observed_name
    array = xr.DataArray(
        ll, dims=dims, coords=_coords(dims, ll.shape, _index_coords(fit, dim, first, ll.shape[-1]))
    )
    return xr.Dataset({name: array, f"{name}_total": array} if total else {name: array})


def _log_prior(fit) -> xr.Dataset:
    """log p of every random parameter and local latent at each draw (chain, draw, ...),
    elementwise where the prior is (a prior over a whole vector: one number per draw)."""
    draws = fit.draws
    lead, at = fit.program.each_draw(draws)
    terms = [fit.program.log_prior_terms(fit.data, values) for values in at]
    out = {}
    for k in terms[0]:
        value = torch.stack([t[k] for t in terms])
        shape = draws[k].shape[2:] if k in draws else ()
        if tuple(value.shape[1:]) != tuple(shape):  # a density over a whole vector
            value = value.reshape(len(terms), -1).sum(-1)
        out[k] = numpy_of(value.reshape(*lead, *value.shape[1:]))
    return _dataset(fit, out, ["chain", "draw"])


def _constant(fit, data_dim: str) -> dict:
    """The program's `given` arguments that are numbers or tensors (covariates, sizes, known
    scales), as PyMC keeps its data: a tensor with one row per datum along the data's dim."""
    n = fit.data.shape[0]
    out = {}
    for k, v in fit.program.given.items():
        if isinstance(v, bool) or not (torch.is_tensor(v) or isinstance(v, int | float)):
            continue
        a = numpy_of(v)
        dims = [f"{k}_dim_{i}" for i in range(a.ndim)]
        if a.ndim and a.shape[0] == n and fit.program.exchangeable:
            dims[0] = data_dim
        out[k] = xr.DataArray(a, dims=dims, coords=_coords(dims, a.shape))
    # a size that names a dim (J = 8 beside sigma over the plate "J") is that dim's length
    used = {d for v in out.values() for d in v.dims} | {data_dim}
    return {k: v for k, v in out.items() if not (v.ndim == 0 and k in used)}


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
        rep = numpy_of(program.replicates(fit.data, used))
        ds = _predictive(fit, rep[..., first - (n - rep.shape[-1]) :], obs_dims, first, attrs)
        if simulate:
            sim = numpy_of(program.simulations(fit.data, used))
            ds["x_simulated"] = xr.DataArray(
                sim,
                dims=["chain", "draw", "simulated_time"],
                coords=_coords(["chain", "draw", "simulated_time"], sim.shape),
            )
        return ds
    if simulate:
        raise ValueError("simulate=True is for a series; independent rows are replicated whole")
    values = program.values
    out = np.empty(
        (chains, keep) + shape,
        dtype=numpy_of(fit.data[:1]).dtype if fit.data.is_floating_point() else np.float64,
    )
    own = set(values)
    for c in range(chains):
        for s in range(keep):
            theta = {k: v[c, s] for k, v in used.items()}
            if fit.posterior is not None and not set(theta) <= own:
                x = fit.posterior.sample_predictive(shape[0])  # aggregated draws (FullJoint)
            else:  # the observed units again: local latents at the draw's values
                x = program.generate(shape[0], {**values, **theta})
            if tuple(x.shape) != shape:
                raise ValueError(
                    f"the program generated data of shape {tuple(x.shape)} for a "
                    f"posterior predictive of the observed shape {shape}; return "
                    "the data in the observed shape from the program"
                )
            out[c, s] = numpy_of(x)
    return _predictive(fit, out, obs_dims, first, attrs)


def _prior(fit, num: int, first: int):
    """(prior draws of the random parameters and latents (2, num/2, ...), prior predictive
    data aligned with observed_data) from the program run forward with its priors; a series
    is simulated from its observed start (`Program.simulations`)."""
    program = fit.program
    source = getattr(fit.posterior, "model", None)
    if source is not None and source is not program.model:  # exact: the model, not its
        from ppl_models.programs.program import Program  # aggregated predictive

        program = Program(source, program.data_plate)
    program.discover(fit.data)
    bayes = program.bayesian()
    names = program.sampled
    if not names:
        raise ValueError(
            f"{program.label} has no prior to draw from: no parameter has a prior "
            "(pyro.sample / PyroSample); call to_arviz(prior=False)"
        )
    n = fit.data.shape[0]
    draws = {k: [] for k in names}
    data = []
    import pyro
    from pyro import poutine

    for _ in range(num):  # (a series generated from an explosive prior draw may overflow)
        with poutine.block(), torch.no_grad(), pyro.validation_enabled(program.exchangeable):
            tr = poutine.trace(bayes).get_trace(
                num_samples=n if program.args.takes_num_samples else None
            )
        for k in names:
            draws[k].append(tr.nodes[k]["value"])
        if program.exchangeable:
            data.append(numpy_of(program.generated(tr, n)))
    chains = 2 if num >= 4 else 1
    per = num // chains
    stacked = {
        k: torch.stack(v[: chains * per]).reshape(chains, per, *v[0].shape)
        for k, v in draws.items()
    }
    if program.exchangeable:
        out = np.stack(data[: chains * per]).reshape(chains, per, *data[0].shape)
    else:
        sim = numpy_of(program.simulations(fit.data, stacked))
        out = sim[..., first - (n - sim.shape[-1]) :]
    return {k: numpy_of(v) for k, v in stacked.items()}, out
