"""Independence vs Markov chains vs the full joint on binarised digits: what each assumption
learns, shown by its samples, scored on held-out images, and its posterior checked three ways.

    .venv/bin/python examples/discrete_digits.py [--out reports/examples] [--quick]

1. Fit, by their exact conjugate posteriors (Beta/Dirichlet(1) priors):
     full joint      p(x) = probs[x]                           2^64 - 1 parameters
     independence    p(x) = prod_d p(x_d)                      64
     Markov order k  p(x) = prod_d p(x_d | x_(d-k..d-1))       127 (k=1) ... 14,591 (k=8)
   and report test nats per image (the numbers `ppl-models compare digits` prints).
2. Samples side by side under real test images (digits_samples.png): the full joint's
   predictive is almost all uniform noise; independence gets the blur of the average digit;
   Markov chains draw strokes along rows.
3. Independence again by NUTS and by SVI against the exact Beta posterior: one forest plot of a
   few pixel probabilities (digits_forest.png), and PSIS-LOO of the exact fits in az.compare.
"""

from __future__ import annotations

import warnings

import preamble  # examples/preamble.py: the shared arguments

import inference
from inference.evaluation import plots
from ppl_models import FullJoint, Independent, Markov, datasets


def main(argv=None):
    p = preamble.parser(__doc__, "fewer draws (a test runs this)")
    args, out = preamble.parse(p, argv)
    warnings.filterwarnings("ignore", module="arviz")
    split = datasets.load("digits")
    draws = 100 if args.quick else 500

    fits = {
        "full joint": inference.fit(FullJoint(64, sparse=True), split.train, "exact"),
        "independence": inference.fit(Independent(64), split.train, "exact", num_samples=draws),
        **{
            f"Markov order {k}": inference.fit(
                Markov(64, order=k), split.train, "exact", num_samples=draws
            )
            for k in (1, 2, 8)
        },
    }
    print(
        inference.compare(fits, split.test)[["nats", "bits_per_dim", "num_parameters"]].to_string()
    )
    samples = {k: f.sample(12, seed=args.seed).numpy() for k, f in fits.items()}
    plots.image_rows(
        {"test images": split.test[:12].numpy(), **samples},
        out / "digits_samples.png",
        kind="digits",
        title="binarised digits: real (top) and samples of each assumption",
    )

    # 64 parameters: 2 x 1,000 draws keep every r_hat under 1.01 (500 left one at 1.014)
    nuts = inference.fit(
        Independent(64),
        split.train,
        "nuts",
        num_samples=2 * draws,
        warmup_steps=draws,
        seed=args.seed,
    )
    svi = inference.fit(
        Independent(64),
        split.train,
        "svi",
        steps=300 if args.quick else 2000,
        guide="multivariate_normal",
        seed=args.seed,
    )
    exact = fits["independence"]
    sd = exact.draws["probs"].flatten(0, 1).std(0)
    for f in (nuts, svi):
        gap = float(((f.params["probs"] - exact.params["probs"]).abs() / sd).max())
        print(
            f"independence by {f.method}: max |mean - exact| = {gap:.3f} posterior sd "
            f"({f.fit_seconds:.1f} s)"
        )
    plots.forest(
        {"exact": exact, "nuts": nuts, "svi": svi},
        out / "digits_forest.png",
        var_names=["probs"],
        coords={"dim": [2, 10, 27, 36, 52]},
        title="P(pixel on): exact Beta posterior vs NUTS vs SVI",
    )
    table = inference.compare(
        {k: fits[k] for k in ("independence", "Markov order 1", "Markov order 2")}
    )
    print("\nPSIS-LOO on the training images:")
    print(table[["rank", "elpd_loo", "p_loo", "se", "pareto_k_max"]].to_string())
    print(f"wrote {out / 'digits_samples.png'} and {out / 'digits_forest.png'}")


if __name__ == "__main__":
    main()
