"""`Fit`: a fitted program, its posterior draws, and the numbers every model reports the same
way."""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch

from inference.evaluation.psis import PROPOSAL_K
from ppl_models.checks import positive_int
from ppl_models.models.protocol import is_builtin
from ppl_models.runtime import seeded

EXACT_CHAINS = 2  # exact posterior draws are grouped as this many chains
LAPLACE_DRAWS = 1000  # draws of a point fit's Laplace approximation (to_arviz, LOO)
RHAT_LIMIT = 1.1  # chains with a larger r_hat did not mix: their numbers are flagged
DISCRETE_SLACK = 1e-5  # a discrete log-likelihood above this is flagged (rounding allowed)


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
    # Monte Carlo over continuous local latents (0 where the density is exact): particles per
    # datum, and the standard error of `nats` they leave
    particles: int = 0
    mc_se: float = 0.0
    flags: str = ""  # why these numbers cannot be trusted ("" when nothing is wrong)
    # SVI: the Pareto k of the guide's importance weights against the posterior (NaN else)
    guide_pareto_k: float = math.nan

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

    ``program`` (a `ppl_models.programs.program.Program`) holds the point estimate: the MLE/MAP, the
    posterior mean for Bayesian methods. ``model`` is what you fitted, fitted: a copy of a
    `Model` with those values, or the program itself for a function or a PyroModule of yours.
    ``draws`` maps parameter names to (chain, draw, ...) tensors: posterior draws for
    ``exact``/``svi``/``nuts`` (drawn on first use for ``exact``), the estimate as a single
    draw for ``mle``/``map``.
    """

    def __init__(
        self,
        program,
        method: str,
        data: torch.Tensor,
        draws: dict | None = None,
        posterior=None,
        sample_stats: dict | None = None,
        losses: list | None = None,
        info: dict | None = None,
        fit_seconds: float = 0.0,
    ):
        self.program, self.method, self.data = program, method, data
        self.posterior = posterior
        self._sample_stats = sample_stats or {}
        self._train = None  # (pointwise log-likelihood, log prior) of the draws, on the data
        self.losses = losses or []
        self.info = info or {}
        self.fit_seconds = fit_seconds
        self._draws = draws
        self.index = None  # the data's pandas index (dates of a series), kept for coords
        # "laplace": a point fit's Laplace approximation standing in for a posterior
        self.approximation: str | None = None

    def __repr__(self):
        return (
            f"Fit({self.program.label}, method={self.method!r}, n={len(self.data)}, "
            f"fit_seconds={self.fit_seconds:.3g})"
        )

    @property
    def model(self):
        """The fitted model: a `Model` copy holding the estimate, else the program."""
        return self.program.model if is_builtin(self.program.model) else self.program

    @property
    def draws(self) -> dict[str, torch.Tensor]:
        if self._draws is None:
            if self.posterior is not None:  # exact: num_samples draws, reproducible by seed
                # as 2 chains of independent draws (ArviZ's r_hat then has two to compare)
                total = self.info.get("num_samples", 1000)
                chains = EXACT_CHAINS if total >= 2 * EXACT_CHAINS else 1
                per = -(-total // chains)
                with seeded(self.info.get("seed", 0)):
                    sample = self.posterior.sample(chains * per)
                self._draws = {k: v.reshape(chains, per, *v.shape[1:]) for k, v in sample.items()}
            else:
                self._draws = {k: v[None, None] for k, v in self.program.values.items()}
        return self._draws

    @functools.cached_property
    def deterministic(self) -> dict[str, torch.Tensor]:
        """The program's ``pyro.deterministic`` sites at each draw (chain, draw, ...), as
        `to_arviz()`'s posterior holds them ({} where it has none)."""
        return self.program.deterministic_draws(self.data, self.draws) if self.draws else {}

    @functools.cached_property
    def discrete(self) -> dict[str, torch.Tensor]:
        """The enumerated discrete latents outside the data plate (a change point) drawn from
        their posterior given each draw (`Program.discrete_draws`), as `to_arviz()`'s
        posterior holds them ({} where there are none, or for a point fit)."""
        if not self.draws or self.method not in ("svi", "nuts"):
            return {}
        return self.program.discrete_draws(self.data, self.draws)

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
        """Draws from a posterior (or, for `laplace()`, its Gaussian approximation)."""
        return self.method in ("exact", "svi", "nuts") or self.approximation is not None

    def require_draws(self) -> None:
        """A ValueError where the fit holds no parameters (a sparse full joint keeps counts)."""
        if not self.draws:
            raise ValueError(
                f"{self.program.label} fitted by {self.method} holds no parameters "
                "to draw (a sparse full joint keeps counts); fit it by "
                "method='exact' for a posterior in ArviZ, or compare it on "
                "held-out data"
            )

    def laplace(self, num_samples: int = LAPLACE_DRAWS, seed: int | None = 0) -> Fit:
        """A point fit (mle, map) as its Laplace approximation at the estimate: a fit with
        `num_samples` draws (2 chains) from the Gaussian in the unconstrained space whose
        covariance is the inverse Hessian (of the log joint for map, of the log-likelihood for
        mle: a flat prior), and each draw's log p and log q, so that ArviZ's LOO and WAIC and
        the importance-corrected LOO apply. A ValueError says why there is none (an estimate
        on the boundary, too many parameters). A Bayesian fit is returned as it is."""
        if self.bayesian:
            return self
        cached = self.__dict__.get("_laplace")
        if cached is not None and cached[0] == (num_samples, seed):
            return cached[1]
        from inference.laplace import laplace_draws

        positive_int(num_samples, "num_samples")
        self.require_draws()
        p = self.program
        with p.placed(), seeded(seed):
            p.discover(self.data)
            draws, log_p, log_q, train = laplace_draws(
                p, self.data, dict(p.values), prior=self.method == "map", num_samples=num_samples
            )
        out = Fit(
            p,
            self.method,
            self.data,
            draws=draws,
            sample_stats={"log_p": log_p, "log_q": log_q},
            losses=self.losses,
            info={**self.info, "posterior": f"Laplace approximation at the {self.method.upper()}"},
            fit_seconds=self.fit_seconds,
        )
        out.approximation, out.index, out._train = "laplace", self.index, train
        self._laplace = ((num_samples, seed), out)
        return out

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
    def _at(self, given):
        """The fitted program, its calls passing `given` (updating the fit's own)."""
        return self.program.with_given(given)

    @_placed
    @torch.no_grad()
    def log_density(
        self, x, given: dict | None = None, particles: int | None = None
    ) -> torch.Tensor:
        """Per-datum log-density in nats: the model's for MLE/MAP, the exact posterior predictive
        for ``exact``, and ``log mean_s p(x | theta_s)`` over the draws for SVI/NUTS, continuous
        local latents integrated by Monte Carlo from their prior (``particles`` per draw; the
        standard error is in `report`), imputed missing values integrated (one entry per
        observed value; `ppl_models.programs.imputation`). `given`: the program's other
        arguments for these data (new covariates)."""
        return self._log_density(x, given, particles)[0]

    def _log_density(self, x, given, particles):
        """(log-density (N,), Monte Carlo standard error (N,) or None, particles per datum)."""
        p = self._at(given)
        x = p.validate(x)
        if self.posterior is not None:
            return self.posterior.log_predictive(x), None, 0
        draws = self.draws if self.bayesian else None
        if p.local:
            return p.marginal_log_prob(x, draws, particles, args=p.args if given else None)
        integrated = p.integrated_log_prob(x, draws, particles, args=p.args if given else None)
        if integrated is not None:
            return integrated
        if self.method in ("svi", "nuts"):
            ll = self._pointwise(p, x, given).flatten(0, 1)
            return torch.logsumexp(ll, 0) - math.log(ll.shape[0]), None, 0
        return self._pointwise(p, x, given)[0, 0], None, 0

    def _pointwise(self, p, x, given):
        args = p.args if given else None
        if not self.bayesian:
            return p.log_joint_terms(x, p.values, prior=False, args=args)[0][None, None]
        return p.log_likelihood(x, self.draws, args=args)

    @_placed
    @torch.no_grad()
    def pointwise_log_likelihood(self, x=None, given: dict | None = None) -> torch.Tensor:
        """(chain, draw, N) log p(x_i | theta_s) for each draw (given each draw's continuous
        local latents, the ArviZ convention); the training data by default."""
        train = x is None and not given
        p = self._at(given)
        x = self.data if x is None else p.validate(x)
        if self.posterior is not None:
            return self.posterior.log_likelihood(x, self.draws)
        if train and self.bayesian:
            return self._train_terms()[0]
        return self._pointwise(p, x, given)

    @property
    def r_hat(self) -> float:
        """The largest split r_hat over the draws (NaN with one chain or no draws)."""
        if "_r_hat" not in self.__dict__:
            self._r_hat = math.nan
            if self.method in ("nuts", "svi", "exact") and self.draws:
                lead = next(iter(self.draws.values())).shape[:2]
                if lead[0] > 1 and lead[1] > 3:
                    from inference.evaluation.diagnostics import convergence

                    self._r_hat = convergence(self.draws)[0]
        return self._r_hat

    def flags(self, lp: torch.Tensor | None = None, guide: bool = True) -> list[str]:
        """Why this fit's numbers (and the per-datum log-densities `lp`, if given) cannot be
        trusted: NaN log-densities, a discrete likelihood above 0, chains that did not mix,
        and (with `guide`) an SVI guide far from the posterior."""
        out = []
        k = self.info.get("pareto_k", math.nan) if guide and self.method == "svi" else math.nan
        if k > PROPOSAL_K:
            out.append(
                f"the SVI guide is far from the posterior (Pareto k {k:.2f} > {PROPOSAL_K}): "
                "refit by nuts"
            )
        if lp is not None:
            nan = int(torch.isnan(lp).sum())
            if nan:
                out.append(f"{nan} NaN log-densit{'y' if nan == 1 else 'ies'}")
            roles = self.program.discovered
            if roles is not None and roles.discrete_data:
                above = lp > DISCRETE_SLACK
                if above.any():
                    out.append(
                        f"discrete likelihood above 0 for {int(above.sum())} data "
                        f"(max log p {float(lp[above].max()):.4g}): impossible for "
                        "counts, a numerical failure (float32? a degenerate fit?)"
                    )
        r = self.r_hat if self.method == "nuts" else math.nan
        if r > RHAT_LIMIT:
            out.append(f"chains did not mix (max r_hat {r:.3g} > {RHAT_LIMIT})")
        return out

    @_placed
    @torch.no_grad()
    def report(self, x, given: dict | None = None, particles: int | None = None) -> Report:
        lp, se, k = self._log_density(x, given, particles)
        n = lp.numel()
        zero = torch.isneginf(lp)
        finite = lp[~zero]
        nats = math.inf if zero.any() else float(-lp.mean())
        mc_se = float(torch.sqrt((se[~zero] ** 2).sum()) / n) if se is not None else 0.0
        p = self.program
        return Report(
            model=p.label,
            method=self.method,
            factorization=p.factorization,
            num_parameters=p.num_parameters,
            n=n,
            nats=nats,
            bits_per_dim=nats / (p.num_dims * math.log(2)),
            num_zero_prob=int(zero.sum()),
            nats_nonzero=float(-finite.mean()) if finite.numel() else math.nan,
            fit_seconds=self.fit_seconds,
            particles=int(k),
            mc_se=mc_se,
            flags="; ".join(self.flags(lp)),
            guide_pareto_k=float(self.info.get("pareto_k", math.nan)),
        )

    # -- generation -----------------------------------------------------------------------------
    @_placed
    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None, given: dict | None = None) -> torch.Tensor:
        """n new data: from the fitted model (MLE/MAP), the exact posterior predictive (exact),
        or the posterior predictive with one posterior draw per datum (SVI/NUTS); for a model
        of one series, a series of length n from one draw. A program that takes no
        num_samples gives n data sets (n, ...) at its given covariates (`given`: new ones),
        one posterior draw each. New data are new units: continuous local latents are drawn
        from their prior (`to_arviz(posterior_predictive=True)` replicates the observed units).
        With `seed`, reproducible (and the global RNG untouched); without, fresh draws from
        the global RNG on every call."""
        n = positive_int(n, "n")
        p = self._at(given)
        args = p.args if given else None
        with seeded(seed):
            if self.posterior is not None:
                return self.posterior.sample_predictive(n)
            # new units (and latents whose shape follows new sizes) are drawn from the prior
            local = set(p.local) | (p.resized(p.values, args) if given else set())
            values = {k: v for k, v in p.values.items() if k not in local}
            if self.method not in ("svi", "nuts"):
                return p.sample(n, values, args)
            flat = {k: v.flatten(0, 1) for k, v in self.draws.items() if k not in local}
            at = lambda s: {**values, **{k: v[s] for k, v in flat.items()}}  # noqa: E731
            if not p.args.takes_num_samples:  # whole data sets, one draw each
                which = torch.randint(self.num_draws, (n,))
                return torch.stack([p.generate(None, at(s), args) for s in which.tolist()])
            if not p.exchangeable:
                s = int(torch.randint(self.num_draws, ()))
                return p.sample(n, at(s), args)
            which = torch.randint(self.num_draws, (n,))
            out = None
            for s in which.unique():
                rows = (which == s).nonzero().squeeze(-1)
                xs = p.sample(len(rows), at(s), args)
                if out is None:
                    out = xs.new_empty((n, *xs.shape[1:]))
                out[rows] = xs
            return out

    def complete(self, prefix, seed: int | None = None) -> torch.Tensor:
        """(N, D): each row of `prefix` (N, k: the first k dims, the top half of an image)
        completed by a draw of the other dims from the fitted model's conditional
        (`inference.completion`); a ValueError where the model cannot condition on them."""
        from inference.completion import complete

        return complete(self, prefix, seed)

    @_placed
    def forecast(self, steps: int, prob: float = 0.9, history=None):
        """Forecast `steps` values after the training series (or after `history`): mean and
        central `prob` interval per step, Gaussian under the estimate for MLE/MAP, the posterior
        predictive (parameter uncertainty included) for exact/SVI/NUTS. For models that
        forecast (a `forecast(x, steps, prob, draws)` method, e.g. AutoRegressive)."""
        forecast = self.program.accelerator("forecast")
        if forecast is None:
            raise ValueError(
                f"{self.program.label} does not forecast: its data are not a "
                "series; forecasts are for series models such as AutoRegressive"
            )
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
        entry per training datum), observed_data and sample_stats
        (`inference.evaluation.arviz_io`). A point fit (mle, map) enters as its Laplace
        approximation (`laplace()`), flagged in the attributes; where it has none, a ValueError
        says why."""
        from inference.evaluation.arviz_io import to_inference_data

        return to_inference_data(self if self.bayesian else self.laplace(), **options)

    def save(self, path) -> None:
        """Save to `path` (data only: tensors, numbers and strings; `inference.load` reads it)."""
        from inference.persist import save

        save(self, path)
