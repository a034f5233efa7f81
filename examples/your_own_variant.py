"""Your own variant: two factorizations written as plain Pyro programs, fitted and ranked beside
the built-in assumptions on binarised digits, with no change to the library.

    .venv/bin/python examples/your_own_variant.py [--out reports/examples] [--quick]

1. A shared-transition Markov chain: p(x) = p(x_1) prod_(d>1) p(x_d | x_(d-1)) with ONE 2x2
   table for every position (3 free parameters instead of Markov order 1's 127).
2. A mixture of K Bernoulli products: p(x) = sum_k w_k prod_d Bernoulli(x_d | mu_kd), the
   per-image assignment z summed out by enumeration (K - 1 + K D free parameters).

Both go through `inference.fit` like `Independent` and `Markov`: held-out nats per image and
bits per dimension in one table (`inference.compare`), the factorization read from each
program's trace, samples drawn by running each program, and PSIS-LOO in `az.compare` from
posterior draws (NUTS or SVI for the programs, the exact posterior for the built-ins).
Writes own_variant_samples.png and own_variant_compare.png to --out.
"""

from __future__ import annotations

import warnings

import preamble  # examples/preamble.py: the shared arguments
import pyro
import pyro.distributions as dist
import torch

import inference
from inference.evaluation import plots
from ppl_models import Independent, Markov, datasets

f64 = torch.float64


def shared_markov(x=None, num_samples=None):
    """One transition table for all 64 positions; Beta(1, 1) priors."""
    n = len(x) if x is not None else num_samples
    one = torch.ones((), dtype=f64)
    first = pyro.sample("first", dist.Beta(one, one))  # P(x_1 = 1)
    trans = pyro.sample(
        "trans",
        dist.Beta(
            torch.ones(2, dtype=f64),  # P(x_d = 1 | x_(d-1))
            torch.ones(2, dtype=f64),
        ).to_event(1),
    )
    with pyro.plate("data", n):
        prev = pyro.sample("x_0", dist.Bernoulli(first), obs=None if x is None else x[:, 0])
        xs = [prev]
        for d in pyro.markov(range(1, 64)):
            prev = pyro.sample(
                f"x_{d}", dist.Bernoulli(trans[prev.long()]), obs=None if x is None else x[:, d]
            )
            xs.append(prev)
    return torch.stack(xs, -1)


def make_mixture(K: int):
    def mixture(x=None, num_samples=None):
        """w ~ Dirichlet(1), mu_kd ~ Beta(1.1, 1.1); z_n ~ Categorical(w) summed out."""
        n = len(x) if x is not None else num_samples
        w = pyro.sample("weights", dist.Dirichlet(torch.ones(K, dtype=f64)))
        with pyro.plate("components", K):
            mu = pyro.sample(
                "means",
                dist.Beta(
                    torch.full((64,), 1.1, dtype=f64), torch.full((64,), 1.1, dtype=f64)
                ).to_event(1),
            )
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Categorical(w), infer={"enumerate": "parallel"})
            return pyro.sample("x", dist.Bernoulli(mu[z]).to_event(1), obs=x)

    return mixture


def main(argv=None):
    p = preamble.parser(__doc__, "fewer steps (a test runs this)")
    p.add_argument("--components", type=int, default=10)
    args, out = preamble.parse(p, argv)
    warnings.filterwarnings("ignore", module="arviz")
    split = datasets.load("digits")
    mixture = make_mixture(args.components)
    mixture_options = {"max_epochs": 150, "restarts": 2} if args.quick else {}

    fits = {
        "Independent": inference.fit(Independent(64), split.train, "exact", seed=args.seed),
        "Markov order 1": inference.fit(Markov(64, order=1), split.train, "exact", seed=args.seed),
        "shared chain (yours)": inference.fit(shared_markov, split.train, "mle", seed=args.seed),
        f"mixture K={args.components} (yours)": inference.fit(
            mixture, split.train, "map", seed=args.seed, **mixture_options
        ),
    }
    print("held-out digits (250 test images):")
    print(inference.compare(fits, split.test).to_string())

    samples = {k: f.sample(12, seed=args.seed).numpy() for k, f in fits.items()}
    plots.image_rows(
        {"data": split.test[:12].numpy(), **samples},
        out / "own_variant_samples.png",
        kind="digits",
        title="your programs and the built-ins: real digits (top) and samples",
    )

    # PSIS-LOO from posterior draws, on 400 training images (the exact posterior for ours,
    # NUTS for the 3-parameter chain, SVI for the mixture)
    x = split.train[:400]
    steps = 150 if args.quick else 600
    draws = 100 if args.quick else 300
    bayes = {
        "Independent": inference.fit(Independent(64), x, "exact", num_samples=draws),
        "Markov order 1": inference.fit(Markov(64, order=1), x, "exact", num_samples=draws),
        "shared chain (yours)": inference.fit(
            shared_markov,
            x,
            "nuts",
            num_samples=draws // 2,
            warmup_steps=draws // 2,
            num_chains=2,
            jit_compile=True,
            seed=args.seed,
        ),
        f"mixture K={args.components} (yours)": inference.fit(  # started at the MAP above
            mixture,
            x,
            "svi",
            steps=steps,
            num_samples=draws,
            seed=args.seed,
            init=fits[f"mixture K={args.components} (yours)"],
        ),
    }
    table = inference.compare(bayes)
    print("\nPSIS-LOO on 400 training images (az.compare):")
    print(table[["rank", "elpd_loo", "p_loo", "elpd_diff", "se", "pareto_k_max"]].to_string())
    plots.compare(
        table,
        out / "own_variant_compare.png",
        title="PSIS-LOO: your programs beside the built-in assumptions",
    )
    print(f"wrote {out / 'own_variant_samples.png'} and {out / 'own_variant_compare.png'}")


if __name__ == "__main__":
    main()
