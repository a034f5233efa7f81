"""Stationary AR coefficients through partial autocorrelations (Barndorff-Nielsen & Schou 1973,
Monahan 1984).

AR(p) coefficients phi are stationary (every root of 1 - phi_1 z - ... - phi_p z^p lies outside
the unit circle) exactly when the partial autocorrelations r_1..r_p all lie in (-1, 1). The
Durbin-Levinson recursion maps one to the other:

    phi^(1) = (r_1),   phi^(k)_j = phi^(k-1)_j - r_k phi^(k-1)_(k-j)  (j < k),   phi^(k)_k = r_k,

and phi = phi^(p). Its intermediate coefficients phi^(k) are the best linear predictors of x_t
from the k values before it under the stationary distribution, with error variance
gamma_0 prod_(j<=k) (1 - r_j^2): what the exact Gaussian likelihood of the first p values needs.

`stationary` is the constraint; `biject_to(stationary)` is tanh (R^p -> (-1, 1)^p) followed by
`PacfToPhi`, so a `PyroParam` or a prior with this support lives in the stationary region.
"""

from __future__ import annotations

import torch
from torch.distributions import constraints
from torch.distributions.constraint_registry import biject_to, transform_to
from torch.distributions.transforms import ComposeTransform, IndependentTransform, TanhTransform


def pacf_to_phi(r: torch.Tensor) -> torch.Tensor:
    """AR coefficients (..., p) from partial autocorrelations (..., p) (Durbin-Levinson)."""
    phi = r[..., :1]
    for k in range(1, r.shape[-1]):
        r_k = r[..., k : k + 1]
        phi = torch.cat([phi - r_k * phi.flip(-1), r_k], -1)
    return phi


def levinson(phi: torch.Tensor):
    """The Durbin-Levinson recursion run backwards from phi (..., p).

    Returns (r, coefs, ok): partial autocorrelations r (..., p); coefs[k] = phi^(k) (..., k) for
    k = 0..p (coefs[p] is phi); ok (...) True where phi is stationary. Where it is not, r and the
    coefficients are replaced by zeros (no NaN, zero gradient), so callers mask with `ok`.
    """
    p = phi.shape[-1]
    ok = torch.ones(phi.shape[:-1], dtype=torch.bool, device=phi.device)
    coefs, rs, a = [phi], [], phi
    for _ in range(p):  # orders p, p - 1, ..., 1
        ok = ok & (a[..., -1].abs() < 1)
        a = torch.where(ok[..., None], a, torch.zeros_like(a))
        r_k = a[..., -1:]
        rs.append(r_k[..., 0])
        a = (a[..., :-1] + r_k * a[..., :-1].flip(-1)) / (1 - r_k**2)
        coefs.append(a)
    r = torch.stack(rs[::-1], -1) if rs else phi
    return r, coefs[::-1], ok


def is_stationary(phi: torch.Tensor) -> torch.Tensor:
    """(...) True where the AR coefficients phi (..., p) are stationary."""
    return levinson(phi)[2]


class _Stationary(constraints.Constraint):
    """Stationary AR coefficients: a vector (event_dim 1) whose partial autocorrelations all lie
    in (-1, 1)."""

    event_dim = 1

    def check(self, value):
        return is_stationary(value)

    def __repr__(self):
        return "stationary"


stationary = _Stationary()


class PacfToPhi(torch.distributions.Transform):
    """(-1, 1)^p -> stationary AR coefficients, the Durbin-Levinson recursion.

    Each step (phi^(k-1), r_k) -> phi^(k) is block triangular with the block I - r_k J (J reverses
    k - 1 entries; its eigenvalues are +1 ceil((k-1)/2) times and -1 floor((k-1)/2) times), so
    log |det| = sum_k ceil((k-1)/2) log(1 - r_k) + floor((k-1)/2) log(1 + r_k).
    """

    domain = constraints.independent(constraints.interval(-1.0, 1.0), 1)
    codomain = stationary
    bijective = True

    def __eq__(self, other):
        return isinstance(other, PacfToPhi)

    def _call(self, r):
        return pacf_to_phi(r)

    def _inverse(self, phi):
        r, _, ok = levinson(phi)
        if not bool(ok.all()):
            raise ValueError(
                f"phi = {phi.tolist()} is not stationary (a root of the "
                "characteristic polynomial lies on or inside the unit circle), so "
                "it is outside this parameter's stationary region"
            )
        return r

    def log_abs_det_jacobian(self, r, phi):
        k = torch.arange(1, r.shape[-1] + 1, dtype=r.dtype, device=r.device)
        plus, minus = torch.ceil((k - 1) / 2), torch.floor((k - 1) / 2)
        return (plus * torch.log1p(-r) + minus * torch.log1p(r)).sum(-1)


def _to_stationary(constraint):
    return ComposeTransform([IndependentTransform(TanhTransform(), 1), PacfToPhi()])


biject_to.register(_Stationary, _to_stationary)
transform_to.register(_Stationary, _to_stationary)
