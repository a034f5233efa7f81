"""A worker for tests/test_distributed.py, launched by torchrun on two gloo ranks:

    python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        tests/distributed_worker.py SCENARIO OUT_DIR

Each scenario fits under the process group and writes what the test checks to OUT_DIR."""

import json
import os
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

import inference
from ppl_models import NADE, datasets


def one_step_data():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(16, 8, generator=g) < 0.4).double()


def one_step(out: Path, rank: int) -> None:
    """One Adam step of NADE on a global batch of 16 (8 per rank)."""
    f = inference.fit(
        NADE(8, 4, dtype=torch.float64),
        one_step_data(),
        "mle",
        solver="adam",
        batch_size=8,
        max_epochs=1,
        lr=0.01,
        seed=0,
        progress_bar=False,
    )
    torch.save({k: v for k, v in f.params.items()}, out / f"params_rank{rank}.pt")


def rnade_data():
    split = datasets.load("patches")
    return split.train[:4000], split.valid[:1000]


def rnade(out: Path, rank: int) -> None:
    train, valid = rnade_data()
    f = inference.fit(
        NADE(63, 10, "mog", components=3),
        train,
        "map",
        valid=valid,
        batch_size=50,
        max_epochs=3,
        patience=3,
        lr=1e-2,
        seed=0,
        progress_bar=False,
    )
    (out / f"rnade_rank{rank}.json").write_text(
        json.dumps({"valid_nats": f.info["valid_nats"], "ranks": f.info.get("ranks", 1)})
    )
    f.save(out / f"fit_rank{rank}.pt")  # only rank 0 writes


def nan(out: Path, rank: int) -> None:
    """A NaN loss on rank 1 after a few steps: both ranks stop, the best parameters kept."""
    calls = {"n": 0}
    original = NADE._log_prob

    def flaky(self, x):
        calls["n"] += 1
        value = original(self, x)
        return value * float("nan") if rank == 1 and calls["n"] > 12 else value

    NADE._log_prob = flaky
    train = one_step_data().repeat(8, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = inference.fit(
            NADE(8, 4),
            train,
            "mle",
            solver="adam",
            batch_size=16,
            max_epochs=20,
            lr=0.01,
            seed=0,
            progress_bar=False,
        )
    NADE._log_prob = original
    (out / f"nan_rank{rank}.json").write_text(
        json.dumps(
            {
                "stop": f.info["stop"],
                "epochs": f.info["epochs"],
                "finite": all(bool(torch.isfinite(v).all()) for v in f.params.values()),
                "warned": any("loss became" in str(w.message) for w in caught),
            }
        )
    )


def svi(out: Path, rank: int) -> None:
    """Minibatch SVI on 2 ranks (50 images each per step)."""
    from ppl_models import Independent

    x = datasets.load("digits").train[:600, 20:28]
    f = inference.fit(
        Independent(8),
        x,
        "svi",
        batch_size=50,
        steps=400,
        num_samples=200,
        seed=0,
        progress_bar=False,
    )
    torch.save(f.params, out / f"svi_rank{rank}.pt")


if __name__ == "__main__":
    scenario, out = sys.argv[1], Path(sys.argv[2])
    dist.init_process_group("gloo")
    try:
        {"one_step": one_step, "rnade": rnade, "nan": nan, "svi": svi}[scenario](
            out, dist.get_rank()
        )
        dist.barrier()  # neither rank tears gloo down while the other still uses it
    finally:
        dist.destroy_process_group()
    # Leave without the interpreter's teardown: in 2 of 5 full-suite runs (2026-12-05) a rank
    # of the NaN scenario aborted after its work ("terminate called without an active
    # exception", a C++ thread destroyed while still running); what the test reads is written.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
