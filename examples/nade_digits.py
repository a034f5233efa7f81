"""NADE on binarised digits: the training curve, samples, and how likely real images are next
to noise.

    .venv/bin/python examples/nade_digits.py [--hidden 100] [--out reports/examples] [--quick]

NADE: p(x) = prod_d Bernoulli(x_d | sigmoid(b_d + V_d . h_d)), h_d = sigmoid(c + W[:, <d] x_<d):
every conditional shares one hidden layer of H units; D (2 H + 1) free parameters (12,864 for
H = 100). Fitted by MAP (Normal(0, 1) prior on the weights) with minibatch Adam, the step size
shrinking by 1% per epoch, early stopping on the 250 validation images.

Writes nade_curve.png (training and validation nats per epoch), nade_samples.png (samples
under real test images) and nade_density.png (log-density histograms of test images, images
with 10% of their pixels flipped, and uniform noise: a density model should separate them).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import preamble  # examples/preamble.py: the shared arguments
import torch  # noqa: E402

import inference  # noqa: E402
from inference.evaluation import plots  # noqa: E402
from ppl_models import NADE, Markov, datasets  # noqa: E402


def main(argv=None):
    p = preamble.parser(__doc__, "H=20, 10 epochs (a test runs this)")
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--max-epochs", type=int, default=250)
    args, out = preamble.parse(p, argv)
    hidden, epochs = (20, 10) if args.quick else (args.hidden, args.max_epochs)
    split = datasets.load("digits")

    nade = inference.fit(
        NADE(64, hidden),
        split.train,
        "map",
        valid=split.valid,
        lr=1e-2,
        lr_decay=0.99,
        batch_size=100,
        patience=20,
        max_epochs=epochs,
        seed=args.seed,
    )
    markov = inference.fit(Markov(64, order=8), split.train, "exact")
    for name, f in (("NADE", nade), ("Markov order 8", markov)):
        r = f.report(split.test)
        print(
            f"{name:15} test {r.nats:7.3f} nats/image  {r.num_parameters:>7,} params  "
            f"{f.fit_seconds:6.1f} s"
        )
    print(
        f"NADE: {nade.info['epochs']} epochs, best at {nade.info['best_epoch'] + 1}; "
        f"{nade.info['stop']}"
    )

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(range(1, len(nade.losses) + 1), nade.losses, label="training (MAP objective)")
    ax.plot(
        range(1, len(nade.info["valid_curve"]) + 1),
        nade.info["valid_curve"],
        label="validation nats per image",
    )
    ax.axvline(nade.info["best_epoch"] + 1, ls=":", color="gray", label="best epoch (kept)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per image")
    ax.set_title(f"NADE H={hidden} on digits: minibatch Adam, early stopping")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "nade_curve.png", dpi=110)
    plt.close(fig)

    x = nade.sample(24, seed=args.seed)
    plots.image_rows(
        {
            "test images": split.test[:12].numpy(),
            "NADE samples": x[:12].numpy(),
            "more samples": x[12:].numpy(),
        },
        out / "nade_samples.png",
        kind="digits",
        title="binarised digits: real and NADE samples",
    )

    g = torch.Generator().manual_seed(args.seed)
    flips = torch.rand(split.test.shape, generator=g) < 0.1
    sets = {
        "test images": split.test,
        "10% pixels flipped": split.test ^ flips.long(),
        "uniform noise": torch.randint(0, 2, split.test.shape, generator=g),
    }
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for label, data in sets.items():
        lp = nade.log_density(data).numpy()
        print(f"{label:20} mean log-density {lp.mean():8.2f} nats")
        ax.hist(lp, bins=40, alpha=0.6, label=label)
    ax.set_xlabel("log p(x) under NADE (nats)")
    ax.set_ylabel("images")
    ax.set_title("NADE tells digits from corrupted digits and noise")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "nade_density.png", dpi=110)
    plt.close(fig)
    print(f"wrote nade_curve.png, nade_samples.png, nade_density.png to {out}")


if __name__ == "__main__":
    main()
