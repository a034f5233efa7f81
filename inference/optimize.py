"""Point estimates: MLE and MAP, in closed form or by gradient ascent on the exact likelihood.

Every program is optimised the same way: each free parameter (a point parameter, or a global
random one treated as free) gets one unconstrained tensor; the objective is the per-datum
log-likelihood (discrete latents summed out) plus, for MAP, the log prior over the number of
data. A model's closed form, where it belongs to its `forward`, replaces the search.
"""

from __future__ import annotations

import copy
import math
import warnings

import torch

from inference import distributed
from inference.objective import Objective
from inference.result import Fit
from inference.solvers import adam, lbfgs
from ppl_models.checks import positive_int
from ppl_models.runtime import show_progress, warn

SOLVERS = ("closed", "lbfgs", "adam")
# Adam's defaults where the program has enumerated discrete latents (a mixture): full batch (up
# to `full_batch` data), larger steps, many of them, and `restarts` short runs of
# `restart_steps` from fresh starts, the best one continued (a mixture's likelihood has many
# modes). Measured on the K=10 Bernoulli mixture of digits (MAP, eight seeds): L-BFGS stalls at
# 23.3-23.8 test nats; one start reaches 19.41-19.81; five restarts 19.42-19.66 (EM with the
# same pseudo-counts, best of 5 restarts: 19.476).
MIXTURE_ADAM = {
    "lr": 0.05,
    "max_epochs": 1500,
    "patience": 200,
    "full_batch": 10_000,
    "restarts": 5,
    "restart_steps": 100,
}


def point_fit(
    program,
    x,
    method,
    *,
    solver=None,
    valid=None,
    batch_size=None,
    max_epochs=None,
    patience=None,
    lr=None,
    lr_decay=None,
    restarts=None,
    progress_bar=None,
    seed=0,
    joint: bool = False,
) -> Fit:
    """Fit a point estimate of `program` by MLE (method="mle") or MAP ("map"). With `joint`
    (where NUTS and SVI start), continuous local latents and imputed values are maximised with
    the parameters (a joint mode); without, a program with local latents is refused and
    imputed values are integrated (`_integrate_imputed`)."""
    if solver is not None and solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    prior = method == "map"
    if valid is not None:
        try:
            valid = program.validate(valid)
        except ValueError as e:
            raise ValueError(f"validation data (valid=...): {e}") from None
    closed = program.accelerator("fit_closed_form")
    if solver in (None, "closed") and closed is not None:
        m = copy.deepcopy(program.model)
        if m.fit_closed_form(x, prior):
            return Fit(program.with_model(m), method, x, info={"solver": "closed form"})
    if solver == "closed":
        raise ValueError(
            f"{program.label} has no closed-form {method.upper()} with these "
            "priors; use solver='lbfgs' or 'adam'"
        )
    program.discover(x)
    local = program.roles.local
    if local and not joint:
        raise ValueError(
            f"{method} cannot fit {program.label}: site(s) {', '.join(map(repr, local))} are "
            f"continuous latent variables inside the data plate {program.roles.data_plate!r}, "
            "with no exact marginal likelihood to maximise. Use method='nuts' (samples them with "
            "the parameters) or method='svi' (a guide covers them)"
        )
    mixture = bool(program.roles.enumerated)
    # the checks at the end of a search (L-BFGS after Adam, the gradient left): for programs
    # whose default solver this module picks on the whole data; not where the model asks
    # for minibatch Adam itself (NADE: a full-batch gradient on 60,000 images is not cheap)
    checked = (
        valid is None
        and batch_size is None
        and getattr(program.model, "gradient_solver", None) is None
    )
    polish = checked and solver is None and mixture
    if solver is None:
        solver = (
            "adam"
            if valid is not None or batch_size is not None
            else getattr(program.model, "gradient_solver", "adam" if mixture else "lbfgs")
        )
    names = program.roles.free + (local if joint else [])
    if not names:
        raise ValueError(
            f"{program.label} has no free parameters to optimise: no pyro.param "
            "site and no unobserved sample site outside the data plate"
        )
    run = lbfgs if solver == "lbfgs" else adam
    if solver == "adam" and mixture:
        lr = lr or MIXTURE_ADAM["lr"]
        max_epochs = max_epochs or MIXTURE_ADAM["max_epochs"]
        patience = patience or MIXTURE_ADAM["patience"]
        restarts = MIXTURE_ADAM["restarts"] if restarts is None else restarts
        if batch_size is None and len(x) <= MIXTURE_ADAM["full_batch"]:
            batch_size = len(x)
    restarts = positive_int(1 if restarts is None else restarts, "restarts")
    objective, first = Objective(program, names, prior, len(x)), {}
    # full-batch Adam (a mixture's default: 1,500 steps) on one traced graph of the loss and
    # its gradient: HMM model_1 on 8 songs, 16 ms -> ~1.3 ms a step
    whole = run is adam and (batch_size or 0) >= len(x) and not distributed.active()
    fused = objective.traced(x) if whole else None
    extra = {"seed": seed, "fused": fused} if run is adam else {}
    if restarts > 1:
        # each restart runs restart_steps Adam steps, as many epochs as that takes
        per_epoch = math.ceil(len(x) / (batch_size or len(x)))
        short = max(1, math.ceil(MIXTURE_ADAM["restart_steps"] / per_epoch))
        objective, first = _best_start(
            program,
            names,
            prior,
            x,
            restarts,
            run,
            short,
            lr=lr,
            batch_size=batch_size,
            **({} if fused is None else {"fused": fused}),  # restarts keep Adam's seed 0
        )
        max_epochs = max(1, (max_epochs or 1000) - short)
    info = run(
        objective,
        x,
        valid=valid,
        batch_size=batch_size,
        max_epochs=max_epochs,
        patience=patience,
        lr=lr,
        lr_decay=lr_decay,
        progress=show_progress(progress_bar),
        desc=f"{method} {program.label}",
        **extra,
    )
    if polish:
        polished = _polish(objective, x)
        if polished:
            info["polish"] = polished
    moved = objective.onto_boundary(x)
    if moved:
        info["boundary"] = f"{moved} values moved onto the boundary of their support"
    if solver == "lbfgs":
        steps = objective.newton(x)
        if steps:
            info["newton_steps"] = steps
    if checked:
        info["gradient"] = _check_gradient(objective, x, f"{method} {program.label}")
    fitted = program.with_values(objective.values(exact=True))
    if not joint:
        fitted = _integrate_imputed(fitted, x, prior, info, f"{method} {program.label}")
    return Fit(
        fitted, method, x, losses=info.pop("losses"), info={"solver": solver, **first, **info}
    )


