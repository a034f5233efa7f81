"""The minimum of a smooth function of a flat vector, with the curvature there: Newton's
method with step halving, an L-BFGS search first where Newton does not get there from the
start. The Laplace approximations of a posterior (`inference.laplace`) and of imputed values
given the parameters (`ppl_models.programs.imputation`) both find their modes here."""

from __future__ import annotations

import torch


def minimum(f, u, steps: int = 20, tol: float = 1e-8, fast=None):
    """(minimum, Cholesky factor of the Hessian there) of f from u: `newton`, else `newton`
    from where `lbfgs` stops; None where neither gets to one with a positive-definite
    Hessian. `fast`: the same function, cheaper to evaluate and differentiable once (a traced
    graph), for every value and the L-BFGS search; Newton's gradients and Hessians are f's."""
    fast = f if fast is None else fast
    found = newton(f, u, steps, tol, fast)
    return found if found is not None else newton(f, lbfgs(fast, u), steps, tol, fast)


def closure_of(opt, loss_fn):
    """The closure L-BFGS calls: zero the gradients, evaluate `loss_fn()`, backpropagate."""

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    return closure


def newton(f, u, steps: int = 20, tol: float = 1e-8, fast=None):
    """(mode, Cholesky factor of the Hessian there) by Newton's method from u, or None; at the
    mode where the Newton decrement is below `tol` (a tighter one makes a start that is
    already close, such as a mode found for nearby values, take its last step too), or below
    what f's precision resolves (float32: 10 eps |f|; a decrement is about twice the gap in f
    to the mode). `fast`: f's values, cheaper (the step halving's)."""
    if u is None:
        return None
    fast = f if fast is None else fast
    value = fast(u).detach()
    for _ in range(steps + 1):
        grad, hess = _grad_and_hessian(f, u)
        chol, info = torch.linalg.cholesky_ex((hess + hess.T) / 2)
        if info != 0 or not torch.isfinite(value) or not torch.isfinite(hess).all():
            return None
        step = torch.cholesky_solve(grad[:, None], chol)[:, 0]
        resolved = 10 * torch.finfo(value.dtype).eps * abs(float(value))
        if float(grad @ step) < max(tol, resolved):  # Newton decrement: at the mode
            return u, chol
        for _ in range(20):
            new = fast(u - step).detach()
            if torch.isfinite(new) and new <= value:
                u, value = (u - step).detach(), new
                break
            step = step / 2
        else:
            return None
    return None


def _grad_and_hessian(f, u):
    """f's gradient and Hessian at u from one evaluation (the Hessian's rows are the gradient's
    own derivatives)."""
    v = u.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(f(v), v, create_graph=True)
        if not grad.requires_grad:  # f linear in u
            return grad.detach(), torch.zeros(len(v), len(v), dtype=v.dtype, device=v.device)
        rows = [
            torch.autograd.grad(grad[i], v, retain_graph=True, allow_unused=True)[0]
            for i in range(len(v))
        ]
    zero = torch.zeros_like(v)
    return grad.detach(), torch.stack([zero if r is None else r for r in rows])


def lbfgs(f, u, max_iter: int = 500):
    """L-BFGS (strong Wolfe) on f from u; None where it leaves the finite region."""
    v = u.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [v],
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    try:
        opt.step(closure_of(opt, lambda: f(v)))
    except (RuntimeError, IndexError, ValueError):  # (a line search lost in non-finite values)
        return None
    out = v.detach()
    return out if bool(torch.isfinite(out).all()) and bool(torch.isfinite(f(out))) else None


__all__ = ["closure_of", "lbfgs", "minimum", "newton"]
