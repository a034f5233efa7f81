"""Posteriors by SVI: Pyro autoguides, or a guide you write.

It runs the program's log joint (`Program.log_joint_terms`: a model's vectorised likelihood
where it has one, else the trace of the program with discrete latents enumerated), started
and whitened as `inference.start` says. SVI's paths (`benchmarks/bench_ar.py` measures them
beside plain Pyro): the Gaussian autoguides' ELBO is computed without Pyro's traces
(`gaussian_elbo`), the delta guide is Adam on the MAP objective (`_svi_delta`), and a guide
you write is scored against the program's vectorised, jit-traced log density
(`reparameterised_step`, or `scored` through Pyro's SVI where a site of the guide has no
reparameterised sampler); each is checked against Pyro's Trace_ELBO on the program itself.
Minibatches, torch.distributed, continuous local latents and enumerated discrete latents run
through Pyro's SVI on the program's own sites.
"""

from __future__ import annotations

import functools
import inspect
import math

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import (
    AutoContinuous,
    AutoDelta,
    AutoGuide,
    AutoMultivariateNormal,
    AutoNormal,
    init_to_value,
)
from pyro.optim import ClippedAdam as PyroClippedAdam
from pyro.optim.clipped_adam import ClippedAdam
from tqdm.auto import tqdm

from inference import distributed
from inference.guides import as_chains, checked, guide_draws, reparameterised_step, scored
from inference.laplace import Whitened
from inference.result import Fit
from inference.start import initial_values, needs_random, posterior_fit, whitened_info
from ppl_models import pyro_internals
from ppl_models.checks import positive_int
from ppl_models.runtime import few_threads, show_progress

GUIDES = {
    "normal": AutoNormal,
    "multivariate_normal": AutoMultivariateNormal,
    "mvn": AutoMultivariateNormal,
    "delta": AutoDelta,
}


def _resolve_guide(guide):
    """(autoguide class or None, a guide of the user's or None)."""
    if isinstance(guide, str):
        if guide not in GUIDES:
            raise ValueError(
                f"unknown guide {guide!r}; choose one of {', '.join(GUIDES)}, an "
                "autoguide class such as AutoLowRankMultivariateNormal, or a guide "
                "function over the model's sites"
            )
        return GUIDES[guide], None
    factory = guide.func if isinstance(guide, functools.partial) else guide
    if isinstance(factory, type) and issubclass(factory, AutoGuide):
        return guide, None
    if callable(guide):
        return None, guide
    raise ValueError(
        f"guide must be a name ({', '.join(GUIDES)}), an autoguide class, or a "
        f"guide function, got {guide!r}"
    )


def svi(program, x, **options) -> Fit:
    with few_threads(x):
        return _svi(program, x, **options)


