"""Both ArviZ generations behind one set of calls (issue 17).

ArviZ 0.23 (Python 3.11 and up) keeps groups in an `az.InferenceData` and computes in `az.*`;
ArviZ 1.x (Python 3.12 and up) keeps them in an `xarray.DataTree` and computes in arviz-stats,
plotting in arviz-plots. `inference.evaluation.arviz_io` builds the groups once, as plain
`xarray.Dataset`s; this module is the only place that knows which generation is installed:

- `wrap(groups)`: the generation's container (InferenceData or DataTree), the same groups,
  variables, dims, coords, attrs and values either way; `groups(data)` reads any of them back
  into Datasets; `read_netcdf` / `write_netcdf` cross the generations (a file written under
  one opens under the other with every group).
- `loo(data)`, `loo_approximate(data, log_p, log_q)` (arviz-stats' `loo` and
  `loo_approximate_posterior` under 1.x; the same formulas by hand under 0.23, with
  `inference.evaluation.psis`, the PSIS of arviz-stats, so the numbers agree), `held_out(...)`
  (an ELPD record of held-out or leave-future-out pointwise values, which `compare` ranks
  beside LOO),
  `compare(records)`: ArviZ's table with the same columns under both (rank, elpd_loo, p_loo,
  elpd_diff, weight, se, dse, warning, scale).
- `field(record, name)` reads an ELPD record by the 0.23 names (elpd_loo, se, p_loo, loo_i,
  pareto_k, n_samples, n_data_points, warning); `note` / `noted` carry our own additions (the
  proposal of a corrected LOO, its Pareto k and effective draws) on either kind of record.
- `loo_pit(data, var)`; the four plots of `inference.evaluation.plots`.

What differs for a user (the README's table): 1.x has no `az.waic`, and its plots are
`plot_forest`, `plot_ppc_dist`, `plot_energy`, `plot_compare` of arviz-plots (PlotCollection,
`.savefig`), where 0.23 has `plot_forest`, `plot_ppc`, `plot_energy`, `plot_compare`
(matplotlib axes).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import xarray as xr

from inference.evaluation.psis import logsumexp, psis

with warnings.catch_warnings():  # ArviZ 0.23 announces its 1.x refactor on every import
    warnings.filterwarnings("ignore", message="ArviZ is undergoing")
    warnings.filterwarnings("ignore", category=FutureWarning)
    import arviz as az

MODERN = int(az.__version__.split(".")[0]) >= 1
GENERATION = f"ArviZ {az.__version__} ({'DataTree' if MODERN else 'InferenceData'})"

# 0.23 names of an ELPD record -> 1.x attribute names
_FIELDS = {
    "elpd_loo": "elpd",
    "p_loo": "p",
    "loo_i": "elpd_i",
    "se": "se",
    "pareto_k": "pareto_k",
    "n_samples": "n_samples",
    "n_data_points": "n_data_points",
    "warning": "warning",
    "scale": "scale",
    "good_k": "good_k",
}
COLUMNS = ["rank", "elpd_loo", "p_loo", "elpd_diff", "weight", "se", "dse", "warning", "scale"]


# -- containers -------------------------------------------------------------------------------
def wrap(groups: dict[str, xr.Dataset]):
    """The installed generation's container of `groups` (name -> Dataset)."""
    if MODERN:
        return xr.DataTree.from_dict(dict(groups))
    return az.InferenceData(**groups)


def groups(data) -> dict[str, xr.Dataset]:
    """name -> Dataset of an InferenceData or a DataTree (either generation's)."""
    if isinstance(data, xr.DataTree):
        return {k: v.to_dataset() for k, v in data.children.items()}
    return {k: getattr(data, k) for k in data.groups()}


def read_netcdf(path):
    """A netCDF file of either generation, as the installed generation's container."""
    if MODERN:
        return xr.open_datatree(str(path)).load()
    return az.from_netcdf(str(path))


