"""The objective of every point fit: the negative log joint per datum over one unconstrained
leaf tensor per free parameter, with the moves that finish a search (onto a boundary, Newton
steps), and the closure L-BFGS calls."""

from __future__ import annotations

import math

import pyro
import torch

from inference.laplace import unflatten
from inference.tracing import fused_trace
from ppl_models.programs.program import transform_of


class Objective:
    """Negative log joint per datum, -(mean log p(x | theta) + log p(theta) / N), over one
    unconstrained leaf tensor per free parameter."""

    def __init__(self, program, names, prior: bool, n: int):
        self.program, self.prior, self.n = program, prior, n
        constraints = {k: program.roles.sites[k].constraint for k in names}
        self.transforms = {k: transform_of(c) for k, c in constraints.items()}
        self.leaves = {}
        for k in names:
            u = self.transforms[k].inv(program.values[k].detach())
            u = torch.nan_to_num(u, nan=0.0, posinf=10.0, neginf=-10.0)
            self.leaves[k] = u.clone().requires_grad_(True)

    @property
    def parameters(self) -> list[torch.Tensor]:
        return list(self.leaves.values())

    def values(self, exact: bool = False) -> dict[str, torch.Tensor]:
        """Constrained values of the leaves. torch's sigmoid stops at the smallest float
        (2e-308), so a value moved onto the boundary (`onto_boundary`) is the boundary only
        with `exact` (the fitted values: a transition never seen then has probability 0 and a
        test image holding it log density -inf, as the built-ins' closed forms give, not -709
        nats a step); the search itself keeps the clipped values, whose prior is finite."""
        out = {k: self.transforms[k](u) for k, u in self.leaves.items()}
        if exact:
            out = {
                k: on_bounds(self.transforms[k], self.leaves[k].detach(), v) for k, v in out.items()
            }
        return {**self.program.values, **out}

    def __call__(self, batch, idx=None):
        """The loss on `batch`; `idx`: its rows of the data, which per-datum covariates
        (`given`) follow."""
        args = (
            self.program.args.rows(idx, self.n) if idx is not None and self.program.given else None
        )
        ll, lp = self.program.log_joint_terms(batch, self.values(), prior=self.prior, args=args)
        # per datum; a series scores its modelled steps (len(ll)), rows are one datum each
        total = ll.numel() * self.n / len(batch)
        return -(ll.sum() + lp * (ll.numel() / total)) / ll.numel()

    def flat(self) -> torch.Tensor:
        """The leaves laid end to end (detached)."""
        return torch.cat([u.detach().reshape(-1) for u in self.leaves.values()])

    def traced(self, x):
        """The loss on the whole of x and its gradient as one traced graph of the leaves laid
        end to end (`inference.tracing.fused_trace`: a `Fused`), or None where the program
        cannot be traced or the traced loss differs from it. The graph holds x and the
        program's other values as constants: it serves any objective of the same program and
        names (a restart's), which `inference.solvers.adam` checks at each run's start."""
        shapes = {k: u.shape for k, u in self.leaves.items()}

        def loss(flat):
            saved = self.leaves
            self.leaves = unflatten(flat, shapes)
            try:
                return self(x)
            finally:
                self.leaves = saved

        fused, _ = fused_trace(loss, self.flat(), "objective")
        return fused

    def fused_step(self, fused) -> torch.Tensor:
        """The whole-data loss at the leaves by `fused` (from `traced`), each leaf's ``.grad``
        set to its part of the gradient: no autograd, one call of the graph."""
        value, grad = fused.value_and_grad(self.flat())
        i = 0
        for u in self.leaves.values():
            u.grad = grad[i : i + u.numel()].reshape(u.shape)
            i += u.numel()
        return value

    @torch.no_grad()
    def nats(self, data) -> float:
        return float(-self.program.log_prob(data, self.values()).mean())

    @torch.no_grad()
    def onto_boundary(self, x, saturated: float = 8.0) -> int:
        """Where the optimum is on the boundary of a bounded support (a probability of 0 for a
        pixel never on), the search only approaches it (a logit of -12 is a probability of
        6e-6). Move every saturated unconstrained value (|u| > `saturated`) to the boundary
        itself, and keep the move if the objective stays finite and is no worse: the estimate
        is then the exact maximiser on the closed parameter space, as a closed form gives."""
        before = float(self(x))
        state = self.snapshot()
        moved = 0
        for k, u in self.leaves.items():
            if not bounded(self.transforms[k]):
                continue
            far = u.abs() > saturated
            if far.any():
                u[far] = torch.sign(u[far]) * math.inf
                moved += int(far.sum())
        if not moved:
            return 0
        try:
            with pyro.validation_enabled(False):
                after = float(self(x))
        except (ValueError, RuntimeError):  # the boundary is outside the model's support
            after = math.nan
        if math.isfinite(after) and after <= before + 1e-12:
            return moved
        self.restore(state)
        return 0

    def newton(self, x, max_dim: int = 400, steps: int = 4) -> int:
        """Newton steps on the exact Hessian (at most `max_dim` finite unconstrained values),
        each kept while it shrinks the gradient. L-BFGS's line search stops where the loss (a
        few tens of nats) no longer resolves changes (~1e-15); the gradient still does, and two
        Newton steps from there reach a closed form to ~1e-13."""
        finite = {k: torch.isfinite(u.detach()) for k, u in self.leaves.items()}
        dim = sum(int(m.sum()) for m in finite.values())
        if dim == 0 or dim > max_dim:
            return 0
        base = self.snapshot()

        def loss(flat):
            i = 0
            for k in list(self.leaves):
                n = int(finite[k].sum())
                full = base[k].clone()
                full[finite[k]] = flat[i : i + n]
                self.leaves[k] = full
                i += n
            return self(x)

        flat = torch.cat([base[k][finite[k]] for k in self.leaves])
        originals = dict(self.leaves)
        done = 0
        try:
            grad = torch.autograd.functional.jacobian(loss, flat)
            for _ in range(steps):
                hess = torch.autograd.functional.hessian(loss, flat)
                chol, bad = torch.linalg.cholesky_ex((hess + hess.T) / 2)
                if bad or not torch.isfinite(grad).all():
                    break
                new = flat - torch.cholesky_solve(grad[:, None], chol)[:, 0]
                new_grad = torch.autograd.functional.jacobian(loss, new)
                if not new_grad.abs().max() < grad.abs().max():
                    break
                flat, grad, done = new, new_grad, done + 1
        finally:
            self.leaves = originals
        with torch.no_grad():
            i = 0
            for k, u in self.leaves.items():
                n = int(finite[k].sum())
                u.copy_(base[k])
                u[finite[k]] = flat[i : i + n]
                i += n
        return done

    def snapshot(self) -> dict:
        return {k: u.detach().clone() for k, u in self.leaves.items()}

    @torch.no_grad()
    def restore(self, state: dict) -> None:
        for k, u in self.leaves.items():
            u.copy_(state[k])