def _svi(
    program,
    x,
    *,
    guide,
    steps,
    lr,
    num_samples,
    num_particles,
    init,
    batch_size,
    jit_compile,
    progress_bar,
) -> Fit:
    auto, own_guide = _resolve_guide(guide)
    steps = positive_int(steps, "steps")
    num_samples = positive_int(num_samples, "num_samples")
    num_samples += num_samples % 2 if num_samples > 1 else 0  # two chains of equal length
    program.discover(x)
    needs_random(program, "svi")
    if own_guide is not None:
        if batch_size is not None:
            raise ValueError(
                "batch_size (minibatch SVI) applies to the autoguides; a guide of "
                "your own runs on the whole data (subsample inside your program "
                "with pyro.plate(..., subsample_size=...) instead)"
            )
        return _svi_own_sites(
            program, x, own_guide, steps, lr, num_samples, num_particles, progress_bar, guide
        )
    if program.local and batch_size is not None:
        raise ValueError(
            f"batch_size (minibatch SVI) needs every latent variable global, but "
            f"{', '.join(map(repr, program.local))} are per-datum latents that "
            "each minibatch would leave untouched; fit on the whole data "
            "(batch_size=None)"
        )
    init, note = initial_values(program, x, init)
    if auto is AutoDelta and batch_size is None and not distributed.active():
        return _svi_delta(program, x, init, note, steps, lr, num_samples, progress_bar)
    if auto is AutoDelta:  # a point mass on the program's own sites: the MAP, as in Pyro
        return _svi_own_sites(
            program,
            x,
            auto,
            steps,
            lr,
            num_samples,
            num_particles,
            progress_bar,
            guide,
            init=init,
            note=note,
        )
    # the guide lives in whitened coordinates, at the mode; the potential jit-traced where it
    # gives the same numbers, as for NUTS (not for minibatches: the trace would fix the batch)
    w = Whitened(
        program,
        x,
        init,
        jit_compile=jit_compile if batch_size is None and not distributed.active() else False,
    )
    z_start, note = _guide_start(program, x, w, init, note)
    # The ELBO as a module with a torch optimizer: `pyro.infer.SVI` collects parameters from
    # the global param store, which AutoMultivariateNormal's plain nn.Parameter defeats.
    with pyro.settings.context(module_local_params=True):
        start = {"init_loc_fn": init_to_value(values={"z": z_start})}
        if (w.dense or w.scaled) and "init_scale" in inspect.signature(auto).parameters:
            # half the Laplace approximation's scale. Measured on Markov(16, order=2), 300
            # images: after 300 steps the predictive is 0.51 nats off the exact one from scale
            # 1, 0.15 from 0.5, 0.01 from 0.1 (all 0.01 after 2,000); but from 0.1 the guide
            # is still 0.29 of the posterior sd on Independent(8) (PSIS k 1.3 for LOO) and from
            # 0.5+ within 10%. Importance weights need a guide no narrower than the posterior.
            start["init_scale"] = 0.5
        g = auto(w, **start)
        elbo = Trace_ELBO(num_particles=num_particles)(w, g)
        elbo()  # creates the guide's parameters
        optim = ClippedAdam(elbo.parameters(), lr=lr, lrd=0.1 ** (1 / steps))
        if batch_size is None and not distributed.active():
            loss = gaussian_elbo(w, g, num_particles) or elbo
            step = lambda: _torch_step(loss, optim)  # noqa: E731
        else:
            step = _minibatch_steps(w, elbo, optim, program, x, batch_size)
        losses = _steps(step, steps, len(x), program, progress_bar, lr)
        w.idx = None
        draws, log_q = guide_draws(g, ["z"], num_samples, {"z": w.mu.shape})
        z = draws["z"][0]
    # the guide's density of theta: q(z) |dz / dtheta| (log p(theta, y) follows lazily, from
    # the same traces as the pointwise log-likelihood: `Fit.sample_stats`)
    log_det = w.log_abs_det(z)
    log_q = log_q - log_det
    # log p(theta, y) of each draw from the (jit-traced) potential, for the guide's check: a
    # tenth of the time of the per-draw traces that the pointwise log-likelihood takes
    with torch.no_grad():
        potential = torch.stack([w.potential({"z": zi}) for zi in z])
    log_p = -potential - (log_det - torch.linalg.slogdet(w.L)[1])
    draws, stats = as_chains(w.constrained(z), {"log_q": log_q, "log_p": log_p})
    fit = posterior_fit(
        program,
        "svi",
        x,
        init,
        draws,
        losses=losses,
        sample_stats=stats,
        info={
            "guide": _guide_name(guide),
            "steps": steps,
            "init": f"{note}; {whitened_info(w)}",
            "potential": w.jit_note,
        },
    )
    return checked(fit)


def _guide_start(program, x, w, init, note):
    """Where the guide's location starts, in w's coordinates. Where the posterior looks like
    its Laplace approximation, at the mode in the whitened coordinates (z = 0); elsewhere (a
    hierarchical scale: the MAP heads to tau = 0, or a mode nothing like the posterior) where
    Pyro's and NumPyro's autoguides run, in the unconstrained space, from the prior medians
    (Pyro's init_to_median). Measured on non-centred eight schools, AutoNormal, 2,000 steps,
    seeds 0-5: from the MAP, whitened there, tau 8.9-9.2 (sd 9-12) and eta sds 0.4-0.7; keeping
    the Laplace scales, tau 3.7-4.1 but eta sds down to 0.76; this way tau 3.4-3.5, eta sds
    0.86-0.98 (NUTS: tau 3.61, eta sds 0.9)."""
    if w.found_mode and w.dense and w.gaussian_like():
        return torch.zeros(w.dim, dtype=w.mu.dtype, device=w.mu.device), note
    w.unwhiten()
    starts = [program.fresh_starts(x) for _ in range(15)]
    medians = {k: torch.stack([s[k] for s in starts]).median(0).values for k in starts[0]}
    note += "; the posterior is far from Gaussian at the MAP: the guide starts at prior medians"
    return w.whiten({**init, **medians}).detach(), note


