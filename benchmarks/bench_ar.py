"""AR(2) on sunspots: our NUTS (each engine: nutpie, Pyro's) beside a plain
`pyro.infer.MCMC(NUTS)` on a hand-written AR(2) with the same priors, and beside NumPyro (issue
18), in one run (wall time, bulk ESS, ESS per
second, r_hat, posterior means); SVI steps per second for every guide beside plain
`pyro.infer.SVI(AutoNormal)` on the vectorised AR(2); and the conditional-MLE fit time beside
statsmodels' AutoReg.

    .venv/bin/python benchmarks/bench_ar.py [--threads 1] [--samples 1000] [--warmup 1000]
                                            [--chains 2] [--repeat 200] [--skip-plain]
                                            [--numpyro PYTHON] [--svi-steps 1000]

--numpyro PYTHON: an interpreter with numpyro and jax (NumPyro is not a dependency of this
project; make one outside it: `python3 -m venv ../numpyro-venv && ../numpyro-venv/bin/pip
install numpyro jax`). NumPyro's AR(2) (benchmarks/numpyro_programs.py ar2, the same priors)
runs there with its default and dense mass matrix, chains sequential, vectorised and parallel
(a CPU device each), interleaved
with ours; ESS and r_hat of every row come from the same ArviZ call here.

Targets (issue 3): our NUTS <= 15 s and >= 40 ESS/s for 2 chains x (1000 warm-up + 1000 draws);
the plain version measured 123 s (about 5 ESS/s); MLE no slower than AutoReg. Prints a table and
writes benchmarks/results/ar.json.
"""

from __future__ import annotations

import argparse
import math
import time

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from common import machine, write_results
from pyro.infer import MCMC, NUTS
from statsmodels.tsa.ar_model import AutoReg

import inference
from ppl_models import AutoRegressive, datasets

f64 = torch.float64


def plain_ar2(y, m, s):
    """AR(2) written by hand, vectorised, with the default priors of AutoRegressive(2)."""
    sigma2 = dist.InverseGamma(torch.tensor(0.5, dtype=f64), torch.tensor(s**2 / 2, dtype=f64))
    sigma = pyro.sample(
        "sigma", dist.TransformedDistribution(sigma2, [dist.transforms.PowerTransform(0.5)])
    )
    phi = pyro.sample("phi", dist.Normal(torch.zeros(2, dtype=f64), 5 * sigma / s).to_event(1))
    const = pyro.sample("const", dist.Normal(m * (1 - phi.sum()), 5 * sigma))
    mean = const + phi[0] * y[1:-1] + phi[1] * y[:-2]
    pyro.sample("y", dist.Normal(mean, sigma).to_event(1), obs=y[2:])


def summarise(label, draws: dict, seconds: float) -> dict:
    """draws: name -> (chain, draw, ...) tensors."""
    idata = az.from_dict(posterior={k: v.numpy() for k, v in draws.items()})
    ess = az.ess(idata, method="bulk")
    rhat = az.rhat(idata)
    min_ess = float(min(ess[k].values.min() for k in ess.data_vars))
    return {
        "label": label,
        "seconds": seconds,
        "min_ess_bulk": min_ess,
        "ess_per_second": min_ess / seconds,
        "max_r_hat": float(max(rhat[k].values.max() for k in rhat.data_vars)),
        "means": {k: v.mean((0, 1)).tolist() for k, v in draws.items()},
    }


def ours(y, args, engine: str) -> dict:
    t = time.perf_counter()
    f = inference.fit(
        AutoRegressive(2),
        y,
        "nuts",
        num_samples=args.samples,
        warmup_steps=args.warmup,
        num_chains=args.chains,
        engine=engine,
        seed=0,
        progress_bar=False,
    )
    seconds = time.perf_counter() - t
    how = f"chains in {f.info['chain_processes']} process(es)"
    out = summarise(
        f"ours: fit(AutoRegressive(2), 'nuts', engine={engine!r}), {how}",
        f.draws,
        seconds,
    )
    out["divergences"] = f.info["divergences"]
    return out


