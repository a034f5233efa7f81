"""Where a posterior fit starts and what it returns, shared by SVI and NUTS.

Both start at the MAP estimate moved into the interior of the support (the default init of
autoguides, prior medians, can leave SVI far from the posterior with no warning) and run in
coordinates whitened by the Laplace approximation at the mode (`inference.laplace`), so that a
badly scaled, correlated posterior (raw data) looks like a standard normal to NUTS's unit mass
matrix and to Adam's steps; draws are mapped back to the program's parameters. Point
parameters (``pyro.param`` sites, no prior) are held at their MAP values (empirical Bayes);
the parameters with a prior are sampled.
"""

from __future__ import annotations

import warnings

import torch

from inference.laplace import MAX_DENSE
from inference.objective import bounded
from inference.optimize import point_fit
from inference.result import Fit
from ppl_models.models.protocol import is_builtin
from ppl_models.programs.program import transform_of

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
        if bounded(t):
            safe = safe.clamp(-BOUND, BOUND)
        if not torch.equal(safe, u):
            moved.append(f"{name} ({int((safe != u).sum())} values)")
        values[name] = t(safe).detach()
    note += f"; moved inside the support from the boundary: {', '.join(moved)}" if moved else ""
    return values, note


def _mode(program, x) -> tuple[dict[str, torch.Tensor], str]:
    """The MAP estimate, a joint mode with the continuous local latents and imputed values
    (NUTS and SVI sample them with the parameters; a hierarchical posterior may have none: the
    search then runs to the edge of the support, and `Whitened` finds no mode)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a funnel's search runs off: said below
        fit = point_fit(program, x, "map", progress_bar=False, joint=True)
    note = "joint MAP of the parameters and local latents" if program.local else "MAP"
    return dict(fit.program.values), note


def _given(init, program) -> dict[str, torch.Tensor]:
    """Start values from `init`: a Fit (its estimate) or a dict name -> value."""
    values = init.params if hasattr(init, "params") and hasattr(init, "program") else init
    if not isinstance(values, dict):
        raise ValueError(
            f"init must be a dict of parameter values or a Fit, got {type(init).__name__}"
        )
    free = set(program.roles.free) | set(program.local)
    unknown = sorted(set(values) - free)
    if unknown:
        raise ValueError(
            f"init names {', '.join(map(repr, unknown))}, not parameters of "
            f"{program.label} (its parameters: {', '.join(sorted(free))})"
        )
    out = {}
    for k, v in values.items():
        v = torch.as_tensor(v, dtype=program.values[k].dtype, device=program.values[k].device)
        if v.shape != program.values[k].shape:
            raise ValueError(
                f"init[{k!r}] has shape {tuple(v.shape)}, the parameter has "
                f"{tuple(program.values[k].shape)}"
            )
        out[k] = v
    return out


def needs_random(program, method):
    hook = getattr(program.model, "bayesian", None)
    if callable(hook) and is_builtin(program.model):
        hook()  # a Model says itself why it has no random version (sparse FullJoint)
    if not program.sampled:
        roles, has = program.roles, []
        if roles.named("param"):
            has.append(f"point parameters (pyro.param: {', '.join(roles.named('param'))})")
        summed = [k for k in roles.enumerated if not roles.sites[k].in_data]
        if summed:
            has.append(f"discrete latents summed out, not sampled ({', '.join(summed)})")
        raise ValueError(
            f"{program.label} has no random parameters for method={method!r}: it has "
            f"{' and '.join(has) or 'no parameters at all'}. Give the ones to infer a "
            "prior (pyro.sample('name', prior) or a PyroSample attribute), or fit it by "
            "'mle' / 'map'"
        )


def posterior_fit(program, method, x, values, draws, **fields) -> Fit:
    """A Fit from (chain, draw, ...) posterior draws; its program holds the posterior means
    (and the fixed point parameters at `values`)."""
    means = {k: v.mean((0, 1)) for k, v in draws.items()}
    return Fit(program.with_values({**values, **means}), method, x, draws=draws, **fields)


def whitened_info(w) -> str:
    if w.dense:
        return "run in coordinates whitened by the Laplace approximation"
    if w.scaled:
        return (
            "the posterior is far from Gaussian: run in coordinates scaled by the Laplace "
            "approximation's standard deviations, a diagonal mass matrix adapted"
        )
    if w.plain:
        return "run in the unconstrained space, as Pyro's autoguides do"
    if w.dim > MAX_DENSE:
        return f"run in the unconstrained space ({w.dim} > {MAX_DENSE} values to whiten)"
    return "run in the unconstrained space (no mode to whiten at)"