def gaussian_elbo(w, g, num_particles: int):
    """-ELBO of a Gaussian autoguide over the whitened z without Pyro's traces, or None for
    any other guide: q is AutoNormal's Normal(loc, scale) or an AutoContinuous guide's
    posterior (multivariate normal, low rank, flows); z = q.rsample(), loss = log q(z) +
    potential(z) averaged over the particles: the reparameterised estimator Trace_ELBO
    computes on the program `w` (tests/test_svi_paths.py checks it at the same z), at a
    fraction of its per-step cost (AR(2): 2 traces and a PyroModule's attribute lookups)."""
    if isinstance(g, AutoNormal):

        def posterior():
            return dist.Normal(*pyro_internals.normal_loc_and_scale(g, "z")).to_event(1)
    elif isinstance(g, AutoContinuous):
        posterior = g.get_posterior
    else:
        return None

    def loss() -> torch.Tensor:
        q = posterior()
        total = 0.0
        for _ in range(num_particles):
            z = q.rsample()
            total = total + q.log_prob(z) + w.potential({"z": z})
        return total / num_particles

    return loss


def _svi_delta(program, x, init, note, steps, lr, num_samples, progress_bar) -> Fit:
    """The delta guide (a MAP by SVI) on the vectorised, whitened path: Adam on
    -log p(theta(z), x) over the whitened z (the Jacobian of theta(z) left out, so that the
    optimum is the MAP of the parameters themselves, as AutoDelta on the program's own sites
    finds it), started at `init` (the MAP). Measured on AR(2), 1,000 steps, one thread: 60 s
    on the program's 307 sample sites, a fraction of that here (benchmarks/bench_ar.py)."""
    w = Whitened(program, x, init)
    # from the MAP itself: the Laplace mode (z = 0) is the mode of the unconstrained values
    z = w.whiten({k: init[k] for k in w.names}).detach().clone().requires_grad_(True)
    optim = ClippedAdam([z], lr=lr, lrd=0.1 ** (1 / steps))

    def step() -> float:
        optim.zero_grad()
        loss = w.potential({"z": z}) + w.log_abs_det_grad(z[None])[0]
        loss.backward()
        optim.step()
        return float(loss.detach())

    losses = _steps(step, steps, len(x), program, progress_bar, lr)
    point = {k: v.detach() for k, v in w.constrained(z.detach()[None]).items()}
    draws, _ = as_chains({k: v.expand(num_samples, *v.shape[1:]) for k, v in point.items()}, {})
    return posterior_fit(
        program,
        "svi",
        x,
        init,
        draws,
        losses=losses,
        info={"guide": "delta", "steps": steps, "init": note},
    )


def _minibatch_steps(w, elbo, optim, program, x, batch_size):
    """A step function drawing one minibatch per step (this rank's shard under
    torch.distributed, the ELBO's gradients averaged across ranks by DDP): the
    log-likelihood of the batch scaled to the whole data set, an unbiased ELBO estimate."""
    if not program.exchangeable:
        raise ValueError(
            "batch_size applies to data in a plate (independent rows); a series is fitted whole"
        )
    n = len(x)
    batch_size = positive_int(batch_size or min(100, n), "batch_size")
    if distributed.active():
        from torch.nn.parallel import DistributedDataParallel

        loss_fn = DistributedDataParallel(elbo)
        shards = distributed.Shards(n, batch_size, 0)
    else:
        loss_fn, shards = elbo, None
    state = {"epoch": 0, "batches": []}

    def step() -> float:
        if not state["batches"]:
            state["batches"] = list(
                shards.epoch(state["epoch"], x.device)
                if shards
                else torch.randperm(n, device=x.device).split(batch_size)
            )
            state["epoch"] += 1
        w.idx = state["batches"].pop(0)
        loss = loss_fn()
        if shards is not None and not distributed.all_finite(loss):
            raise ValueError("the ELBO became non-finite on some rank; lower lr")
        optim.zero_grad()
        loss.backward()
        optim.step()
        return float(loss.detach())

    return step


def _torch_step(elbo, optim) -> float:
    optim.zero_grad()
    loss = elbo()
    loss.backward()
    optim.step()
    return float(loss.detach())


