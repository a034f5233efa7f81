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
from tqdm.auto import tqdm

from inference import distributed
from inference.objective import Objective
from inference.result import Fit
from ppl_models.checks import positive_int
from ppl_models.modes import closure_of
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
    run = _lbfgs if solver == "lbfgs" else _adam
    if solver == "adam" and mixture:
        lr = lr or MIXTURE_ADAM["lr"]
        max_epochs = max_epochs or MIXTURE_ADAM["max_epochs"]
        patience = patience or MIXTURE_ADAM["patience"]
        restarts = MIXTURE_ADAM["restarts"] if restarts is None else restarts
        if batch_size is None and len(x) <= MIXTURE_ADAM["full_batch"]:
            batch_size = len(x)
    restarts = positive_int(1 if restarts is None else restarts, "restarts")
    objective, first = Objective(program, names, prior, len(x)), {}
    if restarts > 1:
        # each restart runs restart_steps Adam steps, as many epochs as that takes
        per_epoch = math.ceil(len(x) / (batch_size or len(x)))
        short = max(1, math.ceil(MIXTURE_ADAM["restart_steps"] / per_epoch))
        objective, first = _best_start(
            program, names, prior, x, restarts, run, short, lr=lr, batch_size=batch_size
        )
        max_epochs = max(1, (max_epochs or 1000) - short)
    extra = {"seed": seed} if run is _adam else {}
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
            _lbfgs(
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


def _permutation(n: int, seed, epoch: int, device) -> torch.Tensor:
    """One epoch's order of the data: `DistributedSampler`'s permutation (seeded by seed +
    epoch), so that one process with batch size B x R takes exactly the union of the batches
    that R data-parallel ranks take with batch size B; the global RNG when seed is None."""
    if seed is None:
        return torch.randperm(n, device=device)
    g = torch.Generator("cpu").manual_seed(seed + epoch)
    return torch.randperm(n, generator=g, device="cpu").to(device)  # the same on every device


def _lbfgs(objective, x, *, valid, batch_size, max_epochs, patience, lr, lr_decay, progress, desc):
    """Full-batch L-BFGS with strong-Wolfe line search, 20 iterations per epoch, until the
    gradient vanishes (every entry below 1e-11 per datum) or an epoch no longer moves the
    loss. A loss-change rule alone stops early where the likelihood is flat (a probability of
    1e-3 off by 3e-7 changes the loss by 5e-11); the gradient rule reaches a closed form's
    estimate to ~1e-12."""
    if batch_size is not None or lr_decay is not None:
        raise ValueError(
            "solver='lbfgs' is full batch with a line search; batch_size and "
            "lr_decay apply to solver='adam'"
        )

    def optimizer(step):
        opt = torch.optim.LBFGS(
            objective.parameters,
            lr=step,
            max_iter=20,
            history_size=50,
            tolerance_grad=1e-12,
            tolerance_change=1e-14,
            line_search_fn="strong_wolfe",
        )
        return opt, closure_of(opt, lambda: objective(x))

    step = lr or 1.0
    opt, closure = optimizer(step)
    losses, stop = [], "max_epochs reached"
    epochs = positive_int(max_epochs or 100, "max_epochs")
    best = objective.snapshot()
    for epoch in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
        try:
            opt.step(closure)  # returns the loss before its step: the loss after it, here
            with torch.no_grad():
                loss = float(objective(x))
        except (ValueError, RuntimeError):
            # an error at finite parameters is the program's own
            if all(bool(torch.isfinite(u).all()) for u in objective.parameters) or step < 1e-3:
                raise
            loss = math.nan
        if not math.isfinite(loss) and step >= 1e-3:
            # the line search extrapolated to overflow (a scale of 1e-300, then NaN): back to
            # the last epoch's parameters with a fresh history and half the step
            objective.restore(best)
            step /= 2
            opt, closure = optimizer(step)
            continue
        if not math.isfinite(loss):
            stop = f"loss became {loss} at epoch {epoch}; kept the last finite parameters"
            warnings.warn(stop, RuntimeWarning, stacklevel=4)
            objective.restore(best)
            break
        best = objective.snapshot()
        losses.append(loss)
        grad = max(
            (
                float(u.grad.abs().max())
                for u in objective.parameters
                if u.grad is not None and u.numel()
            ),
            default=0.0,
        )
        if grad < 1e-11 or (
            len(losses) > 1
            and abs(losses[-2] - losses[-1]) < 1e-10
            and (epoch >= 4 or losses[-2] == losses[-1])
        ):
            stop = "converged"
            break
    out = {"losses": losses, "epochs": len(losses), "stop": stop}
    if valid is not None:
        out["valid_nats"] = objective.nats(valid)
    return out


def _adam(
    objective, x, *, valid, batch_size, max_epochs, patience, lr, lr_decay, progress, desc, seed=0
):
    """Minibatch Adam, the step size multiplied by `lr_decay` after each epoch (default 1: a
    constant step); early stopping on the validation nats (training nats without `valid`);
    the best parameters are kept; a NaN loss stops training with a warning. Data-parallel
    under an initialised torch.distributed process group (`inference.distributed`)."""
    parallel = distributed.active()
    if parallel:
        step_loss, params = distributed.wrap(objective)
    else:
        step_loss, params = objective, objective.parameters
    opt = torch.optim.Adam(params, lr=lr or 1e-3)
    decay = 1.0 if lr_decay is None else float(lr_decay)
    if not 0 < decay <= 1:
        raise ValueError(
            f"lr_decay must be in (0, 1] (the factor applied to the step size after "
            f"each epoch), got {lr_decay!r}"
        )
    schedule = torch.optim.lr_scheduler.ExponentialLR(opt, decay)
    n = len(x)
    batch_size = positive_int(batch_size or min(100, n), "batch_size")
    epochs = positive_int(max_epochs or 1000, "max_epochs")
    patience = positive_int(patience or 20, "patience")
    if parallel:
        shards = distributed.Shards(n, batch_size, 0 if seed is None else seed)
        valid_part = (
            valid[distributed.rank() :: distributed.world_size()] if valid is not None else None
        )
    best_nats, best, best_epoch, bad = math.inf, objective.snapshot(), -1, 0
    losses, valid_curve, stop = [], [], "max_epochs reached"
    show = progress and distributed.is_writer()
    bar = tqdm(range(epochs), desc=desc, disable=not show, leave=False)
    for epoch in bar:
        total, count, finite = 0.0, 0, True
        batches = (
            shards.epoch(epoch, x.device)
            if parallel
            else _permutation(n, seed, epoch, x.device).split(batch_size)
        )
        for idx in batches:
            loss = step_loss(x[idx], idx)
            finite = distributed.all_finite(loss) if parallel else bool(torch.isfinite(loss))
            if not finite:  # every rank stops after the same step
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        if not finite:
            kept = (
                f"the best parameters (epoch {best_epoch})"
                if best_epoch >= 0
                else "the initial parameters (no epoch finished); lower lr"
            )
            what = "non-finite (nan or inf) on some rank" if parallel else f"{float(loss.detach())}"
            stop = f"loss became {what} at epoch {epoch}; stopped and kept {kept}"
            warnings.warn(stop, RuntimeWarning, stacklevel=4)
            break
        schedule.step()
        losses.append(distributed.mean_over_ranks(total, count, x) if parallel else total / n)
        if valid is None:
            monitor = losses[-1]
        elif parallel:
            with torch.no_grad():
                nll = -float(objective.program.log_prob(valid_part, objective.values()).sum())
            monitor = distributed.mean_over_ranks(nll, len(valid_part), x)
        else:
            monitor = objective.nats(valid)
        valid_curve.append(monitor)
        bar.set_postfix(
            train=f"{losses[-1]:.3f}", **({"valid": f"{monitor:.3f}"} if valid is not None else {})
        )
        if monitor < best_nats - 1e-6:
            best_nats, best, best_epoch, bad = monitor, objective.snapshot(), epoch, 0
        else:
            bad += 1
            if bad >= patience:
                stop = f"early stopping: no improvement for {patience} epochs"
                break
    objective.restore(best)
    out = {"losses": losses, "epochs": len(losses), "best_epoch": best_epoch, "stop": stop}
    if parallel:
        out["ranks"] = distributed.world_size()
    if valid is not None:
        out["valid_nats"] = best_nats
        out["valid_curve"] = valid_curve
    return out
