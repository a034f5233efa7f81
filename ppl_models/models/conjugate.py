"""Exact conjugate posteriors: draws of the parameters and the exact posterior predictive."""

from __future__ import annotations

import torch
from torch.distributions import Dirichlet


class Posterior:
    """What `inference.fit(..., method="exact")` needs from a model's conjugate posterior."""

    def sample(self, num_samples: int) -> dict[str, torch.Tensor]:
        """`num_samples` exact draws of every parameter (leading dim: the draw)."""
        raise NotImplementedError

    def mean(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def log_predictive(self, x: torch.Tensor) -> torch.Tensor:
        """Exact posterior predictive log-density of each datum of validated `x`, shape (N,)."""
        raise NotImplementedError

    def sample_predictive(self, num_samples: int) -> torch.Tensor:
        raise NotImplementedError

    def log_likelihood(self, x: torch.Tensor, draws: dict) -> torch.Tensor:
        """(chain, draw, N) pointwise log-likelihood of `x` under `draws`."""
        raise NotImplementedError


class DirichletPosterior(Posterior):
    """Independent Dirichlet posteriors over categorical tables (Beta for a Bernoulli `probs`).

    For these models every datum uses each table row at most once, so the posterior predictive is
    the same model with every probability at its posterior mean: `predictive` is that model.
    """

    def __init__(self, model, concentration: dict[str, torch.Tensor], bernoulli=()):
        self.model = model
        self.concentration = concentration  # name -> (..., K) posterior concentration
        self.bernoulli = set(bernoulli)  # names whose parameter is P(first outcome), a Beta
        self.predictive = model.point().set_params(self.mean())

    def _first(self, name, value):
        """P(first outcome) for a Bernoulli `probs`, in the model's dtype."""
        value = value.to(self.model.dtype)
        return value[..., 0] if name in self.bernoulli else value

    def sample(self, num_samples):
        return {
            k: self._first(k, Dirichlet(c).sample((num_samples,)))
            for k, c in self.concentration.items()
        }

    def mean(self):
        return {
            k: self._first(k, c / c.sum(-1, keepdim=True)) for k, c in self.concentration.items()
        }

    def log_predictive(self, x):
        return self.predictive.log_prob(x)

    def sample_predictive(self, num_samples):
        return self.predictive(num_samples=num_samples)

    def log_likelihood(self, x, draws):
        return self.model.log_likelihood(x, draws)
