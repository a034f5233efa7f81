"""Posteriors by NUTS (`pyro.infer.MCMC` with the recording kernel of
`ppl_models.pyro_internals`), started and whitened as `inference.start` says, chains in
processes where cores are free (`inference.chains`)."""

from __future__ import annotations

import functools

import torch

from inference import conjugate, nutpie_engine
from inference.chains import processes_for, run_chains
from inference.laplace import MAX_DENSE, Whitened
from inference.optimize import MIXTURE_ADAM
from inference.result import Fit
from inference.start import initial_values, needs_random, posterior_fit, whitened_info
from ppl_models import pyro_internals
from ppl_models.checks import positive_int
from ppl_models.runtime import few_threads, show_progress, warn

# Leapfrog steps a draw NUTS is expected to take (for `inference.tracing` to decide whether to
# compile the potential): STEPS_PER_DRAW where the posterior is whitened or a diagonal metric is
# adapted on the Laplace scales (measured 3-15: AR(2) 3.0-3.5, the regressions 3.4-5.4, eight
# schools 6.7, baseball 7.5-8.8, HMM model_1 10-15), STEPS_CORRELATED where a diagonal metric
# is adapted on a posterior whose Laplace correlation matrix has a condition number above
# CORRELATED, correlations a diagonal metric cannot take out (a hierarchical AR(1) over 8
# series: 11,548, 62-65 steps; eight schools: 15)
STEPS_PER_DRAW, STEPS_CORRELATED, CORRELATED = 8, 64, 100.0


def nuts(program, x, **options) -> Fit:
    with few_threads(x):
        return _nuts(program, x, **options)


def _nuts(
    program,
    x,
    *,
    num_samples,
    warmup_steps,
    num_chains,
    jit_compile,
    target_accept_prob,
    max_tree_depth,
    init,
    progress_bar,
    engine,
    low_rank,
    cores,
) -> Fit:
    num_samples = positive_int(num_samples, "num_samples")
    warmup_steps = positive_int(
        num_samples if warmup_steps is None else warmup_steps, "warmup_steps", 0
    )
    num_chains = positive_int(num_chains, "num_chains")
    engine = nutpie_engine.choose(engine, low_rank, cores, warmup_steps)
    program.discover(x)
    needs_random(program, "nuts")
    # local latents conjugate to their one observation: integrated out, drawn after
    init, note, pairs, starts = _start(program, x, init)
    if pairs:
        w = conjugate.Collapsed(program, x, init, pairs, jit_compile=jit_compile)
        note += "; " + "; ".join(p.describe() for p in pairs)
    else:
        w = Whitened(program, x, init, jit_compile=jit_compile, starts=starts)
    # Chains start at draws from the Laplace approximation (spread, so that r_hat means
    # something), or at the start (`_start`: the MAP, or where the search began) jittered by
    # 0.1 where the posterior is not whitened; where the posterior has no mode (a funnel: the
    # search ran to the edge of the support), at fresh starts from the priors, as the
    # program's global parameters start.
    scale = 1.0 if w.dense else 0.1
    z0 = torch.randn(num_chains, w.dim, dtype=w.mu.dtype, device=w.mu.device) * scale
    from_priors = not w.found_mode and bool(program.starts or program.local)
    if from_priors:
        note += "; no posterior mode (the search ran to the edge): chains start from the priors"

        def prior_start():
            return w.whiten({**init, **program.fresh_starts(x)})

        z0 = torch.stack([prior_start() for _ in range(num_chains)])
    # Whitened, the Laplace covariance already is the (dense) mass matrix and warm-up only
    # tunes the step size (measured on AR(2) sunspots: 3.5 instead of 4.8 gradients per draw).
    # Where the posterior is far from its Laplace approximation (a hierarchical scale), only
    # the Laplace scales are kept and a diagonal mass matrix is adapted on them: measured on
    # non-centred eight schools, 2 x (500 + 500), 7.2 leapfrog steps per draw and min bulk ESS
    # 597 this way, 25.4 and 740 adapting a diagonal on the full whitening, 8.3 and 584
    # adapting a dense one on it, 7.1 and 482 with no whitening (plain Pyro: 9.3, 595).
    adapt = not w.dense or not w.gaussian_like()
    correlated = adapt and w.correlation_condition() > CORRELATED
    if w.dense and adapt:  # keep the Laplace scales, adapt the rest
        w.diagonal()
        scale = 1.0
        z0 = torch.randn(num_chains, w.dim, dtype=w.mu.dtype, device=w.mu.device)
    # each chain from its own seed (drawn under the fit's seed), so that the draws are the same
    # whether the chains run in parallel processes or one after the other (`inference.chains`)
    seeds = [int(s) for s in torch.randint(2**62, (num_chains,))]
    # what the run will ask of the potential, for `inference.tracing` to decide whether to
    # compile it (never a clock: the same seed, the same draws)
    steps = STEPS_CORRELATED if correlated else STEPS_PER_DRAW
    w.expect(num_chains * (warmup_steps + num_samples) * steps)
    w.potential({"z": z0[0]})  # trace (and check) the potential once, here, before any fork
    # nutpie's own threads (cores) run every chain in this process
    procs = 1 if engine == "nutpie" and cores is not None else processes_for(num_chains, z0.device)
    if engine == "nutpie":
        draw = prior_start if from_priors else None
        starts = nutpie_engine.Starts(num_chains, w.dim, scale, draw)
        zs, sample_stats = nutpie_engine.sample_chains(
            w,
            starts,
            seeds,
            num_samples,
            warmup_steps,
            target_accept_prob,
            max_tree_depth,
            show_progress(progress_bar),
            low_rank=low_rank,
            cores=cores,
            procs=procs,
        )
    else:
        kernel = functools.partial(
            pyro_internals.RecordingNUTS,
            potential_fn=w.potential,
            target_accept_prob=target_accept_prob,
            max_tree_depth=max_tree_depth,
            adapt_mass_matrix=adapt,
        )
        done = run_chains(
            kernel, z0, seeds, num_samples, warmup_steps, show_progress(progress_bar), procs
        )
        zs = torch.stack([z for z, _ in done])
        sample_stats = {k: torch.stack([st[k] for _, st in done]) for k in done[0][1]}
    draws = w.constrained(zs)
    if pairs:
        draws.update(conjugate.draw_latents(program, x, init, draws, pairs))
        draws = {k: draws[k] for k in program.sampled}  # the program's order
    _warn_nuts(program, draws, sample_stats, target_accept_prob)
    return posterior_fit(
        program,
        "nuts",
        x,
        init,
        draws,
        sample_stats=sample_stats,
        info={
            "num_chains": num_chains,
            "warmup_steps": warmup_steps,
            "engine": engine,
            "chain_processes": procs,
            "divergences": int(sample_stats["diverging"].sum()),
            "init": f"{note}; {whitened_info(w)}",
            "potential": w.jit_note,
        },
    )


