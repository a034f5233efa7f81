"""User programs through our inference layer beside plain Pyro on the same program (issues 7
and 15).

    .venv/bin/python benchmarks/bench_programs.py [--threads 1] [--images 1297] [--samples 500]
                                                  [--warmup 500] [--chains 2] [--svi-steps 2000]
                                                  [--only chain|everyday]
                                                  [--programs WORD ...] [--skip-plain-jit]
                                                  [--engines nutpie pyro] [--numpyro PYTHON]

Pyro's everyday programs (issues 15 and 26; `ppl_models/example_programs.py`, bodies as in
Pyro's examples): eight schools (non-centred), baseball partial pooling, the Bayesian
regression tutorial's PyroModule, the GMM tutorial (assignments enumerated), HMM model_1
(states enumerated), a logistic regression (2,000 x 10) and a hierarchical AR(1) over 8 series
of 100 steps, each by ours `fit(..., "nuts")` on each engine, plain
`pyro.infer.MCMC(NUTS(program))` and, with ``--numpyro PYTHON``, NumPyro's best of six
configurations (`benchmarks/numpyro_programs.py`: default or dense mass matrix, chains
sequential, vectorised or parallel, a CPU device each, as ours run in a process each where a
core is free; HMM model_1 with its states summed out by a forward algorithm in
jax, as NumPyro's enumeration needs funsor), the same chains and draws, one after the other in
the same run: wall seconds (ours includes its MAP search and Laplace approximation; NumPyro's
its compilation), min bulk ESS over every parameter and latent, ESS/s, largest r_hat. With
``--seeds N`` ours and NumPyro run seeds 0..N-1 and each configuration reports its median
ESS/s (one seed's ESS moves by 2x: nutpie on eight schools 283-695 over seeds 0-3); both
sides time their fits after one short fit of another model in the same process (imports and
a process's first calls excluded, each program's compilation and tracing included).
Targets: ours ESS/s at least plain Pyro's on every program, and twice NumPyro's (issue 26).

In one run, on the shared-transition Markov chain over the 64 digit pixels (a plain function,
`ppl_models/example_programs.py`):
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
import math
import os
import time
import warnings

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
from ppl_models.example_programs import (
    BASEBALL_AT_BATS,
    BASEBALL_HITS,
    EIGHT_SIGMA,
    EIGHT_Y,
    BayesianRegression,
    ar1_panel,
    eight_schools,
    gmm,
    hierarchical_ar1,
    hmm_model_1,
    hmm_songs,
    independent,
    logistic_regression,
    partially_pooled,
    shared_markov,
)
from ppl_models.programs.program import Program


def exact_beta(x: np.ndarray):
    prev, cur = x[:, :-1].ravel(), x[:, 1:].ravel()
    k1, n = x[:, 0].sum(), len(x)
    a = np.array(
        [k1 + 1, ((prev == 0) & (cur == 1)).sum() + 1, ((prev == 1) & (cur == 1)).sum() + 1],
        dtype=float,
    )
    b = np.array(
        [n - k1 + 1, ((prev == 0) & (cur == 0)).sum() + 1, ((prev == 1) & (cur == 0)).sum() + 1],
        dtype=float,
    )
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
    return {
        "label": label,
        "seconds": seconds,
        "min_ess_bulk": min_ess,
        "ess_per_second": min_ess / seconds,
        "max_r_hat": float(max(rhat[k].values.max() for k in rhat.data_vars)),
        "gap_sd": gap(means, x),
    }


def timed_nuts(program, data, args, **options):
    """(fit, wall seconds) of our NUTS with the run's draws (`args.samples`, `args.warmup`,
    `args.chains`)."""
    t = time.perf_counter()
    f = inference.fit(
        program,
        data,
        "nuts",
        num_samples=args.samples,
        warmup_steps=args.warmup,
        num_chains=args.chains,
        **options,
    )
    return f, time.perf_counter() - t


def ours(x, args) -> list[dict]:
    rows = []
    t = time.perf_counter()
    f = inference.fit(shared_markov, x, "mle")
    rows.append(
        {
            "label": "ours mle (L-BFGS)",
            "seconds": time.perf_counter() - t,
            "train_nats": float(-f.log_density(x).mean()),
        }
    )
    t = time.perf_counter()
    f = inference.fit(shared_markov, x, "svi", steps=args.svi_steps, seed=0)
    rows.append(
        {
            "label": f"ours svi ({args.svi_steps} steps)",
            "seconds": time.perf_counter() - t,
            "gap_sd": gap(f.params, x),
        }
    )
    for jit in (False, True):
        f, seconds = timed_nuts(shared_markov, x, args, jit_compile=jit, seed=0)
        rows.append(
            ess_row(
                f"ours nuts{' (jit)' if jit else ''}",
                {k: v.numpy() for k, v in f.draws.items()},
                seconds,
                x,
            )
        )
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
    rows = [
        {
            "label": f"plain pyro SVI ({args.svi_steps} steps)",
            "seconds": time.perf_counter() - t,
            "gap_sd": gap(guide.median(), x),
        }
    ]
    pyro.set_rng_seed(0)
    mcmc = MCMC(
        NUTS(shared_markov),
        num_samples=args.samples,
        warmup_steps=args.warmup,
        num_chains=args.chains,
        disable_progbar=True,
    )
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
    for label, program in (
        ("user-written Independent (generic trace)", mine),
        ("built-in Independent (vectorised)", builtin),
    ):
        values = {"probs": probs}
        with torch.no_grad():
            program.log_prob(x, values)
            t = time.perf_counter()
            for _ in range(repeat):
                program.log_prob(x, values)
            seconds = (time.perf_counter() - t) / repeat
        rows.append(
            {
                "label": label,
                "images": n_images,
                "seconds": seconds,
                "images_per_second": n_images / seconds,
            }
        )
    return rows


def everyday_programs():
    """(label, program, data, fit keyword arguments, plain MCMC call arguments, NUTS options)."""
    g = torch.Generator().manual_seed(0)
    f64 = torch.float64
    # float32, as the tutorial's module (float32 priors) runs in plain Pyro
    X = torch.randn(100, 3, generator=g)
    y = X @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 + 0.5 * torch.randn(100, generator=g)
    Xl = torch.randn(2000, 10, generator=g, dtype=f64)
    wl = torch.linspace(-1.0, 1.0, 10, dtype=f64)
    yl = (torch.rand(2000, generator=g, dtype=f64) < torch.sigmoid(Xl @ wl - 0.5)).to(f64)
    data = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0], dtype=f64)
    songs, lengths = hmm_songs()
    hmm_args = argparse.Namespace(hidden_dim=2, jit=False)
    panel = ar1_panel()
    return [
        (
            "eight schools",
            eight_schools,
            EIGHT_Y,
            {"given": {"J": 8, "sigma": EIGHT_SIGMA}, "data_arg": "y", "data_plate": "J"},
            (8, EIGHT_SIGMA, EIGHT_Y),
            {},
        ),
        (
            "baseball partial pooling",
            partially_pooled,
            BASEBALL_HITS,
            {
                "given": {"at_bats": BASEBALL_AT_BATS},
                "data_arg": "hits",
                "data_plate": "num_players",
            },
            (BASEBALL_AT_BATS, BASEBALL_HITS),
            {},
        ),
        (
            "regression (PyroModule)",
            BayesianRegression(3, 1),
            y,
            {"given": {"x": X}, "data_arg": "y"},
            (X, y),
            {},
        ),
        ("GMM (enumerated)", gmm, data, {"data_arg": "data"}, (data,), {"max_plate_nesting": 1}),
        (
            "HMM model_1 (enumerated)",
            hmm_model_1,
            songs,
            {
                "given": {"lengths": lengths, "args": hmm_args},
                "data_arg": "sequences",
                "data_plate": "sequences",
            },
            (songs, lengths, hmm_args),
            {"max_plate_nesting": 2},
        ),
        (
            "logistic regression",
            logistic_regression,
            yl,
            {"given": {"X": Xl}, "data_arg": "y"},
            (Xl, yl),
            {},
        ),
        (
            "hierarchical AR(1)",
            hierarchical_ar1,
            panel,
            {"data_arg": "y", "data_plate": "series"},
            (panel,),
            {},
        ),
    ]


def convergence_row(label, draws: dict, seconds: float) -> dict:
    idata = az.from_dict(posterior={k: np.asarray(v) for k, v in draws.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess = az.ess(idata, method="bulk")
        rhat = az.rhat(idata)
    min_ess = float(min(np.nanmin(ess[k].values) for k in ess.data_vars))
    return {
        "label": label,
        "seconds": seconds,
        "min_ess_bulk": min_ess,
        "ess_per_second": min_ess / seconds,
        "max_r_hat": float(max(np.nanmax(rhat[k].values) for k in rhat.data_vars)),
    }


def plain_nuts(label, program, call, nuts_options, args, jit: bool) -> dict:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    kernel = NUTS(program, jit_compile=jit, ignore_jit_warnings=True, **nuts_options)
    mcmc = MCMC(
        kernel,
        num_samples=args.samples,
        warmup_steps=args.warmup,
        num_chains=args.chains,
        disable_progbar=True,
    )
    t = time.perf_counter()
    mcmc.run(*call)
    seconds = time.perf_counter() - t
    return convergence_row(
        label, {k: v.numpy() for k, v in mcmc.get_samples(group_by_chain=True).items()}, seconds
    )


def median_run(runs: list[dict]) -> dict:
    """The run with the median ESS/s of one configuration's seeds (0, 1, ...), every seed's
    row kept under "seeds"."""
    ranked = sorted(runs, key=lambda r: r["ess_per_second"])
    out = dict(ranked[(len(ranked) - 1) // 2])
    if len(runs) > 1:
        out["seeds"] = runs
    return out


def warm_up() -> None:
    """One short fit of another program before any timing: the imports and first calls a
    process pays once (nutpie, make_fx, TorchInductor's import and its probe of the CPU's
    vector instructions), as NumPyro's runs warm up jax (``--warm``). A program's own
    compilation, where it is compiled, stays in its time."""
    pyro.set_rng_seed(0)

    def tiny(y):
        mu = pyro.sample("mu", pyro.distributions.Normal(0.0, 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("obs", pyro.distributions.Normal(mu, 1.0), obs=y)

    y = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
    for engine in ("nutpie", "pyro"):
        inference.fit(
            tiny,
            y,
            "nuts",
            num_samples=20,
            warmup_steps=20,
            progress_bar=False,
            data_arg="y",
            engine=engine,
            jit_compile="inductor" if engine == "nutpie" else None,
        )


def cell(r: dict) -> str:
    if "seconds" not in r:
        return r["error"][:40]
    return (
        f"{r['seconds']:6.1f} s {r['min_ess_bulk']:5.0f} ESS {r['ess_per_second']:6.2f}/s "
        f"r_hat {r['max_r_hat']:.3f}"
    )


# NumPyro's configurations: default and dense mass matrix, chains one after the other,
# vectorised, or in parallel (a CPU device each, as our chains take a core each)
NUMPYRO_CONFIGS = [
    [*dense, *chains]
    for chains in ([], ["--vectorized"], ["--parallel"])
    for dense in ([], ["--dense"])
]


def numpyro_best(label, kwargs, data, args) -> dict:
    """NumPyro's NUTS on the same program and data in each of NUMPYRO_CONFIGS, each in its
    own process (compilation included): the row with the best ESS/s, every configuration's
    row kept under "configs"."""
    import subprocess
    import tempfile

    name = {
        "eight schools": "eight_schools",
        "baseball partial pooling": "baseball",
        "regression (PyroModule)": "regression",
        "logistic regression": "logistic",
        "hierarchical AR(1)": "hierarchical_ar1",
        "HMM model_1 (enumerated)": "hmm",
    }.get(label)
    if name is None or not args.numpyro:
        return {"error": "not measured" if args.numpyro else "no --numpyro"}
    arrays = {
        "eight_schools": {"sigma": EIGHT_SIGMA, "y": EIGHT_Y},
        "baseball": {"at_bats": BASEBALL_AT_BATS, "hits": BASEBALL_HITS},
        "regression": {"X": kwargs.get("given", {}).get("x"), "y": data},
        "logistic": {"X": kwargs.get("given", {}).get("X"), "y": data},
        "hierarchical_ar1": {"y": data},
        "hmm": {"sequences": data, "lengths": kwargs.get("given", {}).get("lengths")},
    }[name]
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "numpyro_programs.py")
    configs = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.npz")
        np.savez(path, **{k: v.double().numpy() for k, v in arrays.items()})
        for flags in NUMPYRO_CONFIGS:
            runs = []
            for seed in range(args.seeds):
                out = os.path.join(tmp, "out.npz")
                cmd = [args.numpyro, script, name, path, out, "--samples", str(args.samples)]
                cmd += ["--warmup", str(args.warmup), "--chains", str(args.chains), *flags]
                cmd += ["--seed", str(seed), "--warm"]
                env = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
                subprocess.run(cmd, check=True, env=env, capture_output=True)
                got = dict(np.load(out))
                seconds = float(got.pop("seconds"))
                runs.append(convergence_row(label, got, seconds))
            row = median_run(runs)
            row["config"] = " ".join(flags) or "default"
            configs.append(row)
    best = max(configs, key=lambda r: r["ess_per_second"])
    return {**best, "configs": configs}


def cold_compiles():
    """TorchInductor's caches, on disk and in memory, emptied for the fit inside: a potential
    compiled there is compiled from scratch every time (NumPyro compiles every run too)."""
    from torch._inductor.utils import fresh_cache

    return fresh_cache()


def everyday(args) -> list[dict]:
    """Per program, in this order in one run: ours on each NUTS engine (nutpie, Pyro's; the
    potential jit-traced where that gives the same numbers), plain Pyro NUTS (its defaults),
    plain Pyro NUTS with jit_compile=True, NumPyro's best configuration (``--numpyro``)."""
    rows = []
    for label, program, data, kwargs, call, nuts_options in everyday_programs():
        if args.programs and not any(w.lower() in label.lower() for w in args.programs):
            continue
        mine = {}
        for engine in args.engines:
            runs = []
            for seed in range(args.seeds):
                with cold_compiles():
                    f, seconds = timed_nuts(
                        program, data, args, seed=seed, progress_bar=False, engine=engine, **kwargs
                    )
                row = convergence_row(label, {k: v.numpy() for k, v in f.draws.items()}, seconds)
                row["how"] = f"{f.info['init']}; {f.info['potential']}"
                row["chain_processes"] = f.info["chain_processes"]
                runs.append(row)
            mine[engine] = median_run(runs)
        theirs = (
            {"error": "not run (--skip-plain)"}
            if args.skip_plain
            else plain_nuts(label, program, call, nuts_options, args, jit=False)
        )
        if args.skip_plain_jit or args.skip_plain:
            jitted = {"error": "not run (--skip-plain-jit)"}
        else:
            try:
                jitted = plain_nuts(label, program, call, nuts_options, args, jit=True)
            except Exception as e:  # a program plain Pyro cannot jit
                jitted = {"error": f"{type(e).__name__}: {str(e)[:80]}"}
        peer = numpyro_best(label, kwargs, data, args)
        best = max(mine.values(), key=lambda r: r["ess_per_second"])
        row = {
            "program": label,
            "ours": mine,
            "plain": theirs,
            "plain_jit": jitted,
            "numpyro": peer,
            "load_average": list(os.getloadavg()),
        }
        if "ess_per_second" in theirs:
            row["ratio"] = best["ess_per_second"] / theirs["ess_per_second"]
        if "ess_per_second" in peer:
            row["over_numpyro"] = best["ess_per_second"] / peer["ess_per_second"]
        rows.append(row)
        engines = " | ".join(f"{e} {cell(r)}" for e, r in mine.items())
        print(
            f"{label:26} {engines} | plain {cell(theirs)} | plain jit {cell(jitted)} | numpyro "
            f"{cell(peer)} {peer.get('config', '')} | ours/plain {row.get('ratio', math.nan):.2f}x"
            + (f" ours/numpyro {row['over_numpyro']:.2f}x" if "over_numpyro" in row else "")
            + f" | load {row['load_average'][0]:.2f}",
            flush=True,
        )
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--images", type=int, default=1297, help="training images for the fits")
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--svi-steps", type=int, default=2000)
    p.add_argument("--skip-plain", action="store_true", help="leave out plain Pyro")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="seeds 0..N-1 for ours and NumPyro; each configuration's median ESS/s reported",
    )
    p.add_argument(
        "--skip-plain-jit",
        action="store_true",
        help="leave out plain Pyro with jit_compile=True (HMM model_1: > 20 min)",
    )
    p.add_argument("--only", choices=["chain", "everyday"], default=None)
    p.add_argument(
        "--engines", nargs="*", default=["nutpie", "pyro"], help="our NUTS engines to run"
    )
    p.add_argument("--numpyro", default=None, help="a Python with numpyro and jax (a peer)")
    p.add_argument(
        "--programs",
        nargs="*",
        default=None,
        help="run only the everyday programs whose label contains one of these",
    )
    p.add_argument(
        "--out", default="programs", help="benchmarks/results/<out>.json (a partial run's own)"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    result = {"machine": machine(args.threads), "args": vars(args)}
    if args.only != "chain":
        print(
            f"Pyro's everyday programs, NUTS {args.chains} x ({args.warmup} + {args.samples}), "
            f"{args.threads} thread(s): ours vs plain pyro.infer.MCMC(NUTS(program))"
        )
        warm_up()
        result["everyday"] = everyday(args)
        worst = min((r["ratio"] for r in result["everyday"] if "ratio" in r), default=math.nan)
        print(f"smallest ESS/s ratio ours / plain: {worst:.2f}x (target >= 1)")
    if args.only == "everyday":
        write_results(args.out, result)
        return
    x = datasets.load("digits").train[: args.images]
    rows = ours(x, args) + ([] if args.skip_plain else plain(x, args))
    print(
        f"shared-transition chain, {len(x)} digits, {args.chains} x ({args.warmup} + "
        f"{args.samples}), {args.threads} thread(s)"
    )
    print(f"{'':44} {'seconds':>9} {'min ESS':>9} {'ESS/s':>8} {'r_hat':>7} {'gap (sd)':>9}")
    for r in rows:
        print(
            f"{r['label']:44} {r['seconds']:9.2f} {r.get('min_ess_bulk', float('nan')):9.0f} "
            f"{r.get('ess_per_second', float('nan')):8.2f} "
            f"{r.get('max_r_hat', float('nan')):7.3f} {r.get('gap_sd', float('nan')):9.3f}"
        )
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
    write_results(
        "programs", {**result, "fits": rows, "log_density": speed, "builtin_over_generic": ratio}
    )


if __name__ == "__main__":
    main()
