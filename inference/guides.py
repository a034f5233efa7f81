"""Draws of a guide, and a guide you write scored against the program's vectorised,
jit-traced log density (`reparameterised_step`; `scored` through Pyro's SVI where a site of the
guide has no reparameterised sampler): both checked against Pyro's Trace_ELBO on the program
itself (tests/test_programs.py, tests/test_svi_paths.py)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.optim.clipped_adam import ClippedAdam

from inference.evaluation.psis import PROPOSAL_K, importance_diagnostics
from inference.laplace import unflatten
from inference.tracing import checked_trace
from ppl_models.runtime import warn


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


def guide_draws(guide_fn, names, num_samples, shapes=None):
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


def as_chains(draws: dict, stats: dict) -> tuple[dict, dict]:
    """Independent draws (S, ...) as 2 chains of S / 2 (S even; one chain for S = 1), so that
    ArviZ's r_hat and rank plots have two to compare."""
    S = next(iter(draws.values())).shape[0]
    chains = 2 if S > 1 and S % 2 == 0 else 1

    def split(v):
        return v.reshape(chains, S // chains, *v.shape[1:])

    return {k: split(v) for k, v in draws.items()}, {k: split(v) for k, v in stats.items()}


def checked(fit):
    """The guide checked against the posterior (Yao, Vehtari, Simpson and Gelman 2018, "Yes,
    but did it work?"): Pareto-smoothed importance sampling of log p(theta, y) - log q(theta)
    over the guide's draws. Its Pareto k (``info["pareto_k"]``) says how far the guide is from
    the posterior: up to 0.5 it is close, up to 0.7 its draws can be reweighted, above 0.7 its
    means and intervals may be far off, and a warning says what to do."""
    stats = fit.sample_stats  # log p(theta, y) of every draw, computed here
    if "log_q" not in stats:
        return fit
    try:
        k, ess = importance_diagnostics((stats["log_p"] - stats["log_q"]).cpu().numpy())
    except ValueError:  # too few draws for a Pareto fit
        return fit
    fit.info["pareto_k"], fit.info["importance_ess"] = k, ess
    if not k <= PROPOSAL_K:
        warn(
            f"SVI on {fit.program.label}: the guide ({fit.info.get('guide')}) is far from the "
            f"posterior: Pareto k of its importance weights is {k:.2f} (> {PROPOSAL_K}; "
            f"{ess:.0f} effective draws of {fit.num_draws}), so its means and intervals "
            "may be off. Sample the posterior with method='nuts', or try a richer guide "
            "(guide='multivariate_normal', a non-centred program) and check k again "
            "(fit.info['pareto_k'])",
        )
    return fit
