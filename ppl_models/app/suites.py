"""`ppl-models compare DATASET`: every assumption that suits a dataset, fitted and reported the
same way for every dataset. The application layer: it sits above `inference` (models never
import it).

Each suite is one row of `SUITES`: its candidates (label, model, method, options), how a fit is
scored, the sample picture, and its extra pictures. Running a suite fits every candidate,
prints one table, and writes the report folder: table.md, results.json, samples.png (not for
a series), tradeoff.png (free parameters vs held-out nats), plus the suite's extras.

- digits, fashion, pixels, patches: held-out test nats per datum (patches: the
  log-likelihood, higher is better, as the RNADE papers report it); fashion (28x28
  Fashion-MNIST, Debian's dataset-fashion-mnist) also draws the bottom half of test images
  given their top half from every model that can condition on it (completion.png);
- sunspots: one series, so AR(1..12) by conditional MLE are scored by AIC and BIC on a common
  sample and by leave-future-out; extras: the AR(2) posteriors by exact, NUTS and SVI in one
  forest plot, the AIC order's forecasts, a posterior predictive check.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import inference
from inference.evaluation import plots
from inference.evaluation.compare import table
from ppl_models import (
    NADE,
    AutoRegressive,
    FullJoint,
    Independent,
    LinearGaussian,
    Markov,
    datasets,
)
from ppl_models.example_programs import bernoulli_mixture
from ppl_models.runtime import few_threads


@dataclass
class Candidate:
    """One row of a comparison: a model, how to fit it, and its label."""

    label: str
    model: object
    method: str
    options: dict = field(default_factory=dict)


@dataclass
class Suite:
    candidates: Callable  # Split -> list[Candidate]
    kind: str | None  # sample picture (plots.KINDS), None for a series
    n_samples: int
    rows: Callable | None = None  # (split, fits, seed) -> (rows, columns, heading); None: held out
    extras: Callable | None = None  # (split, fits, out, seed) -> files written
    higher_is_better: bool = False  # patches report log-likelihood, not nats


def digits_candidates(split) -> list[Candidate]:
    D = split.train.shape[1]
    return [
        Candidate("FullJoint", FullJoint(D, sparse=True), "mle"),
        Candidate("FullJoint alpha=1", FullJoint(D, alpha=1.0, sparse=True), "exact"),
        Candidate("FullJoint alpha=1e-3", FullJoint(D, alpha=1e-3, sparse=True), "exact"),
        Candidate("Independent", Independent(D), "exact"),
        *[Candidate(f"Markov order {k}", Markov(D, order=k), "exact") for k in (1, 2, 4, 8)],
        # MAP (Gaussian prior on the weights), minibatch Adam with a decaying step size (the
        # last steps settle: sample pixel means within 0.02 of the data), early stopping
        Candidate(
            "NADE H=100",
            NADE(D, 100),
            "map",
            {
                "valid": split.valid,
                "lr": 1e-2,
                "lr_decay": 0.99,
                "batch_size": 100,
                "patience": 20,
                "max_epochs": 250,
            },
        ),
    ]


def pixels_candidates(split) -> list[Candidate]:
    return [
        Candidate("FullJoint", FullJoint(3, 256), "mle"),
        Candidate("FullJoint alpha=1", FullJoint(3, 256, alpha=1.0), "exact"),
        Candidate("FullJoint alpha=0.01", FullJoint(3, 256, alpha=0.01), "exact"),
        Candidate("Independent", Independent(3, "categorical", 256), "exact"),
        Candidate("Markov R->G->B", Markov(3, order=1, num_categories=256), "exact"),
    ]


def patches_candidates(split) -> list[Candidate]:
    D = split.train.shape[1]
    return [
        Candidate("Independent Gaussian", Independent(D, "normal"), "mle"),
        Candidate("Full-covariance Gaussian", LinearGaussian(D), "mle"),
        Candidate(
            "RNADE H=100 K=10",
            NADE(D, 100, "mog", components=10),
            "map",
            {
                "valid": split.valid,
                "lr": 1e-2,
                "lr_decay": 0.95,
                "batch_size": 100,
                "patience": 10,
                "max_epochs": 60,
            },
        ),
    ]


# -- fashion: the lecture's own example at 28x28 -------------------------------------------------
# NADE H=500 as the papers train it: Adam on minibatches of 100, early stopping on the valid
# images; the epoch budget is what a CPU manages in minutes (benchmarks/bench_fashion.py)
NADE_FASHION = {"lr": 1e-3, "batch_size": 100, "patience": 3, "max_epochs": 12}
# the mixture: Adam from the best of 5 short restarts, steps decaying (measured: 179.11 test nats
# in 59 s on one thread; 10 epochs without decay stop at 181.0)
MIXTURE_FASHION = {"lr": 0.05, "lr_decay": 0.95, "batch_size": 1000, "max_epochs": 40}


def fashion_candidates(split) -> list[Candidate]:
    D = split.train.shape[1]
    return [
        Candidate("FullJoint", FullJoint(D, sparse=True), "mle"),
        Candidate("FullJoint alpha=1", FullJoint(D, alpha=1.0, sparse=True), "exact"),
        Candidate("Independent", Independent(D), "mle"),
        Candidate("Independent Beta(1, 1)", Independent(D), "exact"),
        *[Candidate(f"Markov order {k}", Markov(D, order=k), "exact") for k in (1, 2, 4, 8)],
        Candidate(
            "mixture of 50 Bernoullis (a program of yours)",
            bernoulli_mixture,
            "map",
            {"given": {"K": 50, "D": D}, "valid": split.valid, **MIXTURE_FASHION},
        ),
        Candidate("NADE H=500", NADE(D, 500), "map", {"valid": split.valid, **NADE_FASHION}),
    ]


def completion_picture(split, fits, out: Path, seed: int, n: int = 8) -> list[str]:
    """The top half of n test images given, the bottom half drawn from each model that can
    condition on it (exactly: each visits the top half first); a model that cannot is listed
    under the picture with its reason."""
    x = split.test[:n]
    D = x.shape[1]
    half = D // 2
    given = x.clone().float()
    given[:, half:] = 0.5  # grey: not given
    rows, skipped = {"test image": x, "given top half": given}, []
    for label, f in fits.items():
        try:
            rows[label] = f.complete(x[:, :half], seed=seed)
        except ValueError as e:
            skipped.append((label, str(e).split(";")[0]))
    note = "" if not skipped else "\n(cannot condition: " + ", ".join(k for k, _ in skipped) + ")"
    plots.image_rows(
        rows,
        out / "completion.png",
        kind=plots.kind_of(x),
        title=f"completion: the top half given, the bottom half drawn from each model{note}",
    )
    for label, why in skipped:
        print(f"no completion from {label}: {why}", file=sys.stderr)
    return ["completion.png"]


def fashion_extras(split, fits, out: Path, seed: int) -> list[str]:
    return completion_picture(split, fits, out, seed)


# -- sunspots: one series -----------------------------------------------------------------------
MAX_ORDER = 12
MIN_TRAIN = 100  # LFO predicts the years 1800..2008 from all years before each
FIRST_YEAR = 1700


def sunspots_candidates(split) -> list[Candidate]:
    return [Candidate(f"AR({p})", AutoRegressive(p), "mle") for p in range(1, MAX_ORDER + 1)]


@dataclass
class OrderRow:
    order: int
    num_parameters: int
    aic: float
    bic: float
    lfo_elpd: float
    fit_seconds: float
    estimates: str


ORDER_COLUMNS = [
    ("order", "order"),
    ("free params", "num_parameters"),
    ("AIC", "aic"),
    ("BIC", "bic"),
    ("LFO elpd", "lfo_elpd"),
    ("fit s", "fit_seconds"),
    ("conditional MLE", "estimates"),
]


def _describe(params: dict) -> str:
    phi = ", ".join(f"{v:.2f}" for v in params["phi"].tolist())
    return f"const={float(params['const']):.2f} phi=[{phi}] sigma={float(params['sigma']):.2f}"


def sunspots_rows(split, fits, seed):
    x = split.train
    aic = inference.select_order(x, MAX_ORDER, "aic")
    bic = inference.select_order(x, MAX_ORDER, "bic")
    rows = []
    with few_threads(x):
        for p in range(1, MAX_ORDER + 1):
            f = fits[f"AR({p})"]
            cv = inference.lfo(AutoRegressive(p), x, MIN_TRAIN, seed=seed)
            rows.append(
                OrderRow(
                    p,
                    f.program.num_parameters,
                    aic.aic[p],
                    aic.bic[p],
                    cv.elpd,
                    f.fit_seconds,
                    _describe(f.params),
                )
            )
    best_lfo = max(rows, key=lambda r: r.lfo_elpd).order
    heading = (
        f"sunspots 1700-2008: AR(p) conditional MLE; AIC/BIC on the common sample "
        f"(n = {aic.nobs}); LFO elpd of the one-step-ahead predictions of "
        f"{len(x) - MIN_TRAIN} years (refits on all years before each)"
    )
    footer = f"order by AIC: {aic.order}, by BIC: {bic.order}, by LFO: {best_lfo}"
    return rows, ORDER_COLUMNS, heading, footer


def sunspots_extras(split, fits, out: Path, seed: int) -> list[str]:
    x = split.train
    print("AR(2) posteriors: exact, nuts, svi ...", file=sys.stderr, flush=True)
    model = AutoRegressive(2)
    posteriors = {
        "exact": inference.fit(model, x, "exact", seed=seed),
        "nuts": inference.fit(
            model, x, "nuts", num_samples=500, warmup_steps=500, jit_compile=True, seed=seed
        ),
        "svi": inference.fit(model, x, "svi", guide="multivariate_normal", seed=seed),
    }
    plots.forest(
        posteriors,
        out / "forest.png",
        title="AR(2) on sunspots: 90% posterior intervals by exact, nuts and svi",
    )
    plots.ppc(
        posteriors["nuts"],
        out / "ppc.png",
        title="AR(2) posterior predictive check (NUTS): replicated series vs sunspots",
    )
    order = inference.select_order(x, MAX_ORDER, "aic").order
    forecast_plot(x, order, seed, out / "forecast.png")
    return ["forest.png", "ppc.png", "forecast.png"]


def forecast_plot(x, order: int, seed: int, path, steps: int = 20, history: int = 80) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    years = FIRST_YEAR + np.arange(len(x))
    ahead = years[-1] + 1 + np.arange(steps)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    ax.plot(years[-history:], x[-history:].cpu().numpy(), color="black", lw=1.2, label="observed")
    for method, color, style in (("mle", "tab:blue", "-"), ("exact", "tab:orange", "--")):
        fc = inference.fit(AutoRegressive(order), x, method, seed=seed).forecast(steps, 0.9)
        mean, lower, upper = (v.cpu().numpy() for v in (fc.mean, fc.lower, fc.upper))
        ax.plot(ahead, mean, color=color, ls=style, label=f"AR({order}) {method} mean")
        ax.fill_between(ahead, lower, upper, color=color, alpha=0.2, label=f"{method} 90% interval")
    ax.set_xlabel("year")
    ax.set_ylabel("sunspot number")
    ax.set_title(f"sunspots: {steps}-year forecasts of AR({order}) (order chosen by AIC)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


SUITES = {
    "digits": Suite(digits_candidates, "digits", 12),
    "fashion": Suite(fashion_candidates, "fashion", 10, extras=fashion_extras),
    "pixels": Suite(pixels_candidates, "pixels", 1024),
    "patches": Suite(patches_candidates, "patches", 12, higher_is_better=True),
    "sunspots": Suite(sunspots_candidates, None, 0, rows=sunspots_rows, extras=sunspots_extras),
}


def run(name: str, out: Path, seed: int = 0) -> list:
    """Fit every candidate of the suite on train, print the table, write the report folder."""
    suite = SUITES[name]
    split = datasets.load(name)
    fits, samples = {}, {}
    for c in suite.candidates(split):
        print(f"fitting {c.label} ({c.method}) ...", file=sys.stderr, flush=True)
        fits[c.label] = inference.fit(c.model, split.train, c.method, seed=seed, **c.options)
    out.mkdir(parents=True, exist_ok=True)
    written = ["table.md", "results.json"]
    if suite.rows is None:
        rows = []
        for label, f in fits.items():
            r = f.report(split.test)
            r.model = label
            rows.append(r)
            samples[label] = f.sample(suite.n_samples, seed=seed).cpu().numpy()
        heading = f"{name}: test log-likelihood ({rows[0].n:,} held-out data)"
        columns, footer = None, ""
        plots.image_rows(
            {"data": split.test.cpu().numpy(), **samples},
            out / "samples.png",
            kind=suite.kind,
            title=f"{name}: real data (top) and samples from each model",
        )
        plots.tradeoff(
            rows, out / "tradeoff.png", title=f"{name}: free parameters vs held-out nats per datum"
        )
        written += ["samples.png", "tradeoff.png"]
    else:
        rows, columns, heading, footer = suite.rows(split, fits, seed)
    kwargs = {} if columns is None else {"columns": columns}
    print(f"\n{heading}\n{table(rows, **kwargs)}" + (f"\n{footer}" if footer else ""))
    (out / "table.md").write_text(
        f"# {name}\n\n{table(rows, markdown=True, **kwargs)}\n"
        + (f"\n{footer}\n" if footer else "")
    )
    (out / "results.json").write_text(json.dumps([asdict(r) for r in rows], indent=2, default=str))
    if suite.extras is not None:
        written += suite.extras(split, fits, out, seed)
    print(f"report written to {out}/ ({', '.join(written)})")
    return rows
