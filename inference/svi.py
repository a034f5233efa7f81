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

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
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
from inference.laplace import Whitened, checked_trace, unflatten
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
    program, x, *, guide, steps, lr, num_samples, num_particles, init, batch_size, progress_bar
) -> Fit:
    auto, own_guide = _resolve_guide(guide)
    steps = positive_int(steps, "steps")
    num_samples = positive_int(num_samples, "num_samples")
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
        jit_compile=None if batch_size is None and not distributed.active() else False,
    )
    # The ELBO as a module with a torch optimizer: `pyro.infer.SVI` collects parameters from
    # the global param store, which AutoMultivariateNormal's plain nn.Parameter defeats.
    with pyro.settings.context(module_local_params=True):
        start = {"init_loc_fn": init_to_value(values={"z": torch.zeros(w.dim, dtype=w.mu.dtype)})}
        if w.dense and "init_scale" in inspect.signature(auto).parameters:
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
        losses = _steps(step, steps, len(x), program, progress_bar)
        w.idx = None
        draws, log_q = _guide_draws(g, ["z"], num_samples, {"z": w.mu.shape})
        z = draws["z"][0]
    # the guide's density of theta: q(z) |dz / dtheta| (log p(theta, y) follows lazily, from
    # the same traces as the pointwise log-likelihood: `Fit.sample_stats`)
    log_q = log_q - w.log_abs_det(z)
    draws = {k: v[None] for k, v in w.constrained(z).items()}
    return posterior_fit(
        program,
        "svi",
        x,
        init,
        draws,
        losses=losses,
        sample_stats={"log_q": log_q[None]},
        info={"guide": _guide_name(guide), "steps": steps, "init": f"{note}; {whitened_info(w)}"},
    )


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

    losses = _steps(step, steps, len(x), program, progress_bar)
    point = {k: v.detach() for k, v in w.constrained(z.detach()[None]).items()}
    draws = {k: v.expand(num_samples, *v.shape[1:])[None] for k, v in point.items()}
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


