"""`Fit`: a fitted model, its posterior draws, and the numbers every model reports the same way."""

from __future__ import annotations

import dataclasses
import importlib
import math
from dataclasses import dataclass

import torch

FORMAT = 1


@dataclass
class Report:
    """Log-density of some data under a fit, the same numbers for every model."""

    model: str
    method: str
    factorization: str
    num_parameters: int
    n: int
    nats: float  # mean negative log-likelihood per datum (inf if any datum has probability 0)
    bits_per_dim: float
    num_zero_prob: int  # data the fit gives probability (density) zero
    nats_nonzero: float  # mean NLL over the other data
    fit_seconds: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Fit:
    """A fitted model.

    ``model`` is a fitted copy holding the point estimate (the posterior mean for Bayesian
    methods; for ``exact`` the posterior predictive where it stays in the model's family).
    ``draws`` maps parameter names to (chain, draw, ...) tensors: posterior draws for
    ``exact``/``svi``/``nuts`` (drawn on first use for ``exact``), the estimate as a single
    draw for ``mle``/``map``.
    """

    def __init__(self, model, method: str, data: torch.Tensor, draws: dict | None = None,
                 posterior=None, sample_stats: dict | None = None, losses: list | None = None,
                 info: dict | None = None, fit_seconds: float = 0.0):
        self.model, self.method, self.data = model, method, data
        self.posterior = posterior
        self.sample_stats = sample_stats or {}
        self.losses = losses or []
        self.info = info or {}
        self.fit_seconds = fit_seconds
        self._draws = draws

    def __repr__(self):
        return (f"Fit({model_label(self.model)}, method={self.method!r}, n={len(self.data)}, "
                f"fit_seconds={self.fit_seconds:.3g})")

    @property
    def draws(self) -> dict[str, torch.Tensor]:
        if self._draws is None:
            if self.posterior is not None:  # exact: num_samples draws, reproducible by seed
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.info.get("seed", 0))
                    sample = self.posterior.sample(self.info.get("num_samples", 1000))
                self._draws = {k: v[None] for k, v in sample.items()}
            else:
                self._draws = {k: v[None, None] for k, v in self.model.get_params().items()}
        return self._draws

    @property
    def bayesian(self) -> bool:
        return self.method in ("exact", "svi", "nuts")

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """Point estimates keyed by the model's parameter names (posterior means if Bayesian)."""
        if self.posterior is not None:
            return self.posterior.mean()
        if self.method in ("svi", "nuts"):
            return {k: v.mean((0, 1)) for k, v in self.draws.items()}
        return self.model.get_params()

    @property
    def num_draws(self) -> int:
        return next(iter(self.draws.values())).shape[:2].numel() if self.draws else 1

    # -- densities ------------------------------------------------------------------------------
    @torch.no_grad()
    def log_density(self, x) -> torch.Tensor:
        """Per-datum log-density in nats: the model's for MLE/MAP, the exact posterior predictive
        for ``exact``, and ``log mean_s p(x | theta_s)`` over the draws for SVI/NUTS."""
        x = self.model.validate(x)
        if self.posterior is not None:
            return self.posterior.log_predictive(x)
        if self.method in ("svi", "nuts"):
            ll = self.pointwise_log_likelihood(x).flatten(0, 1)
            return torch.logsumexp(ll, 0) - math.log(ll.shape[0])
        return self.model._log_prob_in_context(x)

    @torch.no_grad()
    def pointwise_log_likelihood(self, x=None) -> torch.Tensor:
        """(chain, draw, N) log p(x_i | theta_s) for each draw; the training data by default."""
        x = self.data if x is None else self.model.validate(x)
        if self.posterior is not None:
            return self.posterior.log_likelihood(x, self.draws)
        return self.model.log_likelihood(x, self.draws)

    def report(self, x) -> Report:
        lp = self.log_density(x)
        n = lp.numel()
        zero = torch.isneginf(lp)
        finite = lp[~zero]
        nats = math.inf if zero.any() else float(-lp.mean())
        return Report(
            model=model_label(self.model), method=self.method,
            factorization=self.model.factorization,
            num_parameters=self.model.num_parameters, n=n, nats=nats,
            bits_per_dim=nats / (self.model.num_dims * math.log(2)),
            num_zero_prob=int(zero.sum()),
            nats_nonzero=float(-finite.mean()) if finite.numel() else math.nan,
            fit_seconds=self.fit_seconds)

    # -- generation -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        """n new data: from the fitted model (MLE/MAP), the exact posterior predictive (exact),
        or the posterior predictive with one posterior draw per datum (SVI/NUTS); for a model
        of one series (``model.exchangeable`` False), a series of length n from one draw."""
        from ppl_models.checks import positive_int

        n = positive_int(n, "n")
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            if self.posterior is not None:
                return self.posterior.sample_predictive(n)
            if self.method not in ("svi", "nuts"):
                return self.model(num_samples=n)
            flat = {k: v.flatten(0, 1) for k, v in self.draws.items()}
            if not getattr(self.model, "exchangeable", True):
                s = int(torch.randint(self.num_draws, ()))
                return self.model.point().set_params({k: v[s] for k, v in flat.items()})(
                    num_samples=n)
            which = torch.randint(self.num_draws, (n,))
            out = None
            m = self.model.point()
            for s in which.unique():
                rows = (which == s).nonzero().squeeze(-1)
                m.set_params({k: v[s] for k, v in flat.items()})
                xs = m(num_samples=len(rows))
                if out is None:
                    out = xs.new_empty((n, *xs.shape[1:]))
                out[rows] = xs
            return out

    def forecast(self, steps: int, prob: float = 0.9, history=None):
        """Forecast `steps` values after the training series (or after `history`): mean and
        central `prob` interval per step, Gaussian under the estimate for MLE/MAP, the posterior
        predictive (parameter uncertainty included) for exact/SVI/NUTS. For models that
        forecast (a `forecast(x, steps, prob, draws)` method, e.g. AutoRegressive)."""
        forecast = getattr(self.model, "forecast", None)
        if forecast is None:
            raise ValueError(f"{type(self.model).__name__} does not forecast: its data are not a "
                             "series; forecasts are for series models such as AutoRegressive")
        x = self.data if history is None else history
        return forecast(x, steps, prob, draws=self.draws if self.bayesian else None)

    # -- ArviZ and persistence ------------------------------------------------------------------
    def to_arviz(self):
        """`arviz.InferenceData` with posterior, pointwise log_likelihood (variable ``x``, one
        entry per training datum), observed_data and, for NUTS, sample_stats."""
        from inference.arviz_io import to_inference_data

        return to_inference_data(self)

    def save(self, path) -> None:
        """Save to `path` (a torch file of plain tensors and strings; `inference.load` reads it).
        Custom priors are not saved: a loaded fit evaluates and samples from its draws."""
        m = self.model
        torch.save({
            "format": FORMAT, "class": f"{type(m).__module__}.{type(m).__qualname__}",
            "config": m.config, "state": m.state_dict(), "method": self.method,
            "data": self.data, "draws": self.draws, "sample_stats": self.sample_stats,
            "losses": self.losses, "info": _plain(self.info), "fit_seconds": self.fit_seconds,
        }, path)


def load(path) -> Fit:
    """Read a fit written by `Fit.save`."""
    try:
        blob = torch.load(path, weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a saved ppl-models fit ({e})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a saved ppl-models fit (format {FORMAT})")
    module, _, name = blob["class"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    model = cls(**blob["config"])
    model.load_state_dict(blob["state"])
    posterior = None
    if blob["method"] == "exact":
        source = cls(**blob["config"])
        posterior = source.posterior(blob["data"])
        model = getattr(posterior, "predictive", model)
    return Fit(model=model, method=blob["method"], data=blob["data"], draws=blob["draws"],
               posterior=posterior, sample_stats=blob["sample_stats"], losses=blob["losses"],
               info=blob["info"], fit_seconds=blob["fit_seconds"])


def model_label(model) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in model.config.items()
                     if k not in ("num_dims",) and v is not None)
    return f"{type(model).__name__}({args})"


def _plain(info: dict) -> dict:
    """Keep what torch.load(weights_only=True) can read back."""
    ok = (int, float, str, bool, type(None))
    return {k: v for k, v in info.items()
            if isinstance(v, ok) or (isinstance(v, list) and all(isinstance(i, ok) for i in v))}
