"""The two searches of a point fit (`inference.optimize`): full-batch L-BFGS with a line
search, and minibatch Adam with early stopping (data-parallel under torch.distributed; on one
traced graph of the loss where each batch is the whole data)."""

from __future__ import annotations

import math
import warnings

import torch
from tqdm.auto import tqdm

from inference import distributed
from ppl_models.checks import positive_int
from ppl_models.modes import closure_of


def _agrees(objective, fused, x) -> bool:
    """The traced loss equals the objective's own at its leaves (a restart's start included)."""
    with torch.no_grad():
        eager = objective(x)
    traced, _ = fused.value_and_grad(objective.flat())
    tol = max(1e-9, 100 * torch.finfo(eager.dtype).eps)
    return bool(torch.isclose(traced.to(eager.dtype), eager, rtol=tol, atol=tol))


def _permutation(n: int, seed, epoch: int, device) -> torch.Tensor:
    """One epoch's order of the data: `DistributedSampler`'s permutation (seeded by seed +
    epoch), so that one process with batch size B x R takes exactly the union of the batches
    that R data-parallel ranks take with batch size B; the global RNG when seed is None."""
    if seed is None:
        return torch.randperm(n, device=device)
    g = torch.Generator("cpu").manual_seed(seed + epoch)
    return torch.randperm(n, generator=g, device="cpu").to(device)  # the same on every device


def lbfgs(objective, x, *, valid, batch_size, max_epochs, patience, lr, lr_decay, progress, desc):
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


def adam(
    objective,
    x,
    *,
    valid,
    batch_size,
    max_epochs,
    patience,
    lr,
    lr_decay,
    progress,
    desc,
    seed=0,
    fused=None,
):
    """Minibatch Adam, the step size multiplied by `lr_decay` after each epoch (default 1: a
    constant step); early stopping on the validation nats (training nats without `valid`);
    the best parameters are kept; a NaN loss stops training with a warning. Data-parallel
    under an initialised torch.distributed process group (`inference.distributed`). `fused`
    (`Objective.traced`): the whole-data loss by one graph, used where each batch is the
    whole data and the graph gives this objective's loss at its start."""
    parallel = distributed.active()
    if fused is not None and not _agrees(objective, fused, x):
        fused = None
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
            whole = fused is not None and len(idx) == n
            loss = objective.fused_step(fused) if whole else step_loss(x[idx], idx)
            finite = distributed.all_finite(loss) if parallel else bool(torch.isfinite(loss))
            if not finite:  # every rank stops after the same step
                break
            if not whole:
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
    if fused is not None:
        out["objective"] = "the whole-data loss and its gradient by one traced graph"
    if parallel:
        out["ranks"] = distributed.world_size()
    if valid is not None:
        out["valid_nats"] = best_nats
        out["valid_curve"] = valid_curve
    return out


__all__ = ["adam", "lbfgs"]
