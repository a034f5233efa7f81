"""Compare fits: one table for any set of them, ranked by ArviZ.

    inference.compare({"markov2": f1, "mine": f2})               # PSIS-LOO on the training data
    inference.compare({"markov2": f1, "nade": f3}, split.test)    # held-out log-density
    inference.compare({"AR(2)": a, "AR(9)": b})                   # series: leave-future-out

- Bayesian fits without `data`: PSIS-LOO through ArviZ on the data they were fitted to; an SVI
  fit's draws are importance-weighted by log p(theta, y) - log q(theta) first (its guide is
  not the posterior); every Pareto k is shown (``pareto_k_max``, ``warning``), never hidden.
- With `data`: the held-out log-density of every fit (point or Bayesian); for a series, the
  one-step-ahead log-density of the values after the training series (`data` continues it).
- Series without `data`: leave-future-out (`inference.lfo`) of one-step-ahead predictions of
  the values from `min_train` on (default: the last two thirds), the same steps for every fit.

The result is `az.compare`'s DataFrame (rank, elpd_loo, p_loo, elpd_diff, weight, se, dse,
warning, scale; `az.plot_compare` draws it) with what our reports add: the criterion, method,
free parameters, data, nats and bits per datum, the largest Pareto k, an SVI guide's own
Pareto k against the posterior (``guide_pareto_k``, NaN for other methods), fit seconds.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from inference.evaluation.arviz_generations import field, noted
from inference.evaluation.loo import PROPOSAL_ESS, PROPOSAL_K, compare_elpd, elpd, loo, reliable

COLUMNS = [
    ("model", "model"),
    ("method", "method"),
    ("factorization", "factorization"),
    ("free params", "num_parameters"),
    ("test nats", "nats"),
    ("bits/dim", "bits_per_dim"),
    ("zero-prob", "num_zero_prob"),
    ("fit s", "fit_seconds"),
]


CRITERIA = ("loo", "lfo", "held-out")


def compare(
    fits: dict,
    data=None,
    *,
    given: dict | None = None,
    criterion: str | None = None,
    min_train: int | None = None,
):
    """One table for `fits` (label -> Fit); see the module docstring. `criterion` chooses
    ("loo", "lfo" for series, "held-out" with `data`) where the default does not suit: e.g.
    ``criterion="loo"`` for series fits is PSIS-LOO on the steps every fit scores (the largest
    order's start), as `to_arviz(start=...)` gives `az.compare`. `given`: the programs' other
    arguments for the held-out `data` (new covariates); a dict for every fit, or label -> dict.

    A fit whose numbers cannot be trusted (a NaN log-density, a discrete likelihood above 0,
    chains that did not mix: `Fit.flags`) is ranked below every fit that can, with the reason
    in the ``flag`` column; the ranking and weights are ArviZ's among the trusted fits."""
    from inference.result import Fit

    if not isinstance(fits, dict) or not fits:
        raise ValueError("compare needs a dict of label -> Fit (at least one)")
    bad = [k for k, f in fits.items() if not isinstance(f, Fit)]
    if bad:
        raise ValueError(
            f"not a Fit: {', '.join(map(repr, bad))}; pass the results of inference.fit"
        )
    series = {k: not f.program.exchangeable for k, f in fits.items()}
    if len(set(series.values())) > 1:
        raise ValueError(
            "compare cannot rank models of one series beside models of independent "
            f"rows ({', '.join(k for k, s in series.items() if s)} model a series)"
        )
    is_series = next(iter(series.values()))
    if criterion is not None and criterion not in CRITERIA:
        raise ValueError(
            f"unknown criterion {criterion!r}; choose one of "
            f"{', '.join(map(repr, CRITERIA))} (or None: held-out with data, "
            "leave-future-out for series, else PSIS-LOO)"
        )
    if criterion is None:
        criterion = "held-out" if data is not None else "lfo" if is_series else "loo"
    failed: dict[str, str] = {}
    if criterion == "held-out":
        if data is None:
            raise ValueError("criterion='held-out' needs the held-out data: compare(fits, data)")
        labels = set(fits)
        elpds = _each(fits, failed, lambda k, f: _held_out(k, f, data, is_series, given, labels))
        criterion = "held-out"
    elif criterion == "lfo":
        if not is_series:
            raise ValueError("leave-future-out is for series; these fits model independent rows")
        elpds = _each(fits, failed, lambda k, f: _lfo(f, min_train))
        criterion = "leave-future-out"
    else:
        _same_data(fits)
        start = (
            max(len(f.data) - f.pointwise_log_likelihood().shape[-1] for f in fits.values())
            if is_series
            else None
        )
        elpds, criterion = _each(fits, failed, lambda k, f: loo(f, start)), "psis-loo"
    flags = {
        k: "; ".join(
            # PSIS-LOO reweights an SVI guide's draws (and flags the weights when unreliable)
            ([f"not ranked: {failed[k]}"] if k in failed else [])
            + f.flags(
                torch.as_tensor(np.asarray(field(elpds[k], "loo_i"))),
                guide=criterion != "psis-loo",
            )
            + _proposal_flag(elpds[k])
        )
        for k, f in fits.items()
    }
    table = _ranked(elpds, flags)
    for k, f in fits.items():
        e = elpds[k]
        n = int(field(e, "n_data_points"))
        p = f.program
        proposal = noted(e, "proposal")
        table.loc[k, "criterion"] = criterion + (f" ({proposal}-corrected)" if proposal else "")
        table.loc[k, "method"] = f.method
        table.loc[k, "num_parameters"] = p.num_parameters
        table.loc[k, "n"] = n
        nats = -float(field(e, "elpd_loo")) / n
        table.loc[k, "nats"] = nats
        table.loc[k, "bits_per_dim"] = nats / (p.num_dims * math.log(2))
        khat = field(e, "pareto_k")
        table.loc[k, "pareto_k_max"] = float(np.max(khat)) if khat is not None else math.nan
        table.loc[k, "guide_pareto_k"] = float(f.info.get("pareto_k", math.nan))
        table.loc[k, "fit_seconds"] = f.fit_seconds
        table.loc[k, "flag"] = flags[k]
    table["num_parameters"] = table["num_parameters"].astype(object).map(int)
    table["n"] = table["n"].astype(int)
    return table


def _proposal_flag(e) -> list[str]:
    """An importance-corrected LOO whose proposal is too far from the posterior."""
    if reliable(e):
        return []
    return [
        f"{noted(e, 'proposal')}-corrected LOO unreliable (the proposal's importance "
        f"weights: Pareto k {noted(e, 'proposal_k'):.2f}, {noted(e, 'proposal_ess'):.0f} "
        "effective draws; "
        f"trusted at k <= {PROPOSAL_K} and >= {PROPOSAL_ESS}): refit by nuts or exact"
    ]


def _ranked(elpds: dict, flags: dict):
    """ArviZ's comparison of the trusted fits, the flagged ones below them (rank after, weight
    0, elpd_diff from the best trusted fit); all of them by ArviZ where none is trusted."""
    trusted = {k: e for k, e in elpds.items() if not flags[k]}
    if not trusted or len(trusted) == len(elpds):
        return compare_elpd(elpds)
    table = compare_elpd(trusted)
    table["warning"] = table["warning"].astype(object)  # a NaN row goes in before it is set
    best = float(table["elpd_loo"].iloc[0])
    for k in elpds:
        if k in trusted:
            continue
        e = elpds[k]
        table.loc[k] = {c: np.nan for c in table.columns}
        table.loc[k, "rank"] = len(table) - 1
        value = float(field(e, "elpd_loo"))
        table.loc[k, "elpd_loo"] = value
        table.loc[k, "p_loo"] = float(field(e, "p_loo"))
        table.loc[k, "elpd_diff"] = best - value if math.isfinite(value) else np.nan
        table.loc[k, "weight"] = 0.0
        table.loc[k, "se"] = float(field(e, "se"))
        table.loc[k, "warning"] = True
        table.loc[k, "scale"] = "log"
    table["rank"] = table["rank"].astype(int)
    table["warning"] = table["warning"].astype(bool)
    return table


def _same_data(fits):
    first = None
    for k, f in fits.items():
        if first is None:
            first = (k, f.data)
        elif f.data.shape != first[1].shape or not torch.equal(f.data.to(first[1].dtype), first[1]):
            raise ValueError(
                f"PSIS-LOO compares fits of the same data, but {k!r} was fitted to "
                f"other data than {first[0]!r}; refit on the same data, or compare "
                "on held-out data (data=...)"
            )


def _each(fits: dict, failed: dict, one) -> dict:
    """`one(label, fit)` for every fit; a fit it cannot score (a ValueError: no Laplace
    approximation at a boundary, a program that fails on the data) gets NaN elpds and its
    reason in `failed`, so that the table still ranks every other fit."""
    out, n = {}, None
    for k, f in fits.items():
        try:
            out[k] = one(k, f)
            n = len(np.asarray(field(out[k], "loo_i")).reshape(-1))
        except ValueError as e:
            failed[k] = str(e)
    for k in failed:
        size = n if n is not None else len(fits[k].data)
        out[k] = elpd(torch.full((size,), math.nan, dtype=torch.float64), n_samples=1)
    return {k: out[k] for k in fits}


def _held_out(label, f, data, is_series, given, labels):
    """The held-out elpd of one fit; `given` is per fit where its keys are the fits' labels."""
    per_fit = isinstance(given, dict) and given and set(given) <= labels
    g = given.get(label) if per_fit and isinstance(given.get(label), dict) else given
    lp = f.log_density(data, given=g)
    if is_series:
        x = f.program.validate(data)
        t = len(f.data)
        if len(x) <= t or not torch.equal(x[:t].to(f.data.dtype), f.data):
            raise ValueError(
                f"for a series, data= continues the training series of {label!r} "
                f"({t} values): pass the whole series with the new values after them"
            )
        lp = lp[-(len(x) - t) :]  # one-step-ahead densities of the values after training
    return elpd(lp, n_samples=f.num_draws)


def _lfo(f, min_train):
    from inference.evaluation.timeseries import lfo

    m = len(f.data) // 3 if min_train is None else min_train
    result = lfo(f, f.data, m)
    return elpd(result.pointwise, n_samples=f.num_draws, pareto_k=result.pareto_k)


# -- text tables ------------------------------------------------------------------------------
def _cell(value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.3f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def table(rows, markdown: bool = False, columns=COLUMNS) -> str:
    """A text (or Markdown) table, one row per object (a `Report`, or any object with the
    attributes named in `columns`: (heading, attribute) pairs). Numbers are right-aligned."""
    body = [[_cell(getattr(r, attr)) for _, attr in columns] for r in rows]
    head = [name for name, _ in columns]
    if markdown:
        body = [[c.replace("|", "\\|") for c in row] for row in body]  # '|' in formulas
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    numeric = [all(isinstance(getattr(r, attr), int | float) for r in rows) for _, attr in columns]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'>' if num else '<'}{w}}}" for num, w in zip(numeric, widths))
    return "\n".join(
        [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in body]
    )