def _integrate_imputed(program, x, prior: bool, info: dict, label: str):
    """A program that imputes missing values: the search above maximised over them too (a
    joint mode); the likelihood of the observed values integrates them, so its maximum is
    taken from there (`Program.integrated_point`; on an AR(1) with 8 of 120 values missing,
    sigma 1.969 -> 2.039, the Kalman filter's MLE). Where that fails, the joint mode is kept,
    with a warning."""
    try:
        values = program.integrated_point(x, prior)
    except (ValueError, RuntimeError) as e:
        warn(
            f"{label}: the imputed values could not be integrated ({e}); the estimate is the "
            "joint mode over the parameters and the imputed values"
        )
        info["imputed"] = "joint mode (integrating them failed)"
        return program
    if values is None:
        return program
    info["imputed"] = "integrated (Laplace at their conditional mode)"
    return program.with_values(values)


GRADIENT_LIMIT = 1e-3  # largest |d loss / d u| (per datum) of a fit called an optimum


def _polish(objective, x) -> str:
    """Adam (the default for discrete latents: minibatches, restarts) stops where its steps
    stall, which may be short of the optimum (measured on a change-point program: 35 nats);
    L-BFGS from there on the whole data, kept where it lowers the loss."""
    with torch.no_grad():
        before = float(objective(x))
    state = objective.snapshot()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lbfgs(
                objective,
                x,
                valid=None,
                batch_size=None,
                max_epochs=50,
                patience=None,
                lr=None,
                lr_decay=None,
                progress=False,
                desc="",
            )
        with torch.no_grad():
            after = float(objective(x))
    except (ValueError, RuntimeError):
        after = math.nan
    if not after < before:
        objective.restore(state)
        return ""
    return f"L-BFGS after Adam: loss {before:.6g} -> {after:.6g} per datum"


def _check_gradient(objective, x, label: str) -> float:
    """The largest gradient of the loss (per datum) over the finite unconstrained values at
    the end of a search; a warning where it is far from zero (not an optimum)."""
    for u in objective.parameters:
        u.grad = None
    try:
        loss = objective(x)
        loss.backward()
    except (ValueError, RuntimeError):
        return math.nan
    grads = [
        u.grad[torch.isfinite(u.detach())].abs().max()
        for u in objective.parameters
        if u.grad is not None and bool(torch.isfinite(u.detach()).any())
    ]
    g = float(max(grads)) if grads else 0.0
    if g > GRADIENT_LIMIT:
        warn(
            f"{label} stopped where the gradient is {g:.3g} per datum (> {GRADIENT_LIMIT}): "
            "not at an optimum. Run longer (max_epochs), try solver='lbfgs', or restarts=..."
        )
    return g


def _best_start(program, names, prior, x, restarts, run, epochs, **options):
    """`restarts` short runs (`epochs` each) from fresh starts of the global parameters; the
    one with the lowest loss is continued."""
    losses, best = [], None
    for r in range(restarts):
        start = program if r == 0 else program.with_values(program.fresh_starts())
        objective = Objective(start, names, prior, len(x))
        run(
            objective,
            x,
            valid=None,
            max_epochs=epochs,
            patience=None,
            lr_decay=None,
            progress=False,
            desc="",
            **options,
        )
        with torch.no_grad():
            loss = float(objective(x))
        losses.append(loss)
        if best is None or loss < min(losses[:-1]):
            best = objective
    return best, {"restarts": restarts, "restart_losses": losses}
