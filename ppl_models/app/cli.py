"""The `ppl-models` command line: compare assumptions on a dataset, fit one, sample from a fit.

    ppl-models datasets
    ppl-models compare [digits|fashion|pixels|patches|sunspots] [--out reports]
    ppl-models fit digits Markov --arg order=2 --method nuts --option num_samples=300 --save m.pt
    ppl-models sample m.pt -n 16 --out samples.png      (.png: a picture; .txt/.csv: numbers)

Every mistake on the command line is one line naming the fix, exit status 2, found before any
fitting starts. Launched by torchrun (`torchrun --nproc_per_node=2 -m ppl_models fit ...`), a
minibatch fit runs data-parallel over the processes and rank 0 prints and saves.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import sys
import warnings
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


class CLIError(SystemExit):
    """A command-line mistake: exit status 2 and one line saying how to fix it."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self):
        return self.message


def fail(message: str):
    raise CLIError(message)


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _pairs(items, what: str) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{what} expects key=value, got {item!r} (e.g. {what} order=2)")
        out[key.strip()] = _literal(value.strip())
    return out


# -- fit --------------------------------------------------------------------------------------
def _model_class(name: str):
    from ppl_models import MODELS

    if name in MODELS:
        return MODELS[name]
    close = difflib.get_close_matches(name, MODELS, n=1) or [
        k for k in MODELS if k.lower() == name.lower()
    ]
    hint = f" (did you mean {close[0]}?)" if close else ""
    fail(f"unknown model {name!r}{hint}; choose one of {', '.join(MODELS)}")


def _build(cls, kwargs: dict, split, dataset: str):
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    for key in kwargs:
        if key not in params:
            close = difflib.get_close_matches(key, params, n=1)
            hint = f" (did you mean --arg {close[0]}=...?)" if close else ""
            fail(
                f"{cls.__name__} takes no argument {key!r}{hint}; its arguments: "
                f"{', '.join(params)}"
            )
    x = split.train
    if "num_dims" in params and "num_dims" not in kwargs:
        if x.dim() != 2:
            fail(
                f"{dataset} is one series of {len(x)} values, but {cls.__name__} models rows "
                "of data; fit a series model: fit sunspots AutoRegressive --arg order=2"
            )
        kwargs["num_dims"] = x.shape[1]
    missing = [
        k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in kwargs
    ]
    if missing:
        example = {"hidden": "100", "order": "2"}
        fail(
            f"{cls.__name__} needs {', '.join(missing)}: pass "
            + " ".join(f"--arg {k}={example.get(k, '...')}" for k in missing)
        )
    try:
        model = cls(**kwargs)
    except (ValueError, TypeError) as e:
        fail(f"{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}): {e}")
    try:
        model.validate(x)
    except ValueError as e:
        fail(f"{dataset} does not suit {cls.__name__}: {e}{_suggest(cls, x)}")
    return model


def _suggest(cls, x) -> str:
    """The command-line spelling of the fix for real-valued data in a discrete model."""
    if x.is_floating_point() and bool((x != x.round()).any()):
        if cls.__name__ == "Independent":
            return "; on the command line: --arg family=normal"
        if cls.__name__ == "NADE":
            return "; on the command line: --arg output=mog --arg components=10"
    return ""


def cmd_fit(args) -> None:
    import inference
    from inference import distributed
    from inference.persist import destination
    from ppl_models import datasets

    try:
        split = datasets.load(
            args.dataset, **({"num_train": args.num_train} if args.num_train else {})
        )
    except ValueError as e:
        fail(str(e))
    cls = _model_class(args.model)
    model = _build(cls, _pairs(args.arg, "--arg"), split, args.dataset)
    options = _pairs(args.option, "--option")
    if args.save:
        try:
            destination(args.save)
        except ValueError as e:
            fail(f"--save {args.save}: {e}")
    if args.device:
        from ppl_models.checks import as_device

        try:
            as_device(args.device)
        except ValueError as e:
            fail(f"--device {args.device}: {e}")
        options["device"] = args.device
    solver = options.get("solver", getattr(model, "gradient_solver", None))
    if len(split.valid) and args.method in ("mle", "map") and solver == "adam":
        options.setdefault("valid", split.valid)
    try:
        inference.fitting.check_options(args.method, options)
        with distributed.from_environment(args.device):
            f = inference.fit(model, split.train, args.method, seed=args.seed, **options)
            if not distributed.is_writer():
                return
    except ValueError as e:
        fail(str(e))
    from inference.evaluation.compare import COLUMNS, table

    held_out = len(split.test) > 0
    evaluate = split.test if held_out else split.train
    columns = (
        COLUMNS if held_out else [(h.replace("test nats", "train nats"), a) for h, a in COLUMNS]
    )
    print(table([f.report(evaluate)], columns=columns))
    if not held_out:
        print(
            f"({args.dataset} has no held-out split: nats are on the training series; compare "
            "series by leave-future-out: ppl-models compare sunspots)"
        )
    if args.save:
        f.save(args.save)
        print(f"saved to {args.save}")


