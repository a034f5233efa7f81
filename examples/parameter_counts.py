"""How many free parameters each factorization needs, as the data grow.

    .venv/bin/python examples/parameter_counts.py [--out reports/examples] [--quick]

For n binary dimensions (an image of n pixels):
  full joint      one categorical over every configuration:  2^n - 1
  independence    prod_i p(x_i):                             n
  Markov order k  prod_i p(x_i | the k before it):           sum_i 2^min(i-1, k)
  NADE (H units)  prod_i p(x_i | x_<i), one shared network:   n (2 H + 1)
and for one RGB pixel (3 dimensions of 256 values): full joint 256^3 - 1 = 16,777,215,
independence 3 x 255 = 765, Markov R -> G -> B 255 + 2 x 256 x 255 = 130,815.

Every number comes from the models' own `num_parameters` (exact Python integers: 2^784 - 1 is
fine). Writes parameter_counts.png: counts against n on a log scale.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import preamble  # examples/preamble.py: the shared arguments

from ppl_models import NADE, FullJoint, Independent, Markov  # noqa: E402


def counts(n: int, hidden: int = 100) -> dict[str, int]:
    return {
        "full joint": FullJoint(n, sparse=True).num_parameters,
        "Markov order 2": Markov(n, order=min(2, n - 1)).num_parameters if n > 1 else 1,
        "Markov order 1": Markov(n, order=1).num_parameters if n > 1 else 1,
        f"NADE H={hidden}": NADE(n, hidden).num_parameters,
        "independence": Independent(n).num_parameters,
    }


def main(argv=None):
    p = preamble.parser(__doc__, "the same (it is already quick)", seed=False)
    args, out = preamble.parse(p, argv)

    sizes = [1, 2, 4, 9, 16, 36, 64, 144, 256, 784]
    table = {n: counts(n) for n in sizes}
    names = list(table[sizes[0]])
    print(f"{'pixels':>7} " + " ".join(f"{k:>16}" for k in names))
    for n, row in table.items():
        print(
            f"{n:>7} " + " ".join(f"{v:>16.4g}" if v > 1e15 else f"{v:>16,}" for v in row.values())
        )
    pixel = {
        "full joint": FullJoint(3, 256).num_parameters,
        "independence": Independent(3, "categorical", 256).num_parameters,
        "Markov R->G->B": Markov(3, order=1, num_categories=256).num_parameters,
    }
    print("\none RGB pixel: " + ", ".join(f"{k} {v:,}" for k, v in pixel.items()))

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name in names:
        ax.plot(sizes, [float(table[n][name]) for n in sizes], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("binary dimensions n (pixels)")
    ax.set_ylabel("free parameters")
    ax.set_title("free parameters of each factorization (28 x 28 = 784: full joint 2^784 - 1)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(out / "parameter_counts.png", dpi=110)
    plt.close(fig)
    print(f"wrote {out / 'parameter_counts.png'}")


if __name__ == "__main__":
    main()
