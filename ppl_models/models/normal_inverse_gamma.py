"""The exact posterior of an AR(p)'s conditional likelihood under its Normal-Inverse-Gamma
prior (`AutoRegressive.conjugate_prior`), and its Student-t posterior predictive."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from ppl_models.models.conjugate import Posterior


class NormalInverseGammaPosterior(Posterior):
    """The exact posterior of the conditional likelihood under the Normal-Inverse-Gamma prior:
    beta | sigma^2, x ~ N(b, sigma^2 Lambda^-1), sigma^2 | x ~ InverseGamma(a, c), with
    Lambda = Lambda0 + X^T X, b = Lambda^-1 (Lambda0 b0 + X^T y), a = a0 + n / 2,
    c = c0 + (y^T y + b0^T Lambda0 b0 - b^T Lambda b) / 2. Each step's posterior predictive is a
    Student t with 2a degrees of freedom, location z^T b and scale^2 (c / a)(1 + z^T Lambda^-1 z)
    (z: the step's design row)."""

    def __init__(self, model, x: torch.Tensor):
        self.model = model
        b0, L0, a0, c0 = model.conjugate_prior()
        X, y = model.design(x)
        self.precision = L0 + X.T @ X
        self.b = torch.linalg.solve(self.precision, L0 @ b0 + X.T @ y)
        self.a = torch.tensor(a0 + len(y) / 2, dtype=y.dtype, device=y.device)
        self.c = c0 + (y @ y + b0 @ L0 @ b0 - self.b @ self.precision @ self.b) / 2
        self.cov_chol = torch.linalg.cholesky(
            torch.cholesky_inverse(torch.linalg.cholesky(self.precision))
        )

    def sample(self, num_samples):
        sigma2 = 1 / dist.Gamma(self.a, self.c).sample((num_samples,))
        eps = torch.randn(num_samples, len(self.b), dtype=self.b.dtype, device=self.b.device)
        beta = self.b + sigma2.sqrt()[:, None] * eps @ self.cov_chol.T
        return {**self.model.split(beta), "sigma": sigma2.sqrt()}

    def mean(self):
        # E[sigma] for sigma^2 ~ InverseGamma(a, c): sqrt(c) Gamma(a - 1/2) / Gamma(a)
        e_sigma = self.c.sqrt() * torch.exp(torch.lgamma(self.a - 0.5) - torch.lgamma(self.a))
        return {**self.model.split(self.b.clone()), "sigma": e_sigma}

    def log_predictive(self, x):
        X, y = self.model.design(x)
        spread = 1 + (X @ self.cov_chol).pow(2).sum(-1)  # 1 + z^T Lambda^-1 z
        scale = (self.c / self.a * spread).sqrt()
        return dist.StudentT(2 * self.a, X @ self.b, scale).log_prob(y)

    def sample_predictive(self, num_samples):
        theta = self.sample(1)
        point = self.model.point().set_params({k: v[0] for k, v in theta.items()})
        return point(num_samples=num_samples)

    def log_likelihood(self, x, draws):
        return self.model.log_likelihood(x, draws)
