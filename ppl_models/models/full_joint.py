"""Full joint: one categorical over every configuration, p(x) = probs[x]."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ppl_models import checks
from ppl_models.models.base import NO_INTERIOR_MAP, Model, normalise_counts
from ppl_models.models.conjugate import Posterior

DENSE_LIMIT = 2**24  # cells a dense table may hold: one RGB pixel, 256^3


class Counts:
    """Counts of the configurations seen in data, smoothed by `beta` pseudo-counts on every cell:
    p(x) = (count(x) + beta) / (N + beta K^D), computed in log space, so K^D may be 2^784.
    beta = 0 is the MLE, alpha - 1 the MAP, alpha the Dirichlet(alpha) posterior predictive.
    Memory is O(distinct configurations seen)."""

    def __init__(
        self, configs: torch.Tensor, counts: torch.Tensor, beta: float, num_categories: int
    ):
        self.num_categories = num_categories
        self.dtype = torch.uint8 if num_categories <= 256 else torch.int32  # compact rows
        self.configs, self.counts = configs.to(self.dtype), counts.to(torch.float64)
        self.beta = float(beta)
        self.log_cells = configs.shape[1] * math.log(num_categories)
        self.index = {key: i for i, key in enumerate(self.keys(configs))}

    @classmethod
    def of(cls, x: torch.Tensor, beta: float, num_categories: int) -> Counts:
        configs, counts = torch.unique(x, dim=0, return_counts=True)
        return cls(configs, counts, beta, num_categories)

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def keys(self, x: torch.Tensor) -> list[bytes]:
        return [row.tobytes() for row in x.to(self.dtype).cpu().numpy()]

    def lookup(self, x: torch.Tensor) -> torch.Tensor:
        """Index of each row of x among the seen configurations, -1 where unseen."""
        return torch.tensor(
            [self.index.get(k, -1) for k in self.keys(x)], dtype=torch.int64, device=x.device
        )

    def log_normaliser(self) -> float:
        """log(N + beta K^D)."""
        terms = [math.log(self.total)] if self.total > 0 else []
        if self.beta > 0:
            terms.append(math.log(self.beta) + self.log_cells)
        if not terms:
            return -math.inf
        top = max(terms)
        return top + math.log(sum(math.exp(t - top) for t in terms))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        idx = self.lookup(x)
        c = torch.zeros(len(x), dtype=torch.float64, device=x.device)
        c[idx >= 0] = self.counts.to(x.device)[idx[idx >= 0]]
        return torch.log(c + self.beta) - self.log_normaliser()

    def sample(self, n: int) -> torch.Tensor:
        """n draws: the seen configurations with weight N, uniform cells with weight beta K^D."""
        D, K = self.configs.shape[1], self.num_categories
        log_uniform = math.log(self.beta) + self.log_cells if self.beta > 0 else -math.inf
        p_uniform = math.exp(log_uniform - self.log_normaliser())
        uniform = torch.rand(n) < p_uniform
        out = torch.randint(K, (n, D))
        n_seen = int((~uniform).sum())
        if n_seen:
            pick = torch.multinomial(self.counts, n_seen, replacement=True)
            out[~uniform] = self.configs[pick].to(out.dtype)
        return out


def complete_counts(table: Counts, prefix: torch.Tensor) -> torch.Tensor:
    """Rows whose first k dims are `prefix`, the rest drawn from the smoothed counts'
    conditional: p(rest | prefix) = (count(prefix, rest) + beta) / (M + beta K^(D-k)), M the
    count of the seen configurations that start with the prefix: with probability
    M / (M + beta K^(D-k)) one of them (by count), else uniform cells."""
    n, k = prefix.shape
    D, K = table.configs.shape[1], table.num_categories
    out = torch.randint(K, (n, D), dtype=torch.int64)
    out[:, :k] = prefix.to(torch.int64).cpu()
    heads = {}
    for i, key in enumerate(table.keys(table.configs[:, :k])):
        heads.setdefault(key, []).append(i)
    log_rest = (D - k) * math.log(K)
    zero = []
    for r, key in enumerate(table.keys(prefix.cpu())):
        seen = heads.get(key, [])
        M = float(table.counts[seen].sum()) if seen else 0.0
        log_uniform = math.log(table.beta) + log_rest if table.beta > 0 else -math.inf
        if M == 0 and log_uniform == -math.inf:
            zero.append(r)
            continue
        # P(a seen configuration) = M / (M + beta K^(D-k)), in logs (K^(D-k) may be 2^392)
        p_seen = 1.0 / (1.0 + math.exp(log_uniform - math.log(M))) if M else 0.0
        if torch.rand(()) < p_seen:
            pick = seen[int(torch.multinomial(table.counts[seen], 1))]
            out[r] = table.configs[pick].to(torch.int64)
    if zero:
        raise ValueError(
            f"{len(zero)} of {n} given prefixes (rows {zero[:5]}{'...' if len(zero) > 5 else ''})"
            " have probability zero under this full joint (no training configuration starts "
            "with them and no smoothing): nothing to condition on; use method='exact' (the "
            "Dirichlet posterior predictive) or a smoother model"
        )
    return out


class FullJoint(Model):
    """Full joint: one categorical over all K^D configurations, p(x) = probs[x];
    K^D - 1 free parameters (64 binary dims: 2^64 - 1; one RGB pixel: 256^3 - 1).

    Dense (``probs`` of shape (K^D,)) while K^D <= 2^24. ``sparse=True`` keeps only the counts
    of the configurations seen in the data, which is exact for any size (memory O(N)):
    p(x) = (count(x) + beta) / (N + beta K^D), beta = 0 for the MLE, alpha - 1 for the MAP and
    alpha for the posterior predictive of ``method="exact"``; before fitting it is uniform.
    Default prior: probs ~ Dirichlet(alpha, ..., alpha).
    """

    def __init__(
        self, num_dims: int, num_categories: int = 2, alpha: float = 1.0, sparse: bool = False
    ):
        super().__init__()
        self.num_dims = D = checks.positive_int(num_dims, "num_dims")
        self.num_categories = K = checks.positive_int(num_categories, "num_categories", 2)
        if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
            raise ValueError(
                f"alpha (the Dirichlet concentration) must be a positive number, got {alpha!r}"
            )
        self.alpha, self.sparse = float(alpha), bool(sparse)
        self.num_configs = K**D
        if self.sparse:
            self.table = Counts(torch.zeros(0, D, dtype=torch.int64), torch.zeros(0), 1.0, K)
            return
        if self.num_configs > DENSE_LIMIT:
            raise ValueError(
                f"a dense FullJoint over {K}^{D} configurations has {self.num_parameters:,} free "
                f"parameters, too many to hold (dense limit: 2^24 = {DENSE_LIMIT:,} cells); use "
                "FullJoint(..., sparse=True), which stores only the configurations in the data"
            )
        self.register_buffer("radix", K ** torch.arange(D - 1, -1, -1), persistent=False)
        n = self.num_configs
        self._param("probs", torch.full((n,), 1.0 / n, dtype=torch.float64), constraints.simplex)

    param_dims = {
        "probs": ("configuration",),
        "probs_seen": ("seen_configuration",),
        "probs_other": (),
    }  # exact draws: the seen cells, the rest as one

    @property
    def config(self):
        return {
            "num_dims": self.num_dims,
            "num_categories": self.num_categories,
            "alpha": self.alpha,
            "sparse": self.sparse,
        }

    @property
    def num_parameters(self) -> int:
        return self.num_categories**self.num_dims - 1

    factorization = "p(x) = probs[x], one categorical over all K^D configurations"

    def default_priors(self):
        if self.sparse:
            return {}
        return {
            "probs": dist.Dirichlet(
                torch.full((self.num_configs,), self.alpha, dtype=torch.float64)
            )
        }

    def bayesian(self):
        if self.sparse:
            raise ValueError(
                "FullJoint(sparse=True) keeps counts, not explicit parameters, so "
                "svi and nuts cannot sample them; use method='exact' (the exact "
                "Dirichlet posterior) or sparse=False when K^D is small"
            )
        return super().bayesian()

    def validate(self, x):
        return checks.categories(
            x,
            self.num_categories,
            num_dims=self.num_dims,
            what=f"FullJoint(num_categories={self.num_categories})",
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Index of each configuration, the first dimension most significant (dense only)."""
        return (x * self.radix).sum(-1)  # integer products (CUDA has no integer matmul)

    def decode(self, index: torch.Tensor) -> torch.Tensor:
        return index[:, None] // self.radix % self.num_categories

    def forward(self, x=None, num_samples=None):
        x, n = self._data_or_size(x, num_samples)
        # one categorical over all K^D configurations: probs[x], or smoothed counts if sparse
        joint = self._joint()
        with pyro.plate("data", n):
            return pyro.sample("x", joint, obs=x)

    def _joint(self) -> _ConfigurationCategorical:
        if self.sparse:
            return _ConfigurationCategorical(self.table.log_prob, self.table.sample, self.num_dims)
        log_probs = self.probs.log()  # (K^D,)
        return _ConfigurationCategorical(
            lambda x: log_probs[self.encode(x)],
            lambda n: self.decode(torch.multinomial(log_probs.exp(), n, replacement=True)),
            self.num_dims,
        )

    @torch.no_grad()
    def complete(self, prefix: torch.Tensor) -> torch.Tensor:
        """Rows whose first k dims are `prefix`, the rest drawn from the exact conditional of
        the fitted table (`complete_counts`); sparse tables only."""
        if not self.sparse:
            raise ValueError(
                "complete() conditions a sparse FullJoint (counts of configurations); "
                "fit FullJoint(..., sparse=True)"
            )
        return complete_counts(self.table, prefix)

    def _log_prob(self, x):
        if self.sparse:
            return self.table.log_prob(x)
        return self.probs.log()[self.encode(x)]

    def fit_closed_form(self, x, prior):
        beta = self.alpha - 1 if prior else 0.0
        if beta < 0:
            raise ValueError(NO_INTERIOR_MAP)
        if self.sparse:
            self.table = Counts.of(x, beta, self.num_categories)
        else:
            counts = torch.bincount(self.encode(x), minlength=self.num_configs)
            self.set_params({"probs": normalise_counts(counts.to(torch.float64), beta)})
        return True

    def posterior(self, x):
        return FullJointPosterior(self, x)

    def get_extra_state(self):
        if self.sparse:
            t = self.table
            return {"configs": t.configs, "counts": t.counts, "beta": t.beta}
        return {}

    def set_extra_state(self, state):
        if self.sparse:
            self.table = Counts(
                state["configs"], state["counts"], state["beta"], self.num_categories
            )


