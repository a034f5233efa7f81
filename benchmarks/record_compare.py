"""Record a `ppl-models compare DATASET` report as benchmark results: its results.json (one
row per model: test nats, free parameters, fit seconds) with the machine it ran on, as
benchmarks/results/compare_<dataset>.json, so that docs/ can quote the figures.

    .venv/bin/ppl-models compare fashion --out reports
    .venv/bin/python benchmarks/record_compare.py reports/compare-fashion [--threads 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import machine, write_results

KEEP = (
    "model",
    "method",
    "factorization",
    "num_parameters",
    "n",
    "nats",
    "bits_per_dim",
    "num_zero_prob",
    "fit_seconds",
    "flags",
)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("report", type=Path, help="the report folder (reports/compare-DATASET)")
    p.add_argument("--threads", type=int, default=2, help="torch threads the run used")
    args = p.parse_args(argv)
    rows = json.loads((args.report / "results.json").read_text())
    dataset = args.report.name.removeprefix("compare-")
    out = [
        {
            k: (str(r[k]) if k == "num_parameters" and int(r[k]) > 10**12 else r[k])
            for k in KEEP
            if k in r
        }
        for r in rows
    ]
    write_results(
        f"compare_{dataset}",
        {"machine": machine(args.threads), "command": f"ppl-models compare {dataset}", "rows": out},
    )


if __name__ == "__main__":
    main()
