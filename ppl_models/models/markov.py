"""Markov chain over the dimensions: p(x) = prod_d p(x_d | the `order` dims before it)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ppl_models import checks
from ppl_models.models.base import Model, dirichlet_concentration, normalise_counts
from ppl_models.models.conjugate import DirichletPosterior


class Markov(Model):
    """Markov chain of order k over the dimensions in raster order:
    p(x) = prod_d p(x_d | x_(d-k), ..., x_(d-1)), the first dims conditioning on all before them.

    Dimension d (1-based) has a table of K^min(d-1, k) rows (one per context) of K probabilities:
    sum_d K^min(d-1, k) (K - 1) free parameters (64 binary dims: order 1 -> 127, 2 -> 251,
    4 -> 975, 8 -> 14,591). All rows are stacked into one parameter ``probs`` of shape (R, K);
    dimension d reads row ``offset[d] + context code``, the code being the previous values as
    base-K digits (x_(d-1) least significant). Default prior: Dirichlet(1, ..., 1) per row
    (Beta(1, 1) for binary data).
    """

    def __init__(self, num_dims: int, order: int = 1, num_categories: int = 2):
        super().__init__()
        self.num_dims = D = checks.positive_int(num_dims, "num_dims")
        self.order = k = checks.positive_int(order, "order")
        self.num_categories = K = checks.positive_int(num_categories, "num_categories", 2)
        if k >= D:
            raise ValueError(
                f"order={k} must be smaller than num_dims={D}: an order-{k} chain "
                f"over {D} dims conditions on dims that do not exist; use "
                f"order <= {D - 1} (order = num_dims - 1 is the full joint)"
            )
        rows = [K ** min(d, k) for d in range(D)]
        self.num_rows = sum(rows)
        if self.num_rows * K > 2**28:
            raise ValueError(
                f"Markov(order={k}, num_categories={K}) needs {self.num_rows * K:,} "
                "table entries, too many to hold; lower the order"
            )
        self.register_buffer("offsets", torch.tensor([0, *rows[:-1]]).cumsum(0), persistent=False)
        self._param(
            "probs",
            torch.full((self.num_rows, K), 1.0 / K, dtype=torch.float64),
            constraints.simplex,
        )

    param_dims = {"probs": ("context", "category")}  # a context: a position and the k before

    @property
    def config(self):
        return {
            "num_dims": self.num_dims,
            "order": self.order,
            "num_categories": self.num_categories,
        }

    @property
    def num_parameters(self) -> int:
        K, k = self.num_categories, self.order
        return sum(K ** min(d, k) * (K - 1) for d in range(self.num_dims))

    @property
    def factorization(self) -> str:
        k = self.order
        ctx = "x_(d-1)" if k == 1 else f"x_(d-{k})..x_(d-1)"
        return f"p(x) = prod_d p(x_d | {ctx})"

    def default_priors(self):
        ones = torch.ones(self.num_rows, self.num_categories, dtype=torch.float64)
        return {"probs": dist.Dirichlet(ones).to_event(1)}

    def validate(self, x):
        return checks.categories(
            x, self.num_categories, num_dims=self.num_dims, what=f"Markov(order={self.order})"
        )

    def _row(self, d: int, previous: list) -> torch.Tensor | int:
        """Row of dim d's table for the context `previous` (values of dims d-1, d-2, ...)."""
        code = sum(v * self.num_categories**j for j, v in enumerate(previous[: self.order]))
        return self.offsets[d] + code

    def forward(self, x=None, num_samples=None):
        x, n = self._data_or_size(x, num_samples)
        probs = self.probs  # (R, K): every conditional table, stacked
        xs = []  # x_1, ..., x_(d-1), newest last
        with pyro.plate("data", n):
            for d in pyro.markov(range(self.num_dims), history=self.order):
                row = self._row(d, xs[::-1])
                x_d = pyro.sample(
                    f"x_{d}", dist.Categorical(probs[row]), obs=None if x is None else x[:, d]
                )
                xs.append(x_d)
        return torch.stack(xs, -1)

    @torch.no_grad()
    def complete(self, prefix: torch.Tensor) -> torch.Tensor:
        """Rows whose first k dims are `prefix` (n, k), dims k+1..D drawn in turn from
        p(x_d | the `order` dims before it): exact, since the chain visits the given dims
        first."""
        probs = self.probs
        xs = list(prefix.T.to(torch.int64))
        for d in range(prefix.shape[1], self.num_dims):
            row = self._row(d, xs[::-1])
            p = probs[row] if torch.is_tensor(row) else probs[row].expand(len(prefix), -1)
            xs.append(torch.multinomial(p, 1)[:, 0])
        return torch.stack(xs, -1)

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) row of the stacked table that each datum uses for each dim (vectorised)."""
        K, codes = self.num_categories, torch.zeros_like(x)
        for j in range(1, min(self.order, x.shape[1]) + 1):  # out of place: a traced
            # potential folds it into a constant (an in-place write is left in the graph)
            codes = codes + torch.nn.functional.pad(x[:, :-j], (j, 0)) * K ** (j - 1)
        return self.offsets + codes

    def _log_prob(self, x):
        return self.probs.log()[self.rows(x), x].sum(-1)  # exact: log 0 = -inf

    def _counts(self, x) -> torch.Tensor:
        K = self.num_categories
        flat = (self.rows(x) * K + x).reshape(-1)
        counts = torch.zeros(self.num_rows * K, dtype=torch.float64, device=x.device)
        return counts.index_add_(
            0, flat, torch.ones(flat.shape, dtype=torch.float64, device=x.device)
        ).reshape(self.num_rows, K)

    def fit_closed_form(self, x, prior):
        counts = self._counts(x)
        if prior:
            conc = dirichlet_concentration(self.priors()["probs"], counts.shape)
            if conc is None:
                return False
            counts = counts + conc - 1
        self.set_params({"probs": normalise_counts(counts)})  # rows with no data: uniform
        return True

    def posterior(self, x):
        prior = self.priors()["probs"]
        conc = dirichlet_concentration(prior, torch.Size([self.num_rows, self.num_categories]))
        if conc is None:
            raise ValueError(
                f"method='exact' needs a Dirichlet prior on probs, got {prior}; use "
                "method='nuts' or 'svi' for other priors"
            )
        return DirichletPosterior(self, {"probs": self._counts(x) + conc})
