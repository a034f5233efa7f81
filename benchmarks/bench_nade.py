"""NADE on digits beside a plain-torch NADE of the same size, in one run: training step time,
log-density throughput and sampling throughput at H = 100, batch 100 and 1,000, and whole
training epochs (`inference.fit` against the same loop in plain torch); then RNADE (H = 100,
K = 10) epoch time on patches.

    .venv/bin/python benchmarks/bench_nade.py [--threads 1] [--repeat 30] [--rnade-epochs 2]

Target (issue 4): within 1.2x of the plain-torch loop for training and evaluation. Ours and
plain are timed interleaved and each reports its median, so a load that comes and goes hits
both alike. Prints a table and writes benchmarks/results/nade.json (with the thread count).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from common import machine, write_results
from torch import nn

import inference
from inference.objective import Objective
from ppl_models import NADE, datasets
from ppl_models.programs.program import Program


class _PaperGradient(torch.autograd.Function):
    """NADE's negative log-likelihood summed over a batch, with the O(DH) gradient of
    Larochelle & Murray (2011, Algorithm 1): a forward loop over the dims keeping the hidden
    units, and a backward loop in reverse accumulating the gradient at the pre-activations."""

    @staticmethod
    def forward(ctx, x, W, c, V, b):
        N, D = x.shape
        a = c.expand(N, -1).clone()
        hs, ps, nll = [], [], x.new_zeros(())
        for d in range(D):
            h = torch.sigmoid(a)
            logit = b[d] + h @ V[d]
            nll = nll + F.binary_cross_entropy_with_logits(logit, x[:, d], reduction="sum")
            hs.append(h)
            ps.append(torch.sigmoid(logit))
            if d < D - 1:
                a = a + x[:, d, None] * W[:, d]
        ctx.save_for_backward(x, W, V, torch.stack(hs, 1), torch.stack(ps, 1))
        return nll

    @staticmethod
    def backward(ctx, grad):
        x, W, V, h, p = ctx.saved_tensors
        N, D = x.shape
        dW, dV = torch.zeros_like(W), torch.zeros_like(V)
        e = p - x  # (N, D): d nll / d logit
        db = e.sum(0)
        delta_a = x.new_zeros(N, W.shape[0])
        dc = x.new_zeros(W.shape[0])
        for d in range(D - 1, -1, -1):
            if d < D - 1:
                dW[:, d] = delta_a.T @ x[:, d]
            dV[d] = e[:, d] @ h[:, d]
            delta_h = e[:, d, None] * V[d]
            delta_a = delta_a + delta_h * h[:, d] * (1 - h[:, d])
        dc = delta_a.sum(0)
        return None, grad * dW, grad * dc, grad * dV, grad * db


class PlainNADE(nn.Module):
    """The 2011 NADE in plain torch, as the paper computes it: loops over the dims, O(DH) per
    image, the hand-derived gradient; the same parameters as ours."""

    def __init__(self, D: int, H: int):
        super().__init__()
        self.W = nn.Parameter(torch.randn(H, D - 1) / D**0.5)
        self.c = nn.Parameter(torch.zeros(H))
        self.V = nn.Parameter(torch.randn(D, H) / H**0.5)
        self.b = nn.Parameter(torch.zeros(D))

    def nll(self, x):  # summed over the batch, with the paper's gradient
        return _PaperGradient.apply(x, self.W, self.c, self.V, self.b)

    @torch.no_grad()
    def log_prob(self, x):  # (N, D) -> (N,), the forward loop
        a, total = self.c.expand(len(x), -1), x.new_zeros(len(x))
        for d in range(x.shape[1]):
            logit = self.b[d] + torch.sigmoid(a) @ self.V[d]
            total -= F.binary_cross_entropy_with_logits(logit, x[:, d], reduction="none")
            if d < x.shape[1] - 1:
                a = a + x[:, d, None] * self.W[:, d]
        return total

    @torch.no_grad()
    def sample(self, n):
        a, xs = self.c.expand(n, -1), []
        for d in range(self.b.shape[0]):
            x_d = torch.bernoulli(torch.sigmoid(self.b[d] + torch.sigmoid(a) @ self.V[d]))
            if d < self.b.shape[0] - 1:
                a = a + self.W[:, d] * x_d[:, None]
            xs.append(x_d)
        return torch.stack(xs, -1)


def interleaved(fns: dict, repeat: int) -> dict:
    """Median seconds of each function, run in turn `repeat` times after one warm-up each (the
    order of the turn alternates, so neither always runs first; CUDA is synchronised around
    every run where it is in use)."""
    sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for r in range(repeat):
        for k, fn in list(fns.items()) if r % 2 == 0 else list(fns.items())[::-1]:
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def train_step(loss_fn, params):
    opt = torch.optim.Adam(params, lr=1e-3)

    def step(batch):
        loss = loss_fn(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def digits_rows(repeat: int) -> list[dict]:
    x = datasets.load("digits").train.float()
    program = Program(NADE(64, 100)).init_from_data(x)  # what `fit` trains, its objective
    program.discover(x)
    objective = Objective(program, program.roles.free, False, len(x))
    plain = PlainNADE(64, 100)
    ours_step = train_step(objective, objective.parameters)
    ours = program.model
    plain_step = train_step(lambda b: plain.nll(b) / len(b), list(plain.parameters()))
    f = inference.fit(ours, x[:200], solver="adam", max_epochs=1, seed=0)  # a Fit to time
    rows = []
    for batch in (100, 1000):
        rows += compare(ours_step, plain_step, f, plain, x[:batch], repeat)
    rows.append(whole_epochs(x, datasets.load("digits").valid.float(), max(3, repeat // 6)))
    return rows


def whole_epochs(x, valid, repeat, epochs=5) -> dict:
    """Seconds per epoch of `inference.fit` (Adam, batch 100, validation nats after every
    epoch, best parameters kept) beside the same loop in plain torch."""

    def ours():
        inference.fit(
            NADE(64, 100),
            x,
            valid=valid,
            lr=1e-3,
            batch_size=100,
            max_epochs=epochs,
            patience=epochs,
            seed=0,
        )

    def plain():
        torch.manual_seed(0)
        m = PlainNADE(64, 100)
        step = train_step(lambda b: m.nll(b) / len(b), list(m.parameters()))
        best = float("inf")
        for _ in range(epochs):
            for idx in torch.randperm(len(x)).split(100):
                step(x[idx])
            with torch.no_grad():
                nats = float(-m.log_prob(valid).mean())
            if nats < best:
                best, kept = nats, {k: v.clone() for k, v in m.state_dict().items()}
        m.load_state_dict(kept)

    t = interleaved({"ours": ours, "plain": plain}, repeat)
    return row("training epoch (s)", 100, t["ours"] / epochs, t["plain"] / epochs)


def compare(ours_step, plain_step, f, plain, xb, repeat) -> list[dict]:
    n = len(xb)
    t = interleaved({"ours": lambda: ours_step(xb), "plain": lambda: plain_step(xb)}, repeat)
    rows = [row("train step (ms)", n, 1e3 * t["ours"], 1e3 * t["plain"])]
    with torch.no_grad():
        t = interleaved(
            {"ours": lambda: f.log_density(xb), "plain": lambda: plain.log_prob(xb)}, repeat
        )
    rows.append(row("log-density (images/s)", n, n / t["ours"], n / t["plain"], True))
    t = interleaved(
        {"ours": lambda: f.sample(n), "plain": lambda: plain.sample(n)}, max(3, repeat // 5)
    )
    rows.append(row("sampling (images/s)", n, n / t["ours"], n / t["plain"], True))
    return rows


def row(what, batch, ours, plain, higher_is_better=False) -> dict:
    slowdown = plain / ours if higher_is_better else ours / plain
    return {"measure": what, "batch": batch, "ours": ours, "plain": plain, "slowdown": slowdown}


def rnade_epoch(epochs: int) -> dict:
    split = datasets.load("patches")
    f = inference.fit(
        NADE(63, 100, "mog", components=10),
        split.train,
        valid=split.valid,
        lr=1e-2,
        batch_size=100,
        max_epochs=epochs,
        patience=epochs,
        seed=0,
    )
    return {
        "epochs": f.info["epochs"],
        "seconds": f.fit_seconds,
        "seconds_per_epoch": f.fit_seconds / f.info["epochs"],
        "valid_loglik_per_patch": -f.info["valid_nats"],
        "note": "one epoch = 200 Adam steps of 100 patches + the 5,000 validation patches",
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--rnade-epochs", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = digits_rows(args.repeat)
    rnade = rnade_epoch(args.rnade_epochs)
    result = {
        "machine": machine(args.threads),
        "digits_H100": rows,
        "rnade_patches_H100_K10": rnade,
        "target_slowdown": 1.2,
    }

    print(
        f"\nNADE H=100 on digits (ours: ppl_models.NADE through inference; plain: torch), "
        f"{args.threads} thread(s), median of {args.repeat}"
    )
    print(f"{'measure':24} {'batch':>6} {'ours':>12} {'plain':>12} {'slowdown':>9}")
    for r in rows:
        flag = "" if r["measure"].startswith("sampling") or r["slowdown"] <= 1.2 else "  > 1.2x"
        print(
            f"{r['measure']:24} {r['batch']:6} {r['ours']:12,.2f} {r['plain']:12,.2f} "
            f"{r['slowdown']:8.2f}x{flag}"
        )
    print(
        f"\nRNADE H=100 K=10 on patches: {rnade['seconds_per_epoch']:.2f} s per epoch "
        f"(valid log-lik {rnade['valid_loglik_per_patch']:.2f} after {rnade['epochs']} "
        "epochs)"
    )
    write_results("nade", result)


if __name__ == "__main__":
    main()
