"""The `ppl-models` command line, end to end on embedded data."""

import json

import pytest
import torch

import inference
from ppl_models import cli


def test_datasets_lists_every_dataset(capsys):
    cli.main(["datasets"])
    out = capsys.readouterr().out
    for name in ("digits", "pixels", "patches", "sunspots"):
        assert name in out


@pytest.mark.slow
def test_compare_pixels_writes_the_report(tmp_path, capsys):
    cli.main(["compare", "pixels", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    folder = tmp_path / "compare-pixels"
    results = {r["model"]: r for r in json.loads((folder / "results.json").read_text())}
    # the same references as tests/test_discrete_reference.py, read back from the report
    assert results["FullJoint alpha=1"]["nats"] == pytest.approx(14.163, abs=1e-3)
    assert results["Markov R->G->B"]["nats"] == pytest.approx(12.722, abs=1e-3)
    assert results["FullJoint"]["num_zero_prob"] > 0
    table = (folder / "table.md").read_text()
    assert "| Markov R->G->B | exact |" in table and "12.722" in table
    assert (folder / "samples.png").stat().st_size > 10_000
    assert "free params" in out and "Independent" in out


def test_fit_then_sample(tmp_path, capsys):
    path = tmp_path / "markov.pt"
    cli.main(["fit", "digits", "Markov", "--arg", "order=2", "--method", "exact",
              "--save", str(path)])
    assert "23.232" in capsys.readouterr().out
    f = inference.load(path)
    assert f.model.order == 2 and f.method == "exact"
    png = tmp_path / "samples.png"
    cli.main(["sample", str(path), "-n", "8", "--out", str(png)])
    assert png.stat().st_size > 1000
    cli.main(["sample", str(path), "-n", "3"])
    rows = capsys.readouterr().out.strip().splitlines()[-3:]
    x = torch.tensor([[float(v) for v in r.split()] for r in rows])
    assert x.shape == (3, 64) and set(x.unique().tolist()) <= {0.0, 1.0}


def test_fit_with_options_runs_nuts(capsys):
    cli.main(["fit", "digits", "Independent", "--method", "nuts", "--option",
              "num_samples=30", "--option", "warmup_steps=30"])
    assert "nuts" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["fit", "digits", "Markov", "--arg", "order=64"], ["order=64", "num_dims=64"]),
    (["fit", "digits", "Banana"], ["unknown model 'Banana'", "Markov"]),
    (["fit", "mnist", "Markov"], ["unknown dataset 'mnist'"]),
    (["compare", "mnist"], ["compare knows", "digits"]),
    (["fit", "digits", "Markov", "--method", "nuts", "--option", "steps=3"],
     ["steps", "method='nuts'"]),
])
def test_bad_input_exits_with_a_message_not_a_traceback(argv, words):
    with pytest.raises(SystemExit) as err:
        cli.main(argv)
    for w in words:
        assert w in str(err.value)