def write_netcdf(data, path) -> None:
    if isinstance(data, xr.DataTree):
        data.to_netcdf(str(path), engine="h5netcdf")
    else:
        data.to_netcdf(str(path))


# -- ELPD records -----------------------------------------------------------------------------
def field(record, name: str):
    """A field of an ELPD record by its 0.23 name (None where the record has none)."""
    if MODERN:
        value = getattr(record, _FIELDS[name], None)
        return None if value is None else getattr(value, "values", value)
    return record[name] if name in record else None


def note(record, **extras) -> None:
    """Our additions to an ELPD record (``proposal``, ``proposal_k``, ``proposal_ess``)."""
    if MODERN:
        record.__dict__.setdefault("ppl_models", {}).update(extras)
    else:
        for k, v in extras.items():
            record[k] = v


def noted(record, name: str, default=None):
    if MODERN:
        return record.__dict__.get("ppl_models", {}).get(name, default)
    return record[name] if name in record else default


def held_out(
    pointwise,
    *,
    n_samples: int,
    p_eff: float = 0.0,
    pareto_k=None,
    name: str = "x",
    like: xr.DataArray | None = None,
):
    """An ELPD record of pointwise held-out (or leave-future-out) log predictive densities,
    which `compare` ranks like a LOO result. p_eff: the effective number of parameters; like:
    a DataArray whose dims and coords the pointwise values take (else one `{name}_dim_0`)."""
    pointwise = np.asarray(pointwise, dtype=float).reshape(-1)
    n = len(pointwise)
    k = np.zeros(n) if pareto_k is None else np.asarray(pareto_k, dtype=float).reshape(-1)
    se = float(np.sqrt(n * np.var(pointwise))) if n > 1 else math.nan
    good_k = min(1 - 1 / np.log10(max(n_samples, 11)), 0.7)

    def shaped(values, label=None):
        if like is None:
            return xr.DataArray(values, dims=[f"{name}_dim_0"], name=label)
        return xr.DataArray(
            values.reshape(like.shape), dims=like.dims, coords=like.coords, name=label
        )

    warning = bool((k > good_k).any())
    if MODERN:
        from arviz_stats.utils import ELPDDataLOO

        return ELPDDataLOO(
            elpd=float(pointwise.sum()),
            se=se,
            p=float(p_eff),
            n_samples=int(n_samples),
            n_data_points=n,
            scale="log",
            warning=warning,
            good_k=good_k,
            elpd_i=shaped(pointwise),
            pareto_k=shaped(k),
        )
    from arviz.stats.stats_utils import ELPDData

    return ELPDData(
        data=[
            float(pointwise.sum()),
            se,
            float(p_eff),
            int(n_samples),
            n,
            warning,
            shaped(pointwise, "loo_i"),
            shaped(k),
            "log",
            good_k,
        ],
        index=[
            "elpd_loo",
            "se",
            "p_loo",
            "n_samples",
            "n_data_points",
            "warning",
            "loo_i",
            "pareto_k",
            "scale",
            "good_k",
        ],
    )