def _steps(step, steps, n, program, progress_bar) -> list[float]:
    """Run `step()` (returns the loss) `steps` times: Adam whose step size decays to a tenth
    over the run, so the last steps average out noise. Losses are per datum."""
    losses = []
    bar = tqdm(
        range(steps),
        desc=f"svi {program.label}",
        disable=not show_progress(progress_bar),
        leave=False,
    )
    for _ in bar:
        losses.append(step() / n)
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
        losses = _steps(step, steps, len(x), program, progress_bar)
    except (KeyError, RuntimeError, ValueError, TypeError, NotImplementedError) as e:
        if isinstance(guide, type):
            raise
        raise ValueError(
            f"SVI with your guide failed: {type(e).__name__}: {e}. A guide takes "
            "the model's arguments (x=None, num_samples=None) and samples each "
            f"random site of the model ({', '.join(random)}) by its name"
        ) from e
    draws, log_q = _guide_draws(
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
    stats = {}
    if not isinstance(g, AutoDelta):
        stats = {"log_q": log_q[None]}  # log p(theta, y) follows lazily (Fit.sample_stats)
    return posterior_fit(
        program,
        "svi",
        x,
        {**program.values, **fixed},
        draws,
        losses=losses,
        sample_stats=stats,
        info=info,
    )


def _flat_log_joint(program, x, fixed):
    """(log p(x, theta) of the random parameters flattened into one vector u, the program's
    values as such a vector): `Program.log_joint` (the vectorised path NUTS's potential
    takes), jit-traced where that gives the same numbers (`checked_trace`)."""
    random = program.random
    values = {**program.values, **fixed}
    shapes = {k: program.values[k].shape for k in random}
    start = torch.cat([torch.as_tensor(values[k]).reshape(-1) for k in random])

    def log_joint(u):
        with pyro.validation_enabled(False):  # x validated at the boundary, theta by its site
            return program.log_joint(x, {**fixed, **unflatten(u, shapes)})

    traced, _ = checked_trace(log_joint, start, "log joint")
    return traced or log_joint, start


def _flatten(theta: list, like: torch.Tensor) -> torch.Tensor:
    return torch.cat([v.reshape(-1).to(like.dtype) for v in theta])


def scored(program, x, fixed):
    """A guide of yours on the vectorised density, through Pyro's SVI (where a site of the
    guide has no reparameterised sampler, whose score-function term Trace_ELBO adds): a
    program with the model's random sites, each flat over its support, and one factor, the
    program's log p(x, theta) (`_flat_log_joint`). Trace_ELBO of any guide against it equals
    its ELBO against the program itself (tests/test_programs.py checks it against plain
    Pyro's on the program), without tracing the program's per-datum sites at every step
    (AR(2): 307 sites)."""
    log_joint, start = _flat_log_joint(program, x, fixed)
    supports = program.supports({**program.values, **fixed})
    shapes = {k: program.values[k].shape for k in program.random}

    def scored(*args, **kwargs):
        theta = [
            pyro.sample(k, dist.ImproperUniform(supports[k], (), v)) for k, v in shapes.items()
        ]
        pyro.factor("log_joint", log_joint(_flatten(theta, start)))

    return scored


def reparameterised_step(program, x, fixed, guide_fn, lr, steps, num_particles):
    """A guide of yours whose every site has a reparameterised sampler (and no scale or
    mask), without Pyro's traces of the model: loss = log q(theta) - log p(x, theta) at
    theta drawn from one trace of the guide, averaged over the particles, Adam on the guide's
    parameters as Pyro's SVI sets it up (the same loss as Trace_ELBO: tests/test_programs.py).
    None where the guide is not such a guide."""
    random = program.random
    with poutine.block():
        with poutine.trace(param_only=True) as capture:
            tr = poutine.trace(guide_fn).get_trace()
    sites = [n for n in tr.nodes.values() if n["type"] == "sample" and not n["is_observed"]]
    if any(k not in tr.nodes for k in random) or any(
        not n["fn"].has_rsample or n["scale"] != 1.0 or n["mask"] is not None for n in sites
    ):
        return None
    log_joint, start = _flat_log_joint(program, x, fixed)
    params = list(
        {
            id(p): p for p in (n["value"].unconstrained() for n in capture.trace.nodes.values())
        }.values()
    )
    optim = ClippedAdam(params, lr=lr, lrd=0.1 ** (1 / steps)) if params else None

    def step() -> float:
        if optim is None:  # a guide with nothing to learn: its ELBO, as Pyro reports it
            with torch.no_grad():
                return float(sum(_loss() for _ in range(num_particles)) / num_particles)
        optim.zero_grad()
        loss = sum(_loss() for _ in range(num_particles)) / num_particles
        loss.backward()
        optim.step()
        return float(loss.detach())

    def _loss() -> torch.Tensor:
        with poutine.block():
            tr = poutine.trace(guide_fn).get_trace()
        tr.compute_log_prob()
        return _log_q(tr) - log_joint(_flatten([tr.nodes[k]["value"] for k in random], start))

    return step


def _guide_draws(guide_fn, names, num_samples, shapes=None):
    """(draws name -> (1, S, ...), log q per draw (S,)) from the guide: one trace with the
    draws in a plate where the guide broadcasts over it (`shapes`: name -> the site's shape),
    checked against the guide run draw by draw at two of them, else one trace per draw."""
    plated = _plated_draws(guide_fn, names, num_samples, shapes) if shapes else None
    if plated is not None:
        values, log_q = plated
        return {k: v[None] for k, v in values.items()}, log_q
    out, log_q = {k: [] for k in names}, []
    with torch.no_grad(), poutine.block():
        for _ in range(num_samples):
            tr = poutine.trace(guide_fn).get_trace()
            tr.compute_log_prob()
            for k in names:
                if k in tr.nodes:
                    out[k].append(tr.nodes[k]["value"].detach())
            log_q.append(_log_q(tr))
    draws = {k: torch.stack(v)[None] for k, v in out.items() if v}
    return draws, torch.stack([torch.as_tensor(v) for v in log_q])


def _log_q(tr):
    return sum(
        s["log_prob_sum"]
        for s in tr.nodes.values()
        if s["type"] == "sample" and not s["is_observed"]
    )


def _plated_draws(guide_fn, names, num_samples, shapes):
    """The guide's draws in one trace under a plate of `num_samples`, or None where it does
    not broadcast over it: an error, a shape other than (S, *shape) or a log q not (S,), or a
    log q that differs (1e-8) from the guide's own at the first and the last draw replayed
    one at a time (a guide that indexes a sampled value would mix the draws silently)."""
    S = num_samples
    try:
        with torch.no_grad(), poutine.block():
            tr = poutine.trace(pyro.plate("_draws", S, dim=-1)(guide_fn)).get_trace()
            tr.compute_log_prob()
            parts = [
                n["log_prob"]
                for n in tr.nodes.values()
                if n["type"] == "sample" and not n["is_observed"]
            ]
            values = {k: tr.nodes[k]["value"] for k in names if k in tr.nodes}
            if any(lp.shape != (S,) for lp in parts) or any(
                v.shape != (S, *shapes[k]) for k, v in values.items()
            ):
                return None
            log_q = sum(parts)
            one = poutine.trace(guide_fn).get_trace()
            for i in (0, S - 1):
                for k, node in one.nodes.items():
                    if node["type"] == "sample" and not node["is_observed"]:
                        node["value"] = tr.nodes[k]["value"][i]
                again = poutine.trace(poutine.replay(guide_fn, trace=one)).get_trace()
                again.compute_log_prob()
                if abs(float(_log_q(again)) - float(log_q[i])) > 1e-8 * (1 + abs(float(log_q[i]))):
                    return None
    except (ValueError, RuntimeError, IndexError, TypeError, KeyError, NotImplementedError):
        return None
    return values, log_q


def _guide_name(guide) -> str:
    if isinstance(guide, str):
        return guide
    target = guide.func if isinstance(guide, functools.partial) else guide
    return getattr(target, "__name__", type(target).__name__)
