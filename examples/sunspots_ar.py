"""Autoregressions of the yearly sunspot numbers (1700-2008): choose the order, check it by
leave-future-out, fit it every way, forecast.

    .venv/bin/python examples/sunspots_ar.py [--max-order 12] [--steps 10] [--out DIR]

1. Choose the order by AIC and BIC on a common sample (`inference.select_order`).
2. Leave-future-out: predict each year from 1800 on from all years before it, for AR(2) and
   the chosen order (`inference.lfo`; pointwise LOO is not valid for a series).
3. Fit the chosen order by conditional MLE, by the exact likelihood, and the AR(2) by its exact
   conjugate posterior, NUTS and SVI; print posterior means and sds side by side.
4. Forecast `--steps` years with 90% intervals: MLE (Gaussian) and exact posterior predictive;
   with `--out`, save the forecast plot.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import inference
from ppl_models import AutoRegressive, datasets


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-order", type=int, default=12)
    p.add_argument("--min-train", type=int, default=100, help="first LFO training length")
    p.add_argument("--steps", type=int, default=10, help="years to forecast")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for forecast.png")
    args = p.parse_args(argv)
    y = datasets.load("sunspots").train

    aic = inference.select_order(y, args.max_order, "aic")
    bic = inference.select_order(y, args.max_order, "bic")
    order = aic.order
    print(f"order by AIC: {aic.order}, by BIC: {bic.order} (common sample of {aic.nobs} years)")

    cv = inference.lfo({"AR(2)": AutoRegressive(2), f"AR({order})": AutoRegressive(order)}, y,
                       args.min_train)
    for label, r in cv.items():
        print(f"LFO {label}: elpd {r.elpd:.1f} (se {r.se:.1f}) over {len(r.pointwise)} years")

    mle = inference.fit(AutoRegressive(order), y)
    exact_lik = inference.fit(AutoRegressive(order, likelihood="exact"), y)
    print(f"\nAR({order}) conditional MLE: log-lik {float(mle.model.log_prob(y).sum()):.2f}, "
          f"exact-likelihood MLE: {float(exact_lik.model.log_prob(y).sum()):.2f}")

    print("\nAR(2) posteriors (mean +- sd): exact conjugate, NUTS, SVI")
    fits = {"exact": inference.fit(AutoRegressive(2), y, "exact", seed=args.seed),
            "nuts": inference.fit(AutoRegressive(2), y, "nuts", num_chains=2, num_samples=500,
                                  warmup_steps=500, jit_compile=True, seed=args.seed),
            "svi": inference.fit(AutoRegressive(2), y, "svi", guide="multivariate_normal",
                                 seed=args.seed)}
    for name, f in fits.items():
        cells = []
        for k, v in f.draws.items():
            flat = v.flatten(0, 1)
            means, sds = flat.mean(0).reshape(-1), flat.std(0).reshape(-1)
            cells += [f"{k}{'' if flat.dim() == 1 else f'[{i}]'} {m:.3f}+-{s:.3f}"
                      for i, (m, s) in enumerate(zip(means.tolist(), sds.tolist()))]
        print(f"  {name:6} {'  '.join(cells)}  ({f.fit_seconds:.1f} s)")

    print(f"\nforecasts of AR({order}), 90% intervals")
    point = mle.forecast(args.steps, 0.9)
    bayes = inference.fit(AutoRegressive(order), y, "exact", seed=args.seed).forecast(
        args.steps, 0.9)
    print(f"{'year':>5} {'MLE mean':>9} {'MLE interval':>18} {'exact mean':>11} "
          f"{'posterior predictive':>22}")
    for h in range(args.steps):
        print(f"{2009 + h:5d} {float(point.mean[h]):9.1f} "
              f"[{float(point.lower[h]):7.1f}, {float(point.upper[h]):7.1f}] "
              f"{float(bayes.mean[h]):11.1f} "
              f"[{float(bayes.lower[h]):9.1f}, {float(bayes.upper[h]):9.1f}]")

    if args.out:
        from ppl_models.sunspots_report import forecast_plot

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        forecast_plot(y, order, args.seed, out / "forecast.png", steps=args.steps)
        print(f"\nwrote {out / 'forecast.png'}")


if __name__ == "__main__":
    main()
