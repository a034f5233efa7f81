"""AR(p) with Gaussian white noise over one series:
x_t = const + phi_1 x_(t-1) + ... + phi_p x_(t-p) + sigma eps_t,  eps_t ~ N(0, 1)."""

from __future__ import annotations

import copy
import math

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints
from torch.distributions.transforms import PowerTransform

from ppl_models import checks
from ppl_models.models.base import Model
from ppl_models.models.gaussian_steps import (
    Forecast,
    gaussian_forecast,
    log_prob_steps,
    mixture_quantile,
    step_moments,
)
from ppl_models.models.normal_inverse_gamma import NormalInverseGammaPosterior
from ppl_models.models.stationary import PacfToPhi, levinson
from ppl_models.models.stationary import stationary as stationary_region

LIKELIHOODS = ("conditional", "exact")
WIDTH = 5.0  # prior sd of const and of each phi_j, in units of sigma on the standardised scale
f64 = torch.float64


class AutoRegressive(Model):
    """AR(p) with Gaussian white noise over one series x_1..x_T:
    x_t = const + phi_1 x_(t-1) + ... + phi_p x_(t-p) + sigma eps_t,  eps_t ~ N(0, 1).

    Parameters ``const`` (absent with ``constant=False``), ``phi`` (p,), ``sigma``:
    p + 2 free parameters (p + 1 without the constant).

    - ``likelihood="conditional"`` conditions on x_1..x_p:
      p(x_(p+1..T) | x_(1..p)) = prod_(t>p) N(x_t | const + sum_j phi_j x_(t-j), sigma^2),
      what statsmodels' AutoReg maximises; one log-density per modelled step (T - p values).
    - ``likelihood="exact"`` adds the stationary Gaussian of the first p values, one step at a
      time (x_t given the t - 1 before it, by the Durbin-Levinson recursion), what statsmodels'
      ARIMA(p, 0, 0) maximises; T values. Non-stationary phi has density zero: ``log_prob``
      returns -inf and ``forward`` raises. The MLE is searched in the stationary region.
    - ``stationary=True`` restricts phi to the stationary region (MLE searched there; prior
      through partial autocorrelations, so every prior and posterior draw is stationary).

    Default priors, written in the units of the data (m, s: mean and standard deviation of the
    series passed to `inference.fit`, which sets them; 0 and 1 before that):

    - sigma^2 ~ InverseGamma(1/2, s^2 / 2) (scaled inverse chi^2: one observation's worth of
      variance s^2);
    - phi_j | sigma ~ Normal(0, 5 sigma / s), independent; with ``stationary=True`` instead the
      partial autocorrelations r_j ~ Uniform(-1, 1), independent, mapped to phi by the
      Durbin-Levinson recursion;
    - const | phi, sigma ~ Normal(m (1 - sum_j phi_j), 5 sigma) (the process mean near m).

    On the standardised series (x - m) / s the coefficient priors are N(0, 25 sigma_z^2): worth
    1/25 of an observation, so they barely move the estimates (AR(2) sunspots: posterior means
    of const and phi within 0.02 posterior sd of the MLE) while keeping the posterior proper and
    the scales right.

    Without ``stationary`` these are a Normal-Inverse-Gamma prior on ((const, phi), sigma^2),
    conjugate to the conditional likelihood: ``method="exact"`` draws from the posterior exactly.
    """

    exchangeable = False  # one series, not independent rows
    param_dims = {"const": (), "phi": ("lag",), "sigma": ()}
    data_dims = ()

    def __init__(
        self,
        order: int,
        constant: bool = True,
        likelihood: str = "conditional",
        stationary: bool = False,
    ):
        super().__init__()
        self.order = p = checks.positive_int(order, "order")
        self.constant = _flag(constant, "constant")
        self.likelihood = checks.one_of(likelihood, LIKELIHOODS, "likelihood")
        self.stationary = _flag(stationary, "stationary")
        self.num_dims = 1
        # units of the default priors: mean and sd of the training series (NaN: not set yet)
        self.register_buffer("data_loc", torch.tensor(math.nan, dtype=f64))
        self.register_buffer("data_scale", torch.tensor(math.nan, dtype=f64))
        if self.constant:
            self._param("const", torch.zeros((), dtype=f64), constraints.real)
        in_region = self.stationary or self.likelihood == "exact"
        self._param(
            "phi",
            torch.zeros(p, dtype=f64),
            stationary_region if in_region else constraints.real,
            event_dim=1,
        )
        self._param("sigma", torch.ones((), dtype=f64), constraints.positive)

    @property
    def config(self):
        return {
            "order": self.order,
            "constant": self.constant,
            "likelihood": self.likelihood,
            "stationary": self.stationary,
        }

    @property
    def num_parameters(self) -> int:
        return self.order + int(self.constant) + 1

    @property
    def factorization(self) -> str:
        mean = ("const + " if self.constant else "") + "sum_(j<=p) phi_j x_(t-j)"
        steps = f"prod_(t>p) N(x_t | {mean}, sigma^2)"
        if self.likelihood == "exact":
            return f"p(x) = N(x_1..x_p | stationary) {steps}"
        return f"p(x | x_1..x_p) = {steps}"

    # -- data and units -------------------------------------------------------------------------
    def validate(self, x):
        return checks.series(
            x,
            min_length=self.order + 1,
            what=f"AutoRegressive(order={self.order})",
            why=f"order + 1: each value depends on the {self.order} before it",
            dtype=self.dtype,
        )

    def units(self, x: torch.Tensor | None = None) -> tuple[float, float]:
        """(m, s) of the default priors: set by `init_from_data`, else from `x`, else (0, 1)."""
        if not torch.isnan(self.data_loc):
            return float(self.data_loc), float(self.data_scale)
        if x is None:
            return 0.0, 1.0
        return float(x.mean()), max(float(x.std()), 1e-12) if len(x) > 1 else 1.0

    def init_from_data(self, x):
        """A copy whose default priors are in the units of `x` (its mean and sd) and, where a
        gradient search will be needed (exact likelihood, stationary=True, priors of your own),
        whose point parameters start at the conditional least-squares fit, or at Yule-Walker
        (always stationary) where the model requires stationarity."""
        m = copy.deepcopy(self)
        if torch.isnan(m.data_loc):
            loc, scale = m.units(x)
            m.data_loc.fill_(loc)
            m.data_scale.fill_(scale)
        if self.likelihood == "conditional" and not self.stationary and self._default_conjugate():
            return m  # MLE and MAP have closed forms: no start needed
        start = self._least_squares(x)
        in_region = self.stationary or self.likelihood == "exact"  # phi's constraint
        if in_region and not levinson(start["phi"])[2]:
            start = self._yule_walker(x)
        return m.start_at(start)

    # -- priors ---------------------------------------------------------------------------------
    def default_priors(self):
        m, s = self.units()
        p = self.order
        priors = {"sigma": self._sigma_prior(s)}
        if self.stationary:
            r = dist.Uniform(-torch.ones(p, dtype=f64), torch.ones(p, dtype=f64)).to_event(1)
            priors["phi"] = dist.TransformedDistribution(r, [PacfToPhi()])
        else:
            priors["phi"] = lambda self: dist.Normal(
                torch.zeros(p, dtype=f64), WIDTH * self.sigma / s
            ).to_event(1)
        if self.constant:
            priors["const"] = lambda self: dist.Normal(
                m * (1 - self.phi.sum(-1)), WIDTH * self.sigma
            )
        return priors

    def _sigma_prior(self, s: float):
        """sigma^2 ~ InverseGamma(1/2, s^2 / 2), as a distribution of sigma: built once per
        data scale s (0.1-0.4 ms to build, asked for at every step of SVI and MAP)."""
        cache = self.__dict__.setdefault("_sigma_priors", {})
        if s not in cache:
            sigma2 = dist.InverseGamma(
                torch.tensor(0.5, dtype=f64), torch.tensor(s**2 / 2, dtype=f64)
            )
            cache[s] = dist.TransformedDistribution(sigma2, [PowerTransform(0.5)])
        return cache[s]

    def conjugate_prior(self):
        """The default priors as Normal-Inverse-Gamma: beta = (const, phi) | sigma^2 ~
        N(b0, sigma^2 Lambda0^-1), sigma^2 ~ InverseGamma(a0, c0). Returns (b0, Lambda0, a0, c0).
        Lambda0 = U^T U with U = [[1, m 1^T], [0, s I]] / 5, since beta = b0 + sigma U^-1 eps."""
        m, s = self.units()
        k = self.order + int(self.constant)
        U = s * torch.eye(k, dtype=f64)
        b0 = torch.zeros(k, dtype=f64)
        if self.constant:
            U[0, 0], U[0, 1:], b0[0] = 1.0, m, m
        U = U / WIDTH
        return b0, U.T @ U, 0.5, s**2 / 2

    def _default_conjugate(self) -> bool:
        return not self.stationary and not self.assigned_priors()

    # -- the program ----------------------------------------------------------------------------
    @property
    def _const(self):
        return self.const if self.constant else torch.zeros((), dtype=f64, device=self.phi.device)

    def forward(self, x=None, num_samples=None):
        """The recursion, one `pyro.sample` per time step. Observing `x` with the conditional
        likelihood, x_1..x_p are given; otherwise each x_t with t <= p is drawn from the
        stationary Gaussian given the values before it."""
        x, T = self._data_or_size(x, num_samples)
        const, phi, sigma, p = self._const, self.phi, self.sigma, self.order
        given_start = x is not None and self.likelihood == "conditional"
        if not given_start:
            mu, coefs, scales = self._start(const, phi, sigma)
        xs = []
        for t in pyro.markov(range(T), history=p):
            if t < p and given_start:
                xs.append(x[t])
                continue
            lags = xs[::-1][:p]  # x_(t-1), x_(t-2), ...
            if t < p:  # E[x_t | x_1..x_(t-1)] under the stationary distribution
                mean = mu + sum(a * (lag - mu) for a, lag in zip(coefs[t], lags))
                scale = scales[t]
            else:
                mean = const + sum(phi[j] * lag for j, lag in enumerate(lags))
                scale = sigma
            xs.append(
                pyro.sample(f"x_{t}", dist.Normal(mean, scale), obs=None if x is None else x[t])
            )
        return torch.stack(xs)

    def _start(self, const, phi, sigma):
        """The distribution of x_1..x_p when generating: the stationary one; with the
        conditional likelihood, which leaves them unmodelled, a non-stationary phi (a draw of
        the default prior, say) starts from independent N(m, s^2) in the units of the prior
        (the training series' mean and sd) instead, so that `Predictive` and prior predictive
        checks run for every draw."""
        if self.likelihood == "conditional" and not bool(levinson(phi)[2]):
            m, s = self.units()
            none = [torch.zeros(0, dtype=phi.dtype, device=phi.device)] * self.order
            return (
                torch.tensor(m, dtype=phi.dtype, device=phi.device),
                none,
                torch.full((self.order,), s, dtype=phi.dtype, device=phi.device),
            )
        return self._stationary_start(const, phi, sigma)

    def _stationary_start(self, const, phi, sigma):
        """mu, coefs[k] = phi^(k) and the prediction sds of x_(k+1) given the k values before it
        (k < p) under the stationary distribution; a ValueError if phi is not stationary."""
        r, coefs, ok = levinson(phi)
        if not bool(ok):
            raise ValueError(
                f"phi = {phi.tolist()} is not stationary (a root of the "
                "characteristic polynomial lies on or inside the unit circle): the "
                "stationary start of the series does not exist, so the exact "
                "likelihood is zero and a series cannot be simulated; use "
                "stationary=True, or forecast from observed values instead"
            )
        mu = const / (1 - phi.sum())
        # Var(x_(k+1) | k before) = sigma^2 / prod_(j>k) (1 - r_j^2)
        tail = torch.cat(
            [
                torch.flip(torch.cumprod(torch.flip(1 - r**2, [0]), 0), [0]),
                torch.ones(1, dtype=r.dtype, device=r.device),
            ]
        )
        return mu, coefs, sigma / tail.sqrt()

    # -- vectorised densities -------------------------------------------------------------------
    def _log_prob(self, x):
        return log_prob_steps(x, self._const, self.phi, self.sigma, self.likelihood == "exact")

    @torch.no_grad()
    def log_likelihood(self, x, draws):
        """(chain, draw, steps) pointwise log-likelihood, vectorised over the draws."""
        if not draws:
            return super().log_likelihood(x, draws)
        lead = next(iter(draws.values())).shape[:2]
        theta = self._theta(draws)
        ll = log_prob_steps(
            x, theta["const"], theta["phi"], theta["sigma"], self.likelihood == "exact"
        )
        return ll.reshape(*lead, -1)

    @torch.no_grad()
    def replicate(self, x, draws):
        """(chain, draw, steps): one-step replicates of every modelled step, each drawn given
        the observed values before it (what the log-likelihood scores), under each draw."""
        lead = next(iter(draws.values())).shape[:2]
        theta = self._theta(draws)
        mean, sd, _ = step_moments(
            x, theta["const"], theta["phi"], theta["sigma"], self.likelihood == "exact"
        )
        return torch.normal(mean, sd).reshape(*lead, -1)

    @torch.no_grad()
    def simulate(self, x, draws):
        """(chain, draw, steps): the modelled steps simulated freely under each draw, from the
        observed first p values (the conditional likelihood's given start; the exact one
        simulates its start too)."""
        lead = next(iter(draws.values())).shape[:2]
        theta = self._theta(draws)
        const, phi, sigma = theta["const"], theta["phi"], theta["sigma"]
        p, T, S = self.order, len(x), phi.shape[0]
        if self.likelihood == "exact":
            rows = []
            for s in range(S):
                with self.using({"const": const[s], "phi": phi[s], "sigma": sigma[s]}):
                    rows.append(self(num_samples=T))
            return torch.stack(rows).reshape(*lead, T)
        history = x[:p].flip(0).to(phi.dtype).expand(S, p)  # newest first
        out = []
        for _ in range(T - p):
            new = torch.normal(const + (phi * history).sum(-1), sigma)
            out.append(new)
            history = torch.cat([new[:, None], history[:, :-1]], -1)
        return torch.stack(out, -1).reshape(*lead, T - p)

    def _theta(self, draws: dict) -> dict[str, torch.Tensor]:
        """const, phi, sigma as flat (S, ...) tensors from (chain, draw, ...) draws; parameters
        not drawn keep their point value."""
        flat = {k: v.flatten(0, 1).to(f64) for k, v in draws.items()}
        S = next(iter(flat.values())).shape[0]
        point = {
            "const": self._const.detach(),
            "phi": self.phi.detach(),
            "sigma": self.sigma.detach(),
        }
        return {k: flat.get(k, v.expand(S, *v.shape)) for k, v in point.items()}

    # -- closed forms ---------------------------------------------------------------------------
    def design(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(X, y): rows [1, x_(t-1), ..., x_(t-p)] (no 1 without the constant) and y = x_t for
        t = p+1..T."""
        p, T = self.order, len(x)
        lags = torch.stack([x[p - j - 1 : T - j - 1] for j in range(p)], -1)  # (T - p, p)
        if self.constant:
            lags = torch.cat([torch.ones(T - p, 1, dtype=x.dtype, device=x.device), lags], -1)
        return lags.to(f64), x[p:].to(f64)

    def split(self, beta: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.constant:
            return {"const": beta[..., 0], "phi": beta[..., 1:]}
        return {"phi": beta}

    def _least_squares(self, x) -> dict[str, torch.Tensor]:
        """Conditional MLE: least squares, sigma^2 = RSS / (T - p) (as statsmodels' AutoReg)."""
        X, y = self.design(x)
        # on the CPU (CUDA has no rank-revealing driver): the same numbers on every device
        beta = torch.linalg.lstsq(X.cpu(), y[:, None].cpu(), driver="gelsd").solution[:, 0]
        beta = beta.to(X.device)
        rss = (y - X @ beta).pow(2).sum()
        return {**self.split(beta), "sigma": (rss / len(y)).sqrt()}

    def _yule_walker(self, x) -> dict[str, torch.Tensor]:
        """Yule-Walker estimates (always stationary): a start for the exact likelihood."""
        p, z = self.order, x - x.mean()
        acov = torch.stack([(z[k:] * z[: len(z) - k]).sum() for k in range(p + 1)]) / len(z)
        idx = torch.arange(p)
        phi = torch.linalg.solve(acov[(idx[:, None] - idx[None, :]).abs()], acov[1:])
        start = {"phi": phi, "sigma": (acov[0] - phi @ acov[1:]).clamp_min(1e-12).sqrt()}
        if self.constant:
            start["const"] = x.mean() * (1 - phi.sum())
        return start

    def fit_closed_form(self, x, prior):
        if self.likelihood == "exact":
            return False
        if not prior:
            estimate = self._least_squares(x)
            if self._inits["phi"][1] is stationary_region and not levinson(estimate["phi"])[2]:
                return False  # the constrained MLE is on the boundary: gradient search
        elif self._default_conjugate():
            post = self.posterior(x)  # mode in (beta, sigma): sigma^2 = 2 c_n / (2 a_n + k + 1)
            k = len(post.b)
            estimate = {**self.split(post.b), "sigma": (2 * post.c / (2 * post.a + k + 1)).sqrt()}
        else:
            return False
        self.set_params(estimate)
        return True

    def posterior(self, x):
        if self.likelihood != "conditional" or not self._default_conjugate():
            raise ValueError(
                "method='exact' needs the conditional likelihood and the default "
                "Normal-Inverse-Gamma priors (stationary=False, no priors of your "
                "own); use method='nuts' or 'svi' for this model"
            )
        model = self if not torch.isnan(self.data_loc) else self.init_from_data(x)
        return NormalInverseGammaPosterior(model, x)

    # -- forecasts ------------------------------------------------------------------------------
    @torch.no_grad()
    def forecast(self, x, steps: int, prob: float = 0.9, draws: dict | None = None) -> Forecast:
        """Forecast `steps` values after the series `x`, with central `prob` intervals.

        Without `draws`: the Gaussian forecast under the point parameters (mean by the recursion,
        variance sigma^2 sum_(j<h) psi_j^2 from the MA(inf) weights psi), as statsmodels.
        With `draws` ((chain, draw, ...) posterior draws): the posterior predictive, the mixture
        over draws of those Gaussians; its mean and quantiles (found by bisection)."""
        steps = checks.positive_int(steps, "steps")
        prob = checks.probability(prob, "prob")
        x = self.validate(x)
        theta = (
            self._theta(draws)
            if draws
            else {
                k: v[None]
                for k, v in {"const": self._const, "phi": self.phi, "sigma": self.sigma}.items()
            }
        )
        mean, sd = gaussian_forecast(x, theta["const"], theta["phi"], theta["sigma"], steps)
        q = (1 + prob) / 2
        if mean.shape[0] == 1:
            z = dist.Normal(0.0, 1.0).icdf(torch.tensor(q, dtype=sd.dtype, device=sd.device))
            return Forecast(mean[0], mean[0] - z * sd[0], mean[0] + z * sd[0], prob)
        return Forecast(
            mean.mean(0), mixture_quantile(mean, sd, 1 - q), mixture_quantile(mean, sd, q), prob
        )


def _flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value
