"""Both ArviZ generations behind one set of calls (issue 17).

ArviZ 0.23 (Python 3.11 and up) keeps groups in an `az.InferenceData` and computes in `az.*`;
ArviZ 1.x (Python 3.12 and up) keeps them in an `xarray.DataTree` and computes in arviz-stats,
plotting in arviz-plots. `inference.arviz_io` builds the groups once, as plain
`xarray.Dataset`s; this module is the only place that knows which generation is installed:

- `wrap(groups)`: the generation's container (InferenceData or DataTree), the same groups,
  variables, dims, coords, attrs and values either way; `groups(data)` reads any of them back
  into Datasets; `read_netcdf` / `write_netcdf` cross the generations (a file written under
  one opens under the other with every group).
- `loo(data)`, `loo_approximate(data, log_p, log_q)` (arviz-stats' `loo_approximate_posterior`
  under 1.x; the same formula by hand under 0.23, as 0.23 has none), `held_out(...)` (an ELPD
  record of held-out or leave-future-out pointwise values, which `compare` ranks beside LOO),
  `compare(records)`: ArviZ's table with the same columns under both (rank, elpd_loo, p_loo,
  elpd_diff, weight, se, dse, warning, scale).
- `field(record, name)` reads an ELPD record by the 0.23 names (elpd_loo, se, p_loo, loo_i,
  pareto_k, n_samples, n_data_points, warning); `note` / `noted` carry our own additions (the
  proposal of a corrected LOO, its Pareto k and effective draws) on either kind of record.
- `loo_pit(data, var)`, `psislw(log_ratios)`; the four plots of `inference.plots`.

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

with warnings.catch_warnings():  # ArviZ 0.23 announces its 1.x refactor on every import
    warnings.filterwarnings("ignore", message="ArviZ is undergoing")
    warnings.filterwarnings("ignore", category=FutureWarning)
    import arviz as az

MODERN = int(az.__version__.split(".")[0]) >= 1
GENERATION = f"ArviZ {az.__version__} ({'DataTree' if MODERN else 'InferenceData'})"

# 0.23 names of an ELPD record -> 1.x attribute names
_FIELDS = {"elpd_loo": "elpd", "p_loo": "p", "loo_i": "elpd_i", "se": "se",
           "pareto_k": "pareto_k", "n_samples": "n_samples", "n_data_points": "n_data_points",
           "warning": "warning", "scale": "scale", "good_k": "good_k"}
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


def held_out(pointwise, *, n_samples: int, p_eff: float = 0.0, pareto_k=None,
             name: str = "x"):
    """An ELPD record of pointwise held-out (or leave-future-out) log predictive densities,
    which `compare` ranks like a LOO result. p_eff: the effective number of parameters."""
    pointwise = np.asarray(pointwise, dtype=float)
    n = len(pointwise)
    k = np.zeros(n) if pareto_k is None else np.asarray(pareto_k, dtype=float)
    se = float(np.sqrt(n * np.var(pointwise))) if n > 1 else math.nan
    good_k = min(1 - 1 / np.log10(max(n_samples, 11)), 0.7)
    dims = [f"{name}_dim_0"]
    if MODERN:
        from arviz_stats.utils import ELPDDataLOO

        return ELPDDataLOO(elpd=float(pointwise.sum()), se=se, p=float(p_eff),
                           n_samples=int(n_samples), n_data_points=n, scale="log",
                           warning=bool((k > good_k).any()), good_k=good_k,
                           elpd_i=xr.DataArray(pointwise, dims=dims),
                           pareto_k=xr.DataArray(k, dims=dims))
    from arviz.stats.stats_utils import ELPDData

    return ELPDData(
        data=[float(pointwise.sum()), se, float(p_eff), int(n_samples), n,
              bool((k > good_k).any()), xr.DataArray(pointwise, dims=dims, name="loo_i"),
              xr.DataArray(k, dims=dims), "log", good_k],
        index=["elpd_loo", "se", "p_loo", "n_samples", "n_data_points", "warning", "loo_i",
               "pareto_k", "scale", "good_k"])


def loo(data):
    """PSIS-LOO (pointwise) of the container's log_likelihood ``x``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.loo(data, pointwise=True, var_name="x")  # the same call in both


def loo_approximate(data, log_p, log_q):
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
                data, xr.DataArray(log_p, dims=dims), xr.DataArray(log_q, dims=dims),
                pointwise=True, var_name="x")
        ll = groups(data)["log_likelihood"]["x"].values
        S, n = log_p.size, ll.shape[-1]
        ll = ll.reshape(S, n)
        correction = (log_p - log_q).reshape(-1)
        correction = correction - correction.max()
        ratios = correction[None, :] - ll.T  # (n, S)
        ratios = ratios - ratios.max(1, keepdims=True)
        lw, k = psislw(ratios)
        elpd_i = _logsumexp(lw + ll.T, 1)
        lppd_i = _logsumexp(ll.T, 1) - np.log(S)
        return held_out(elpd_i, n_samples=S, p_eff=float((lppd_i - elpd_i).sum()),
                        pareto_k=k)


def psislw(log_ratios):
    """Pareto-smoothed log weights (normalised) and Pareto k along the last axis."""
    log_ratios = np.asarray(log_ratios, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if MODERN:
            from arviz_stats.base import array_stats

            # arviz-stats smooths the right tail of minus its input, as its own LOO passes it
            lw, k = array_stats.psislw(-log_ratios, r_eff=1.0, axis=-1)
            lw = lw - _logsumexp(lw, -1)[..., None]
            return lw, k
        return az.psislw(log_ratios)


def compare(records: dict):
    """ArviZ's comparison of ELPD records (label -> record), with the 0.23 columns under
    both generations."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not MODERN:
            return az.compare(records, ic="loo")
        table = az.compare(records, round_to="none")  # raw numbers, as 0.23 gives
    table = table.rename(columns={"elpd": "elpd_loo", "p": "p_loo"})
    table["warning"] = [bool(field(records[k], "warning")) for k in table.index]
    table["scale"] = "log"
    return table[COLUMNS + [c for c in table.columns if c not in COLUMNS]]


def loo_pit(data, var: str = "x") -> np.ndarray:
    """LOO-PIT values of the observed `var` (one per log_likelihood entry)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if MODERN:
            return np.asarray(az.loo_pit(data, var_names=[var])[var].values)
        return np.asarray(az.loo_pit(data, y=var))


def _logsumexp(a, axis):
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


# -- plots ------------------------------------------------------------------------------------
def plot_forest(datas: dict, path, var_names=None, coords=None, title: str = "",
                hdi_prob: float = 0.9) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if MODERN:
            pc = az.plot_forest(datas, var_names=var_names, coords=coords, backend="matplotlib")
            _save(pc, path, title)
            return
        axes = az.plot_forest(list(datas.values()), model_names=list(datas),
                              var_names=var_names, coords=coords, combined=True,
                              hdi_prob=hdi_prob)
    _save_axes(axes, path, title)


def plot_ppc(data, path, title: str = "", num_pp_samples: int | None = None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if MODERN:
            _save(az.plot_ppc_dist(data, num_samples=num_pp_samples or 50, backend="matplotlib"),
                  path, title)
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


__all__ = ["COLUMNS", "GENERATION", "MODERN", "compare", "field", "groups", "held_out", "loo",
           "loo_approximate", "loo_pit", "note", "noted", "plot_compare", "plot_energy",
           "plot_forest", "plot_ppc", "psislw", "read_netcdf", "wrap", "write_netcdf"]