def plain(y, args) -> dict:
    m, s = float(y.mean()), float(y.std())
    pyro.set_rng_seed(0)
    t = time.perf_counter()
    mcmc = MCMC(
        NUTS(plain_ar2),
        num_samples=args.samples,
        warmup_steps=args.warmup,
        num_chains=args.chains,
        disable_progbar=True,
    )
    mcmc.run(y, m, s)
    seconds = time.perf_counter() - t
    draws = {k: v.detach() for k, v in mcmc.get_samples(group_by_chain=True).items()}
    return summarise("plain pyro.infer.MCMC(NUTS) on a hand-written AR(2)", draws, seconds)


def numpyro_row(python: str, y, args, dense: bool, chains: str) -> dict:
    import subprocess
    import tempfile
    from pathlib import Path

    script = Path(__file__).resolve().parent / "numpyro_programs.py"
    label = f"NumPyro NUTS dense_mass={dense}, chains {chains}"
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(f"{tmp}/y.npz", y=y.numpy())
        cmd = [
            python,
            str(script),
            "ar2",
            f"{tmp}/y.npz",
            f"{tmp}/out.npz",
            "--samples",
            str(args.samples),
            "--warmup",
            str(args.warmup),
            "--chains",
            str(args.chains),
        ]
        cmd += ["--dense"] * dense + [f"--{chains}"] * (chains != "sequential")
        env = {  # --parallel: the script sets a device per chain
            "PATH": "/usr/bin:/bin",
            "OMP_NUM_THREADS": str(args.threads),
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        }
        run = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if run.returncode:
            return {"label": label, "error": run.stderr[-500:]}
        out = np.load(f"{tmp}/out.npz")
        draws = {k: torch.from_numpy(out[k]) for k in out.files if k != "seconds"}
        return summarise(label, draws, float(out["seconds"]))


def hand_guide(*args, **kwargs):
    """A guide written by hand (Normal phi and const, log-normal sigma), for ours and plain."""
    loc = pyro.param("hand_loc", torch.tensor([10.0, 1.3, -0.6, 3.0], dtype=f64))
    scale = pyro.param(
        "hand_scale", torch.full((4,), 0.1, dtype=f64), constraint=dist.constraints.positive
    )
    pyro.sample("sigma", dist.LogNormal(loc[3], scale[3]))
    pyro.sample("phi", dist.Normal(loc[1:3], scale[1:3]).to_event(1))
    pyro.sample("const", dist.Normal(loc[0], scale[0]))


def svi_rows(y, steps: int, repeat: int = 3) -> list[dict]:
    """Steps per second of ours (every guide: the three autoguides and one written by hand;
    the whole `fit` call, with its MAP start and 1,000 draws) and plain SVI with AutoNormal and
    with the same hand-written guide on the vectorised AR(2) (the step loop alone), the same
    steps; `repeat` rounds, interleaved, the fastest of each kept."""
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal
    from pyro.optim import ClippedAdam

    m, s = float(y.mean()), float(y.std())

    def ours_run(guide):
        pyro.clear_param_store()
        t = time.perf_counter()
        inference.fit(
            AutoRegressive(2), y, "svi", guide=guide, steps=steps, seed=0, progress_bar=False
        )
        return time.perf_counter() - t

    def plain_run(make_guide):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        svi = SVI(plain_ar2, make_guide(), ClippedAdam({"lr": 0.01}), Trace_ELBO())
        t = time.perf_counter()
        for _ in range(steps):
            svi.step(y, m, s)
        return time.perf_counter() - t

    runs = {
        f"ours: fit(AutoRegressive(2), 'svi', guide={g!r})": (ours_run, g)
        for g in ("normal", "multivariate_normal", "delta")
    }
    runs["ours: fit(AutoRegressive(2), 'svi', guide=hand_guide (yours))"] = (ours_run, hand_guide)
    runs["plain pyro.infer.SVI(AutoNormal) on the vectorised AR(2)"] = (
        plain_run,
        lambda: AutoNormal(plain_ar2),
    )
    runs["plain pyro.infer.SVI(hand_guide) on the vectorised AR(2)"] = (
        plain_run,
        lambda: hand_guide,
    )
    best = {label: math.inf for label in runs}
    for _ in range(repeat):
        for label, (run, guide) in runs.items():
            best[label] = min(best[label], run(guide))
    return [
        {"label": label, "seconds": t, "steps_per_second": steps / t} for label, t in best.items()
    ]


