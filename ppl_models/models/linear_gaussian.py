"""Linear-Gaussian autoregression over the dimensions of a vector; order D - 1 is the
full-covariance Gaussian (its Cholesky factorization, one regression per dimension)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ppl_models import checks
from ppl_models.models.base import Model


class LinearGaussian(Model):
    """Linear-Gaussian autoregression over the dimensions, in order:
    x_d = b_d + sum_{j=1..min(d-1, k)} W[d, j] x_(d-j) + sigma_d eps_d,  eps_d ~ N(0, 1).

    With the default ``order=None`` (k = D - 1) every dimension regresses on all before it, which
    is exactly a full-covariance Gaussian N(mu, Sigma): D (D + 3) / 2 free parameters. In general
    2 D + sum_d min(d - 1, k). ``W`` has shape (D, k), column j - 1 holding the lag-j
    coefficients; entries with d - j < 1 are unused (held at 0, not counted).
    Default priors: b ~ Normal(0, 10), W ~ Normal(0, 1), sigma ~ LogNormal(0, 2).
    """

    def __init__(self, num_dims: int, order: int | None = None):
        super().__init__()
        self.num_dims = D = checks.positive_int(num_dims, "num_dims", 2)
        k = D - 1 if order is None else checks.positive_int(order, "order")
        if k >= D:
            raise ValueError(
                f"order={k} must be smaller than num_dims={D}; order=None (= D - 1) "
                "is the full-covariance Gaussian"
            )
        self.order = k
        d, j = torch.arange(D)[:, None], torch.arange(1, k + 1)[None, :]
        self.register_buffer("used", (d - j >= 0), persistent=False)  # (D, k)
        f64 = torch.float64
        self._param("b", torch.zeros(D, dtype=f64), constraints.real)
        self._param("W", torch.zeros(D, k, dtype=f64), constraints.real)
        self._param("sigma", torch.ones(D, dtype=f64), constraints.positive)

    param_dims = {"b": ("dim",), "W": ("dim", "lag"), "sigma": ("dim",)}

    @property
    def config(self):
        return {
            "num_dims": self.num_dims,
            "order": None if self.order == self.num_dims - 1 else self.order,
        }

    @property
    def num_parameters(self) -> int:
        return 2 * self.num_dims + int(self.used.sum())

    @property
    def factorization(self) -> str:
        k = "d-1" if self.order == self.num_dims - 1 else str(self.order)
        return f"p(x) = prod_d N(x_d | b_d + sum_(j<={k}) W_dj x_(d-j), sigma_d^2)"

    def default_priors(self):
        D, k, f64 = self.num_dims, self.order, torch.float64
        return {
            "b": dist.Normal(torch.zeros(D, dtype=f64), 10.0).to_event(1),
            "W": dist.Normal(torch.zeros(D, k, dtype=f64), 1.0).to_event(2),
            "sigma": dist.LogNormal(torch.zeros(D, dtype=f64), 2.0).to_event(1),
        }

    def validate(self, x):
        return checks.real(x, num_dims=self.num_dims, what="LinearGaussian", dtype=self.dtype)

    def forward(self, x=None, num_samples=None):
        x, n = self._data_or_size(x, num_samples)
        b, W, sigma = self.b, self.W, self.sigma
        xs = []  # x_1, ..., x_(d-1)
        with pyro.plate("data", n):
            for d in range(self.num_dims):
                lags = xs[::-1][: self.order]  # x_(d-1), x_(d-2), ...
                mean = b[d] + sum(W[d, j] * lag for j, lag in enumerate(lags))
                x_d = pyro.sample(
                    f"x_{d}", dist.Normal(mean, sigma[d]), obs=None if x is None else x[:, d]
                )
                xs.append(x_d)
        return torch.stack(xs, -1)

    def lag_matrix(self, W: torch.Tensor | None = None) -> torch.Tensor:
        """(D, D) strictly lower-triangular A with A[d, d - j] = W[d, j - 1]: mean = b + x A^T."""
        W = self.W if W is None else W
        D = self.num_dims
        d, j = torch.nonzero(self.used, as_tuple=True)  # j: column, i.e. lag j + 1
        return torch.zeros(D, D, dtype=W.dtype, device=W.device).index_put((d, d - j - 1), W[d, j])

    def _log_prob(self, x):
        mean = self.b + x.to(self.b.dtype) @ self.lag_matrix().T
        return dist.Normal(mean, self.sigma).log_prob(x).sum(-1)

    def fit_closed_form(self, x, prior):
        """MLE: one least-squares regression per dimension (sigma^2 = RSS / N)."""
        if prior:
            return False
        x = x.to(torch.float64)
        N, D = x.shape
        b, W, sigma = (
            torch.zeros(D, dtype=x.dtype),
            torch.zeros(D, self.order, dtype=x.dtype),
            torch.zeros(D, dtype=x.dtype),
        )
        for d in range(D):
            p = min(d, self.order)
            design = torch.cat(
                [torch.ones(N, 1, dtype=x.dtype), x[:, d - p : d].flip(-1)], 1
            )  # [1, x_(d-1), ..., x_(d-p)]
            coef = torch.linalg.lstsq(design, x[:, d : d + 1]).solution[:, 0]
            resid = x[:, d] - design @ coef
            b[d], W[d, :p] = coef[0], coef[1:]
            sigma[d] = resid.pow(2).mean().sqrt()
        checks.no_zero_scale(
            sigma,
            "LinearGaussian",
            "residual standard deviation (the dim is "
            "constant, or exactly a linear function of the dims before it)",
        )
        self.set_params({"b": b, "W": W, "sigma": sigma})
        return True
