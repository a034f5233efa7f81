"""Discrete assumptions on digits and pixels: fit time, log-density throughput, memory of the
sparse vs dense full joint, and the wall time of `ppl-models compare digits`.

    .venv/bin/python benchmarks/bench_discrete.py [--threads 1] [--repeat 3]

Prints a table and writes benchmarks/results/discrete.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
import torch
from common import ROOT, machine, write_results

import inference
from ppl_models import FullJoint, Independent, Markov, datasets
from ppl_models.models.full_joint import Counts


def best_of(fn, repeat, *args, **kwargs):
    """Fastest of `repeat` calls; a callable first argument is called anew each time (a fresh
    model per fit)."""
    times = []
    for _ in range(repeat):
        fresh = [a() if callable(a) else a for a in args]
        t = time.perf_counter()
        fn(*fresh, **kwargs)
        times.append(time.perf_counter() - t)
    return min(times)


def nbytes(obj) -> int:
    """Bytes held by a model's tensors, plus a sparse table's keys and index."""
    if isinstance(obj, Counts):
        keys = sum(sys.getsizeof(k) for k in obj.index) + sys.getsizeof(obj.index)
        return obj.configs.nbytes + obj.counts.nbytes + keys
    total = sum(t.nbytes for t in obj.parameters()) + sum(t.nbytes for t in obj.buffers())
    table = getattr(obj, "table", None)
    return total + (nbytes(table) if table is not None else 0)


def cases():
    yield "digits", "FullJoint sparse", lambda: FullJoint(64, sparse=True), "exact"
    yield "digits", "Independent", lambda: Independent(64), "exact"
    for k in (1, 2, 4, 8):
        yield "digits", f"Markov order {k}", lambda k=k: Markov(64, order=k), "exact"
    yield "digits", "Independent (L-BFGS MLE)", lambda: Independent(64), "lbfgs"
    yield "digits", "Markov order 2 (L-BFGS MLE)", lambda: Markov(64, order=2), "lbfgs"
    # posteriors by NUTS (nutpie where installed), 2 x (500 + 500): the potential's gradient
    # reads the data's counts, not the data (`inference.gather_sums`)
    yield "digits", "Independent (NUTS)", lambda: Independent(64), "nuts"
    yield "digits", "Markov order 1 (NUTS)", lambda: Markov(64), "nuts"
    yield "pixels", "FullJoint dense", lambda: FullJoint(3, 256), "mle"
    yield "pixels", "FullJoint (exact, counts)", lambda: FullJoint(3, 256), "exact"
    yield "pixels", "Independent", lambda: Independent(3, "categorical", 256), "exact"
    yield "pixels", "Markov R->G->B", lambda: Markov(3, 1, 256), "exact"


def run(repeat: int) -> dict:
    rows = []
    for data, label, make, method in cases():
        split = datasets.load(data)
        opts = {"solver": "lbfgs"} if method == "lbfgs" else {}
        if method == "nuts":
            opts = {"num_samples": 500, "warmup_steps": 500, "progress_bar": False, "seed": 0}
        meth = "mle" if method == "lbfgs" else method
        fit_s = best_of(inference.fit, repeat, make, split.train, meth, **opts)
        f = inference.fit(make(), split.train, meth, **opts)
        x = split.test
        eval_s = best_of(f.log_density, repeat, x)
        rows.append(
            {
                "data": data,
                "model": label,
                "method": method,
                "fit_s": fit_s,
                "n_test": len(x),
                "logdensity_per_s": len(x) / eval_s,
                "test_nats": f.report(x).nats,
                "model_bytes": nbytes(f.model),
            }
        )
        print(
            f"  {data:7} {label:28} fit {fit_s:8.4f} s   eval {len(x) / eval_s:12,.0f}/s",
            file=sys.stderr,
        )
    return rows


def gradients(repeat: int) -> list[dict]:
    """A value and gradient of NUTS's whitened potential on the 1,297 training digits (us,
    best of `repeat` x 1,000 calls, TorchScript's Static Runtime, never TorchInductor): with
    the data's distinct combinations counted once (`inference.gather_sums`) and with the
    data read at every call (the rewrite turned off), for the built-ins and for the
    independence model written as a Pyro program."""
    from inference import graph_rewrites, tracing
    from inference.laplace import Whitened
    from inference.start import initial_values
    from ppl_models.example_programs import independent

    tracing.AUTO_COMPILE, counted = False, graph_rewrites.gathers_summed
    x = datasets.load("digits").train
    rows = []
    models = [("Independent(64)", Independent(64)), ("Markov(64)", Markov(64))]
    for label, model in models + [("independent, a Pyro program", independent)]:
        p = inference.as_program(model)
        data = p.validate(x)
        p.discover(data)
        init, row = initial_values(p, data)[0], {"model": label}
        for key, rewrite in (("counted_us", counted), ("data_us", lambda module, meta: 0)):
            graph_rewrites.gathers_summed = rewrite
            try:
                w = Whitened(p, data, init, jit_compile=True)
            finally:
                graph_rewrites.gathers_summed = counted
            z = np.zeros(w.dim)
            row[key] = 1e3 * best_of(_calls, repeat, (w.numpy_value_and_grad, z))
        rows.append(row)
        print(
            f"  {label:28} gradient {row['counted_us']:7.1f} us (data read: {row['data_us']:7.1f})",
            file=sys.stderr,
        )
    return rows


def _calls(call, times: int = 1000) -> None:
    f, z = call  # a pair, not a callable: `best_of` would call it for a fresh one
    for _ in range(times):
        f(z)


def memory() -> list[dict]:
    out = []
    pixels = datasets.load("pixels").train
    dense = inference.fit(FullJoint(3, 256), pixels, "mle").model
    sparse = inference.fit(FullJoint(3, 256, sparse=True), pixels, "mle").model
    out.append(
        {
            "case": "pixels FullJoint(3, 256): 2^24 cells",
            "dense_bytes": nbytes(dense),
            "sparse_bytes": nbytes(sparse),
            "distinct_seen": len(sparse.table.configs),
        }
    )
    digits = datasets.load("digits").train
    sparse = inference.fit(FullJoint(64, sparse=True), digits, "mle").model
    out.append(
        {
            "case": "digits FullJoint(64): 2^64 cells",
            "dense_bytes": 8 * 2**64,
            "sparse_bytes": nbytes(sparse),
            "distinct_seen": len(sparse.table.configs),
        }
    )
    big = torch.randint(0, 2, (10_000, 784))
    t = time.perf_counter()
    sparse = inference.fit(FullJoint(784, sparse=True), big, "exact").model
    out.append(
        {
            "case": "random FullJoint(784), N = 10,000: 2^784 cells",
            "dense_bytes": None,
            "sparse_bytes": nbytes(sparse),
            "distinct_seen": len(sparse.table.configs),
            "fit_s": time.perf_counter() - t,
        }
    )
    return out


def compare_wall_time() -> float:
    exe = ROOT / ".venv" / "bin" / "ppl-models"
    cmd = [
        str(exe) if exe.exists() else "ppl-models",
        "compare",
        "digits",
        "--out",
        str(ROOT / "benchmarks" / "results" / "reports"),
    ]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-cli", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"machine": machine(args.threads), "models": run(args.repeat), "memory": memory()}
    result["gradients"] = gradients(args.repeat)
    if not args.skip_cli:
        result["compare_digits_wall_s"] = compare_wall_time()

    print(
        f"\n{'data':7} {'model':28} {'method':6} {'fit s':>9} {'log-density/s':>14} "
        f"{'test nats':>10} {'model MB':>9}"
    )
    for r in result["models"]:
        print(
            f"{r['data']:7} {r['model']:28} {r['method']:6} {r['fit_s']:9.4f} "
            f"{r['logdensity_per_s']:14,.0f} {r['test_nats']:10.3f} "
            f"{r['model_bytes'] / 2**20:9.3f}"
        )
    print(f"\n{'memory of the full joint':48} {'dense':>14} {'sparse':>12} {'seen':>8}")
    for r in result["memory"]:
        dense = "-" if r["dense_bytes"] is None else f"{r['dense_bytes'] / 2**20:,.1f} MB"
        print(
            f"{r['case']:48} {dense:>14} {r['sparse_bytes'] / 2**20:10.2f} MB "
            f"{r['distinct_seen']:8,}"
        )
    print(f"\n{'NUTS potential, value and gradient':34} {'counted':>10} {'data read':>10}")
    for r in result["gradients"]:
        print(f"{r['model']:34} {r['counted_us']:8.1f} us {r['data_us']:7.1f} us")
    if "compare_digits_wall_s" in result:
        print(f"\nppl-models compare digits: {result['compare_digits_wall_s']:.1f} s wall")
    write_results("discrete", result)


if __name__ == "__main__":
    main()
