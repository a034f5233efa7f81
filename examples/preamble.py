"""The argument preamble every example shares: --seed, --out (where pictures go) and --quick
(the short run a test makes), added to each example's own arguments."""

from __future__ import annotations

import argparse
from pathlib import Path


def parser(doc: str, quick: str, seed: bool = True) -> argparse.ArgumentParser:
    """An ArgumentParser with the example's docstring and the shared arguments."""
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if seed:
        p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports/examples")
    p.add_argument("--quick", action="store_true", help=quick)
    return p


def parse(p: argparse.ArgumentParser, argv=None) -> tuple[argparse.Namespace, Path]:
    """The parsed arguments and the output folder, created."""
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return args, out
