"""Point estimates: MLE and MAP, in closed form or by gradient ascent on the exact likelihood."""

from __future__ import annotations

import math
import sys
import warnings

import torch
from tqdm.auto import tqdm

from inference.result import Fit
from ppl_models.checks import positive_int

SOLVERS = ("closed", "lbfgs", "adam")


def show_progress(progress_bar) -> bool:
    return sys.stderr.isatty() if progress_bar is None else bool(progress_bar)


def point_fit(model, x, method, *, solver=None, valid=None, batch_size=None, max_epochs=None,
              patience=None, lr=None, lr_decay=None, progress_bar=None) -> Fit:
    """Fit a point copy of `model` by MLE (method="mle") or MAP ("map")."""
    if solver is not None and solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    prior = method == "map"
    m = model.point()
    if valid is not None:
        try:
            valid = m.validate(valid)
        except ValueError as e:
            raise ValueError(f"validation data (valid=...): {e}") from None
    if solver in (None, "closed") and m.fit_closed_form(x, prior):
        return Fit(model=m, method=method, data=x, info={"solver": "closed form"})
    if solver == "closed":
        raise ValueError(f"{type(model).__name__} has no closed-form {method.upper()} with these "
                         "priors; use solver='lbfgs' or 'adam'")
    if solver is None:
        solver = "adam" if valid is not None or batch_size is not None else m.gradient_solver
    if not [p for p in m.parameters() if p.requires_grad]:
        raise ValueError(f"{type(model).__name__} has no free parameters to optimise here; use "
                         "the closed form (solver=None)")
    objective = _Objective(m, prior, len(x))
    run = _lbfgs if solver == "lbfgs" else _adam
    info = run(m, objective, x, valid=valid, batch_size=batch_size, max_epochs=max_epochs,
               patience=patience, lr=lr, lr_decay=lr_decay, progress=show_progress(progress_bar),
               desc=f"{method} {type(model).__name__}")
    return Fit(model=m, method=method, data=x, losses=info.pop("losses"),
               info={"solver": solver, **info})


class _Objective:
    """Negative log joint per datum: -(mean log p(x | theta) + log p(theta) / N)."""

    def __init__(self, model, prior: bool, n):
        self.model, self.prior, self.n = model, prior, n

    def __call__(self, batch):
        loss = -self.model._log_prob(batch).mean()
        if self.prior:  # priors re-evaluated each step: a conditional prior moves with its parents
            loss = loss - self.model.log_prior() / self.n
        return loss


def _lbfgs(m, objective, x, *, valid, batch_size, max_epochs, patience, lr, lr_decay, progress,
           desc):
    """Full-batch L-BFGS with strong-Wolfe line search, 20 iterations per epoch, until the
    loss changes by less than 1e-10 nats per datum."""
    if batch_size is not None or lr_decay is not None:
        raise ValueError("solver='lbfgs' is full batch with a line search; batch_size and "
                         "lr_decay apply to solver='adam'")
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(params, lr=lr or 1.0, max_iter=20, history_size=50,
                            tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = objective(x)
        loss.backward()
        return loss

    losses, stop = [], "max_epochs reached"
    epochs = positive_int(max_epochs or 100, "max_epochs")
    best = _snapshot(m)
    for epoch in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
        loss = float(opt.step(closure).detach())
        if not math.isfinite(loss):
            stop = f"loss became {loss} at epoch {epoch}; kept the last finite parameters"
            warnings.warn(stop, RuntimeWarning, stacklevel=4)
            m.load_state_dict(best)
            break
        best = _snapshot(m)
        losses.append(loss)
        if len(losses) > 1 and abs(losses[-2] - losses[-1]) < 1e-10:
            stop = "converged"
            break
    out = {"losses": losses, "epochs": len(losses), "stop": stop}
    if valid is not None:
        with torch.no_grad():
            out["valid_nats"] = float(-m._log_prob(valid).mean())
    return out


def _adam(m, objective, x, *, valid, batch_size, max_epochs, patience, lr, lr_decay, progress,
          desc):
    """Minibatch Adam, the step size multiplied by `lr_decay` after each epoch (default 1: a
    constant step); early stopping on the validation nats (training nats without `valid`);
    the best parameters are kept; a NaN loss stops training with a warning."""
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr or 1e-3)
    decay = 1.0 if lr_decay is None else float(lr_decay)
    if not 0 < decay <= 1:
        raise ValueError(f"lr_decay must be in (0, 1] (the factor applied to the step size after "
                         f"each epoch), got {lr_decay!r}")
    schedule = torch.optim.lr_scheduler.ExponentialLR(opt, decay)
    n = len(x)
    batch_size = positive_int(batch_size or min(100, n), "batch_size")
    epochs = positive_int(max_epochs or 1000, "max_epochs")
    patience = positive_int(patience or 20, "patience")
    best_nats, best, best_epoch, bad = math.inf, _snapshot(m), -1, 0
    losses, valid_curve, stop = [], [], "max_epochs reached"
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        total = 0.0
        for idx in torch.randperm(n).split(batch_size):
            loss = objective(x[idx])
            if not torch.isfinite(loss):
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        else:
            schedule.step()
            losses.append(total / n)
            with torch.no_grad():
                monitor = float(-m._log_prob(valid).mean()) if valid is not None else losses[-1]
            valid_curve.append(monitor)
            bar.set_postfix(train=f"{losses[-1]:.3f}",
                            **({"valid": f"{monitor:.3f}"} if valid is not None else {}))
            if monitor < best_nats - 1e-6:
                best_nats, best, best_epoch, bad = monitor, _snapshot(m), epoch, 0
            else:
                bad += 1
                if bad >= patience:
                    stop = f"early stopping: no improvement for {patience} epochs"
                    break
            continue
        kept = f"the best parameters (epoch {best_epoch})" if best_epoch >= 0 else \
            "the initial parameters (no epoch finished); lower lr"
        stop = f"loss became {float(loss.detach())} at epoch {epoch}; stopped and kept {kept}"
        warnings.warn(stop, RuntimeWarning, stacklevel=4)
        break
    m.load_state_dict(best)
    out = {"losses": losses, "epochs": len(losses), "best_epoch": best_epoch, "stop": stop}
    if valid is not None:
        out["valid_nats"] = best_nats
        out["valid_curve"] = valid_curve
    return out


def _snapshot(m) -> dict:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}
