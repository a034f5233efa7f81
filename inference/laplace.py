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
the Jacobians, the same number as Pyro's trace-based potential (a test checks it); with
``jit_compile`` it is traced once with `torch.jit.trace`.
"""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import torch

from ppl_models.program import transform_of

MAX_DENSE = 400


class Whitened:
    """The posterior of `program` given validated `x` in whitened coordinates z (see the module
    docstring), starting from the constrained values `init` (the MAP). The random parameters
    (`program.random`) move; the others stay at their values in `init`.

    `potential({"z": z})` is -log p(z | x) + const (NUTS's `potential_fn`); calling the object
    is a Pyro program with one latent site ``z`` whose log joint is the same (for SVI);
    `constrained(z)` maps z (..., d) back to the program's parameters.
    """

    def __init__(self, program, x, init: dict[str, torch.Tensor], jit_compile: bool = False):
        self.program, self.x, self.jit_compile = program, x, jit_compile
        self.idx = None  # a minibatch of rows of x (minibatch SVI), None for all
        self.fixed = dict(init)
        self.names = list(program.random)
        priors = program.priors(init)
        self.transforms = {k: transform_of(priors[k].support) for k in self.names}
        u = {k: self.transforms[k].inv(init[k]).detach() for k in self.names}
        self.shapes = {k: v.shape for k, v in u.items()}
        flat = torch.cat([u[k].reshape(-1) for k in self.names])
        self.dim = flat.numel()
        self.mu, self.L = flat, torch.eye(self.dim, dtype=flat.dtype, device=flat.device)
        self._jitted = None
        # a mode: found by Newton's method (up to MAX_DENSE parameters), else taken on trust
        self.found_mode = True
        if self.dim <= MAX_DENSE:
            self.mu, self.L, self.found_mode = _laplace(self.potential_u, flat)
        self.dense = not torch.equal(self.L, torch.eye(self.dim, dtype=flat.dtype,
                                                          device=flat.device))

    def whiten(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """z of constrained parameter values (the inverse of `constrained`)."""
        u = torch.cat([self.transforms[k].inv(values[k]).reshape(-1) for k in self.names])
        return torch.linalg.solve_triangular(self.L, (u - self.mu)[:, None], upper=False)[:, 0]

    def __getstate__(self):  # a traced potential stays in its process (MCMC may pickle this)
        return {**self.__dict__, "_jitted": None}

    # -- the potential ----------------------------------------------------------------------------
    def unflatten(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        lead = u.shape[:-1]
        for k in self.names:
            n = self.shapes[k].numel()
            out[k] = u[..., i:i + n].reshape(lead + self.shapes[k])
            i += n
        return out

    def log_joint(self, theta: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p(x, theta): the priors (conditional ones given the values they depend on) plus
        the log-likelihood, discrete latents summed out; with a minibatch (`idx`: rows of x),
        its log-likelihood scaled to the whole data set."""
        x = self.x if self.idx is None else self.x[self.idx]
        ll, lp = self.program.log_joint_terms(x, {**self.fixed, **theta}, prior=True)
        scale = 1.0 if self.idx is None else len(self.x) / len(self.idx)
        return ll.sum() * scale + lp

    def potential_u(self, u: torch.Tensor) -> torch.Tensor:
        """-log p(u | x) + const in the unconstrained space (flat u). Distribution argument checks
        are off here: the data were validated at the boundary and u maps into the supports, so
        the checks would only cost time on every gradient (a third of it on AR(2))."""
        with pyro.validation_enabled(False):
            parts = self.unflatten(u)
            theta = {k: self.transforms[k](v) for k, v in parts.items()}
            log_det = sum(self.transforms[k].log_abs_det_jacobian(parts[k], theta[k]).sum()
                          for k in self.names)
            return -(self.log_joint(theta) + log_det)

    def _potential_z(self, z: torch.Tensor) -> torch.Tensor:
        # Pyro's NUTS draws momenta in torch's default dtype: a float32 posterior is evaluated
        # in its own precision (the gradient flows back through the cast)
        return self.potential_u(self.mu + self.L @ z.to(self.mu.dtype))

    def potential(self, params: dict) -> torch.Tensor:
        z = params["z"]
        if not self.jit_compile:
            return self._potential_z(z)
        if self._jitted is None:  # a program's Python (len(x), constants) is fixed here
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
                self._jitted = torch.jit.trace(self._potential_z,
                                               (z.detach().requires_grad_(),),
                                               check_trace=False)
        return self._jitted(z)

    # -- as a Pyro program, and back to the model's parameters ------------------------------
    def __call__(self):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(self.mu), 1.0).to_event(1))
        # the site's N(0, I) density is taken out again: the log joint is -potential
        pyro.factor("posterior", -self._potential_z(z) - dist.Normal(0.0, 1.0).log_prob(z).sum())

    @torch.no_grad()
    def log_abs_det(self, z: torch.Tensor) -> torch.Tensor:
        """log |det d theta / d z| at draws z (S, d): the affine map's (constant) plus each
        parameter's transform into its support."""
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


def _laplace(f, u: torch.Tensor, newton_steps: int = 20):
    """(mode, L) with L L^T = H^-1 at the mode of f: Newton steps from u with step halving,
    the whitening kept only if they reach the mode (Newton decrement below 1e-8). Otherwise,
    and where the Hessian is not positive definite, (u, identity): a posterior with no mode in
    the unconstrained space (a hierarchical funnel, whose density grows without bound as the
    scale goes to 0) would be whitened at an arbitrary point of its neck, where NUTS freezes
    (measured: centred eight schools, r_hat 1e16); unwhitened, NUTS adapts its mass matrix."""
    eye = torch.eye(len(u), dtype=u.dtype, device=u.device)
    start = u
    value = f(u).detach()
    for _ in range(newton_steps + 1):
        grad = torch.autograd.functional.jacobian(f, u)
        hess = torch.autograd.functional.hessian(f, u)
        chol, info = torch.linalg.cholesky_ex((hess + hess.T) / 2)
        if info != 0 or not torch.isfinite(value) or not torch.isfinite(hess).all():
            return start, eye, False
        step = torch.cholesky_solve(grad[:, None], chol)[:, 0]
        if float(grad @ step) < 1e-8:  # Newton decrement: at the mode
            # H = C C^T, so L = C^-T gives L L^T = (C C^T)^-1
            return u, torch.linalg.solve_triangular(chol.T, eye, upper=True), True
        for _ in range(20):
            new = f(u - step).detach()
            if torch.isfinite(new) and new <= value:
                u, value = (u - step).detach(), new
                break
            step = step / 2
        else:
            break
    return start, eye, False
