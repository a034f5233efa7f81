"""Model choice for one series: information criteria on a common sample, and leave-future-out
cross-validation (pointwise LOO is not valid for a series: it predicts the past from the future).

    select_order(x, max_order=12, criterion="aic")        -> OrderSelection
    lfo(AutoRegressive(2), x, min_train=100)                -> LFO (exact refits)
    lfo(fit(AutoRegressive(2), x[:100], "nuts"), x, 100)    -> LFO (PSIS-LFO)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from inference.evaluation.loo import psis_log_weights
from inference.fitting import fit
from inference.result import Fit
from ppl_models.checks import one_of, positive_int, series
from ppl_models.programs.program import as_program
from ppl_models.runtime import few_threads

CRITERIA = ("aic", "bic")


@dataclass
class OrderSelection:
    """Conditional-MLE fits of orders 1..max_order, all on the same observations
    x_(max_order+1..T): log-likelihood, AIC = -2 llf + 2 k and BIC = -2 llf + k log n with k
    the number of free parameters (sigma included) and n = T - max_order, as statsmodels'
    `ar_select_order`."""

    order: int  # the order with the smallest criterion
    criterion: str
    nobs: int
    llf: dict[int, float]
    aic: dict[int, float]
    bic: dict[int, float]
    num_parameters: dict[int, int] = field(default_factory=dict)


def _default_model(order: int):
    from ppl_models.models.autoregressive import AutoRegressive

    return AutoRegressive(order)


def select_order(x, max_order: int, criterion: str = "aic", model=None) -> OrderSelection:
    """Choose the order of an autoregression by AIC or BIC on a common sample: the first
    `max_order` values are held back for every order, so all fits explain the same data.

    `model`: a function order -> unfitted model with a conditional likelihood (default
    `AutoRegressive(order)` with a constant); each is fitted by MLE."""
    max_order = positive_int(max_order, "max_order")
    criterion = one_of(criterion, CRITERIA, "criterion")
    make = model or _default_model
    x = series(x, min_length=max_order + 2, what=f"select_order(max_order={max_order})")
    n = len(x) - max_order
    llf, aic, bic, ks = {}, {}, {}, {}
    for p in range(1, max_order + 1):
        m = make(p)
        sample = x[max_order - p :]
        with few_threads(sample):
            lp = fit(m, sample, "mle").model.log_prob(sample).detach()
        if lp.numel() != n:
            raise ValueError(
                f"select_order compares likelihoods of the same {n} observations, "
                f"but the order-{p} model scores {lp.numel()}; build the models "
                "with likelihood='conditional'"
            )
        k = m.num_parameters
        llf[p] = float(lp.sum())
        aic[p] = -2 * llf[p] + 2 * k
        bic[p] = -2 * llf[p] + k * math.log(n)
        ks[p] = k
    table = aic if criterion == "aic" else bic
    return OrderSelection(
        order=min(table, key=table.get),
        criterion=criterion,
        nobs=n,
        llf=llf,
        aic=aic,
        bic=bic,
        num_parameters=ks,
    )


@dataclass
class LFO:
    """Leave-future-out cross-validation of one-step-ahead predictions: for each t from
    `min_train` to T - 1, log p(x_t | x_1..x_(t-1)) under the model fitted to x_1..x_(t-1)."""

    elpd: float  # sum of `pointwise`
    se: float  # sqrt(n) times the sd of `pointwise`
    pointwise: torch.Tensor  # (T - min_train,) one-step-ahead log predictive densities
    min_train: int
    method: str
    refits: int  # fits made (1 + the refits PSIS asked for)
    pareto_k: torch.Tensor | None = None  # PSIS shape per step (None for exact refits)

    @property
    def mean(self) -> float:
        """elpd per predicted step (nats)."""
        return self.elpd / len(self.pointwise)


def lfo(
    models,
    x,
    min_train: int,
    method: str | None = None,
    *,
    psis: bool | None = None,
    threshold: float = 0.7,
    seed: int = 0,
    **options,
):
    """Expected log predictive density of one-step-ahead predictions (leave-future-out).

    `models`: an unfitted model, a `Fit` (its model's twin is refitted with its method), or a
    dict of those (returns a dict of `LFO`). `method` overrides the fit's method (default
    "mle" for a model); `options` go to `inference.fit`.

    With ``psis=False`` (the default for mle, map and exact, which refit in closed form or in
    milliseconds) the model is refitted to x_1..x_(t-1) for every t. With ``psis=True`` (the
    default for svi and nuts) it is PSIS-LFO (Buerkner, Gabry & Vehtari 2020): one fit to the
    first `min_train` values, whose draws are importance-weighted by the likelihood of the
    values seen since; when the Pareto k of the weights exceeds `threshold` the model is refitted
    to all values so far.
    """
    if isinstance(models, dict):
        return {
            label: lfo(
                m, x, min_train, method, psis=psis, threshold=threshold, seed=seed, **options
            )
            for label, m in models.items()
        }
    if isinstance(models, Fit):
        method = method or models.method
        model = models.program.fresh()
        if not models.program.ours:  # refit as the fit was called: its data argument, etc.
            p = models.program
            options = {
                "data_arg": p.args.data_arg,
                "data_plate": p.data_plate,
                "given": p.given,
                **options,
            }
    else:
        model, method = models, method or "mle"
    program = as_program(
        model, options.get("data_plate", "data"), options.get("given"), options.get("data_arg", "x")
    )
    x = program.validate(x)
    min_train = positive_int(min_train, "min_train")
    if not len(program.validate(x[:min_train])) < len(x):
        raise ValueError(
            f"min_train={min_train} leaves nothing to predict in a series of "
            f"{len(x)} values; use min_train < {len(x)}"
        )
    if psis is None:
        psis = method in ("svi", "nuts")
    run = _psis_lfo if psis else _exact_lfo
    with few_threads(x):
        pointwise, refits, k = run(model, x, min_train, method, threshold, seed, options)
    n = len(pointwise)
    se = float(pointwise.std() * math.sqrt(n)) if n > 1 else math.nan
    return LFO(
        elpd=float(pointwise.sum()),
        se=se,
        pointwise=pointwise,
        min_train=min_train,
        method=method,
        refits=refits,
        pareto_k=k,
    )


def _exact_lfo(model, x, min_train, method, threshold, seed, options):
    out = []
    for t in range(min_train, len(x)):
        f = fit(model, x[:t], method, seed=seed, **options)
        out.append(f.log_density(x[: t + 1])[-1])
    return torch.stack(out), len(out), None


def _psis_lfo(model, x, min_train, method, threshold, seed, options):
    """Each step's log-density is the last entry of the pointwise log-likelihood of x_1..x_t;
    the weights of draws fitted to the values before index `start` are the likelihood of the
    values from `start` to t - 1."""
    out, ks, refits = [], [], 0
    ll = offset = start = None
    for t in range(min_train, len(x)):
        k = 0.0
        if ll is not None:
            log_w, k = psis_log_weights(ll[:, start - offset : t - offset].sum(-1))
        if ll is None or k > threshold:
            f = fit(model, x[:t], method, seed=seed, **options)
            refits += 1
            ll = f.pointwise_log_likelihood(x).flatten(0, 1)  # (S, modelled steps of x)
            offset, start = len(x) - ll.shape[-1], t  # offset: values before the first step
            log_w = torch.full((ll.shape[0],), -math.log(ll.shape[0]), dtype=ll.dtype)
        out.append(torch.logsumexp(log_w + ll[:, t - offset], 0))
        ks.append(k)
    return torch.stack(out), refits, torch.tensor(ks, dtype=torch.float64)
