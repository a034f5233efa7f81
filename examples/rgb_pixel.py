"""One RGB pixel: the 16,777,215-parameter full joint against independence and a Markov chain
R -> G -> B, and what the Dirichlet concentration alpha does to the full joint.

    .venv/bin/python examples/rgb_pixel.py [--out reports/examples] [--quick]

The data: every pixel of scikit-learn's two sample images (437,248 train / 109,312 test).
  full joint     p(r, g, b) = probs[r, g, b]        256^3 - 1 = 16,777,215 parameters
  independence   p(r) p(g) p(b)                     3 x 255 = 765
  Markov         p(r) p(g | r) p(b | g)             130,815
The full joint's posterior predictive under a Dirichlet(alpha) prior is
(count(x) + alpha) / (N + alpha 256^3): alpha is the weight of the 16.8 million unseen colours.
With alpha = 1 the prior adds 16.8 million pseudo-counts to 437,248 real ones; the MLE
(alpha -> 0) gives the 21,922 test pixels of unseen colours probability zero. Writes
rgb_alpha.png (test nats against alpha, the other assumptions as lines) and rgb_samples.png.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import preamble  # examples/preamble.py: the shared arguments

import inference  # noqa: E402
from inference.evaluation import plots  # noqa: E402
from ppl_models import FullJoint, Independent, Markov, datasets  # noqa: E402


def main(argv=None):
    p = preamble.parser(__doc__, "three alphas (a test runs this)")
    args, out = preamble.parse(p, argv)
    split = datasets.load("pixels")
    alphas = [1e-3, 0.1, 1.0] if args.quick else [1e-4, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0]

    full = {a: inference.fit(FullJoint(3, 256, alpha=a), split.train, "exact") for a in alphas}
    others = {
        "independence": inference.fit(Independent(3, "categorical", 256), split.train, "exact"),
        "Markov R->G->B": inference.fit(
            Markov(3, order=1, num_categories=256), split.train, "exact"
        ),
    }
    mle = inference.fit(FullJoint(3, 256), split.train, "mle").report(split.test)
    print(
        f"full joint MLE: {mle.num_zero_prob:,} test pixels of unseen colours get "
        f"probability 0 (test nats {mle.nats})"
    )
    nats = {a: f.report(split.test).nats for a, f in full.items()}
    for a, v in nats.items():
        print(f"full joint alpha={a:<7g} test {v:.3f} nats/pixel")
    lines = {k: f.report(split.test) for k, f in others.items()}
    for k, r in lines.items():
        print(f"{k:22} test {r.nats:.3f} nats/pixel  ({r.num_parameters:,} parameters)")

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot(list(nats), list(nats.values()), marker="o", label="full joint (16,777,215 params)")
    for (k, r), style in zip(lines.items(), ("--", ":")):
        ax.axhline(r.nats, ls=style, color="gray", label=f"{k} ({r.num_parameters:,} params)")
    ax.set_xscale("log")
    ax.set_xlabel("Dirichlet concentration alpha (pseudo-count per colour)")
    ax.set_ylabel("test nats per pixel")
    best = min(nats, key=nats.get)
    ax.set_title(
        f"one RGB pixel: the full joint needs a small alpha (best here {best:g}: "
        f"{nats[best]:.2f} nats)"
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "rgb_alpha.png", dpi=110)
    plt.close(fig)

    samples = {
        f"full joint alpha={a:g}": f.sample(1024, seed=args.seed).numpy()
        for a, f in full.items()
        if a in (alphas[0], 1.0)
    }
    samples.update({k: f.sample(1024, seed=args.seed).numpy() for k, f in others.items()})
    plots.image_rows(
        {"data": split.test[:1024].numpy(), **samples},
        out / "rgb_samples.png",
        kind="pixels",
        title="RGB pixels: real (top) and 1,024 samples each",
    )
    assert math.isfinite(nats[best])
    print(f"wrote {out / 'rgb_alpha.png'} and {out / 'rgb_samples.png'}")


if __name__ == "__main__":
    main()