def on_bounds(t, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """v = t(u) with an infinite u at the exact bound of t's interval codomain (an increasing
    map onto [lower, upper]: the sigmoid, an affine map after it)."""
    codomain = t.codomain
    while hasattr(codomain, "base_constraint"):  # .to_event: an independent constraint
        codomain = codomain.base_constraint
    lower = getattr(codomain, "lower_bound", None)
    upper = getattr(codomain, "upper_bound", None)
    if lower is None or upper is None or v.shape != u.shape or not torch.isinf(u).any():
        return v
    v = torch.where(u == -math.inf, torch.as_tensor(lower, dtype=v.dtype), v)
    return torch.where(u == math.inf, torch.as_tensor(upper, dtype=v.dtype), v)


def bounded(t) -> bool:
    """True unless the transform maps onto an unbounded range: a composition of identities
    (torch's identity is an empty ComposeTransform), exp, affine and power maps."""
    from torch.distributions import transforms as T

    def leaves(t):
        if isinstance(t, T.ComposeTransform):
            for part in t.parts:
                yield from leaves(part)
        elif isinstance(t, T.IndependentTransform):
            yield from leaves(t.base_transform)
        else:
            yield t

    unbounded = (T.ExpTransform, T.AffineTransform, T.PowerTransform)
    return not all(isinstance(p, unbounded) for p in leaves(t))
