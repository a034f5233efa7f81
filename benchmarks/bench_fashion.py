"""The lecture's example at its own size (issue 23): 28x28 binary Fashion-MNIST, n = 784.

    .venv/bin/python benchmarks/bench_fashion.py [--threads 1] [--repeat 5] [--part timing|train]

Rows:
- the exact models at 784 dims: fit and score seconds, test nats per image (the full joint,
  independence, Markov chains of order 1-8);
- NADE(784, 500) beside `PlainNADE` (bench_nade.py: the 2011 paper's loops over the dims with
  the hand-derived O(DH) gradient) in the same process, interleaved, one thread: a training step
  on 100 images, the log-density of the 10,000 test images, sampling 100 images (784
  sequential steps); targets: within 1.5x of plain, sampling under 0.2 s;
- peak memory of scoring the 10,000 test images with NADE(784, 500), beyond the data and the
  model (a fresh process; target under 1 GB);
- --part train: NADE H=500 and the mixture of 50 Bernoullis (a plain Pyro program) fitted with
  the options of `ppl-models compare fashion` (suites.NADE_FASHION, MIXTURE_FASHION): test
  nats, seconds, epochs (targets: NADE at most 108 nats, the mixture at most 180).

Needs Debian's dataset-fashion-mnist. Prints a table and writes benchmarks/results/fashion.json
(--part timing, the default) or fashion_training.json (--part train: minutes of training; the
nats do not depend on the machine's load, the seconds do).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from bench_nade import PlainNADE, interleaved
from common import ROOT, machine, write_results

import inference
from ppl_models import NADE, FullJoint, Independent, Markov, datasets
from ppl_models.app.suites import MIXTURE_FASHION, NADE_FASHION
from ppl_models.example_programs import bernoulli_mixture
from ppl_models.models.nade_gradient import log_conditionals

EXACT = [
    ("FullJoint (sparse)", lambda: FullJoint(784, sparse=True), "mle"),
    ("FullJoint alpha=1 (sparse)", lambda: FullJoint(784, sparse=True), "exact"),
    ("Independent", lambda: Independent(784), "mle"),
    ("Independent Beta(1, 1)", lambda: Independent(784), "exact"),
    *[(f"Markov order {k}", lambda k=k: Markov(784, order=k), "exact") for k in (1, 2, 4, 8)],
]


def exact_rows(split) -> list[dict]:
    rows = []
    for label, make, method in EXACT:
        t = time.perf_counter()
        f = inference.fit(make(), split.train, method)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        r = f.report(split.test)
        rows.append(
            {
                "model": label,
                "method": method,
                "free_parameters": str(r.num_parameters)
                if r.num_parameters > 10**12
                else r.num_parameters,
                "fit_s": fit_s,
                "score_s": time.perf_counter() - t,
                "test_nats": r.nats,
                "zero_probability_test_images": r.num_zero_prob,
            }
        )
    return rows


def nade_rows(split, repeat: int) -> list[dict]:
    torch.manual_seed(0)
    plain = PlainNADE(784, 500)
    W, c, V, b = (p.detach().clone().requires_grad_() for p in (plain.W, plain.c, plain.V, plain.b))
    ours_opt = torch.optim.Adam([W, c, V, b], lr=1e-3)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-3)
    batch = split.train[:100].float()
    test = split.test.float()

    def ours_step():
        loss = -log_conditionals(batch, W, c, V, b).sum() / len(batch)
        ours_opt.zero_grad()
        loss.backward()
        ours_opt.step()

    def plain_step():
        loss = plain.nll(batch) / len(batch)
        plain_opt.zero_grad()
        loss.backward()
        plain_opt.step()

    # ours as `fit` runs it: the model's accelerator through the program's objective
    model = NADE(784, 500)
    with torch.no_grad():
        model.set_params({"W": W, "c": c, "V": V, "b": b})
    fit = inference.Fit(inference.as_program(model), "map", batch)
    out = []
    t = interleaved({"ours": ours_step, "plain": plain_step}, repeat)
    out.append(row("train step, 100 images (s)", t["ours"], t["plain"], False))
    with torch.no_grad():
        t = interleaved(
            {"ours": lambda: fit.log_density(test), "plain": lambda: plain.log_prob(test)},
            max(2, repeat // 2),
        )
    out.append(row("log-density, 10,000 images (s)", t["ours"], t["plain"], False))
    t = interleaved({"ours": lambda: fit.sample(100), "plain": lambda: plain.sample(100)}, repeat)
    out.append(row("sampling, 100 images (s)", t["ours"], t["plain"], False))
    return out


def row(what, ours, plain, higher_is_better) -> dict:
    return {
        "measure": what,
        "ours": ours,
        "plain": plain,
        "slowdown": plain / ours if higher_is_better else ours / plain,
    }


MEMORY = """
import json, torch
torch.set_num_threads(1)
from ppl_models import NADE, datasets

def status(key):  # kB, from the kernel's accounting of this process
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

x = datasets.load("fashion").test.float()
m = NADE(784, 500)
m.log_prob(x[:10])
before = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) restarts from here
lp = m.log_prob(x)
peak = status("VmHWM:")
print(json.dumps({"rss_before_mb": before / 1024, "peak_mb": peak / 1024,
                  "extra_peak_mb": (peak - before) / 1024, "images": len(x)}))
"""


def memory_row() -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def train_rows(split) -> list[dict]:
    rows = []
    for label, program, options in (
        ("NADE H=500", NADE(784, 500), {**NADE_FASHION}),
        (
            "mixture of 50 Bernoullis (a program of yours)",
            bernoulli_mixture,
            {"given": {"K": 50, "D": 784}, **MIXTURE_FASHION},
        ),
    ):
        t = time.perf_counter()
        f = inference.fit(
            program, split.train, "map", valid=split.valid, seed=0, progress_bar=False, **options
        )
        seconds = time.perf_counter() - t
        r = f.report(split.test)
        rows.append(
            {
                "model": label,
                "options": {k: v for k, v in options.items() if k != "given"},
                "epochs": f.info.get("epochs"),
                "fit_s": seconds,
                "valid_nats": f.info.get("valid_nats"),
                "test_nats": r.nats,
            }
        )
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--part", choices=["timing", "train"], default="timing")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    split = datasets.load("fashion")
    result = {"machine": machine(args.threads)}
    if args.part == "train":
        result["training"] = train_rows(split)
        result["machine"]["load_average_end"] = machine(args.threads)["load_average"]
        write_results("fashion_training", result)
        return
    result["exact"] = exact_rows(split)
    for r in result["exact"]:
        print(
            f"{r['model']:28} {r['method']:6} fit {r['fit_s']:7.2f} s  score "
            f"{r['score_s']:6.2f} s  test nats {r['test_nats']:9.3f}"
        )
    result["nade_784x500"] = nade_rows(split, args.repeat)
    for r in result["nade_784x500"]:
        print(
            f"{r['measure']:34} ours {r['ours']:8.3f}  plain {r['plain']:8.3f}  "
            f"{r['slowdown']:5.2f}x"
        )
    result["memory_scoring_10000"] = memory_row()  # a fresh process: VmHWM after clear_refs
    print(
        "peak memory beyond data and model, scoring 10,000 images:",
        f"{result['memory_scoring_10000']['extra_peak_mb']:.0f} MB",
    )
    result["machine"]["load_average_end"] = machine(args.threads)["load_average"]
    write_results("fashion", result)


if __name__ == "__main__":
    main()
