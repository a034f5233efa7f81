"""The `ppl-models` command line: compare assumptions on a dataset, fit one, sample from a fit.

    ppl-models datasets
    ppl-models compare [digits|pixels|patches|sunspots] [--out reports]
    ppl-models fit digits Markov --arg order=2 --method nuts --option num_samples=300 --save m.pt
    ppl-models sample m.pt -n 16 --out samples.png
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import inference
import ppl_models
from inference.compare import table
from ppl_models import datasets, plots, sunspots_report


@dataclass
class Candidate:
    """One row of a comparison: a model, how to fit it, and its label."""

    label: str
    model: object
    method: str
    options: dict = field(default_factory=dict)


def digits_candidates(train) -> list[Candidate]:
    D = train.shape[1]
    FJ, Ind, Mk = ppl_models.FullJoint, ppl_models.Independent, ppl_models.Markov
    return [
        Candidate("FullJoint", FJ(D, sparse=True), "mle"),
        Candidate("FullJoint alpha=1", FJ(D, alpha=1.0, sparse=True), "exact"),
        Candidate("FullJoint alpha=1e-3", FJ(D, alpha=1e-3, sparse=True), "exact"),
        Candidate("Independent", Ind(D), "exact"),
        *[Candidate(f"Markov order {k}", Mk(D, order=k), "exact") for k in (1, 2, 4, 8)],
        # MAP (Gaussian prior on the weights), minibatch Adam with a decaying step size (the
        # last steps settle: sample pixel means within 0.02 of the data), early stopping
        Candidate("NADE H=100", ppl_models.NADE(D, 100), "map",
                  {"valid": None, "lr": 1e-2, "lr_decay": 0.99, "batch_size": 100,
                   "patience": 20, "max_epochs": 250}),
    ]


def pixels_candidates(train) -> list[Candidate]:
    FJ, Ind, Mk = ppl_models.FullJoint, ppl_models.Independent, ppl_models.Markov
    return [
        Candidate("FullJoint", FJ(3, 256), "mle"),
        Candidate("FullJoint alpha=1", FJ(3, 256, alpha=1.0), "exact"),
        Candidate("FullJoint alpha=0.01", FJ(3, 256, alpha=0.01), "exact"),
        Candidate("Independent", Ind(3, "categorical", 256), "exact"),
        Candidate("Markov R->G->B", Mk(3, order=1, num_categories=256), "exact"),
    ]


def patches_candidates(train) -> list[Candidate]:
    D = train.shape[1]
    return [
        Candidate("Independent Gaussian", ppl_models.Independent(D, "normal"), "mle"),
        Candidate("Full-covariance Gaussian", ppl_models.LinearGaussian(D), "mle"),
        Candidate("RNADE H=100 K=10", ppl_models.NADE(D, 100, "mog", components=10), "map",
                  {"valid": None, "lr": 1e-2, "lr_decay": 0.95, "batch_size": 100,
                   "patience": 10, "max_epochs": 60}),
    ]


def patches_picture(real, samples: dict, path) -> None:
    rows = {"data": plots.patch_images(real)}
    rows.update({k: plots.patch_images(v) for k, v in samples.items()})
    v = float(np.quantile(np.abs(rows["data"]), 0.99))  # one grey scale for every patch
    plots.image_rows(rows, path, "8x8 grey patches (mean removed): real (top) and samples",
                     cmap="gray", vmin=-v, vmax=v)


def digits_picture(real, samples: dict, path) -> None:
    rows = {"data": plots.digit_images(real)}
    rows.update({k: plots.digit_images(v) for k, v in samples.items()})
    plots.image_rows(rows, path, "binarised digits: real (top) and samples from each model",
                     vmin=0, vmax=1)


def pixels_picture(real, samples: dict, path) -> None:
    rows = {"data": plots.pixel_swatches(real)}
    rows.update({k: plots.pixel_swatches(v) for k, v in samples.items()})
    plots.image_rows(rows, path, "RGB pixels: real (top) and 1,024 samples from each model")


def run_suite(name: str, candidates_of, picture, n_samples: int, out: Path,
              seed: int = 0) -> list:
    """Fit every candidate on train, report on test, print the table, write the report folder."""
    split = datasets.load(name)
    reports, samples = [], {}
    for c in candidates_of(split.train):
        options = dict(c.options)
        if c.method in ("mle", "map") and "valid" in options:
            options["valid"] = split.valid
        print(f"fitting {c.label} ({c.method}) ...", file=sys.stderr, flush=True)
        f = inference.fit(c.model, split.train, c.method, seed=seed, **options)
        r = f.report(split.test)
        r.model = c.label
        reports.append(r)
        samples[c.label] = f.sample(n_samples, seed=seed).numpy()
    text = table(reports)
    print(f"\n{name}: test log-likelihood ({reports[0].n:,} held-out data)\n{text}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(f"# {name}\n\n{table(reports, markdown=True)}\n")
    (out / "results.json").write_text(json.dumps([r.as_dict() for r in reports], indent=2,
                                                 default=str))
    picture(split.test.numpy(), samples, out / "samples.png")
    print(f"report written to {out}/ (table.md, results.json, samples.png)")
    return reports


# dataset -> function(out_folder, seed) that fits, prints a table and writes the report folder
SUITES = {
    "digits": lambda out, seed: run_suite("digits", digits_candidates, digits_picture, 12, out,
                                          seed),
    "pixels": lambda out, seed: run_suite("pixels", pixels_candidates, pixels_picture, 1024, out,
                                          seed),
    "patches": lambda out, seed: run_suite("patches", patches_candidates, patches_picture, 12,
                                           out, seed),
    "sunspots": sunspots_report.run,
}


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _pairs(items) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {item!r}")
        out[key] = _literal(value)
    return out


def cmd_datasets(args) -> None:
    for name, text in datasets.DATASETS.items():
        print(f"{name:9} {text}")


def cmd_compare(args) -> None:
    if args.dataset not in SUITES:
        raise SystemExit(f"compare knows {', '.join(SUITES)}; got {args.dataset!r}")
    SUITES[args.dataset](Path(args.out) / f"compare-{args.dataset}", args.seed)


def cmd_fit(args) -> None:
    split = datasets.load(args.dataset)
    cls = getattr(ppl_models, args.model, None)
    if cls is None or not isinstance(cls, type):
        raise SystemExit(f"unknown model {args.model!r}; choose one of "
                         f"{', '.join(n for n in ppl_models.__all__ if n[0].isupper())}")
    kwargs = _pairs(args.arg)
    if "num_dims" in cls.__init__.__code__.co_varnames and "num_dims" not in kwargs:
        kwargs["num_dims"] = split.train.shape[1]
    model = cls(**kwargs)
    options = _pairs(args.option)
    solver = options.get("solver", getattr(model, "gradient_solver", None))
    if len(split.valid) and args.method in ("mle", "map") and solver == "adam":
        options.setdefault("valid", split.valid)
    f = inference.fit(model, split.train, args.method, seed=args.seed, **options)
    evaluate = split.test if len(split.test) else split.train
    print(table([f.report(evaluate)]))
    if args.save:
        f.save(args.save)
        print(f"saved to {args.save}")


def cmd_sample(args) -> None:
    f = inference.load(args.fit)
    x = f.sample(args.n, seed=args.seed).numpy()
    if args.out:
        D = x.shape[1] if x.ndim == 2 else 1
        if D == 64:
            digits_picture(x, {}, args.out)
        elif D == 3:
            pixels_picture(x, {}, args.out)
        elif D == 63:
            patches_picture(x, {}, args.out)
        else:
            np.savetxt(args.out, x)
        print(f"wrote {args.out}")
    else:
        np.savetxt(sys.stdout, x, fmt="%g")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="ppl-models", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)
    sub.add_parser("datasets", help="list the embedded datasets").set_defaults(run=cmd_datasets)
    c = sub.add_parser("compare", help="fit every assumption that suits a dataset")
    c.add_argument("dataset", nargs="?", default="digits")
    c.add_argument("--out", default="reports", help="parent folder of the report")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(run=cmd_compare)
    f = sub.add_parser("fit", help="fit one model to a dataset and report test nats")
    f.add_argument("dataset")
    f.add_argument("model", help="a class in ppl_models, e.g. Markov")
    f.add_argument("--arg", action="append", help="constructor argument key=value")
    f.add_argument("--method", default="mle", choices=inference.METHODS)
    f.add_argument("--option", action="append", help="fit option key=value")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--save", help="write the fit here (inference.load reads it)")
    f.set_defaults(run=cmd_fit)
    s = sub.add_parser("sample", help="draw new data from a saved fit")
    s.add_argument("fit")
    s.add_argument("-n", type=int, default=16)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="PNG for images/pixels, else a text file; stdout if absent")
    s.set_defaults(run=cmd_sample)
    args = p.parse_args(argv)
    try:
        args.run(args)
    except ValueError as e:  # bad input: say what and how to fix, no traceback
        raise SystemExit(f"ppl-models: {e}") from None


if __name__ == "__main__":
    main()
