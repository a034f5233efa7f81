"""`ppl-models compare sunspots`: autoregressions of order 1..12 on the yearly sunspot numbers.

Prints one row per order (the conditional MLE's parameters, AIC and BIC on the common sample of
`select_order`, leave-future-out elpd of one-step-ahead predictions, fit seconds) and writes to
the report folder: table.md, results.json, forecast.png (the AIC order's forecasts, MLE and exact
posterior predictive, with 90% intervals) and forest.png (the AR(2) posteriors from `exact`,
`nuts` and `svi` side by side).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import inference
from inference.bayes import few_threads
from inference.compare import table
from ppl_models import datasets
from ppl_models.autoregressive import AutoRegressive

MAX_ORDER = 12
MIN_TRAIN = 100  # LFO predicts the years 1800..2008 from all years before each
FIRST_YEAR = 1700


@dataclass
class Row:
    order: int
    num_parameters: int
    aic: float
    bic: float
    lfo_elpd: float
    fit_seconds: float
    estimates: str


COLUMNS = [("order", "order"), ("free params", "num_parameters"), ("AIC", "aic"),
           ("BIC", "bic"), ("LFO elpd", "lfo_elpd"), ("fit s", "fit_seconds"),
           ("conditional MLE", "estimates")]


def describe(params: dict) -> str:
    phi = ", ".join(f"{v:.2f}" for v in params["phi"].tolist())
    return f"const={float(params['const']):.2f} phi=[{phi}] sigma={float(params['sigma']):.2f}"


def order_table(x, seed: int) -> tuple[list[Row], inference.OrderSelection]:
    selection = inference.select_order(x, MAX_ORDER, "aic")
    rows = []
    for p in range(1, MAX_ORDER + 1):
        print(f"AR({p}): fit and leave-future-out ...", file=sys.stderr, flush=True)
        f = inference.fit(AutoRegressive(p), x, "mle", seed=seed)
        cv = inference.lfo(AutoRegressive(p), x, MIN_TRAIN, seed=seed)
        rows.append(Row(p, f.model.num_parameters, selection.aic[p], selection.bic[p], cv.elpd,
                        f.fit_seconds, describe(f.params)))
    return rows, selection


def ar2_posteriors(x, seed: int) -> dict:
    """AR(2) under the default priors by the exact conjugate posterior, NUTS and SVI."""
    model = AutoRegressive(2)
    print("AR(2) posteriors: exact, nuts, svi ...", file=sys.stderr, flush=True)
    return {
        "exact": inference.fit(model, x, "exact", seed=seed),
        "nuts": inference.fit(model, x, "nuts", num_chains=2, num_samples=500, warmup_steps=500,
                              jit_compile=True, seed=seed),
        "svi": inference.fit(model, x, "svi", guide="multivariate_normal", seed=seed),
    }


def forest_plot(fits: dict, path) -> None:
    import arviz as az
    import matplotlib.pyplot as plt

    import ppl_models.plots  # noqa: F401  (the non-interactive backend)

    data = [f.to_arviz() for f in fits.values()]
    panels = [("const", {}), ("phi", {"phi_dim_0": [0]}), ("phi", {"phi_dim_0": [1]}),
              ("sigma", {})]
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 3.2))
    for ax, (var, coords) in zip(axes, panels):
        az.plot_forest(data, model_names=list(fits), var_names=[var], coords=coords,
                       combined=True, hdi_prob=0.9, ax=ax)
        ax.set_title(var + (f"[{coords['phi_dim_0'][0]}]" if coords else ""))
    fig.suptitle("AR(2) on sunspots: 90% posterior intervals by exact, nuts and svi")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def forecast_plot(x, order: int, seed: int, path, steps: int = 20, history: int = 80) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    import ppl_models.plots  # noqa: F401

    years = FIRST_YEAR + np.arange(len(x))
    ahead = years[-1] + 1 + np.arange(steps)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    ax.plot(years[-history:], x[-history:].numpy(), color="black", lw=1.2, label="observed")
    for method, color, style in (("mle", "tab:blue", "-"), ("exact", "tab:orange", "--")):
        fc = inference.fit(AutoRegressive(order), x, method, seed=seed).forecast(steps, 0.9)
        ax.plot(ahead, fc.mean.numpy(), color=color, ls=style, label=f"AR({order}) {method} mean")
        ax.fill_between(ahead, fc.lower.numpy(), fc.upper.numpy(), color=color, alpha=0.2,
                        label=f"{method} 90% interval")
    ax.set_xlabel("year")
    ax.set_ylabel("sunspot number")
    ax.set_title(f"sunspots: {steps}-year forecasts of AR({order}) (order chosen by AIC)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(out: Path, seed: int = 0) -> list[Row]:
    x = datasets.load("sunspots").train
    with few_threads(x):
        rows, selection = order_table(x, seed)
    text = table(rows, columns=COLUMNS)
    print(f"\nsunspots 1700-2008: AR(p) conditional MLE; AIC/BIC on the common sample "
          f"(n = {selection.nobs}); LFO elpd of the one-step-ahead predictions of "
          f"{len(x) - MIN_TRAIN} years (refits on all years before each)\n{text}")
    bic = inference.select_order(x, MAX_ORDER, "bic").order
    print(f"order by AIC: {selection.order}, by BIC: {bic}, by LFO: "
          f"{max(rows, key=lambda r: r.lfo_elpd).order}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(f"# sunspots\n\n{table(rows, markdown=True, columns=COLUMNS)}"
                                  f"\n\norder by AIC: {selection.order}, by BIC: {bic}\n")
    (out / "results.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    forest_plot(ar2_posteriors(x, seed), out / "forest.png")
    forecast_plot(x, selection.order, seed, out / "forecast.png")
    print(f"report written to {out}/ (table.md, results.json, forecast.png, forest.png)")
    return rows