def _steps(step, steps, n, program, progress_bar, lr) -> list[float]:
    """Run `step()` (returns the loss) `steps` times: Adam whose step size decays to a tenth
    over the run, so the last steps average out noise. Losses are per datum. A run that
    diverges (the loss not finite, or a guide's scale pushed to 0 or nan, which torch's
    argument check reports from deep inside the guide) is a ValueError that says to lower
    `lr`."""
    losses = []
    bar = tqdm(
        range(steps),
        desc=f"svi {program.label}",
        disable=not show_progress(progress_bar),
        leave=False,
    )
    for i in bar:
        try:
            loss = step()
            what = f"the ELBO became {loss}"
        except ValueError as e:
            if not str(e).startswith("Expected parameter"):
                raise
            loss, what = math.nan, "a parameter of the guide left its support (a scale of 0)"
        if not math.isfinite(loss):
            raise ValueError(
                f"SVI diverged at step {i + 1} of {steps}: {what} (lr={lr:g}); lower lr "
                f"(e.g. lr={lr / 10:g}) or give the guide a better start (init=...)"
            ) from None
        losses.append(loss / n)
        if len(losses) % 100 == 0:
            bar.set_postfix(elbo_nats=f"{sum(losses[-100:]) / 100:.4f}")
    return losses


def _svi_own_sites(
    program,
    x,
    guide,
    steps,
    lr,
    num_samples,
    num_particles,
    progress_bar,
    name,
    init=None,
    note=None,
) -> Fit:
    """SVI on the program's own sample sites: an autoguide class built on them (started at
    `init` where given), or the user's guide, called with the model's arguments (x=...)."""
    random = program.sampled
    fixed = {k: v for k, v in (init or program.values).items() if k not in random}
    model = program.bayesian(fixed)
    target = functools.partial(model, x=x)
    enumerated = program.roles.enumerated
    autoguide = isinstance(guide, (type, functools.partial))
    if autoguide:
        kwargs = {"init_loc_fn": init_to_value(values={k: init[k] for k in random})} if init else {}
        g = guide(target, **kwargs)
        guide_fn = g
    else:
        g = guide
        guide_fn = functools.partial(guide, x=x)
    fast = not autoguide and not program.local and not enumerated and not distributed.active()
    elbo = (
        TraceEnum_ELBO(
            max_plate_nesting=program.roles.max_plate_nesting, num_particles=num_particles
        )
        if enumerated
        else Trace_ELBO(num_particles=num_particles)
    )
    try:
        step = (
            reparameterised_step(program, x, fixed, guide_fn, lr, steps, num_particles)
            if fast
            else None
        )
        if step is None:
            optim = PyroClippedAdam({"lr": lr, "lrd": 0.1 ** (1 / steps)})
            step = SVI(scored(program, x, fixed) if fast else target, guide_fn, optim, elbo).step
        losses = _steps(step, steps, len(x), program, progress_bar, lr)
    except (KeyError, RuntimeError, ValueError, TypeError, NotImplementedError) as e:
        if isinstance(guide, type):
            raise
        raise ValueError(
            f"SVI with your guide failed: {type(e).__name__}: {e}. A guide takes "
            "the model's arguments (x=None, num_samples=None) and samples each "
            f"random site of the model ({', '.join(random)}) by its name"
        ) from e
    draws, log_q = guide_draws(
        guide_fn,
        random,
        num_samples,
        {k: program.values[k].shape for k in random if k in program.values},
    )
    missing = [k for k in random if k not in draws]
    if missing:
        raise ValueError(
            f"your guide does not sample {', '.join(map(repr, missing))}; a guide "
            "must sample every random site of the model (the global parameters "
            "with a prior)"
        )
    info = {
        "guide": _guide_name(name),
        "steps": steps,
        "init": note or ("the guide's own" if g is guide else "the autoguide's default"),
    }
    # log p(theta, y) follows lazily (Fit.sample_stats)
    draws, stats = as_chains(
        {k: v[0] for k, v in draws.items()},
        {} if isinstance(g, AutoDelta) else {"log_q": log_q},
    )
    fit = posterior_fit(
        program,
        "svi",
        x,
        {**program.values, **fixed},
        draws,
        losses=losses,
        sample_stats=stats,
        info=info,
    )
    return checked(fit)


def _guide_name(guide) -> str:
    if isinstance(guide, str):
        return guide
    target = guide.func if isinstance(guide, functools.partial) else guide
    return getattr(target, "__name__", type(target).__name__)
