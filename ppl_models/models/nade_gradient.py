"""The Bernoulli NADE's log-conditionals in O(N D H), with the hand-derived gradient of
Larochelle & Murray (2011): the accelerator behind `NADE._log_prob` (tests/test_nade.py checks
it against the Pyro program and its gradient against autograd's).

With x in visiting order, a_1 = c, a_(d+1) = a_d + W[:, d] x_d, h_d = sigmoid(a_d),
l_d = b_d + V_d . h_d and log p(x_d | x_<d) = x_d l_d - softplus(l_d). Going back, with g_d the
incoming gradient of each log-conditional and e_d = g_d (x_d - sigmoid(l_d)):

    db_d = sum_n e_d,   dV_d = sum_n e_d h_d,   delta_d = e_d V_d h_d (1 - h_d),
    dc = sum_(n, d) delta_d,   dW[:, j] = sum_n x_j sum_(d > j) delta_d.

Both passes are loops over the dims on (N, H) blocks that stay in the processor's cache (the
paper's Algorithm 1); the forward pass keeps h (D, N, H) for the backward one. Evaluation
without gradients keeps nothing and runs in blocks of `ROWS` data. A second derivative (the
Laplace approximation of a small NADE) goes through the same formulas written as differentiable
tensor operations (`running_sum_log_conditionals`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ROWS = 256  # data per block when evaluating without gradients


def preactivations(x: torch.Tensor, W: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(N, D, H): a_d = c + sum_(j<d) W[:, j] x_j for x (N, D) in visiting order, W (H, D-1),
    by a running sum over d."""
    N, D = x.shape
    steps = torch.cumsum(x[:, :-1, None] * W.T, dim=1)  # (N, D-1, H): sums up to j = d-1
    return torch.cat([steps.new_zeros(N, 1, W.shape[0]), steps], 1) + c


def running_sum_log_conditionals(x, W, c, V, b) -> torch.Tensor:
    """(N, D) log-conditionals as differentiable tensor operations (O(N D H) memory)."""
    logits = torch.einsum("ndh,dh->nd", torch.sigmoid(preactivations(x, W, c)), V) + b
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none")


def _forward(xT, W, c, V, b, keep: torch.Tensor | None) -> torch.Tensor:
    """(D, N) logits of x^T (D, N); h_d written into keep[d] when given."""
    D, N = xT.shape
    a = c.expand(N, -1).clone()
    h = a.new_empty(a.shape) if keep is None else None
    logits = a.new_empty(D, N)
    WT = W.T
    for d in range(D):
        h_d = keep[d] if keep is not None else h
        torch.sigmoid(a, out=h_d)
        torch.mv(h_d, V[d], out=logits[d])
        if d < D - 1:
            a.addr_(xT[d], WT[d])  # a += x_d W[:, d]^T
    return logits + b[:, None]


KEEP = 1 << 26  # hidden units (D x N x H) kept for the backward pass: 256 MB in float32


def _blocks(xT, W, c, V, b) -> torch.Tensor:
    """(D, N) logits in blocks of ROWS data, keeping no hidden units."""
    return torch.cat([_forward(part, W, c, V, b, None) for part in xT.split(ROWS, 1)], 1)


def _no_grad(x, W, c, V, b) -> torch.Tensor:
    xT = x.T.contiguous()
    logits = _blocks(xT, W, c, V, b)
    return -F.binary_cross_entropy_with_logits(logits, xT, reduction="none").T


class BernoulliNADE(torch.autograd.Function):
    """(N, D) log p(x_d | x_<d) of x (N, D) in visiting order; gradients for W, c, V, b. The
    hidden units are kept for the backward pass up to `KEEP` of them; beyond, the backward pass
    recomputes them block by block (memory bounded whatever the batch)."""

    @staticmethod
    def forward(ctx, x, W, c, V, b):
        xT = x.T.contiguous()
        D, N = xT.shape
        keep = D * N * W.shape[0] <= KEEP
        h = xT.new_empty(D, N, W.shape[0]) if keep else None
        logits = _forward(xT, W, c, V, b, h) if keep else _blocks(xT, W, c, V, b)
        ctx.save_for_backward(x, W, c, V, b, logits, *([h] if keep else []))
        return -F.binary_cross_entropy_with_logits(logits, xT, reduction="none").T

    @staticmethod
    def backward(ctx, grad):
        x, W, c, V, b, logits, *kept = ctx.saved_tensors
        if torch.is_grad_enabled():  # a second derivative: the differentiable formulas
            params = (W, c, V, b)
            out = running_sum_log_conditionals(x, *params)
            needed = [p for p, n in zip(params, ctx.needs_input_grad[1:]) if n]
            grads = iter(torch.autograd.grad(out, needed, grad, create_graph=True))
            return (None, *(next(grads) if n else None for n in ctx.needs_input_grad[1:]))
        xT = x.T
        e = grad.T * (xT - torch.sigmoid(logits))  # (D, N): gradient at the logits
        if kept:
            parts = [(xT, e, kept[0])]
        else:  # recompute the hidden units of each block of data
            parts = []
            for xb, eb in zip(xT.split(ROWS, 1), e.split(ROWS, 1), strict=True):
                h = xb.new_empty(*xb.shape, W.shape[0])
                _forward(xb.contiguous(), W, c, V, b, h)
                parts.append((xb, eb, h))
        dWT, dc, dV = torch.zeros_like(W.T), torch.zeros_like(c), torch.zeros_like(V)
        for xb, eb, h in parts:
            block_dWT, block_dc = _backward(xb, eb, V, h)
            dWT += block_dWT
            dc += block_dc
            dV += torch.bmm(eb[:, None, :], h)[:, 0]  # (D, H): sum_n e_dn h_dn
        return None, dWT.T, dc, dV, e.sum(1)


def _backward(xT, e, V, h):
    """(dW^T (D-1, H), dc (H)) of one block: the loop over the dims in reverse."""
    D, N = xT.shape
    dWT = h.new_empty(D - 1, h.shape[-1])
    delta = h.new_zeros(N, h.shape[-1])  # sum over the dims after d of the gradient at a
    for d in range(D - 1, -1, -1):
        if d < D - 1:
            torch.mv(delta.T, xT[d], out=dWT[d])
        h_d = h[d]
        delta.addcmul_(torch.outer(e[d], V[d]), h_d - h_d * h_d)
    return dWT, delta.sum(0)


def log_conditionals(x, W, c, V, b) -> torch.Tensor:
    """(N, D) log-conditionals of x (N, D) in visiting order (see the module docstring):
    without gradients (no_grad, or no parameter requiring one) in blocks, keeping nothing."""
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in (W, c, V, b)):
        return _no_grad(x, W, c, V, b)
    return BernoulliNADE.apply(x, W, c, V, b)