def loo(data, var: str = "x"):
    """PSIS-LOO (pointwise) of the container's log_likelihood `var`. Under 1.x arviz-stats'
    `loo`; under 0.23 the same steps with `inference.evaluation.psis` (the PSIS arviz-stats
    uses, where 0.23's own `psislw` fits a tail one draw longer), so both generations give the
    same numbers for the same draws. r_eff as both ArviZ generations take it: the mean
    relative ESS ("mean" method) over every posterior value, 1 for a single chain."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if MODERN:
            return az.loo(data, pointwise=True, var_name=var)
        parts = groups(data)
        ll = parts["log_likelihood"][var]
        S = ll.sizes["chain"] * ll.sizes["draw"]
        r_eff = 1.0
        if ll.sizes["chain"] > 1:
            ess = az.ess(parts["posterior"], method="mean")
            r_eff = float(np.hstack([ess[v].values.ravel() for v in ess.data_vars]).mean()) / S
    values = _per_datum(ll)
    lw, k = psis(-values, r_eff)
    return _pointwise_record(values, lw, k, like=ll.isel(chain=0, draw=0, drop=True))


def _per_datum(ll: xr.DataArray) -> np.ndarray:
    """A (chain, draw, ...) log-likelihood as (datum, draw) rows, chains concatenated."""
    S = ll.sizes["chain"] * ll.sizes["draw"]
    return ll.transpose("chain", "draw", ...).values.reshape(S, -1).T


def _pointwise_record(ll, lw, k, like=None):
    """The ELPD record of log-likelihoods ll (n, S) under normalised log weights lw (n, S)."""
    S = ll.shape[1]
    elpd_i = logsumexp(lw + ll, 1)
    lppd_i = logsumexp(ll, 1) - np.log(S)
    return held_out(
        elpd_i, n_samples=S, p_eff=float((lppd_i - elpd_i).sum()), pareto_k=k, like=like
    )


def loo_approximate(data, log_p, log_q, var: str = "x"):
    """PSIS-LOO of draws from an approximation q of the posterior p (Magnusson et al. 2019):
    per datum, log w_s = log p(theta_s | y) - log q(theta_s) - log p(y_i | theta_s),
    Pareto-smoothed; elpd_i = log sum_s w_s p(y_i | theta_s) (normalised weights), p_loo_i =
    log mean_s p(y_i | theta_s) - elpd_i. arviz-stats' `loo_approximate_posterior` under 1.x;
    the same steps here under 0.23. log_p, log_q: (chain, draw)."""
    log_p = np.asarray(log_p, dtype=float)
    log_q = np.asarray(log_q, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if MODERN:
            dims = ["chain", "draw"]
            return az.loo_approximate_posterior(
                data,
                xr.DataArray(log_p, dims=dims),
                xr.DataArray(log_q, dims=dims),
                pointwise=True,
                var_name=var,
            )
        ll = groups(data)["log_likelihood"][var]
    values = _per_datum(ll)
    lw, k = psis((log_p - log_q).reshape(-1)[None, :] - values)
    return _pointwise_record(values, lw, k, like=ll.isel(chain=0, draw=0, drop=True))


def compare(records: dict):
    """The comparison of ELPD records (label -> record, the same data), one table in both
    generations (ArviZ 0.23's `compare` and arviz-stats' differ in the sign of elpd_diff and
    in the se's divisor): ranked by elpd_loo; ``elpd_diff`` = best - elpd (>= 0, as 0.23 and
    the flagged rows of `inference.compare`); ``se`` and ``dse`` = sqrt(n var(.)) with the
    sample variance (n - 1, as R's loo and arviz-stats); ``weight`` by stacking (Yao et al.
    2018), found here (`stacking_weights`) so that both generations give the same weights."""
    import pandas as pd

    pointwise = {
        k: np.asarray(field(r, "loo_i"), dtype=float).reshape(-1) for k, r in records.items()
    }
    sizes = {k: len(v) for k, v in pointwise.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"compare needs the same data for every fit; the pointwise elpd have lengths {sizes}"
        )
    elpd = {k: float(field(r, "elpd_loo")) for k, r in records.items()}
    order = sorted(records, key=lambda k: -elpd[k] if math.isfinite(elpd[k]) else math.inf)
    best = order[0]
    weights = stacking_weights(np.stack([pointwise[k] for k in order]))
    rows = []
    for rank, k in enumerate(order):
        diff = pointwise[best] - pointwise[k]
        rows.append(
            {
                "rank": rank,
                "elpd_loo": elpd[k],
                "p_loo": float(field(records[k], "p_loo")),
                "elpd_diff": elpd[best] - elpd[k],
                "weight": float(weights[rank]),
                "se": _se(pointwise[k]),
                "dse": 0.0 if k == best else _se(diff),
                "warning": bool(field(records[k], "warning")),
                "scale": "log",
            }
        )
    return pd.DataFrame(rows, index=order)[COLUMNS]


def _se(values: np.ndarray) -> float:
    n = len(values)
    return float(np.sqrt(n * np.var(values, ddof=1))) if n > 1 else 0.0


def stacking_weights(lpd: np.ndarray, tol: float = 1e-13, max_iter: int = 100_000) -> np.ndarray:
    """Stacking weights of K models' pointwise log predictive densities lpd (K, n): w on the
    simplex maximising sum_i log sum_k w_k exp(lpd_ki), by the EM fixed point
    w_k <- w_k mean_i [p_ki / sum_j w_j p_ji] (concave: it climbs to the optimum), plain numpy
    so that every generation gets the same numbers."""
    K = lpd.shape[0]
    finite = np.where(np.isfinite(lpd), lpd, -np.inf)
    top = finite.max(0)
    keep = np.isfinite(top)
    p = np.exp(finite[:, keep] - top[keep])
    w = np.full(K, 1.0 / K)
    if K == 1 or not keep.any():
        return w
    for _ in range(max_iter):
        new = w * (p / (w @ p)).mean(1)
        if np.max(np.abs(new - w)) < tol:
            return new / new.sum()
        w = new
    return w / w.sum()


def loo_pit(data, var: str = "x") -> np.ndarray:
    """LOO-PIT values of the observed `var` (one per log_likelihood entry)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if MODERN:
            pit = np.asarray(az.loo_pit(data, var_names=[var])[var].values)
        else:
            pit = np.asarray(az.loo_pit(data, y=var))
    # a probability: arviz-stats' sums can round to 1 + 2e-16
    return np.clip(pit, 0.0, 1.0)


