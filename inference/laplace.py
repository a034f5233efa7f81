"""Whitened coordinates from the Laplace approximation, where NUTS and SVI run.

A posterior on raw data can be badly scaled and strongly correlated (an AR model's constant
against its coefficients on sunspot numbers: correlation -0.98, scales 100 apart): NUTS with a
diagonal mass matrix then needs deep trees, and Adam's per-coordinate steps drift along the
ridge (an untuned SVI stopped several posterior sd from the answer). Both samplers therefore see
the posterior in coordinates z with

    u = mu + L z,    L L^T = H^-1,

u the model's parameters in the unconstrained space (``biject_to`` of each prior's support,
flattened), mu the posterior mode there and H the Hessian of the potential -log p(u | x) at mu.
Under the Laplace approximation z is standard normal; a near-Gaussian posterior becomes
near-isotropic. The map is affine, so the density of z is the posterior's up to a constant and
draws map back exactly. Beyond `MAX_DENSE` parameters (or where H is not positive definite) L is
the identity and mu the MAP.

The potential is the program's log joint (`Program.log_joint_terms`: a model's vectorised
likelihood and priors where it has them, else one trace with discrete latents enumerated) plus
the Jacobians, the same number as Pyro's trace-based potential (a test checks it). It is
traced once, as a function of u at the MAP (`inference.tracing`: the value and gradient as one
graph), and kept only where the traced potential and its gradient equal the eager ones at two
points (``jit_compile=None``, NUTS's default; ``True``: the same, however long one eager
evaluation takes; ``"inductor"``: compiled however short the run; ``False``: never traced).
The search for the mode evaluates that graph (Newton's Hessians are autograd's, on the program
itself): HMM model_1's Laplace approximation took 76 eager evaluations of 25 ms. A sampler's z
reaches it through the affine map (in numpy on nutpie's path: 2-5 us a gradient), and where
the run the sampler announces (`expect`) pays for it, the graph is compiled by TorchInductor.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from inference.tracing import checked_trace, compiled, fused_trace
from ppl_models.modes import lbfgs, minimum
from ppl_models.programs.program import transform_of

MAX_DENSE = 400
# the largest spread (sd over 64 standard-normal points, over sqrt(dim)) of the potential
# around its quadratic Laplace approximation for which NUTS keeps the whitening's identity mass
# matrix. Measured: AR(2) on sunspots 0.07, the tutorial regression 0.18, a logistic
# regression 0.25, the shared-transition chain on 500 digits 0.34, Independent(64) on digits
# 0.35; non-centred eight schools 24 (centred eight schools and baseball partial pooling have
# no mode to whiten at)
GAUSSIAN_TOLERANCE = 1.0


class Whitened:
    """The posterior of `program` given validated `x` in whitened coordinates z (see the module
    docstring), starting from the constrained values `init` (the MAP). The random parameters
    and continuous local latents (`program.sampled`) move; the others stay at their values in
    `init`.

    `potential({"z": z})` is -log p(z | x) + const (NUTS's `potential_fn`); calling the object
    is a Pyro program with one latent site ``z`` whose log joint is the same (for SVI);
    `constrained(z)` maps z (..., d) back to the program's parameters.
    """

    def __init__(
        self,
        program,
        x,
        init: dict[str, torch.Tensor],
        jit_compile: bool | str | None = False,
        names: list[str] | None = None,
        prior: bool = True,
        starts: list[dict] = (),
    ):
        # jit_compile: True / None (trace where it gives the same numbers), False (eager),
        # "inductor" (compiled whatever the run's length); names: what moves (default:
        # program.sampled); prior: False for the likelihood alone; starts: more constrained
        # values to search for the mode from (the lowest mode reached is kept)
        self.program, self.x, self.jit_compile, self.prior = program, x, jit_compile, prior
        self.jit_note = "eager"
        self.gradients = 0  # how many evaluations the caller expects (`expect`): may compile
        self.idx = None  # a minibatch of rows of x (minibatch SVI), None for all
        self.fixed = dict(init)
        self.names = list(program.sampled if names is None else names)
        supports = program.supports(init)
        supports.update(
            {k: program.roles.sites[k].constraint for k in self.names if k not in supports}
        )
        self.transforms = {k: transform_of(supports[k]) for k in self.names}
        u = {k: self.transforms[k].inv(init[k]).detach() for k in self.names}
        self.shapes = {k: v.shape for k, v in u.items()}
        flat = torch.cat([u[k].reshape(-1) for k in self.names])
        self.dim = flat.numel()
        self.mu, self.L = flat, torch.eye(self.dim, dtype=flat.dtype, device=flat.device)
        self._jitted = None  # the traced potential of u: None (not yet), False (eager)
        self._numpy = None  # (mu, L, both in numpy float64): `numpy_value_and_grad`
        # a mode: found by Newton's method (up to MAX_DENSE parameters), else taken on trust;
        # its values and searches on the traced potential where there is one
        self.found_mode = True
        if self.dim <= MAX_DENSE and bool(torch.isfinite(flat).all()):
            fast = self._jitted if self._traced_at(flat) else None
            if starts:
                others = [self._flat(v) for v in starts]
                flat = _lowest(self.potential_u if fast is None else fast, [flat, *others])
            self.mu, self.L, self.found_mode = _laplace(self.potential_u, flat, fast)
        self.dense = not torch.equal(
            self.L, torch.eye(self.dim, dtype=flat.dtype, device=flat.device)
        )
        self.scaled = False  # `diagonal()`: the Laplace scales only
        self.plain = False  # `unwhiten()`: the unconstrained space as it is

    @torch.no_grad()
    def gaussian_like(self, draws: int = 32, tolerance: float = GAUSSIAN_TOLERANCE) -> bool:
        """True when the posterior looks like its Laplace approximation: at `draws` points z
        of the standard normal, the potential minus its value at the mode matches |z|^2 / 2
        to within `tolerance` sqrt(dim) (standard deviation of the difference: independent
        small deviations in each direction add up as sqrt(dim))."""
        if not self.dense:
            return False
        g = torch.Generator(device="cpu").manual_seed(0)
        z = torch.randn(draws, self.dim, generator=g, dtype=self.mu.dtype).to(self.mu.device)
        base = self.potential({"z": torch.zeros_like(self.mu)})
        gap = torch.stack([self.potential({"z": zi}) - base - 0.5 * zi @ zi for zi in z])
        return bool(torch.isfinite(gap).all()) and float(gap.std()) < tolerance * math.sqrt(
            self.dim
        )

    def correlation_condition(self) -> float:
        """The condition number of the Laplace approximation's correlation matrix (1 where there
        is none): how far a diagonal metric is from the posterior's shape near its mode."""
        if not self.dense:
            return 1.0
        cov = self.L @ self.L.T
        sd = cov.diagonal().sqrt()
        eigen = torch.linalg.eigvalsh(cov / sd[:, None] / sd[None])
        return float(eigen[-1] / eigen[0]) if float(eigen[0]) > 0 else math.inf

    def diagonal(self) -> None:
        """Keep only the Laplace approximation's standard deviations (no rotation): where the
        posterior is far from Gaussian, a sampler adapts its own (diagonal) metric on top."""
        self.L = torch.diag(torch.sqrt((self.L @ self.L.T).diagonal()))
        self.dense, self.scaled = False, True

    def unwhiten(self) -> None:
        """Run in the plain unconstrained space (no Laplace scales or rotation)."""
        self.L = torch.eye(self.dim, dtype=self.mu.dtype, device=self.mu.device)
        self.dense = self.scaled = False
        self.plain = True

    def _flat(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """The unconstrained values of the moving parameters, laid end to end."""
        return torch.cat([self.transforms[k].inv(values[k]).reshape(-1) for k in self.names])

    def whiten(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """z of constrained parameter values (the inverse of `constrained`)."""
        u = self._flat(values)
        return torch.linalg.solve_triangular(self.L, (u - self.mu)[:, None], upper=False)[:, 0]

    def __getstate__(self):  # a traced potential stays in its process (MCMC may pickle this)
        return {**self.__dict__, "_jitted": None, "_numpy": None}

    # -- the potential ----------------------------------------------------------------------------
    def unflatten(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        return unflatten(u, self.shapes)

    def log_joint(self, theta: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p(x, theta): the priors (conditional ones given the values they depend on) plus
        the log-likelihood, discrete latents summed out; with a minibatch (`idx`: rows of x),
        its log-likelihood scaled to the whole data set."""
        if not self.prior:
            return self.program.log_joint_terms(self.x, {**self.fixed, **theta}, prior=False)[
                0
            ].sum()
        if self.idx is None:
            return self.program.log_joint(self.x, {**self.fixed, **theta})
        args = self.program.args.rows(self.idx, len(self.x)) if self.program.given else None
        ll, lp = self.program.log_joint_terms(
            self.x[self.idx], {**self.fixed, **theta}, prior=True, args=args
        )
        return ll.sum() * len(self.x) / len(self.idx) + lp

    def potential_u(self, u: torch.Tensor) -> torch.Tensor:
        """-log p(u | x) + const in the unconstrained space (flat u). Distribution argument checks
        are off here: the data were validated at the boundary and u maps into the supports, so
        the checks would only cost time on every gradient (a third of it on AR(2))."""
        with pyro.validation_enabled(False):
            parts = self.unflatten(u)
            theta = {k: self.transforms[k](v) for k, v in parts.items()}
            log_det = sum(
                self.transforms[k].log_abs_det_jacobian(parts[k], theta[k]).sum()
                for k in self.names
            )
            return -(self.log_joint(theta) + log_det)

    def _u(self, z: torch.Tensor) -> torch.Tensor:
        # Pyro's NUTS draws momenta in torch's default dtype: a float32 posterior is evaluated
        # in its own precision (the gradient flows back through the cast)
        return self.mu + self.L @ z.to(self.mu.dtype)

    def _potential_z(self, z: torch.Tensor) -> torch.Tensor:
        return self.potential_u(self._u(z))

    def potential(self, params: dict) -> torch.Tensor:
        z = params["z"]
        if self.jit_compile is False or self.idx is not None:  # a trace would fix the batch
            return self._potential_z(z)
        u = self._u(z)
        if self._jitted is None:  # not traced at a mode (too many parameters, none finite)
            self._traced_at(u.detach())
        if self._jitted is None or self._jitted is False:
            return self.potential_u(u)
        return self._jitted(u)

    def _traced_at(self, u: torch.Tensor) -> bool:
        """Trace the potential of u once, at u (`_traced`), where tracing is asked for, the
        potential is finite at u (a trace is checked where it is) and, automatically, one
        eager evaluation is quick; True where it is traced."""
        if self.jit_compile is False or self._jitted is False:
            return False
        if self._jitted is None:
            took, value = _timed(self.potential_u, u)
            if took > AUTO_TRACE_SECONDS and self.jit_compile is None:
                # a process's first evaluation pays once for what torch and Pyro set up on
                # first use (eight schools, first in a process: 0.54-0.58 s, then 2.7 ms)
                took, value = _timed(self.potential_u, u)
            if not torch.isfinite(value):
                return False  # traced later, at a point where it can be checked
            if took > AUTO_TRACE_SECONDS and self.jit_compile is None:  # automatic: bounded
                self._jitted = False
                self.jit_note = (
                    f"eager (one evaluation takes {took:.2f} s; tracing and checking it would "
                    "take minutes: jit_compile=True to try)"
                )
                return False
            # a program's Python (len(x), constants) is fixed here
            self._jitted = self._traced(u)
        return self._jitted is not False

    def _traced(self, u):
        """The potential of u and its gradient in one traced graph (`inference.tracing`), else
        the potential traced alone, where either gives the same numbers, else False;
        `jit_note` says which and why. Traced in u, not z, so that it serves the search for
        the mode and every whitening found there; the affine map to z runs outside it."""
        expected = math.inf if self.jit_compile == "inductor" else self.gradients
        traced, note = fused_trace(self.potential_u, u, "potential", expected)
        if traced is None:
            traced, note = checked_trace(self.potential_u, u, "potential")
        self.jit_note = note
        return traced if traced is not None else False

    def expect(self, gradients: float) -> None:
        """The caller (a sampler, once) will ask for about `gradients` evaluations: a graph traced
        before it knew (at the mode) is compiled by TorchInductor where that run pays for it
        (`inference.tracing.compiled`, checked at the mode); one traced later is compiled as
        it is traced."""
        self.gradients = gradients
        if getattr(self._jitted, "module", None) is None or self.jit_compile == "inductor":
            return  # not traced yet, traced alone, or compiled already
        out, how = compiled(self._jitted, self.potential_u, self.mu, gradients)
        if out is not None:
            self._jitted, self.jit_note = out, how
        else:
            self.jit_note += how

    def value_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(potential, its gradient) at a flat z, detached: one call of the fused graph where
        there is one; the gradient None where the potential is not finite."""
        fused = getattr(self._jitted, "value_and_grad", None)
        if fused is not None:
            value, grad = fused(self._u(z))
            grad = (self.L.T @ grad).to(z.dtype)
            return value, grad if torch.isfinite(value) else None
        z = z.detach().requires_grad_(True)
        value = self.potential({"z": z})
        if not torch.isfinite(value):
            return value.detach(), None
        (grad,) = torch.autograd.grad(value, z)
        return value.detach(), grad

    def numpy_value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray | None]:
        """`value_and_grad` at a flat float64 numpy x, as (float, a new float64 array; None
        where the potential is not finite): a sampler's callback (nutpie's), by the fused
        graph's own numpy path where it runs on the CPU, the affine map in numpy."""
        fused = getattr(self._jitted, "numpy_value_and_grad", None)
        if fused is not None and self.mu.device.type == "cpu":
            mu, L = self._affine()
            value, grad = fused(mu + (x if L is None else L @ x))
            grad = grad if L is None else L.T @ grad
        else:
            v, g = self.value_and_grad(torch.from_numpy(x).to(self.mu.device))
            value, grad = float(v), None if g is None else g.cpu().numpy().astype(np.float64)
        return value, grad if math.isfinite(value) else None

    def _affine(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(mu, L) as float64 numpy arrays, L None where it is the identity; kept until L
        changes (`diagonal`, `unwhiten`)."""
        if self._numpy is None or self._numpy[0] is not self.mu or self._numpy[1] is not self.L:
            eye = torch.equal(self.L, torch.eye(self.dim, dtype=self.L.dtype))
            L = None if eye else self.L.double().numpy()
            self._numpy = (self.mu, self.L, (self.mu.double().numpy(), L))
        return self._numpy[2]

    # -- as a Pyro program, and back to the model's parameters ------------------------------
    def __call__(self):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(self.mu), 1.0).to_event(1))
        # the site's N(0, I) density is taken out again: the log joint is -potential
        pyro.factor(
            "posterior", -self.potential({"z": z}) - dist.Normal(0.0, 1.0).log_prob(z).sum()
        )

    @torch.no_grad()
    def log_abs_det(self, z: torch.Tensor) -> torch.Tensor:
        """log |det d theta / d z| at draws z (S, d): the affine map's (constant) plus each
        parameter's transform into its support."""
        return self.log_abs_det_grad(z)

    def log_abs_det_grad(self, z: torch.Tensor) -> torch.Tensor:
        """`log_abs_det`, differentiable in z (the delta guide takes it out of the potential:
        its optimum is then the MAP of the parameters, not of their unconstrained values)."""
        u = self.mu + z @ self.L.T
        parts = self.unflatten(u)
        out = torch.linalg.slogdet(self.L)[1].expand(z.shape[0]).clone()
        for k in self.names:
            t = self.transforms[k]
            theta = t(parts[k])
            jac = t.log_abs_det_jacobian(parts[k], theta)
            out = out + jac.reshape(z.shape[0], -1).sum(-1)
        return out

    @torch.no_grad()
    def constrained(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        u = self.unflatten(self.mu + z @ self.L.T)
        return {k: self.transforms[k](v) for k, v in u.items()}


def _timed(f, u):
    start = time.perf_counter()
    value = f(u)
    return time.perf_counter() - start, value


AUTO_TRACE_SECONDS = 0.25  # an eager potential slower than this is not traced automatically
OFF_MODE = 5.0  # Laplace sds between a point estimate and the mode found from it: a boundary


def laplace_draws(program, x, values: dict, prior: bool, num_samples: int, chains: int = 2):
    """Draws from the Laplace approximation at a point estimate `values` (the MAP with
    `prior`, the MLE without: a flat prior on the constrained parameters): every free
    parameter, Gaussian in the unconstrained space with the inverse Hessian of the potential
    as covariance. Returns (draws name -> (chains, per chain, ...), log p per draw (log joint,
    or log-likelihood without `prior`), log q per draw (the approximation's density of the
    constrained draw)), both (chains, per chain), and (pointwise log-likelihood, log prior) of
    the draws; a ValueError saying why there is none: an
    estimate on the boundary of the parameter space, more than MAX_DENSE parameters, a
    Hessian that is not positive definite."""
    names = program.roles.free
    w = Whitened(program, x, values, names=names, prior=prior)
    label = f"{program.label} at its {'MAP' if prior else 'MLE'}"
    bad = _off_mode(w, values)
    if bad:
        raise ValueError(
            f"{label} has no Laplace approximation: the estimate of "
            f"{', '.join(map(repr, bad))} lies on the boundary of the parameter "
            "space (a probability of exactly 0 or 1), where the posterior has no "
            "Gaussian shape; compare it on held-out data (inference.compare(fits, "
            "data)), or fit by nuts or svi for a posterior"
        )
    if w.dim > MAX_DENSE:
        raise ValueError(
            f"{label} has no Laplace approximation here: {w.dim} free parameters "
            f"(more than {MAX_DENSE}) make its Hessian too large to hold and "
            "invert"
        )
    if not w.dense:
        raise ValueError(
            f"{label} has no Laplace approximation: the Hessian of the log "
            "density is not positive definite there (not a strict mode)"
        )
    per = -(-num_samples // chains)
    z = torch.randn(chains * per, w.dim, dtype=w.mu.dtype, device=w.mu.device)
    log_q = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) - w.log_abs_det(z)
    draws = {k: v.reshape(chains, per, *v.shape[1:]) for k, v in w.constrained(z).items()}
    with torch.no_grad():
        ll, lp = program.log_likelihood(x, draws, prior=True)
    log_p = ll.sum(-1) + (lp if prior else 0.0)
    return draws, log_p, log_q.reshape(chains, per), (ll, lp)


def _off_mode(w, values: dict) -> list[str]:
    """The parameters whose estimate is not finite in the unconstrained space, or lies more
    than OFF_MODE Laplace standard deviations from the mode that Newton's method finds from
    it: an estimate on the boundary (a probability fitted as 0, whose logit is -708), not at
    an interior mode."""
    with torch.no_grad():
        u = {k: w.transforms[k].inv(values[k]) for k in w.names}
        z = w.unflatten(w.whiten(values).abs()) if torch.isfinite(w.mu).all() else {}
    return [
        k
        for k in w.names
        if not torch.isfinite(u[k]).all() or (k in z and not bool((z[k] <= OFF_MODE).all()))
    ]


def unflatten(u: torch.Tensor, shapes: dict) -> dict[str, torch.Tensor]:
    """A flat vector u (..., d) as name -> (..., *shape), in the order of `shapes`."""
    out, i = {}, 0
    lead = u.shape[:-1]
    for k, shape in shapes.items():
        n = shape.numel()
        out[k] = u[..., i : i + n].reshape(lead + shape)
        i += n
    return out


def _lowest(f, starts: list[torch.Tensor]) -> torch.Tensor:
    """Where an L-BFGS search of f from each start ends lowest (the first start where none
    ends at a finite value): a mixture's posterior has a mode per labelling and more, and a
    search from one start may end at a poorer one."""
    best, low = starts[0], math.inf
    for u in starts:
        end = lbfgs(f, u.detach()) if bool(torch.isfinite(u).all()) else None
        value = math.inf if end is None else float(f(end))
        if value < low:
            best, low = end, value
    return best


def _laplace(f, u: torch.Tensor, fast=None, newton_steps: int = 20):
    """(mode, L, found) with L L^T = H^-1 at the mode of f: Newton steps from u with step
    halving, the whitening kept only if they reach the mode (Newton decrement below 1e-8).
    Where Newton does not get there from u (a MAP on the boundary of the constrained space,
    such as a hierarchical scale of 0, is far from the mode of the unconstrained density), an
    L-BFGS search of f first, then Newton again; both evaluate `fast` (f traced) where given,
    Newton's gradients and Hessians f's own. Where neither reaches a mode, or the Hessian
    is not positive definite, (u, identity, False): a posterior with no mode in the
    unconstrained space (a hierarchical funnel, whose density grows without bound as the scale
    goes to 0) would be whitened at an arbitrary point of its neck, where NUTS freezes
    (measured: centred eight schools, r_hat 1e16); unwhitened, NUTS adapts its mass matrix."""
    eye = torch.eye(len(u), dtype=u.dtype, device=u.device)
    found = minimum(f, u, newton_steps, fast=fast)
    if found is None:
        return u, eye, False
    mode, chol = found
    # H = C C^T, so L = C^-T gives L L^T = (C C^T)^-1
    return mode, torch.linalg.solve_triangular(chol.T, eye, upper=True), True
