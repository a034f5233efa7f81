"""The densities `inference.conjugate` needs once a local latent is integrated out: an
observation's compound density and the latent's conditional given it.

- Beta-Binomial (or Bernoulli) and Gamma-Poisson, elementwise (`compound_log_prob`,
  `conditional`);
- a linear-Gaussian block (`GaussianBlock`): K Normal latents, each of one shape, read by one
  Normal observation whose loc is alpha + sum_k B_k L_k and whose scale is free of them. Each
  element of the latents owns a block of T of the observation's values (a series' steps, a
  school's one score), and per block y ~ N(alpha + B m, diag(sigma^2) + B diag(s^2) B^T) with B
  T x K: evaluated through the K x K precision of the latents' conditional, Lambda = diag(1/s^2)
  + B^T diag(1/sigma^2) B (Woodbury and the determinant lemma), never a T x T matrix. Lambda's
  Cholesky factor is unrolled into elementwise operations (K is small), which a traced graph
  fuses; the conditional is N(m + Lambda^-1 g, Lambda^-1), g = B^T diag(1/sigma^2) (y - alpha -
  B m). Where T = 1 (eight schools), the density is that of one Normal value of variance
  sigma^2 + sum_k B_k^2 s_k^2, with fewer operations; the conditional is still Woodbury's.
"""

from __future__ import annotations

import functools
import math

import pyro.distributions as dist
import torch


def _trials(likelihood, like: torch.Tensor) -> torch.Tensor:
    """A Binomial's total_count; a Bernoulli's one trial per value (shaped as `like`)."""
    n = getattr(likelihood, "total_count", None)
    return torch.ones_like(like) if n is None else n


def compound(family: str, prior, likelihood):
    """The observation's distribution with a Beta or Gamma latent integrated out."""
    if family == "beta-binomial":
        n = _trials(likelihood, prior.concentration1)
        return dist.BetaBinomial(prior.concentration1, prior.concentration0, n)
    return dist.GammaPoisson(prior.concentration, prior.rate)


def compound_log_prob(family: str, prior, likelihood, observed: torch.Tensor):
    """`compound`'s log density of the observed values. Counts (integer data, up to
    RISING_CELLS values x largest count) by sums of logs rather than differences of lgammas,
    which cancel where a concentration is large: a beta-binomial of the baseball data at
    kappa = 1e12 is 0.07 nats off that way, at 7.8e15 396 nats, with a gradient of the wrong
    sign, where a chain of Pyro's NUTS once stuck."""
    if family == "beta-binomial":
        n = _trials(likelihood, observed)
        most = _countable(n, observed)
        if most is not None:
            dtype = prior.concentration1.dtype
            a, b, n, k = torch.broadcast_tensors(
                prior.concentration1, prior.concentration0, n.to(dtype), observed.to(dtype)
            )
            choose = torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
            return choose + _rising(a, k, most) + _rising(b, n - k, most) - _rising(a + b, n, most)
    if family == "gamma-poisson":
        most = _countable(observed)
        if most is not None:
            c, r, k = torch.broadcast_tensors(
                prior.concentration, prior.rate, observed.to(prior.concentration.dtype)
            )
            rest = -torch.lgamma(k + 1) - c * torch.log1p(1 / r) - k * torch.log1p(r)
            return _rising(c, k, most) + rest
    return compound(family, prior, likelihood).log_prob(observed)


RISING_CELLS = 1_000_000  # counts x largest count up to which `_rising` runs


def _countable(*counts: torch.Tensor) -> int | None:
    """The largest of integer-valued data `counts`, where `_rising` may take them."""
    if any(c.requires_grad or not torch.equal(c, c.round()) or bool((c < 0).any()) for c in counts):
        return None
    most = int(max(float(c.max()) if c.numel() else 0.0 for c in counts))
    return most if max(c.numel() for c in counts) * max(most, 1) <= RISING_CELLS else None


def _rising(a: torch.Tensor, count: torch.Tensor, most: int) -> torch.Tensor:
    """sum over i < count of log(a + i), elementwise: log Gamma(a + count) - log Gamma(a)."""
    i = torch.arange(most, dtype=a.dtype, device=a.device)
    terms = torch.log(a.unsqueeze(-1) + i)
    return torch.where(i < count.unsqueeze(-1), terms, torch.zeros_like(terms)).sum(-1)


def conditional(family: str, prior, likelihood, observed: torch.Tensor):
    """A Beta or Gamma latent's distribution given its observation."""
    if family == "beta-binomial":
        n = _trials(likelihood, observed)
        return dist.Beta(prior.concentration1 + observed, prior.concentration0 + n - observed)
    return dist.Gamma(prior.concentration + observed, prior.rate + 1)