def _start(program, x, init):
    """(start values, what they are, the pairs `conjugate.find` integrates out, more start
    values for the search for the mode). Where every parameter has a prior, the joint MAP
    (`initial_values`) would only be where the Laplace search starts, in two cases:

    - every local latent is integrated out: on a hierarchical program the joint MAP runs the
      scale to the edge of the support (eight schools: tau to 0), and the search of the
      collapsed posterior starts from the program's start values instead (the same mode,
      0.43 s sooner);
    - a mixture (discrete latents summed out, no continuous local ones): its MAP (Adam from
      MIXTURE_ADAM's restarts, then L-BFGS) may be degenerate (HMM model_1's Beta(0.1, 0.9)
      priors are unbounded at 0 and 1) and cost HMM model_1 3.9-6.7 s; the search runs L-BFGS
      on the traced potential from as many of the program's start values as the MAP has
      restarts and keeps the lowest end (HMM model_1: 0.3 s, the lowest mode each time, where
      the MAP's start reached a higher one in 2 of 4 runs).

    Both only up to MAX_DENSE values, where the Laplace search runs."""
    values = {k: program.values[k] for k in program.sampled} if init is None else {}
    # only where the search runs at all: beyond MAX_DENSE values there is no Laplace step, and
    # the MAP is the only search before the chains start
    searched = 0 < sum(v.numel() for v in values.values()) <= MAX_DENSE
    if searched and set(program.roles.free) <= set(program.sampled):
        pairs = conjugate.find(program, x, values)
        if pairs and {p.latent for p in pairs} == set(program.local):
            init, _ = initial_values(program, x, values)
            note = "the program's start values (the collapsed posterior's mode searched from them)"
            return init, note, pairs, []
        if program.roles.enumerated and not program.local:
            init, _ = initial_values(program, x, values)
            n = MIXTURE_ADAM["restarts"]
            starts = [{**init, **program.fresh_starts()} for _ in range(n - 1)]
            note = f"the lowest mode of {n} searches from the program's start values"
            return init, note, [], starts
    init, note = initial_values(program, x, init)
    return init, note, conjugate.find(program, x, init), []


def _warn_nuts(program, draws, stats, target_accept_prob) -> None:
    """Say what went wrong, as PyMC and NumPyro do: divergences, and (with several chains) a
    large r_hat or a small effective sample size."""
    from inference.evaluation.diagnostics import convergence

    n_div, total = int(stats["diverging"].sum()), stats["diverging"].numel()
    if n_div:
        warn(
            f"{program.label}: {n_div} of {total} NUTS draws diverged (the sampler hit a region "
            "of high curvature, so the draws may be biased); try "
            f"target_accept_prob={max(0.95, target_accept_prob)} (smaller steps), a "
            "reparameterised (non-centred) program, or more informative priors",
        )
    if next(iter(draws.values())).shape[0] > 1:
        r_hat, ess = convergence(draws)
        if r_hat > 1.01 or ess < 100:
            warn(
                f"{program.label}: chains disagree or mix slowly (max r_hat {r_hat:.3f}, min "
                f"bulk ESS {ess:.0f}; aim for r_hat <= 1.01 and ESS >= 100); run longer "
                "(num_samples, warmup_steps) or reparameterise",
            )