def best_of(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def mle_times(y, repeat: int) -> list[dict]:
    rows = []
    yn = y.numpy()
    for p in (2, 9):
        rows.append(
            {
                "order": p,
                "ours_fit_call_s": best_of(lambda p=p: inference.fit(AutoRegressive(p), y), repeat),
                "ours_fit_seconds": inference.fit(AutoRegressive(p), y).fit_seconds,
                "statsmodels_autoreg_s": best_of(
                    lambda p=p: AutoReg(yn, lags=p, trend="c").fit(), repeat
                ),
            }
        )
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument(
        "--numpyro",
        metavar="PYTHON",
        default=None,
        help="an interpreter with numpyro and jax (see the module docstring)",
    )
    parser.add_argument("--svi-steps", type=int, default=1000)
    parser.add_argument(
        "--svi-repeat",
        type=int,
        default=3,
        help="interleaved rounds of the SVI rows; the fastest of each kept",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    y = datasets.load("sunspots").train.clone()
    exact = inference.fit(AutoRegressive(2), y, "exact").params
    nuts = [ours(y, args, "nutpie")]
    configs = [
        (dense, chains)
        for chains in ("vectorized", "sequential", "parallel")
        for dense in (False, True)
    ]
    for i, (dense, chains) in enumerate(configs if args.numpyro else []):  # interleaved
        nuts.append(numpyro_row(args.numpyro, y, args, dense, chains))
        if i == 1:
            nuts.append(ours(y, args, "pyro"))
    if not args.numpyro:
        nuts.append(ours(y, args, "pyro"))
    if not args.skip_plain:
        nuts.append(plain(y, args))
    svi = svi_rows(y, args.svi_steps, args.svi_repeat)
    mle = mle_times(y, args.repeat)
    print(
        f"\nNUTS on AR(2) sunspots: {args.chains} chains x ({args.warmup} warm-up + "
        f"{args.samples} draws), {args.threads} thread(s)"
    )
    print(f"{'':60} {'wall s':>8} {'min ESS':>8} {'ESS/s':>7} {'r_hat':>6}  phi means")
    for r in nuts:
        if "error" in r:
            print(f"{r['label']:60} failed: {r['error']}")
            continue
        phi = ", ".join(f"{v:.4f}" for v in r["means"]["phi"])
        print(
            f"{r['label']:60} {r['seconds']:8.1f} {r['min_ess_bulk']:8.0f} "
            f"{r['ess_per_second']:7.1f} {r['max_r_hat']:6.3f}  [{phi}]"
        )
    print(
        f"{'exact conjugate posterior mean':60} {'':8} {'':8} {'':7} {'':6}  "
        f"[{', '.join(f'{v:.4f}' for v in exact['phi'].tolist())}]"
    )
    print(f"\nSVI on AR(2) sunspots, {args.svi_steps} steps, {args.threads} thread(s)")
    for r in svi:
        print(f"{r['label']:60} {r['seconds']:8.2f} s {r['steps_per_second']:8.0f} steps/s")
    print("\nconditional MLE (median of repeats)")
    print(f"{'order':>5} {'inference.fit s':>16} {'fit_seconds':>12} {'AutoReg.fit s':>14}")
    for r in mle:
        print(
            f"{r['order']:5d} {r['ours_fit_call_s']:16.5f} {r['ours_fit_seconds']:12.5f} "
            f"{r['statsmodels_autoreg_s']:14.5f}"
        )
    result = {
        "machine": machine(args.threads),
        "settings": vars(args),
        "nuts": nuts,
        "svi": svi,
        "mle": mle,
        "exact_posterior_mean": {k: v.tolist() for k, v in exact.items()},
    }
    write_results("ar", result)
    return result


if __name__ == "__main__":
    main()