# -- plots ------------------------------------------------------------------------------------
def plot_forest(
    datas: dict, path, var_names=None, coords=None, title: str = "", hdi_prob: float = 0.9
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if MODERN:
            pc = az.plot_forest(datas, var_names=var_names, coords=coords, backend="matplotlib")
            _save(pc, path, title)
            return
        axes = az.plot_forest(
            list(datas.values()),
            model_names=list(datas),
            var_names=var_names,
            coords=coords,
            combined=True,
            hdi_prob=hdi_prob,
        )
    _save_axes(axes, path, title)


def plot_ppc(data, path, title: str = "", num_pp_samples: int | None = None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if MODERN:
            _save(
                az.plot_ppc_dist(data, num_samples=num_pp_samples or 50, backend="matplotlib"),
                path,
                title,
            )
            return
        ax = az.plot_ppc(data, num_pp_samples=num_pp_samples, random_seed=0)
    _save_axes(ax, path, title)


def plot_energy(data, path, title: str = "") -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if MODERN:
            _save(az.plot_energy(data, backend="matplotlib"), path, title)
            return
        ax = az.plot_energy(data)
    _save_axes(ax, path, title)


def plot_compare(table, path, title: str = "") -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if MODERN:
            modern = table.rename(columns={"elpd_loo": "elpd", "p_loo": "p"})
            _save(az.plot_compare(modern, backend="matplotlib"), path, title)
            return
        ax = az.plot_compare(table.copy(), insample_dev=False)
    _save_axes(ax, path, title)


def _save(pc, path, title: str) -> None:
    import matplotlib.pyplot as plt

    fig = pc.viz["figure"].item() if hasattr(pc, "viz") and "figure" in pc.viz else None
    if fig is not None and title:
        fig.suptitle(title)
    pc.savefig(str(path))
    plt.close("all")


def _save_axes(ax, path, title: str) -> None:
    import matplotlib.pyplot as plt

    fig = np.ravel(ax)[0].figure
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


__all__ = [
    "COLUMNS",
    "GENERATION",
    "MODERN",
    "compare",
    "field",
    "groups",
    "held_out",
    "loo",
    "loo_approximate",
    "loo_pit",
    "note",
    "noted",
    "plot_compare",
    "plot_energy",
    "plot_forest",
    "plot_ppc",
    "read_netcdf",
    "wrap",
    "write_netcdf",
]
