"""Data-parallel fitting on torch.distributed, two gloo ranks on this CPU (issue 9): the same
Adam step as one process, the same quality of fit, one writer, and a NaN on one rank stopping
both. Each test launches `torchrun --standalone --nproc_per_node=2`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_worker import one_step_data, rnade_data

import inference
from ppl_models import NADE

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "distributed_worker.py"


def torchrun(*args, timeout=300) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CI": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            *map(str, args),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_one_adam_step_on_two_ranks_equals_one_process(tmp_path):
    torchrun(WORKER, "one_step", tmp_path)
    single = inference.fit(
        NADE(8, 4, dtype=torch.float64),
        one_step_data(),
        "mle",
        solver="adam",
        batch_size=16,
        max_epochs=1,
        lr=0.01,
        seed=0,
    )
    ranks = [torch.load(tmp_path / f"params_rank{r}.pt") for r in (0, 1)]
    for k, v in single.params.items():
        torch.testing.assert_close(ranks[0][k], v, rtol=0, atol=1e-6)
        torch.testing.assert_close(ranks[1][k], ranks[0][k], rtol=0, atol=0)
    # and the step moved the parameters: the comparison is not between two initial states
    start = NADE(8, 4, dtype=torch.float64).init_from_data(one_step_data().double())
    assert not torch.allclose(single.params["W"], start.W.detach())


@pytest.mark.slow
def test_a_two_rank_rnade_fit_matches_one_process_and_only_rank_0_writes(tmp_path):
    torchrun(WORKER, "rnade", tmp_path)
    train, valid = rnade_data()
    single = inference.fit(
        NADE(63, 10, "mog", components=3),
        train,
        "map",
        valid=valid,
        batch_size=100,
        max_epochs=3,
        patience=3,
        lr=1e-2,
        seed=0,
    )
    results = [json.loads((tmp_path / f"rnade_rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0] == results[1] and results[0]["ranks"] == 2
    assert abs(results[0]["valid_nats"] - single.info["valid_nats"]) < 0.05
    assert (tmp_path / "fit_rank0.pt").exists() and not (tmp_path / "fit_rank1.pt").exists()
    assert not list(tmp_path.glob(".*.tmp"))
    f = inference.load(tmp_path / "fit_rank0.pt")
    assert f.info["ranks"] == 2


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_both(tmp_path):
    torchrun(WORKER, "nan", tmp_path)
    results = [json.loads((tmp_path / f"nan_rank{r}.json").read_text()) for r in (0, 1)]
    for r in results:
        assert r["warned"] and r["finite"]
        assert "loss became non-finite (nan or inf) on some rank" in r["stop"]
    assert results[0]["epochs"] == results[1]["epochs"] < 20


@pytest.mark.slow
def test_minibatch_svi_on_two_ranks(tmp_path):
    from ppl_models import Independent, datasets

    torchrun(WORKER, "svi", tmp_path)
    ranks = [torch.load(tmp_path / f"svi_rank{r}.pt") for r in (0, 1)]
    torch.testing.assert_close(ranks[0]["probs"], ranks[1]["probs"], rtol=0, atol=0)
    x = datasets.load("digits").train[:600, 20:28]
    exact = inference.fit(Independent(8), x, "exact", num_samples=4000)
    sd = exact.draws["probs"].flatten(0, 1).std(0)
    assert float(((ranks[0]["probs"] - exact.params["probs"]).abs() / sd).max()) < 0.5


@pytest.mark.slow
def test_the_command_line_under_torchrun(tmp_path):
    save = tmp_path / "r.pt"
    result = torchrun(
        "-m",
        "ppl_models",
        "fit",
        "patches",
        "NADE",
        "--arg",
        "hidden=8",
        "--arg",
        "output=mog",
        "--arg",
        "components=2",
        "--method",
        "map",
        "--device",
        "cpu",
        "--num-train",
        "2000",
        "--option",
        "max_epochs=2",
        "--save",
        save,
    )
    assert result.stdout.count("saved to") == 1  # rank 0 prints and writes
    f = inference.load(save)
    assert f.method == "map" and f.info["ranks"] == 2 and len(f.data) == 2000
