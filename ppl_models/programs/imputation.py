"""Programs that impute missing values: densities of the data and point estimates with the
imputed values integrated.

A program that imputes missing data samples them as latents: Pyro's ``y_unobserved`` beside an
observation with ``obs_mask``; a latent vector the program puts into the observed series
(NumPyro's idiom, or on data with NaN); a latent step named like the observed ones
(``obs=None`` where a value is missing). Conditioning on them (a posterior draw's, or a point
fit's imputed values) is right for a draw's pointwise log-likelihood (ArviZ's convention), but a
density of the *data* must integrate them:

    log p(x_obs | theta) = log integral p(x_obs, z | theta) dz,

which `marginal_log_prob` estimates at each parameter draw by importance sampling from the
Laplace approximation at the conditional mode of z (exact when z is Gaussian given theta, as in
a Gaussian AR with gaps, where it equals the Kalman filter's likelihood).

`marginal_point` maximises the same integral (by its Laplace approximation) over the parameters:
MLE and MAP of the observed values, not a joint mode over parameters and imputed values.

Per datum: the data whose terms do not involve z keep their own terms; the integrated rest
(log p(x_obs | theta) minus those) is shared equally by the data whose terms involve z (the
entries are a split of the total, which is exact). Entries whose observed value *is* an imputed
value are no data and are left out (N counts the observed values).
"""

from __future__ import annotations

import math
import re

import pyro
import torch
from pyro import poutine
from torch.distributions import biject_to

from ppl_models.modes import closure_of, minimum
from ppl_models.programs.densities import LogMeanExp
from ppl_models.programs.roles import skip, transform_of

IMPUTE_DRAWS = 100  # posterior draws the held-out density integrates at (thinned evenly)
IMPORTANCE_BUDGET = 4096  # importance draws over all parameter draws
IMPORTANCE_MAX = 256  # importance draws at one parameter value
NEWTON_TOL = 1e-14  # Newton decrement at a mode: the last draw's mode, close, still steps
PROPOSAL_DF = 4  # the Student-t proposal's degrees of freedom where z is not Gaussian


def imputed_latents(program) -> list[str]:
    """The latents that impute missing values in the data the program was discovered on: those
    `imputing` names in its trace, and the global latents it puts into an observed value (some
    values of an observed site become NaN when the latent is NaN, not all: a parameter moves
    every value or none)."""
    part, args = program.discovery_data()
    base = _nan_values(program, part, program.values, args)
    if base is None:  # the program does not run at its own values: nothing to read
        return []
    found = imputing(program, base[1], program.values, known=())
    for name in program.roles.named("global"):
        if name in found or not program.values[name].is_floating_point():
            continue
        values = {**program.values, name: torch.full_like(program.values[name], math.nan)}
        probe = _nan_values(program, part, values, args)
        for k, nan in (probe[0] if probe else {}).items():
            old = base[0].get(k, torch.zeros_like(nan))
            if (nan & ~old).any() and not (nan | old).all():
                found.append(name)
                break
    return found


def _nan_values(program, x, values, args):
    """(observed site -> where its value is NaN, the trace) of one run at `values` (None if
    it fails)."""
    try:
        with torch.no_grad(), poutine.block(), pyro.validation_enabled(False):
            tr = program.trace(x=x, values=values, enumerate_=False, args=args)
    except Exception:  # a program that cannot run on NaN has no latent in its data
        return None
    nan = {
        k: torch.isnan(s["value"])
        for k, s in tr.nodes.items()
        if not skip(s)
        and s["is_observed"]
        and k not in values
        and torch.is_tensor(s["value"])
        and s["value"].is_floating_point()
        and s["value"].numel()
    }
    return nan, tr


def imputing(program, tr, conditioned, known=None) -> list[str]:
    """The sites of trace `tr` (run with the values `conditioned`) that impute missing values
    (see the module docstring); `known`: names found before (default `program.imputed`)."""
    known = set(program.imputed if known is None else known)
    observed = {
        k: s["value"].shape
        for k, s in tr.nodes.items()
        if not skip(s) and s["is_observed"] and k not in conditioned
    }
    out = []
    for name, site in tr.nodes.items():
        if skip(site) or name in observed or site["fn"].support.is_discrete:
            continue
        pyro_pair = _pyro_unobserved(tr, name)
        if pyro_pair is False:
            continue
        if pyro_pair or name in known or _named_like(name, site, observed):
            out.append(name)
    return out