# -- sample -----------------------------------------------------------------------------------
def cmd_sample(args) -> None:
    import inference

    if args.n < 1:
        fail(f"-n must be at least 1, got {args.n}")
    out = Path(args.out) if args.out else None
    if out is not None and not out.parent.is_dir():
        fail(f"--out {out}: the folder {out.parent} does not exist")
    try:
        f = inference.load(args.fit)
    except ValueError as e:
        fail(str(e))
    kind = _picture_kind(f.data)
    if out is not None and out.suffix.lower() in IMAGE_SUFFIXES and kind is None:
        fail(
            f"--out {out}: there is no picture for data of shape {tuple(f.data.shape)[1:]} per "
            f"datum; write numbers instead: --out {out.with_suffix('.txt')}"
        )
    x = f.sample(args.n, seed=args.seed).cpu().numpy()
    if out is None:
        np.savetxt(sys.stdout, x, fmt="%g")
        return
    if out.suffix.lower() in IMAGE_SUFFIXES:
        _picture(x, kind, out, f"{args.n} samples from {f.program.label} ({f.method})")
    else:
        np.savetxt(out, x, fmt="%g", delimiter="," if out.suffix.lower() == ".csv" else " ")
    print(f"wrote {args.n} samples to {out}")


def _picture_kind(data) -> str | None:
    from inference.evaluation import plots

    if data.dim() == 1:
        return "series"
    return plots.kind_of(data)


def _picture(x, kind, path: Path, title: str) -> None:
    from inference.evaluation import plots

    if kind == "series":
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 3.5))
        ax.plot(np.arange(len(x)), x, lw=1.0)
        ax.set_xlabel("t")
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    per_row = 1024 if kind == "pixels" else 12
    rows = {
        f"{i + 1}-{min(i + per_row, len(x))}": x[i : i + per_row] for i in range(0, len(x), per_row)
    }
    plots.image_rows(rows, path, kind=kind, title=title)


# -- compare, datasets --------------------------------------------------------------------------
def cmd_compare(args) -> None:
    from ppl_models.app import suites

    if args.dataset not in suites.SUITES:
        fail(f"compare knows {', '.join(suites.SUITES)}; got {args.dataset!r}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file; pass a folder for the report")
    suites.run(args.dataset, out / f"compare-{args.dataset}", args.seed)


def cmd_datasets(args) -> None:
    from ppl_models import datasets

    for name, text in datasets.DATASETS.items():
        print(f"{name:9} {text}")


# -- the parser ---------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2 (argparse's status, our format)
        raise CLIError(f"{message} (see: {self.prog} --help)")


def parser() -> argparse.ArgumentParser:
    from ppl_models import __version__

    methods = ("mle", "map", "exact", "svi", "nuts")
    p = _Parser(
        prog="ppl-models", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"ppl-models {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    sub.add_parser("datasets", help="list the embedded datasets").set_defaults(run=cmd_datasets)
    c = sub.add_parser("compare", help="fit every assumption that suits a dataset")
    c.add_argument("dataset", nargs="?", default="digits")
    c.add_argument("--out", default="reports", help="parent folder of the report")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(run=cmd_compare)
    f = sub.add_parser("fit", help="fit one model to a dataset and report its nats")
    f.add_argument("dataset")
    f.add_argument("model", help="a built-in model, e.g. Markov")
    f.add_argument("--arg", action="append", help="constructor argument key=value")
    f.add_argument("--method", default="mle", type=str.lower, choices=methods)
    f.add_argument("--option", action="append", help="fit option key=value")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--device", help="cpu, cuda, cuda:1 (default: where the data are)")
    f.add_argument("--num-train", type=int, help="patches: draw this many training patches")
    f.add_argument("--save", help="write the fit here (inference.load reads it)")
    f.set_defaults(run=cmd_fit)
    s = sub.add_parser("sample", help="draw new data from a saved fit")
    s.add_argument("fit")
    s.add_argument("-n", type=int, default=16)
    s.add_argument("--seed", type=int, default=None, help="for reproducible draws")
    s.add_argument(
        "--out", help="a picture (.png, .pdf, .svg) or numbers (.txt, .csv); stdout if absent"
    )
    s.set_defaults(run=cmd_sample)
    return p


def main(argv=None) -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)  # ArviZ's 1.x announcement
    warnings.filterwarnings("ignore", message=".*num_chains.*available_cpu")
    try:
        args = parser().parse_args(argv)
        args.run(args)
    except CLIError as e:
        print(f"ppl-models: error: {e}", file=sys.stderr)
        raise
    except ValueError as e:  # bad input found later: still one line, no traceback
        print(f"ppl-models: error: {e}", file=sys.stderr)
        raise CLIError(str(e)) from None


if __name__ == "__main__":
    main()
