"""`Fit`: a fitted program, its posterior draws, and the numbers every model reports the same
way."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from dataclasses import dataclass

import torch

from ppl_models.checks import positive_int


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


def index_of(data):
    """The pandas index of a Series or DataFrame (dates of a series), else None."""
    index = getattr(data, "index", None)
    return index if type(index).__module__.startswith("pandas") else None


def _future(index, steps: int):
    """The `steps` periods after a dated index (its frequency, or the one pandas infers);
    None when it has none."""
    import pandas as pd

    if not isinstance(index, pd.DatetimeIndex) or len(index) < 3:
        return None
    freq = index.freq or pd.DatetimeIndex(index, freq="infer").freq
    return None if freq is None else pd.date_range(index[-1], periods=steps + 1, freq=freq)[1:]


@contextlib.contextmanager
def seeded(seed):
    """With a seed: reproducible draws that leave the global RNG as it was. Without: draws
    from the global RNG, which advances (each call gives fresh ones)."""
    if seed is None:
        yield
        return
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer (or None for fresh draws from the global "
                         f"RNG), got {seed!r}")
    # the CUDA generators too where CUDA is in use (manual_seed seeds them all)
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def _placed(method):
    """Run a Fit method with torch's tensor factories on the fit's device (a GPU fit builds its
    intermediate tensors there)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.program.placed():
            return method(self, *args, **kwargs)
    return wrapper


