"""Independence vs Markov chains on binarised digits: exact posteriors, NUTS and SVI, compared
in ArviZ.

    .venv/bin/python examples/discrete_digits.py [--order 2] [--num-samples 300] [--out DIR]

1. Fit `Independent` and `Markov(order)` by their exact conjugate posterior and report test
   nats per image (the same numbers `ppl-models compare digits` prints).
2. Fit `Independent` again by NUTS and by SVI and check both against the exact Beta posterior.
3. Compare the exact fits with `az.compare` (PSIS-LOO on the pointwise log-likelihood) and
   save a forest plot of a few pixel probabilities under exact, NUTS and SVI.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import arviz as az
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import inference  # noqa: E402
from ppl_models import Independent, Markov, datasets  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--order", type=int, default=2)
    p.add_argument("--num-samples", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports/examples")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", module="arviz")

    split = datasets.load("digits")
    exact = {"independent": inference.fit(Independent(64), split.train, "exact",
                                          num_samples=args.num_samples, seed=args.seed),
             f"markov{args.order}": inference.fit(Markov(64, order=args.order), split.train,
                                                  "exact", num_samples=args.num_samples,
                                                  seed=args.seed)}
    for name, f in exact.items():
        r = f.report(split.test)
        print(f"{name:12} exact  test {r.nats:.3f} nats/image  {r.bits_per_dim:.3f} bits/dim  "
              f"{r.num_parameters} params")

    nuts = inference.fit(Independent(64), split.train, "nuts", num_samples=args.num_samples,
                         warmup_steps=args.num_samples, seed=args.seed)
    svi = inference.fit(Independent(64), split.train, "svi", guide="multivariate_normal",
                        seed=args.seed)
    mean = exact["independent"].params["probs"]
    sd = exact["independent"].draws["probs"].flatten(0, 1).std(0)
    for f in (nuts, svi):
        z = ((f.params["probs"] - mean).abs() / sd).max()
        print(f"independent  {f.method:5}  test {f.report(split.test).nats:.3f} nats/image, "
              f"max |mean - exact| = {float(z):.3f} posterior sd ({f.fit_seconds:.1f} s)")

    idatas = {k: f.to_arviz() for k, f in exact.items()}
    print("\naz.compare (PSIS-LOO on the training images):")
    print(az.compare(idatas)[["rank", "elpd_loo", "p_loo", "elpd_diff", "se"]])

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pixels = [2, 10, 27, 36, 52]
    posteriors = [exact["independent"].to_arviz(), nuts.to_arviz(), svi.to_arviz()]
    az.plot_forest(posteriors, model_names=["exact", "nuts", "svi"], var_names=["probs"],
                   coords={"probs_dim_0": pixels}, combined=True, figsize=(6, 4))
    plt.title("P(pixel on): exact Beta posterior vs NUTS vs SVI")
    plt.savefig(out / "digits_forest.png", dpi=110, bbox_inches="tight")
    print(f"wrote {out / 'digits_forest.png'}")


if __name__ == "__main__":
    main()