class _ConfigurationCategorical(dist.TorchDistribution):
    """A categorical over whole configurations (event shape (D,)). log_prob and sample take and
    give rows; a table of 2^24 cells is never broadcast over the data plate."""

    arg_constraints = {}
    support = constraints.independent(constraints.nonnegative_integer, 1)

    def __init__(self, log_prob_rows, sample_rows, num_dims: int):
        self._log_prob_rows, self._sample_rows = log_prob_rows, sample_rows
        super().__init__(torch.Size(), torch.Size([num_dims]), validate_args=False)

    def sample(self, sample_shape=()):
        shape = torch.Size(sample_shape)
        return self._sample_rows(shape.numel()).reshape(*shape, -1)

    def log_prob(self, value):
        rows = value.reshape(-1, value.shape[-1])
        return self._log_prob_rows(rows).reshape(value.shape[:-1])


def _log_gamma_sample(log_concentration: torch.Tensor, shape) -> torch.Tensor:
    """log of Gamma(a, 1) draws given log a, stable for tiny and astronomically large a:
    Gamma(a) = Gamma(a + 1) U^(1/a) exactly (no underflow for a << 1), and for a > 1e12 the
    relative sd is 1/sqrt(a), so log G = log a + N(0, 1)/sqrt(a) to machine precision."""
    log_a = log_concentration.expand(shape)
    big = log_a > math.log(1e12)
    a = torch.where(big, torch.zeros_like(log_a), log_a).exp()
    g = (
        torch.distributions.Gamma(a + 1, torch.ones_like(a)).sample().log()
        + torch.rand(shape, dtype=a.dtype).log() / a
    )
    return torch.where(big, log_a + torch.randn(shape, dtype=a.dtype) * (-log_a / 2).exp(), g)