def layout(latent: torch.Size, batch: torch.Size, event: torch.Size) -> list[int] | None:
    """The order of an observation's dims (`batch` + `event`) that puts first those the
    latent indexes (its shape right-aligned to `batch`), then those each latent element reads
    whole (where the latent has size 1, and the event dims); None where the latent's shape
    does not fit (more dims than `batch`, or a size other than 1 or the observation's)."""
    if len(latent) > len(batch):
        return None
    padded = (1,) * (len(batch) - len(latent)) + tuple(latent) + (1,) * len(event)
    shape = tuple(batch) + tuple(event)
    if any(a not in (1, b) for a, b in zip(padded, shape)):
        return None
    own = [i for i, (a, b) in enumerate(zip(padded, shape)) if a == b]
    return own + [i for i in range(len(shape)) if i not in own]


class GaussianBlock:
    """A Normal observation and the K Normal latents its loc is affine in (module docstring):
    `priors` the latents' Normal priors, `base` the observation's Normal with every latent at
    0 (its loc is alpha), `slopes` B_k = its loc with latent k at 1 less alpha, `value` the
    observed values, `order` from `layout`."""

    def __init__(self, priors, base, slopes, value: torch.Tensor, order: list[int]):
        shape = torch.broadcast_shapes(base.loc.shape, value.shape)
        latent_shape = priors[0].batch_shape
        n = math.prod(latent_shape)

        def blocks(t):
            return t.expand(shape).permute(order).reshape(n, -1)

        self.m = [p.loc.expand(latent_shape).reshape(n) for p in priors]
        self.s = [p.scale.expand(latent_shape).reshape(n) for p in priors]
        self.scale = blocks(base.scale)
        self.slope = [blocks(b) for b in slopes]
        self.r = (
            blocks(value)
            - blocks(base.loc)
            - sum(b * m[:, None] for b, m in zip(self.slope, self.m))
        )
        if self.r.shape[-1] == 1:
            # one value a block: its marginal Normal, variance sigma^2 + sum_k B_k^2 s_k^2 (the
            # same number as Woodbury's in fewer operations: non-centred eight schools' fused
            # potential 122 -> 95 nodes, a gradient 190 -> 155 us, medians of 6,000 calls)
            var = self.scale**2 + sum((b * v[:, None]) ** 2 for b, v in zip(self.slope, self.s))
            self.log_prob = -0.5 * (self.r * self.r / var + var.log() + math.log(2 * math.pi))[:, 0]
        else:
            chol, h = self.woodbury
            precision = self.scale**-2
            quad = (precision * self.r * self.r).sum(-1) - sum(v * v for v in h)
            logdet = -precision.log().sum(-1) + 2 * sum(v.log() for v in self.s)
            logdet = logdet + 2 * sum(chol[k][k].log() for k in range(len(self.s)))
            self.log_prob = -0.5 * (quad + logdet + self.r.shape[-1] * math.log(2 * math.pi))

    @functools.cached_property
    def woodbury(self):
        """(Lambda's Cholesky factor, L^-1 g), unrolled over the K latents (lists)."""
        slope, s = self.slope, self.s
        weighted = [self.scale**-2 * b for b in slope]
        lam = [
            [(w * b).sum(-1) + (s[k] ** -2 if k == j else 0.0) for j, b in enumerate(slope)]
            for k, w in enumerate(weighted)
        ]
        chol = _cholesky(lam)
        return chol, _forward(chol, [(w * self.r).sum(-1) for w in weighted])

    def arguments(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(m, h, L): the latents' prior means (n, K), L^-1 g (n, K) and Lambda's Cholesky
        factor (n, K, K), from which `draw` takes the conditional."""
        k = len(self.m)
        chol, h = self.woodbury
        zero = torch.zeros_like(self.m[0])
        rows = [[chol[i][j] if j <= i else zero for j in range(k)] for i in range(k)]
        rows = [torch.stack(row, -1) for row in rows]
        return torch.stack(self.m, -1), torch.stack(h, -1), torch.stack(rows, -2)


def draw(m: torch.Tensor, h: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """A draw of the latents (..., n, K) from N(m + Lambda^-1 g, Lambda^-1): m + L^-T (h + e),
    e standard normal (`GaussianBlock.arguments`)."""
    e = torch.randn_like(h)
    v = torch.linalg.solve_triangular(chol.transpose(-1, -2), (h + e).unsqueeze(-1), upper=True)
    return m + v.squeeze(-1)


def _cholesky(a: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """The lower Cholesky factor of a K x K matrix of elementwise tensors (lists, unrolled)."""
    k = len(a)
    chol = [[None] * k for _ in range(k)]
    for i in range(k):
        for j in range(i + 1):
            rest = a[i][j] - sum(chol[i][p] * chol[j][p] for p in range(j))
            chol[i][j] = rest.sqrt() if i == j else rest / chol[j][j]
    return chol


def _forward(chol: list[list[torch.Tensor]], g: list[torch.Tensor]) -> list[torch.Tensor]:
    """L^-1 g by forward substitution (elementwise, unrolled)."""
    h = []
    for i, gi in enumerate(g):
        h.append((gi - sum(chol[i][p] * h[p] for p in range(i))) / chol[i][i])
    return h


__all__ = [
    "GaussianBlock",
    "RISING_CELLS",
    "compound",
    "compound_log_prob",
    "conditional",
    "draw",
    "layout",
]
