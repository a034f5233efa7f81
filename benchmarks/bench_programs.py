"""User programs through our inference layer beside plain Pyro on the same program (issue 7).

    .venv/bin/python benchmarks/bench_programs.py [--threads 1] [--images 1297] [--samples 500]
                                                  [--warmup 500] [--chains 2] [--svi-steps 2000]

In one run, on the shared-transition Markov chain over the 64 digit pixels (a plain function,
`tests/programs.py`):
- ours by mle, svi (normal guide) and nuts (2 x (500 + 500)), each with the gap of its posterior
  means to the exact Beta posterior in posterior sd;
- plain `pyro.infer.SVI` (AutoNormal, Adam at the same lr and steps) and plain
  `pyro.infer.MCMC(NUTS(program))` (the same chains and draws) on the same function;
- NUTS wall time, bulk ESS, ESS per second;
and the hand-written Independent(64) beside the built-in one: log-density images per second.

Targets: our NUTS ESS/s at least plain Pyro's; the generic log-density within 3x of the
built-in's vectorised path. Prints a table and writes benchmarks/results/programs.json.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import arviz as az
import numpy as np
import pyro
import torch
from common import machine, write_results
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import ClippedAdam

import inference
from ppl_models import Independent, datasets
from ppl_models.program import Program

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from programs import independent, shared_markov  # noqa: E402


def exact_beta(x: np.ndarray):
    prev, cur = x[:, :-1].ravel(), x[:, 1:].ravel()
    k1, n = x[:, 0].sum(), len(x)
    a = np.array([k1 + 1, ((prev == 0) & (cur == 1)).sum() + 1, ((prev == 1) & (cur == 1)).sum()
                  + 1], dtype=float)
    b = np.array([n - k1 + 1, ((prev == 0) & (cur == 0)).sum() + 1, ((prev == 1) & (cur == 0))
                  .sum() + 1], dtype=float)
    return a / (a + b), np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))


def gap(means: dict, x) -> float:
    mean, sd = exact_beta(np.asarray(x))
    got = np.r_[float(means["first"]), np.asarray(means["trans"]).ravel()]
    return float((np.abs(got - mean) / sd).max())


def ess_row(label, draws: dict, seconds: float, x) -> dict:
    idata = az.from_dict(posterior={k: np.asarray(v) for k, v in draws.items()})
    ess = az.ess(idata, method="bulk")
    rhat = az.rhat(idata)
    min_ess = float(min(ess[k].values.min() for k in ess.data_vars))
    means = {k: np.asarray(v).mean((0, 1)) for k, v in draws.items()}
    return {"label": label, "seconds": seconds, "min_ess_bulk": min_ess,
            "ess_per_second": min_ess / seconds,
            "max_r_hat": float(max(rhat[k].values.max() for k in rhat.data_vars)),
            "gap_sd": gap(means, x)}


def ours(x, args) -> list[dict]:
    rows = []
    t = time.perf_counter()
    f = inference.fit(shared_markov, x, "mle")
    rows.append({"label": "ours mle (L-BFGS)", "seconds": time.perf_counter() - t,
                 "train_nats": float(-f.log_density(x).mean())})
    t = time.perf_counter()
    f = inference.fit(shared_markov, x, "svi", steps=args.svi_steps, seed=0)
    rows.append({"label": f"ours svi ({args.svi_steps} steps)", "seconds":
                 time.perf_counter() - t, "gap_sd": gap(f.params, x)})
    for jit in (False, True):
        t = time.perf_counter()
        f = inference.fit(shared_markov, x, "nuts", num_samples=args.samples,
                          warmup_steps=args.warmup, num_chains=args.chains, jit_compile=jit,
                          seed=0)
        seconds = time.perf_counter() - t
        rows.append(ess_row(f"ours nuts{' (jit)' if jit else ''}",
                            {k: v.numpy() for k, v in f.draws.items()}, seconds, x))
    return rows


def plain(x, args) -> list[dict]:
    xf = x.double()
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(shared_markov)
    svi = SVI(shared_markov, guide, ClippedAdam({"lr": 0.01}), Trace_ELBO())
    t = time.perf_counter()
    for _ in range(args.svi_steps):
        svi.step(xf)
    rows = [{"label": f"plain pyro SVI ({args.svi_steps} steps)",
             "seconds": time.perf_counter() - t, "gap_sd": gap(guide.median(), x)}]
    pyro.set_rng_seed(0)
    mcmc = MCMC(NUTS(shared_markov), num_samples=args.samples, warmup_steps=args.warmup,
                num_chains=args.chains, disable_progbar=True)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc.run(xf)
    seconds = time.perf_counter() - t
    draws = {k: v.numpy() for k, v in mcmc.get_samples(group_by_chain=True).items()}
    rows.append(ess_row("plain pyro MCMC(NUTS)", draws, seconds, x))
    return rows


def throughput(n_images: int, repeat: int) -> list[dict]:
    """Log-density images per second: the user-written Independent (the generic trace path)
    beside the built-in's vectorised path, at the same parameter values."""
    split = datasets.load("digits")
    x = split.train.double().repeat(n_images // len(split.train) + 1, 1)[:n_images]
    probs = split.train.double().mean(0).clamp(0.01, 0.99)
    mine = Program(independent)
    mine.discover(mine.validate(x))
    builtin = Program(Independent(64))
    rows = []
    for label, program in (("user-written Independent (generic trace)", mine),
                           ("built-in Independent (vectorised)", builtin)):
        values = {"probs": probs}
        with torch.no_grad():
            program.log_prob(x, values)
            t = time.perf_counter()
            for _ in range(repeat):
                program.log_prob(x, values)
            seconds = (time.perf_counter() - t) / repeat
        rows.append({"label": label, "images": n_images, "seconds": seconds,
                     "images_per_second": n_images / seconds})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--images", type=int, default=1297, help="training images for the fits")
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--svi-steps", type=int, default=2000)
    p.add_argument("--skip-plain", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    x = datasets.load("digits").train[:args.images]
    rows = ours(x, args) + ([] if args.skip_plain else plain(x, args))
    print(f"shared-transition chain, {len(x)} digits, {args.chains} x ({args.warmup} + "
          f"{args.samples}), {args.threads} thread(s)")
    print(f"{'':44} {'seconds':>9} {'min ESS':>9} {'ESS/s':>8} {'r_hat':>7} {'gap (sd)':>9}")
    for r in rows:
        print(f"{r['label']:44} {r['seconds']:9.2f} {r.get('min_ess_bulk', float('nan')):9.0f} "
              f"{r.get('ess_per_second', float('nan')):8.2f} "
              f"{r.get('max_r_hat', float('nan')):7.3f} {r.get('gap_sd', float('nan')):9.3f}")
    speed = throughput(100_000, 20)
    print("\nlog-density, 100,000 images")
    for r in speed:
        print(f"{r['label']:44} {r['images_per_second']:12,.0f} images/s")
    ratio = speed[1]["images_per_second"] / speed[0]["images_per_second"]
    print(f"built-in / generic: {ratio:.2f}x (target <= 3x)")
    nuts = {r["label"]: r for r in rows if "nuts" in r["label"].lower()}
    if "plain pyro MCMC(NUTS)" in nuts:
        mine = max(v["ess_per_second"] for k, v in nuts.items() if k.startswith("ours"))
        plain_rate = nuts["plain pyro MCMC(NUTS)"]["ess_per_second"]
        print(f"NUTS ESS/s ours / plain Pyro: {mine / plain_rate:.2f}x (target >= 1)")
    write_results("programs", {"machine": machine(args.threads), "args": vars(args),
                               "fits": rows, "log_density": speed,
                               "builtin_over_generic": ratio})


if __name__ == "__main__":
    main()