def _pyro_unobserved(tr, name) -> bool | None:
    """Pyro's latent beside an observation with ``obs_mask``: True where it imputes a value,
    False where the mask keeps every value (no density), None for any other site."""
    if not name.endswith("_unobserved") or name[: -len("unobserved")] + "observed" not in tr:
        return None
    mask = tr.nodes[name]["mask"]
    return not (mask is False or (torch.is_tensor(mask) and not bool(mask.any())))


def _named_like(name, site, observed) -> bool:
    """``y_7`` drawn where ``y_6`` and ``y_8`` are observed: a step of the series left missing."""
    m = re.fullmatch(r"(.*?)(\d+)", name)
    if m is None:
        return False
    pattern = re.compile(re.escape(m.group(1)) + r"\d+")
    shape = site["value"].shape
    return any(pattern.fullmatch(k) and s == shape for k, s in observed.items())


@torch.no_grad()
def marginal_log_prob(program, x, draws=None, particles: int | None = None, args=None):
    """(log p(x_i) over the observed values (N,), its standard error (N,), importance draws per
    datum): the imputed values integrated at each parameter draw (draws: name -> (chain, draw,
    ...), thinned to IMPUTE_DRAWS; None: the program's values). None when the program imputes
    nothing in `x`. Seeded: the same call gives the same number."""
    args = program.args if args is None else args
    start = {k: v for k, v in program.values.items() if k not in set(program.imputed)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        integral = Integral(program, x, start, args)
        if not integral.names:
            return None
        flat = {
            k: v.reshape(-1, *v.shape[2:])
            for k, v in (draws or {}).items()
            if k not in integral.names and k not in set(program.imputed)
        }
        S = next(iter(flat.values())).shape[0] if flat else 1
        keep = torch.linspace(0, S - 1, min(S, IMPUTE_DRAWS)).round().long().unique().tolist()
        K = particles or max(16, min(IMPORTANCE_MAX, IMPORTANCE_BUDGET // len(keep)))
        acc = LogMeanExp()
        for s in keep:
            lp, se = integral.per_datum({**start, **{k: v[s] for k, v in flat.items()}}, K)
            acc.add(lp[None])
    if len(keep) > 1:
        return (*acc.result(), len(keep) * K)
    return lp, se, K


def marginal_point(program, x, prior: bool) -> dict | None:
    """The parameters where the likelihood of the observed values (with `prior`, times the
    prior) is largest, the imputed values integrated by the Laplace approximation at their
    conditional mode (exact where they are Gaussian given the parameters, as in a Gaussian AR
    with gaps: the Kalman filter's maximum); searched by L-BFGS from `program.values` (a joint
    mode), the imputed values then at their conditional mode. None where the program imputes
    nothing in `x`."""
    start = {k: v for k, v in program.values.items() if k not in set(program.imputed)}
    integral = Integral(program, x, start, program.args)
    if not integral.names:
        return None
    out = set(integral.names) | set(program.imputed)
    names = [k for k in program.roles.free if k not in out]
    supports = program.supports(start)
    supports.update({k: program.roles.sites[k].constraint for k in names if k not in supports})
    transforms = {k: transform_of(supports[k]) for k in names}
    us = {k: transforms[k].inv(start[k]).detach().clone().requires_grad_(True) for k in names}

    def theta():
        return {**start, **{k: transforms[k](u) for k, u in us.items()}}

    opt = torch.optim.LBFGS(
        list(us.values()),
        max_iter=200,
        tolerance_grad=1e-9,
        tolerance_change=1e-13,
        line_search_fn="strong_wolfe",
    )

    def loss():
        at = theta()
        value = integral.laplace(at)
        if prior:
            for k, p in program.priors(at).items():
                value = value + (p.log_prob(at[k]).sum() if k in us else 0.0)
        return -value

    with torch.enable_grad():
        opt.step(closure_of(opt, loss))
    with torch.no_grad():
        at = {k: v.detach() for k, v in theta().items()}
    u_hat, _ = integral.mode(at, integral.last)
    return {**at, **{k: v.detach() for k, v in integral.unflatten(u_hat)[0].items()}}


class Integral:
    """log integral p(x, z | theta) dz over the imputed values z of `x`, at any theta."""

    def __init__(self, program, x, values, args):
        self.program, self.x, self.args = program, x, args
        with torch.no_grad(), poutine.block(), pyro.validation_enabled(False):
            tr = program.trace(x=x, values=values, enumerate_=False, args=args)
        self.names = imputing(program, tr, values)
        self.start = {k: tr.nodes[k]["value"].detach() for k in self.names}
        self.transforms = {k: biject_to(tr.nodes[k]["fn"].support) for k in self.names}
        self.sizes = [v.numel() for v in self.start.values()]
        self.entries = None  # (touched, imputed) masks over the pointwise entries
        self.last = None  # the last mode (unconstrained): the next draw's start
        self.generator = None  # importance draws' (seeded on the values' device)

    def unflatten(self, u):
        z, logdet = {}, u.new_zeros(())
        for (k, v), part in zip(self.start.items(), u.split(self.sizes)):
            t = self.transforms[k]
            ru = part.reshape(v.shape)
            z[k] = t(ru)
            logdet = logdet + t.log_abs_det_jacobian(ru, z[k]).sum()
        return z, logdet

    def _terms(self, theta, z):
        """(pointwise entries, log density of the imputed sites) at theta and z."""
        values = {**theta, **z}
        with poutine.block(), pyro.validation_enabled(False):
            tr = self.program.trace(x=self.x, values=values, args=self.args)
            tr.compute_log_prob()
        ll = self.program.trace_pointwise(tr, values)
        lz = ll.new_zeros(())
        for k in self.names:
            lz = lz + tr.nodes[k]["log_prob_sum"]
        return ll, lz, tr

    def log_joint(self, theta, u):
        z, logdet = self.unflatten(u)
        ll, lz, _ = self._terms(theta, z)
        return ll.sum() + lz + logdet

    def laplace(self, theta):
        """log integral p(x, z | theta) dz by the Laplace approximation, differentiable in
        theta: the mode's own movement drops out of the first term (it is a maximum); the
        curvature's dependence through the mode is left out (none where z is Gaussian)."""
        fixed = {k: v.detach() for k, v in theta.items()}
        if self.last is None:
            self.last = self.u0()
        u_hat, _ = self.mode(fixed, self.last)
        self.last = u_hat

        def f(u):
            return self.log_joint(theta, u)

        H = -torch.autograd.functional.hessian(f, u_hat, create_graph=True)
        d = u_hat.numel()
        return f(u_hat) + 0.5 * d * math.log(2 * math.pi) - 0.5 * torch.logdet(H)

    def u0(self):
        """The imputed values' start (unconstrained, flat)."""
        return torch.cat([self.transforms[k].inv(v).reshape(-1) for k, v in self.start.items()])

    def mode(self, theta, u0):
        """The conditional mode of z (unconstrained) and the Cholesky factor of the negative
        Hessian there (`ppl_models.modes.minimum`; the last draw's mode is the next one's
        start, one Newton step where z is Gaussian given theta)."""
        with torch.enable_grad():
            found = minimum(lambda u: -self.log_joint(theta, u), u0, tol=NEWTON_TOL)
        if found is None:
            raise ValueError(
                f"the imputed values {', '.join(self.names)} have no conditional mode with a "
                "positive-definite curvature at these parameters, so their integral (the "
                "density of these data) cannot be approximated here: score data without gaps "
                "there, or read fit.pointwise_log_likelihood(x) (conditional on the imputed "
                "values)"
            )
        return found

    def per_datum(self, theta, K: int):
        """(log-density of each observed value, its standard error) at theta (see the module
        docstring), K importance draws from the Laplace approximation."""
        if self.last is None:
            self.last = self.u0()
        u_hat, L = self.mode(theta, self.last)
        self.last = u_hat
        acc, drawn, df = LogMeanExp(), 0, None
        while drawn < K:  # 4 Gaussian draws, then (not all equal) batches of 16 Student-t
            log_w = self._weights(theta, u_hat, L, min(4 if df is None else 16, K - drawn), df)
            if df is None and float(log_w.max() - log_w.min()) < 1e-9 * (
                1 + float(log_w.abs().max())
            ):  # weights all equal: z is Gaussian given theta, the Laplace integral is exact
                acc.add(log_w[:, None])
                break
            if df is None:  # else heavier tails than the Gaussian's: a Student-t proposal
                df = PROPOSAL_DF
                continue
            acc.add(log_w[:, None])
            drawn += len(log_w)
        log_z, se = (t[0] for t in acc.result())
        z, _ = self.unflatten(u_hat)
        ll, _, tr = self._terms(theta, z)
        touched, imputed = self._entries(theta, z, tr)
        data = ~imputed
        rest = log_z - ll[~touched].sum()
        share = touched & data
        m = int(share.sum())
        out = torch.where(share, rest / max(m, 1), ll)[data]
        se_out = torch.where(share, se / math.sqrt(max(m, 1)), torch.zeros_like(ll))[data]
        return out, se_out

    def _randn(self, *shape):
        u = self.last
        if self.generator is None:
            self.generator = torch.Generator(device=u.device).manual_seed(0)
        return torch.randn(*shape, dtype=u.dtype, device=u.device, generator=self.generator)

    def _weights(self, theta, u_hat, L, k: int, df: int | None):
        """log p(x, z_j | theta) - log q(z_j) at k draws from the Laplace approximation
        (mean u_hat, precision L L^T): Gaussian, or multivariate Student-t with `df`."""
        d = u_hat.numel()
        eps = self._randn(k, d)
        log_det = L.diagonal().log().sum()
        if df is None:
            scale = torch.ones(k, dtype=u_hat.dtype, device=u_hat.device)
            log_q = log_det - 0.5 * (d * math.log(2 * math.pi) + (eps**2).sum(-1))
        else:  # a chi-square(df) draw as a sum of df squared normals (seeded)
            scale = ((self._randn(k, df) ** 2).sum(-1) / df).rsqrt()
            r2 = (eps**2).sum(-1) * scale**2
            log_q = (
                log_det
                + math.lgamma((df + d) / 2)
                - math.lgamma(df / 2)
                - 0.5 * d * math.log(df * math.pi)
                - 0.5 * (df + d) * torch.log1p(r2 / df)
            )
        us = u_hat + scale[:, None] * torch.linalg.solve_triangular(L.T, eps.T, upper=True).T
        return torch.stack([self.log_joint(theta, v) for v in us]) - log_q

    def _entries(self, theta, z, clean):
        """Pointwise entries whose terms involve z (NaN when z is NaN), and those whose observed
        value is an imputed value (NaN when only the observed values take z's NaN)."""
        if self.entries is None:
            nan = {k: torch.full_like(v, math.nan) for k, v in z.items()}
            values = {**theta, **nan}
            with poutine.block(), pyro.validation_enabled(False):
                probe = self.program.trace(x=self.x, values=values, args=self.args)
                probe.compute_log_prob()
                touched = torch.isnan(self.program.trace_pointwise(probe, values))
                mixed = clean.copy()
                for k, s in clean.nodes.items():
                    if s["type"] == "sample" and s["is_observed"] and k in probe.nodes:
                        node = {
                            key: v
                            for key, v in s.items()
                            if key not in ("log_prob", "log_prob_sum", "unscaled_log_prob")
                        }
                        node["value"] = probe.nodes[k]["value"]
                        mixed.nodes[k] = node
                mixed.compute_log_prob()
                imputed = torch.isnan(self.program.trace_pointwise(mixed, {**theta, **z}))
            self.entries = (touched | imputed, imputed)
        return self.entries


__all__ = [
    "IMPUTE_DRAWS",
    "Integral",
    "imputed_latents",
    "imputing",
    "marginal_log_prob",
    "marginal_point",
]
