"""Past one CPU (issue 9): NADE at MNIST size and RNADE on 200,000 patches, ours beside a
plain-torch NADE on the same device in one run; 1 vs 2 data-parallel ranks on the CPU.

    .venv/bin/python benchmarks/bench_scale.py [--repeat 3] [--devices cpu,cuda]
                                               [--rnade-patches 200000] [--skip-ranks]

Rows, per device (the GPU rows only where torch sees CUDA; otherwise the table says they were
skipped):
- NADE D = 784, H = 500, batch 1,000 (synthetic binary data): train step (ms) and log-density
  (images/s), ours through `inference` beside `PlainNADE` (target: within 1.2x);
- NADE sampling (images/s), ours (the fast path) beside plain torch (target: within 1.5x);
- RNADE H = 100, K = 10: seconds per epoch on `--rnade-patches` patches
  (`datasets.load("patches", num_train=...)`);
- CPU, 1 vs 2 gloo ranks (torchrun): seconds per epoch of RNADE on 20,000 patches.
Prints a table and writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from bench_nade import PlainNADE, interleaved
from common import machine, write_results

import inference
from inference.objective import Objective
from ppl_models import NADE, datasets
from ppl_models.programs.program import Program

ROOT = Path(__file__).resolve().parent.parent


def paired(ours, plain, repeat: int) -> tuple[float, float]:
    t = interleaved({"ours": ours, "plain": plain}, repeat)
    return t["ours"], t["plain"]


def nade_rows(device: str, repeat: int, D=784, H=500, batch=1000) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, D, generator=g) < 0.3).float().to(device)
    program = Program(NADE(D, H)).to(device)
    with program.placed():  # as inside `inference.fit`
        return _nade_rows(program, x, device, repeat, D, H, batch)


def _nade_rows(program, x, device, repeat, D, H, batch) -> list[dict]:
    program = program.init_from_data(x)
    program.discover(x[:16])
    objective = Objective(program, program.roles.free, False, len(x))
    opt = torch.optim.Adam(objective.parameters, lr=1e-3)
    plain = PlainNADE(D, H).to(device)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-3)

    def ours_step():
        loss = objective(x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def plain_step():
        loss = plain.nll(x) / len(x)
        plain_opt.zero_grad()
        loss.backward()
        plain_opt.step()

    rows = []
    ours, ref = paired(ours_step, plain_step, repeat)
    rows.append(
        row(device, f"NADE {D}x{H} train step, batch {batch} (ms)", 1e3 * ours, 1e3 * ref, False)
    )
    with torch.no_grad():
        values = objective.values()
        ours, ref = paired(lambda: program.log_prob(x, values), lambda: plain.log_prob(x), repeat)
    rows.append(row(device, "NADE log-density (images/s)", batch / ours, batch / ref, True))
    n = 200
    ours, ref = paired(lambda: program.sample(n, values), lambda: plain.sample(n), repeat)
    rows.append(row(device, f"NADE sampling, {n} images (images/s)", n / ours, n / ref, True))
    return rows


def row(device, what, ours, plain, higher_is_better) -> dict:
    slowdown = plain / ours if higher_is_better else ours / plain
    return {"device": device, "measure": what, "ours": ours, "plain": plain, "slowdown": slowdown}


def rnade_epoch(device: str, patches: int) -> dict:
    split = datasets.load("patches", num_train=patches)
    f = inference.fit(
        NADE(63, 100, "mog", components=10),
        split.train,
        "map",
        valid=split.valid,
        lr=1e-2,
        batch_size=100,
        max_epochs=1,
        seed=0,
        device=device,
        progress_bar=False,
    )
    return {
        "device": device,
        "measure": f"RNADE H=100 K=10 epoch, {patches:,} patches (s)",
        "ours": f.fit_seconds,
        "plain": float("nan"),
        "slowdown": float("nan"),
        "valid_loglik_per_patch": -f.info["valid_nats"],
    }


def rank_rows() -> list[dict]:
    """RNADE epochs on 20,000 patches, 1 process vs 2 gloo ranks under torchrun."""
    out = []
    for ranks in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / "epoch.json"
            env = {
                **os.environ,
                "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // ranks)),
                "CI": "1",
                "PYTHONPATH": str(ROOT),
            }
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    f"--nproc_per_node={ranks}",
                    __file__,
                    "--worker",
                    str(result),
                ],
                env=env,
                check=True,
                cwd=ROOT,
                capture_output=True,
            )
            seconds = json.loads(result.read_text())["seconds_per_epoch"]
        out.append(
            {
                "device": "cpu",
                "measure": f"RNADE epoch, 20,000 patches, {ranks} rank(s) (s)",
                "ours": seconds,
                "plain": float("nan"),
                "slowdown": float("nan"),
            }
        )
    return out


def worker(path: str) -> None:
    import torch.distributed as dist

    from inference import distributed

    with distributed.from_environment("cpu"):
        split = datasets.load("patches")
        per_rank = 100 // distributed.world_size()  # the same global batch of 100
        f = inference.fit(
            NADE(63, 100, "mog", components=10),
            split.train,
            "map",
            valid=split.valid,
            lr=1e-2,
            batch_size=per_rank,
            max_epochs=2,
            patience=2,
            seed=0,
            progress_bar=False,
        )
        if distributed.is_writer():
            Path(path).write_text(
                json.dumps(
                    {"seconds_per_epoch": f.fit_seconds / 2, "ranks": distributed.world_size()}
                )
            )
        if dist.is_initialized():
            dist.barrier()


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--devices", default="cpu,cuda")
    p.add_argument("--rnade-patches", type=int, default=200_000)
    p.add_argument("--skip-ranks", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    rows, skipped = [], []
    for device in args.devices.split(","):
        if device == "cuda" and not torch.cuda.is_available():
            skipped.append(
                "cuda: torch sees no CUDA device here, the GPU rows are still to be measured"
            )
            continue
        print(f"{device}: NADE 784 x 500 ...", file=sys.stderr, flush=True)
        rows += nade_rows(device, args.repeat)
        print(
            f"{device}: RNADE epoch on {args.rnade_patches:,} patches ...",
            file=sys.stderr,
            flush=True,
        )
        rows.append(rnade_epoch(device, args.rnade_patches))
    if not args.skip_ranks:
        print("cpu: 1 vs 2 ranks ...", file=sys.stderr, flush=True)
        rows += rank_rows()
    print(f"\n{'device':6} {'measure':52} {'ours':>12} {'plain torch':>12} {'slowdown':>9}")
    for r in rows:
        print(
            f"{r['device']:6} {r['measure']:52} {r['ours']:12,.2f} {r['plain']:12,.2f} "
            f"{r['slowdown']:8.2f}x"
        )
    for s in skipped:
        print(f"skipped: {s}")
    write_results(
        "scale",
        {
            "machine": machine(torch.get_num_threads()),
            "rows": rows,
            "skipped": skipped,
            "targets": {"train and log-density": 1.2, "sampling": 1.5},
        },
    )


if __name__ == "__main__":
    main()
