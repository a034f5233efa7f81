"""Autoregressions of the yearly sunspot numbers (1700-2008): choose the order four ways, fit
AR(2) every way, check it against replicated series, forecast.

    .venv/bin/python examples/sunspots_ar.py [--out reports/examples] [--quick]

AR(p): x_t = const + phi_1 x_(t-1) + ... + phi_p x_(t-p) + sigma eps_t, eps_t ~ N(0, 1);
p + 2 free parameters; the conditional likelihood scores x_(p+1..T).

1. The order by AIC and BIC on a common sample (`inference.select_order`), by leave-future-out
   (predict each year from 1800 on from all years before it: `inference.lfo`), and by PSIS-LOO
   on the common sample of steps every order scores (`inference.compare(..., criterion="loo")`,
   `to_arviz(start=...)`; LOO predicts the past from the future, so LFO is the honest choice
   for a series, shown here side by side).
2. AR(2) by the exact Normal-Inverse-Gamma posterior, NUTS and SVI: one forest plot
   (sunspots_forest.png) and a posterior predictive check of NUTS (sunspots_ppc.png).
3. Forecasts with 90% intervals of the AIC order: MLE (Gaussian) and exact posterior
   predictive (sunspots_forecast.png).
"""

from __future__ import annotations

import warnings

import preamble  # examples/preamble.py: the shared arguments

import inference
from inference.evaluation import plots
from ppl_models import AutoRegressive, datasets
from ppl_models.app import suites


def main(argv=None):
    p = preamble.parser(__doc__, "orders 1-4, short runs (a test)")
    p.add_argument("--max-order", type=int, default=12)
    p.add_argument("--min-train", type=int, default=100, help="first LFO training length")
    p.add_argument("--steps", type=int, default=20, help="years to forecast")
    args, out = preamble.parse(p, argv)
    warnings.filterwarnings("ignore", module="arviz")
    y = datasets.load("sunspots").train
    max_order = 4 if args.quick else args.max_order
    draws = 150 if args.quick else 500

    aic = inference.select_order(y, max_order, "aic")
    bic = inference.select_order(y, max_order, "bic")
    orders = range(1, max_order + 1)
    cv = inference.lfo({p: AutoRegressive(p) for p in orders}, y, args.min_train)
    exact = {
        f"AR({p})": inference.fit(AutoRegressive(p), y, "exact", num_samples=draws) for p in orders
    }
    loo = inference.compare(exact, criterion="loo")
    print(f"{'order':>5} {'AIC':>9} {'BIC':>9} {'LFO elpd':>9} {'LOO elpd':>9} {'k max':>6}")
    for p in orders:
        row = loo.loc[f"AR({p})"]
        print(
            f"{p:5d} {aic.aic[p]:9.1f} {aic.bic[p]:9.1f} {cv[p].elpd:9.1f} "
            f"{row['elpd_loo']:9.1f} {row['pareto_k_max']:6.2f}"
        )
    print(
        f"order by AIC {aic.order}, BIC {bic.order}, LFO {max(cv, key=lambda p: cv[p].elpd)}, "
        f"LOO {int(loo.index[0][3:-1])} (LOO on the {int(loo['n'].iloc[0])} common steps)"
    )

    fits = {
        "exact": inference.fit(AutoRegressive(2), y, "exact", seed=args.seed),
        "nuts": inference.fit(
            AutoRegressive(2),
            y,
            "nuts",
            num_samples=draws,
            warmup_steps=draws,
            jit_compile=True,
            seed=args.seed,
        ),
        "svi": inference.fit(
            AutoRegressive(2),
            y,
            "svi",
            guide="multivariate_normal",
            steps=500 if args.quick else 2000,
            seed=args.seed,
        ),
    }
    for name, f in fits.items():
        cells = []
        for k, v in f.draws.items():
            flat = v.flatten(0, 1)
            means, sds = flat.mean(0).reshape(-1), flat.std(0).reshape(-1)
            cells += [
                f"{k}{'' if flat.dim() == 1 else f'[{i}]'} {m:.3f}+-{s:.3f}"
                for i, (m, s) in enumerate(zip(means.tolist(), sds.tolist()))
            ]
        print(f"  AR(2) {name:6} {'  '.join(cells)}  ({f.fit_seconds:.1f} s)")
    plots.forest(
        fits,
        out / "sunspots_forest.png",
        title="AR(2) on sunspots: 90% intervals by exact, NUTS and SVI",
    )
    plots.ppc(
        fits["nuts"],
        out / "sunspots_ppc.png",
        draws=20 if args.quick else 100,
        title="AR(2) by NUTS: replicated series (density of values) vs observed",
    )
    suites.forecast_plot(y, aic.order, args.seed, out / "sunspots_forecast.png", steps=args.steps)
    print(f"wrote sunspots_forest.png, sunspots_ppc.png, sunspots_forecast.png to {out}")


if __name__ == "__main__":
    main()