class Fit:
    """A fitted program.

    ``program`` (a `ppl_models.program.Program`) holds the point estimate: the MLE/MAP, the
    posterior mean for Bayesian methods. ``model`` is what you fitted, fitted: a copy of a
    `Model` with those values, or the program itself for a function or a PyroModule of yours.
    ``draws`` maps parameter names to (chain, draw, ...) tensors: posterior draws for
    ``exact``/``svi``/``nuts`` (drawn on first use for ``exact``), the estimate as a single
    draw for ``mle``/``map``.
    """

    def __init__(self, program, method: str, data: torch.Tensor, draws: dict | None = None,
                 posterior=None, sample_stats: dict | None = None, losses: list | None = None,
                 info: dict | None = None, fit_seconds: float = 0.0):
        self.program, self.method, self.data = program, method, data
        self.posterior = posterior
        self._sample_stats = sample_stats or {}
        self._train = None  # (pointwise log-likelihood, log prior) of the draws, on the data
        self.losses = losses or []
        self.info = info or {}
        self.fit_seconds = fit_seconds
        self._draws = draws
        self.index = None  # the data's pandas index (dates of a series), kept for coords

    def __repr__(self):
        return (f"Fit({self.program.label}, method={self.method!r}, n={len(self.data)}, "
                f"fit_seconds={self.fit_seconds:.3g})")

    @property
    def model(self):
        """The fitted model: a `Model` copy holding the estimate, else the program."""
        return self.program.model if hasattr(self.program.model, "using") else self.program

    @property
    def draws(self) -> dict[str, torch.Tensor]:
        if self._draws is None:
            if self.posterior is not None:  # exact: num_samples draws, reproducible by seed
                with seeded(self.info.get("seed", 0)):
                    sample = self.posterior.sample(self.info.get("num_samples", 1000))
                self._draws = {k: v[None] for k, v in sample.items()}
            else:
                self._draws = {k: v[None, None] for k, v in self.program.values.items()}
        return self._draws

    @property
    def sample_stats(self) -> dict[str, torch.Tensor]:
        """Per-draw statistics: NUTS's; for SVI log_q (the guide's density of each draw) and
        log_p (log p(theta, y), computed on first use with the pointwise log-likelihood)."""
        stats = self._sample_stats
        if "log_q" in stats and "log_p" not in stats:
            ll, lp = self._train_terms()
            stats["log_p"] = ll.sum(-1) + lp
        return stats

    @sample_stats.setter
    def sample_stats(self, value):
        self._sample_stats = value or {}

    @torch.no_grad()
    def _train_terms(self):
        if self._train is None:
            self._train = self.program.log_likelihood(self.data, self.draws, prior=True)
        return self._train

    @property
    def bayesian(self) -> bool:
        return self.method in ("exact", "svi", "nuts")

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """Point estimates keyed by the program's parameter names (posterior means if
        Bayesian)."""
        if self.posterior is not None:
            return self.posterior.mean()
        return dict(self.program.values)

    @property
    def num_draws(self) -> int:
        return next(iter(self.draws.values())).shape[:2].numel() if self.draws else 1

    # -- densities ------------------------------------------------------------------------------
    @_placed
    @torch.no_grad()
    def log_density(self, x) -> torch.Tensor:
        """Per-datum log-density in nats: the model's for MLE/MAP, the exact posterior predictive
        for ``exact``, and ``log mean_s p(x | theta_s)`` over the draws for SVI/NUTS."""
        x = self.program.validate(x)
        if self.posterior is not None:
            return self.posterior.log_predictive(x)
        if self.method in ("svi", "nuts"):
            ll = self.pointwise_log_likelihood(x).flatten(0, 1)
            return torch.logsumexp(ll, 0) - math.log(ll.shape[0])
        return self.program.log_prob(x)

    @_placed
    @torch.no_grad()
    def pointwise_log_likelihood(self, x=None) -> torch.Tensor:
        """(chain, draw, N) log p(x_i | theta_s) for each draw; the training data by default."""
        train = x is None
        x = self.data if train else self.program.validate(x)
        if self.posterior is not None:
            return self.posterior.log_likelihood(x, self.draws)
        if not self.bayesian:
            return self.program.log_prob(x)[None, None]
        if train:
            return self._train_terms()[0]
        return self.program.log_likelihood(x, self.draws)

    def report(self, x) -> Report:
        lp = self.log_density(x)
        n = lp.numel()
        zero = torch.isneginf(lp)
        finite = lp[~zero]
        nats = math.inf if zero.any() else float(-lp.mean())
        p = self.program
        return Report(
            model=p.label, method=self.method, factorization=p.factorization,
            num_parameters=p.num_parameters, n=n, nats=nats,
            bits_per_dim=nats / (p.num_dims * math.log(2)),
            num_zero_prob=int(zero.sum()),
            nats_nonzero=float(-finite.mean()) if finite.numel() else math.nan,
            fit_seconds=self.fit_seconds)

    # -- generation -----------------------------------------------------------------------------
    @_placed
    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        """n new data: from the fitted model (MLE/MAP), the exact posterior predictive (exact),
        or the posterior predictive with one posterior draw per datum (SVI/NUTS); for a model
        of one series, a series of length n from one draw. With `seed`, reproducible (and the
        global RNG untouched); without, fresh draws from the global RNG on every call."""
        n = positive_int(n, "n")
        with seeded(seed):
            if self.posterior is not None:
                return self.posterior.sample_predictive(n)
            if self.method not in ("svi", "nuts"):
                return self.program.sample(n)
            flat = {k: v.flatten(0, 1) for k, v in self.draws.items()}
            values = self.program.values
            if not self.program.exchangeable:
                s = int(torch.randint(self.num_draws, ()))
                return self.program.sample(n, {**values, **{k: v[s] for k, v in flat.items()}})
            which = torch.randint(self.num_draws, (n,))
            out = None
            for s in which.unique():
                rows = (which == s).nonzero().squeeze(-1)
                xs = self.program.sample(len(rows),
                                         {**values, **{k: v[s] for k, v in flat.items()}})
                if out is None:
                    out = xs.new_empty((n, *xs.shape[1:]))
                out[rows] = xs
            return out

    @_placed
    def forecast(self, steps: int, prob: float = 0.9, history=None):
        """Forecast `steps` values after the training series (or after `history`): mean and
        central `prob` interval per step, Gaussian under the estimate for MLE/MAP, the posterior
        predictive (parameter uncertainty included) for exact/SVI/NUTS. For models that
        forecast (a `forecast(x, steps, prob, draws)` method, e.g. AutoRegressive)."""
        forecast = self.program.accelerator("forecast")
        if forecast is None:
            raise ValueError(f"{self.program.label} does not forecast: its data are not a "
                             "series; forecasts are for series models such as AutoRegressive")
        x = self.data if history is None else history
        with self.program.model.using(self.program.values):
            out = forecast(x, steps, prob, draws=self.draws if self.bayesian else None)
        if history is None and self.index is not None:
            out.index = _future(self.index, out.mean.shape[0])
        return out

    # -- ArviZ and persistence ------------------------------------------------------------------
    @_placed
    def to_arviz(self, **options):
        """`arviz.InferenceData` with posterior, pointwise log_likelihood (variable ``x``, one
        entry per training datum), observed_data and, for NUTS, sample_stats."""
        from inference.arviz_io import to_inference_data

        return to_inference_data(self, **options)

    def save(self, path) -> None:
        """Save to `path` (data only: tensors, numbers and strings; `inference.load` reads it)."""
        from inference.persist import save

        save(self, path)
