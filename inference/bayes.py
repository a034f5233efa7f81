"""Posteriors by SVI (Pyro autoguides, or a guide you write) and NUTS (`pyro.infer.MCMC`).

Both run the program's log joint (`Program.log_joint_terms`: a model's vectorised likelihood
where it has one, else the trace of the program with discrete latents enumerated) and both
start at the MAP estimate moved into the interior of the support: the default init of
autoguides (prior medians) can leave SVI far from the posterior with no warning. Both run in
coordinates whitened by the Laplace approximation at the mode (`inference.laplace`), so that a
badly scaled, correlated posterior (raw data) looks like a standard normal to NUTS's unit mass
matrix and to Adam's steps; draws are mapped back to the program's parameters.

Point parameters (``pyro.param`` sites, no prior) are held at their MAP values (empirical
Bayes); the parameters with a prior are sampled.

SVI's paths (issue 18; `benchmarks/bench_ar.py` measures them beside plain Pyro): the Gaussian
autoguides' ELBO is computed without Pyro's traces (`gaussian_elbo`), the delta guide is Adam
on the MAP objective (`_svi_delta`), and a guide you write is scored against the program's
vectorised, jit-traced log density (`_reparameterised_step`, or `_scored` through Pyro's SVI
where a site of the guide has no reparameterised sampler); each is checked against Pyro's
Trace_ELBO on the program itself. Minibatches, torch.distributed, continuous local latents and
enumerated discrete latents run through Pyro's SVI on the program's own sites.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import NUTS, SVI, Trace_ELBO, TraceEnum_ELBO
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
from inference.chains import processes_for, run_chains
from inference.laplace import MAX_DENSE, Whitened, checked_trace, unflatten
from inference.optimize import _bounded, point_fit
from inference.progress import show_progress
from inference.result import Fit
from ppl_models.checks import positive_int
from ppl_models.program import transform_of

SMALL = 1_000_000  # data entries up to which sampling runs on one thread (`few_threads`)
GUIDES = {"normal": AutoNormal, "multivariate_normal": AutoMultivariateNormal,
          "mvn": AutoMultivariateNormal, "delta": AutoDelta}
BOUND = 10.0  # |unconstrained start| of a parameter whose support is bounded


def initial_values(program, x, init=None) -> tuple[dict[str, torch.Tensor], str]:
    """The MAP estimate (closed form, or a gradient search) or the values given as `init` (a
    dict of constrained values, or a `Fit` whose estimate to start from), each random
    parameter moved into the interior of its prior's support: a value on the boundary (a
    probability of exactly 0) has no unconstrained image, so it starts BOUND inside; real
    values start where they are. Returns (values, what happened)."""
    if init is None:
        values, note = _mode(program, x)
    else:
        given = _given(init, program)
        values, note = {**program.values, **given}, f"given values ({', '.join(given)})"
    supports = program.supports(values)
    moved = []
    for name in program.sampled:
        t = transform_of(supports[name])
        u = t.inv(values[name])
        safe = torch.nan_to_num(u, nan=0.0, posinf=BOUND, neginf=-BOUND)
        if _bounded(t):
            safe = safe.clamp(-BOUND, BOUND)
        if not torch.equal(safe, u):
            moved.append(f"{name} ({int((safe != u).sum())} values)")
        values[name] = t(safe).detach()
    note += (f"; moved inside the support from the boundary: {', '.join(moved)}"
             if moved else "")
    return values, note


def _mode(program, x) -> tuple[dict[str, torch.Tensor], str]:
    """The MAP estimate; with continuous local latents, the joint mode of the parameters and
    the latents (a hierarchical posterior may have none: the search then runs to the edge of
    the support, and `Whitened` finds no mode)."""
    joint = bool(program.local)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a funnel's search runs off: said below
        fit = point_fit(program, x, "map", progress_bar=False, joint=joint)
    note = "joint MAP of the parameters and local latents" if joint else "MAP"
    return dict(fit.program.values), note


def _given(init, program) -> dict[str, torch.Tensor]:
    """Start values from `init`: a Fit (its estimate) or a dict name -> value."""
    values = init.params if hasattr(init, "params") and hasattr(init, "program") else init
    if not isinstance(values, dict):
        raise ValueError(f"init must be a dict of parameter values or a Fit, got "
                         f"{type(init).__name__}")
    free = set(program.roles.free) | set(program.local)
    unknown = sorted(set(values) - free)
    if unknown:
        raise ValueError(f"init names {', '.join(map(repr, unknown))}, not parameters of "
                         f"{program.label} (its parameters: {', '.join(sorted(free))})")
    out = {}
    for k, v in values.items():
        v = torch.as_tensor(v, dtype=program.values[k].dtype, device=program.values[k].device)
        if v.shape != program.values[k].shape:
            raise ValueError(f"init[{k!r}] has shape {tuple(v.shape)}, the parameter has "
                             f"{tuple(program.values[k].shape)}")
        out[k] = v
    return out


def _resolve_guide(guide):
    """(autoguide class or None, a guide of the user's or None)."""
    if isinstance(guide, str):
        if guide not in GUIDES:
            raise ValueError(f"unknown guide {guide!r}; choose one of {', '.join(GUIDES)}, an "
                             "autoguide class such as AutoLowRankMultivariateNormal, or a guide "
                             "function over the model's sites")
        return GUIDES[guide], None
    factory = guide.func if isinstance(guide, functools.partial) else guide
    if isinstance(factory, type) and issubclass(factory, AutoGuide):
        return guide, None
    if callable(guide):
        return None, guide
    raise ValueError(f"guide must be a name ({', '.join(GUIDES)}), an autoguide class, or a "
                     f"guide function, got {guide!r}")


@contextlib.contextmanager
def few_threads(x: torch.Tensor):
    """One intra-op thread while sampling a small problem (at most SMALL data entries): its
    tensor ops are tiny, gain nothing from threads and, on a busy machine, lose much to their
    synchronisation (measured on 2 busy cores: NUTS on AR(2) sunspots 27 s with one thread,
    133 s with two)."""
    before = torch.get_num_threads()
    if x.numel() <= SMALL:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _needs_random(program, method):
    hook = getattr(program.model, "bayesian", None)
    if callable(hook) and hasattr(program.model, "using"):
        hook()  # a Model says itself why it has no random version (sparse FullJoint)
    if not program.sampled:
        raise ValueError(f"{program.label} has no random parameters for method={method!r}: "
                         "every parameter is a point parameter (pyro.param). Give the ones to "
                         "infer a prior (pyro.sample('name', prior) or a PyroSample attribute), "
                         "or fit it by 'mle' / 'map'")


def svi(program, x, **options) -> Fit:
    with few_threads(x):
        return _svi(program, x, **options)


def _svi(program, x, *, guide, steps, lr, num_samples, num_particles, init, batch_size,
         progress_bar) -> Fit:
    auto, own_guide = _resolve_guide(guide)
    steps = positive_int(steps, "steps")
    num_samples = positive_int(num_samples, "num_samples")
    program.discover(x)
    _needs_random(program, "svi")
    if own_guide is not None:
        if batch_size is not None:
            raise ValueError("batch_size (minibatch SVI) applies to the autoguides; a guide of "
                             "your own runs on the whole data (subsample inside your program "
                             "with pyro.plate(..., subsample_size=...) instead)")
        return _svi_own_sites(program, x, own_guide, steps, lr, num_samples,
                              num_particles, progress_bar, guide)
    if program.local and batch_size is not None:
        raise ValueError(f"batch_size (minibatch SVI) needs every latent variable global, but "
                         f"{', '.join(map(repr, program.local))} are per-datum latents that "
                         "each minibatch would leave untouched; fit on the whole data "
                         "(batch_size=None)")
    init, note = initial_values(program, x, init)
    if auto is AutoDelta and batch_size is None and not distributed.active():
        return _svi_delta(program, x, init, note, steps, lr, num_samples, progress_bar)
    if auto is AutoDelta:  # a point mass on the program's own sites: the MAP, as in Pyro
        return _svi_own_sites(program, x, auto, steps, lr, num_samples, num_particles,
                              progress_bar, guide, init=init, note=note)
    # the guide lives in whitened coordinates, at the mode; the potential jit-traced where it
    # gives the same numbers, as for NUTS (not for minibatches: the trace would fix the batch)
    w = Whitened(program, x, init,
                 jit_compile=None if batch_size is None and not distributed.active() else False)
    # The ELBO as a module with a torch optimizer: `pyro.infer.SVI` collects parameters from
    # the global param store, which AutoMultivariateNormal's plain nn.Parameter defeats.
    with pyro.settings.context(module_local_params=True):
        start = {"init_loc_fn": init_to_value(values={"z": torch.zeros(w.dim,
                                                                       dtype=w.mu.dtype)})}
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
    return _posterior_fit(program, "svi", x, init, draws, losses=losses,
                          sample_stats={"log_q": log_q[None]},
                          info={"guide": _guide_name(guide), "steps": steps,
                                "init": f"{note}; {_whitened_info(w)}"})


def gaussian_elbo(w, g, num_particles: int):
    """-ELBO of a Gaussian autoguide over the whitened z without Pyro's traces, or None for
    any other guide: q is AutoNormal's Normal(loc, scale) or an AutoContinuous guide's
    posterior (multivariate normal, low rank, flows); z = q.rsample(), loss = log q(z) +
    potential(z) averaged over the particles: the reparameterised estimator Trace_ELBO
    computes on the program `w` (tests/test_svi_paths.py checks it at the same z), at a
    fraction of its per-step cost (AR(2): 2 traces and a PyroModule's attribute lookups)."""
    if isinstance(g, AutoNormal):
        def posterior():
            return dist.Normal(*g._get_loc_and_scale("z")).to_event(1)
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
    return _posterior_fit(program, "svi", x, init, draws, losses=losses,
                          info={"guide": "delta", "steps": steps, "init": note})


def _minibatch_steps(w, elbo, optim, program, x, batch_size):
    """A step function drawing one minibatch per step (this rank's shard under
    torch.distributed, the ELBO's gradients averaged across ranks by DDP): the
    log-likelihood of the batch scaled to the whole data set, an unbiased ELBO estimate."""
    if not program.exchangeable:
        raise ValueError("batch_size applies to data in a plate (independent rows); a series "
                         "is fitted whole")
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
            state["batches"] = list(shards.epoch(state["epoch"], x.device) if shards else
                                    torch.randperm(n, device=x.device).split(batch_size))
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
    bar = tqdm(range(steps), desc=f"svi {program.label}", disable=not show_progress(progress_bar),
               leave=False)
    for _ in bar:
        losses.append(step() / n)
        if len(losses) % 100 == 0:
            bar.set_postfix(elbo_nats=f"{sum(losses[-100:]) / 100:.4f}")
    return losses


def _svi_own_sites(program, x, guide, steps, lr, num_samples, num_particles, progress_bar,
                   name, init=None, note=None) -> Fit:
    """SVI on the program's own sample sites: an autoguide class built on them (started at
    `init` where given), or the user's guide, called with the model's arguments (x=...)."""
    random = program.sampled
    fixed = {k: v for k, v in (init or program.values).items() if k not in random}
    model = program.bayesian(fixed)
    target = functools.partial(model, x=x)
    enumerated = program.roles.enumerated
    autoguide = isinstance(guide, (type, functools.partial))
    if autoguide:
        kwargs = {"init_loc_fn": init_to_value(values={k: init[k] for k in random})} if init \
            else {}
        g = guide(target, **kwargs)
        guide_fn = g
    else:
        g = guide
        guide_fn = functools.partial(guide, x=x)
    fast = not autoguide and not program.local and not enumerated and not distributed.active()
    elbo = (TraceEnum_ELBO(max_plate_nesting=program.roles.max_plate_nesting,
                           num_particles=num_particles) if enumerated
            else Trace_ELBO(num_particles=num_particles))
    try:
        step = _reparameterised_step(program, x, fixed, guide_fn, lr, steps,
                                     num_particles) if fast else None
        if step is None:
            optim = PyroClippedAdam({"lr": lr, "lrd": 0.1 ** (1 / steps)})
            step = SVI(_scored(program, x, fixed) if fast else target, guide_fn, optim,
                       elbo).step
        losses = _steps(step, steps, len(x), program, progress_bar)
    except (KeyError, RuntimeError, ValueError, TypeError, NotImplementedError) as e:
        if isinstance(guide, type):
            raise
        raise ValueError(f"SVI with your guide failed: {type(e).__name__}: {e}. A guide takes "
                         "the model's arguments (x=None, num_samples=None) and samples each "
                         f"random site of the model ({', '.join(random)}) by its name") from e
    draws, log_q = _guide_draws(guide_fn, random, num_samples,
                                {k: program.values[k].shape for k in random
                                 if k in program.values})
    missing = [k for k in random if k not in draws]
    if missing:
        raise ValueError(f"your guide does not sample {', '.join(map(repr, missing))}; a guide "
                         "must sample every random site of the model (the global parameters "
                         "with a prior)")
    info = {"guide": _guide_name(name), "steps": steps,
            "init": note or ("the guide's own" if g is guide else "the autoguide's default")}
    stats = {}
    if not isinstance(g, AutoDelta):
        stats = {"log_q": log_q[None]}  # log p(theta, y) follows lazily (Fit.sample_stats)
    return _posterior_fit(program, "svi", x, {**program.values, **fixed}, draws,
                          losses=losses, sample_stats=stats, info=info)


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


def _scored(program, x, fixed):
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
        theta = [pyro.sample(k, dist.ImproperUniform(supports[k], (), v))
                 for k, v in shapes.items()]
        pyro.factor("log_joint", log_joint(_flatten(theta, start)))

    return scored


def _reparameterised_step(program, x, fixed, guide_fn, lr, steps, num_particles):
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
    if any(k not in tr.nodes for k in random) or \
            any(not n["fn"].has_rsample or n["scale"] != 1.0 or n["mask"] is not None
                for n in sites):
        return None
    log_joint, start = _flat_log_joint(program, x, fixed)
    params = list({id(p): p for p in (n["value"].unconstrained()
                                      for n in capture.trace.nodes.values())}.values())
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
    return sum(s["log_prob_sum"] for s in tr.nodes.values()
               if s["type"] == "sample" and not s["is_observed"])


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
            parts = [n["log_prob"] for n in tr.nodes.values()
                     if n["type"] == "sample" and not n["is_observed"]]
            values = {k: tr.nodes[k]["value"] for k in names if k in tr.nodes}
            if any(lp.shape != (S,) for lp in parts) or \
                    any(v.shape != (S, *shapes[k]) for k, v in values.items()):
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


def _posterior_fit(program, method, x, values, draws, **fields) -> Fit:
    """A Fit from (chain, draw, ...) posterior draws; its program holds the posterior means
    (and the fixed point parameters at `values`)."""
    means = {k: v.mean((0, 1)) for k, v in draws.items()}
    return Fit(program.with_values({**values, **means}), method, x, draws=draws, **fields)


def _whitened_info(w) -> str:
    if w.dense:
        return "run in coordinates whitened by the Laplace approximation"
    if w.scaled:
        return ("the posterior is far from Gaussian: run in coordinates scaled by the Laplace "
                "approximation's standard deviations, a diagonal mass matrix adapted")
    if w.dim > MAX_DENSE:
        return f"run in the unconstrained space ({w.dim} > {MAX_DENSE} values to whiten)"
    return "run in the unconstrained space (no mode to whiten at)"


def nuts(program, x, **options) -> Fit:
    with few_threads(x):
        return _nuts(program, x, **options)


def _nuts(program, x, *, num_samples, warmup_steps, num_chains, jit_compile, target_accept_prob,
          max_tree_depth, init, progress_bar) -> Fit:
    num_samples = positive_int(num_samples, "num_samples")
    warmup_steps = positive_int(num_samples if warmup_steps is None else warmup_steps,
                                "warmup_steps", 0)
    num_chains = positive_int(num_chains, "num_chains")
    program.discover(x)
    _needs_random(program, "nuts")
    init, note = initial_values(program, x, init)
    w = Whitened(program, x, init, jit_compile=jit_compile)
    # Chains start at draws from the Laplace approximation (spread, so that r_hat means
    # something), or at the MAP jittered by 0.1 where the posterior is not whitened; where the
    # posterior has no mode (a funnel: the MAP ran to the edge of the support), at fresh starts
    # from the priors, as the program's global parameters start.
    z0 = torch.randn(num_chains, w.dim, dtype=w.mu.dtype, device=w.mu.device) * (
        1.0 if w.dense else 0.1)
    if not w.found_mode and (program._starts or program.local):
        note += "; no posterior mode (the MAP is degenerate): chains start from the priors"
        z0 = torch.stack([w.whiten({**init, **program.fresh_starts(x)})
                          for _ in range(num_chains)])
    # Whitened, the Laplace covariance already is the (dense) mass matrix and warm-up only
    # tunes the step size (measured on AR(2) sunspots: 3.5 instead of 4.8 gradients per draw).
    # Where the posterior is far from its Laplace approximation (a hierarchical scale), only
    # the Laplace scales are kept and a diagonal mass matrix is adapted on them: measured on
    # non-centred eight schools, 2 x (500 + 500), 7.2 leapfrog steps per draw and min bulk ESS
    # 597 this way, 25.4 and 740 adapting a diagonal on the full whitening, 8.3 and 584
    # adapting a dense one on it, 7.1 and 482 with no whitening (plain Pyro: 9.3, 595).
    adapt = not w.dense or not w.gaussian_like()
    if w.dense and adapt:  # keep the Laplace scales, adapt the rest
        w.diagonal()
        z0 = torch.randn(num_chains, w.dim, dtype=w.mu.dtype, device=w.mu.device)
    # each chain from its own seed (drawn under the fit's seed), so that the draws are the same
    # whether the chains run in parallel processes or one after the other (`inference.chains`)
    seeds = [int(s) for s in torch.randint(2**62, (num_chains,))]
    w.potential({"z": z0[0]})  # trace (and check) the potential once, here, before any fork
    kernel = functools.partial(RecordingNUTS, potential_fn=w.potential,
                               target_accept_prob=target_accept_prob,
                               max_tree_depth=max_tree_depth, adapt_mass_matrix=adapt)
    done = run_chains(kernel, z0, seeds, num_samples, warmup_steps, show_progress(progress_bar))
    zs, stats = [z for z, _ in done], [st for _, st in done]
    draws = w.constrained(torch.stack(zs))
    sample_stats = {k: torch.stack([s[k] for s in stats]) for k in stats[0]}
    _warn_nuts(program, draws, sample_stats, target_accept_prob)
    return _posterior_fit(program, "nuts", x, init, draws, sample_stats=sample_stats,
                          info={"num_chains": num_chains, "warmup_steps": warmup_steps,
                                "chain_processes": processes_for(num_chains, z0.device),
                                "divergences": int(sample_stats["diverging"].sum()),
                                "init": f"{note}; {_whitened_info(w)}",
                                "potential": w.jit_note})


def _warn_nuts(program, draws, stats, target_accept_prob) -> None:
    """Say what went wrong, as PyMC and NumPyro do: divergences, and (with several chains) a
    large r_hat or a small effective sample size."""
    from inference.arviz_io import convergence

    n_div, total = int(stats["diverging"].sum()), stats["diverging"].numel()
    if n_div:
        warnings.warn(
            f"{program.label}: {n_div} of {total} NUTS draws diverged (the sampler hit a region "
            "of high curvature, so the draws may be biased); try "
            f"target_accept_prob={max(0.95, target_accept_prob)} (smaller steps), a "
            "reparameterised (non-centred) program, or more informative priors",
            RuntimeWarning, stacklevel=4)
    if next(iter(draws.values())).shape[0] > 1:
        r_hat, ess = convergence(draws)
        if r_hat > 1.01 or ess < 100:
            warnings.warn(
                f"{program.label}: chains disagree or mix slowly (max r_hat {r_hat:.3f}, min "
                f"bulk ESS {ess:.0f}; aim for r_hat <= 1.01 and ESS >= 100); run longer "
                "(num_samples, warmup_steps) or reparameterise", RuntimeWarning, stacklevel=4)


class RecordingNUTS(NUTS):
    """Pyro's NUTS, keeping after warm-up what ArviZ's sample_stats hold for each draw:
    diverging, step_size, tree_depth, n_steps (leapfrog steps), energy (the Hamiltonian at
    the start of the trajectory), acceptance_rate (the mean Metropolis acceptance probability
    over the trajectory), lp (minus the potential energy of the draw)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rows, self._kinetic, self._leaps = [], None, 0

    def _sample_r(self, name):
        self._kinetic = "next"  # the next kinetic energy computed is the trajectory's start
        return super()._sample_r(name)

    def _kinetic_energy(self, r_unscaled):
        energy = super()._kinetic_energy(r_unscaled)
        if self._kinetic == "next":
            self._kinetic = float(energy)
        return energy

    def _build_basetree(self, *args, **kwargs):
        self._leaps += 1
        return super()._build_basetree(*args, **kwargs)

    def sample(self, params):
        _, start_pe, _ = self._fetch_from_cache()
        divergences, mean, t = len(self._divergences), self._mean_accept_prob, self._t
        self._leaps = 0
        z = super().sample(params)
        if self._t > self._warmup_steps:
            n = self._t - self._warmup_steps
            pe = self._fetch_from_cache()[1]
            kinetic = self._kinetic if isinstance(self._kinetic, float) else math.nan
            start = float(start_pe) if start_pe is not None else math.nan
            self._rows.append((len(self._divergences) > divergences, float(self.step_size),
                               self._leaps, kinetic + start,
                               self._mean_accept_prob * n - mean * (n - 1) if n > 1
                               else self._mean_accept_prob,
                               -float(pe) if pe is not None else math.nan))
        del t
        return z

    def statistics(self) -> dict[str, torch.Tensor]:
        rows = list(zip(*self._rows)) if self._rows else [[]] * 6
        steps = torch.tensor(rows[2], dtype=torch.int64)
        return {"diverging": torch.tensor(rows[0], dtype=torch.bool),
                "step_size": torch.tensor(rows[1], dtype=torch.float64),
                "tree_depth": torch.floor(torch.log2(steps.clamp_min(1).double())).long() + 1,
                "n_steps": steps,
                "energy": torch.tensor(rows[3], dtype=torch.float64),
                "acceptance_rate": torch.tensor(rows[4], dtype=torch.float64),
                "lp": torch.tensor(rows[5], dtype=torch.float64)}

