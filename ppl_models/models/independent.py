"""Independence: p(x) = prod_d p(x_d)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ppl_models import checks
from ppl_models.models.base import Model, dirichlet_concentration, normalise_counts
from ppl_models.models.conjugate import DirichletPosterior

FAMILIES = ("bernoulli", "categorical", "normal")


class Independent(Model):
    """Independence over dimensions: p(x) = prod_d p(x_d).

    - ``family="bernoulli"``: x_d ~ Bernoulli(probs_d); D free parameters;
      default prior probs_d ~ Beta(1, 1).
    - ``family="categorical"``: x_d ~ Categorical(probs_d), probs of shape (D, K);
      D (K - 1) free parameters; default prior probs_d ~ Dirichlet(1, ..., 1).
    - ``family="normal"``: x_d ~ Normal(loc_d, scale_d); 2 D free parameters;
      default priors loc_d ~ Normal(0, 10), scale_d ~ LogNormal(0, 2) (data on a unit scale).
    """

    def __init__(self, num_dims: int, family: str = "bernoulli", num_categories: int | None = None):
        super().__init__()
        self.num_dims = D = checks.positive_int(num_dims, "num_dims")
        self.family = checks.one_of(family, FAMILIES, "family")
        if family == "categorical":
            if num_categories is None:
                raise ValueError(
                    "family='categorical' needs num_categories (the number of "
                    "values each dimension takes)"
                )
            self.num_categories = checks.positive_int(num_categories, "num_categories", 2)
        elif num_categories not in (None, 2 if family == "bernoulli" else None):
            raise ValueError(f"num_categories applies to family='categorical', not {family!r}")
        else:
            self.num_categories = 2 if family == "bernoulli" else None
        f64 = torch.float64
        if family == "bernoulli":
            self._param("probs", torch.full((D,), 0.5, dtype=f64), constraints.unit_interval)
        elif family == "categorical":
            K = self.num_categories
            self._param("probs", torch.full((D, K), 1.0 / K, dtype=f64), constraints.simplex)
        else:
            self._param("loc", torch.zeros(D, dtype=f64), constraints.real)
            self._param("scale", torch.ones(D, dtype=f64), constraints.positive)

    @property
    def param_dims(self) -> dict:
        if self.family == "categorical":
            return {"probs": ("dim", "category")}
        return {"probs": ("dim",), "loc": ("dim",), "scale": ("dim",)}

    @property
    def config(self):
        return {
            "num_dims": self.num_dims,
            "family": self.family,
            "num_categories": self.num_categories if self.family == "categorical" else None,
        }

    @property
    def num_parameters(self) -> int:
        D = self.num_dims
        return {
            "bernoulli": D,
            "categorical": D * ((self.num_categories or 2) - 1),
            "normal": 2 * D,
        }[self.family]

    @property
    def factorization(self) -> str:
        f = {
            "bernoulli": "Bernoulli(x_d | probs_d)",
            "categorical": "Categorical(x_d | probs_d)",
            "normal": "Normal(x_d | loc_d, scale_d)",
        }[self.family]
        return f"p(x) = prod_d {f}"

    def default_priors(self):
        D, f64 = self.num_dims, torch.float64
        if self.family == "bernoulli":
            return {
                "probs": dist.Beta(torch.ones(D, dtype=f64), torch.ones(D, dtype=f64)).to_event(1)
            }
        if self.family == "categorical":
            return {
                "probs": dist.Dirichlet(torch.ones(D, self.num_categories, dtype=f64)).to_event(1)
            }
        return {
            "loc": dist.Normal(torch.zeros(D, dtype=f64), 10.0).to_event(1),
            "scale": dist.LogNormal(torch.zeros(D, dtype=f64), 2.0).to_event(1),
        }

    def validate(self, x):
        what = f"Independent(family={self.family!r})"
        if self.family == "bernoulli":
            return checks.binary(x, num_dims=self.num_dims, what=what, dtype=self.dtype)
        if self.family == "categorical":
            return checks.categories(x, self.num_categories, num_dims=self.num_dims, what=what)
        return checks.real(x, num_dims=self.num_dims, what=what, dtype=self.dtype)

    def _dist(self):
        if self.family == "bernoulli":
            return dist.Bernoulli(probs=self.probs)
        if self.family == "categorical":
            return dist.Categorical(probs=self.probs)
        return dist.Normal(self.loc, self.scale)

    def forward(self, x=None, num_samples=None):
        x, n = self._data_or_size(x, num_samples)
        p = self._dist()  # p(x_d) for every d; its parameters are global (outside the plates)
        with pyro.plate("dims", self.num_dims, dim=-1), pyro.plate("data", n, dim=-2):
            return pyro.sample("x", p, obs=x)  # one factor p(x_d) per dimension

    @torch.no_grad()
    def complete(self, prefix: torch.Tensor) -> torch.Tensor:
        """Rows whose first k dims are `prefix` (n, k), the rest drawn from p(x_(k+1..D)):
        under independence the given dims say nothing about the others."""
        with pyro.poutine.block():
            out = self(num_samples=len(prefix))
        out[:, : prefix.shape[1]] = prefix.to(out.dtype)
        return out

    def _log_prob(self, x):
        # Exact at the boundary (torch clamps probabilities away from 0): a zero-probability
        # datum gets -inf, never a large finite number.
        if self.family == "bernoulli":
            p = self.probs
            return torch.where(x.bool(), p.log(), torch.log1p(-p)).sum(-1)
        if self.family == "categorical":
            return self.probs.log()[torch.arange(self.num_dims, device=x.device), x].sum(-1)
        return self._dist().log_prob(x).sum(-1)

    # -- closed forms ---------------------------------------------------------------------------
    def _counts(self, x) -> torch.Tensor:
        """(D, K) counts; for Bernoulli the columns are [ones, zeros] (Beta's order)."""
        if self.family == "bernoulli":
            ones = x.sum(0)
            return torch.stack([ones, x.shape[0] - ones], -1)
        D, K = self.num_dims, self.num_categories
        flat = (x + torch.arange(D, device=x.device) * K).reshape(-1)
        return torch.bincount(flat, minlength=D * K).reshape(D, K).to(torch.float64)

    def _concentration(self):
        prior = self.priors()["probs"]
        c = dirichlet_concentration(prior, torch.Size([self.num_dims, self.num_categories]))
        return c, prior

    def fit_closed_form(self, x, prior):
        if self.family == "normal":
            if prior:
                return False
            scale = x.std(0, correction=0)
            checks.no_zero_scale(scale, "Independent(family='normal')", "standard deviation")
            self.set_params({"loc": x.mean(0), "scale": scale})
            return True
        counts = self._counts(x)
        if prior:
            conc, _ = self._concentration()
            if conc is None:
                return False
            counts = counts + conc - 1
        probs = normalise_counts(counts)
        self.set_params({"probs": probs[..., 0] if self.family == "bernoulli" else probs})
        return True

    def posterior(self, x):
        if self.family == "normal":
            return super().posterior(x)
        conc, prior = self._concentration()
        if conc is None:
            raise ValueError(
                f"method='exact' needs a Beta/Dirichlet prior on probs, got {prior}; "
                "use method='nuts' or 'svi' for other priors"
            )
        bern = ("probs",) if self.family == "bernoulli" else ()
        return DirichletPosterior(self, {"probs": self._counts(x) + conc}, bernoulli=bern)