class FullJointPosterior(Posterior):
    """Dirichlet(alpha + counts) over K^D cells, held as the seen configurations plus one
    aggregated 'other' cell (the aggregation property keeps draws exact):
    draws are ``probs_seen`` (one probability per seen configuration, ``configs`` lists them)
    and ``probs_other`` (the total of every unseen cell)."""

    def __init__(self, model: FullJoint, x: torch.Tensor):
        self.model = model
        K, alpha = model.num_categories, model.alpha
        self.table = Counts.of(x, alpha, K)
        self.configs = self.table.configs
        self.num_unseen = model.num_configs - len(self.configs)  # a Python int, may be huge
        predictive = FullJoint(**{**model.config, "sparse": True})
        predictive.table = self.table
        self.predictive = predictive

    def _log_conc(self) -> torch.Tensor:
        """log concentration of [each seen configuration..., the aggregated other cell]."""
        alpha, R = self.model.alpha, self.num_unseen
        other = math.log(alpha) + math.log(R) if R else -math.inf
        return torch.cat(
            [torch.log(self.table.counts + alpha), torch.tensor([other], dtype=torch.float64)]
        )

    def mean(self):
        log_c = self._log_conc()
        p = (log_c - torch.logsumexp(log_c, 0)).exp()
        return {"probs_seen": p[:-1], "probs_other": p[-1]}

    def sample(self, num_samples):
        log_c = self._log_conc()
        log_g = _log_gamma_sample(log_c, (num_samples, len(log_c)))
        p = (log_g - torch.logsumexp(log_g, -1, keepdim=True)).exp()
        return {"probs_seen": p[:, :-1], "probs_other": p[:, -1]}

    def log_predictive(self, x):
        return self.table.log_prob(x)

    def sample_predictive(self, num_samples):
        return self.table.sample(num_samples)

    def log_likelihood(self, x, draws):
        """(chain, draw, N). Unseen configurations in x take their share of ``probs_other`` by
        exact stick-breaking (Beta(alpha, alpha (R - j)) splits), one per distinct config."""
        seen, other = draws["probs_seen"], draws["probs_other"]
        lead = other.shape
        idx = self.table.lookup(x)
        out = seen.log()[..., idx.clamp_min(0)]
        unseen = idx < 0
        if unseen.any():
            uniq, inv = torch.unique(x[unseen], dim=0, return_inverse=True)
            log_alpha, U = math.log(self.model.alpha), len(uniq)
            log_rest_conc = torch.tensor(
                [log_alpha + math.log(max(self.num_unseen - j, 1)) for j in range(1, U + 1)],
                dtype=torch.float64,
            )
            g1 = _log_gamma_sample(torch.tensor(log_alpha, dtype=torch.float64), (*lead, U))
            g2 = _log_gamma_sample(log_rest_conc, (*lead, U))
            log_b = g1 - torch.logaddexp(g1, g2)  # Beta(alpha, alpha (R - j)) splits
            log_rest = torch.log1p(-log_b.exp()).cumsum(-1) - torch.log1p(-log_b.exp())
            log_theta = other.log()[..., None] + log_rest + log_b
            out[..., unseen] = log_theta[..., inv]
        return out
