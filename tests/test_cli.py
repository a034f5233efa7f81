"""The `ppl-models` command line, end to end on embedded data: every mistake is one line naming
the fix with exit status 2, found before any fitting; every output is what was asked for."""

import json

import pytest
import torch

import inference
from ppl_models.app import cli


def run(argv, capsys):
    cli.main(argv)
    return capsys.readouterr()


def test_datasets_lists_every_dataset(capsys):
    out = run(["datasets"], capsys).out
    for name in ("digits", "pixels", "patches", "sunspots"):
        assert name in out


def test_version(capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["--version"])
    assert err.value.code == 0
    assert capsys.readouterr().out.strip() == "ppl-models 0.1.0"


@pytest.mark.slow
def test_compare_pixels_writes_the_report(tmp_path, capsys):
    out = run(["compare", "pixels", "--out", str(tmp_path)], capsys).out
    folder = tmp_path / "compare-pixels"
    results = {r["model"]: r for r in json.loads((folder / "results.json").read_text())}
    # the same references as tests/test_discrete_reference.py, read back from the report
    assert results["FullJoint alpha=1"]["nats"] == pytest.approx(14.163, abs=1e-3)
    assert results["Markov R->G->B"]["nats"] == pytest.approx(12.722, abs=1e-3)
    assert results["FullJoint"]["num_zero_prob"] > 0
    table = (folder / "table.md").read_text()
    assert "| Markov R->G->B | exact |" in table and "12.722" in table
    for picture in ("samples.png", "tradeoff.png"):
        assert (folder / picture).stat().st_size > 10_000
    assert "free params" in out and "Independent" in out


def test_fit_then_sample(tmp_path, capsys):
    path = tmp_path / "markov.pt"
    assert (
        "23.232"
        in run(
            [
                "fit",
                "digits",
                "Markov",
                "--arg",
                "order=2",
                "--method",
                "exact",
                "--save",
                str(path),
            ],
            capsys,
        ).out
    )
    f = inference.load(path)
    assert f.model.order == 2 and f.method == "exact"
    png = tmp_path / "samples.png"
    assert (
        "wrote 16 samples" in run(["sample", str(path), "-n", "16", "--out", str(png)], capsys).out
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = run(["sample", str(path), "-n", "3"], capsys).out.strip().splitlines()
    x = torch.tensor([[float(v) for v in r.split()] for r in rows])
    assert x.shape == (3, 64) and set(x.unique().tolist()) <= {0.0, 1.0}
    text = tmp_path / "x.txt"
    run(["sample", str(path), "-n", "5", "--out", str(text)], capsys)
    assert len(text.read_text().strip().splitlines()) == 5  # images as numbers, as asked
    csv = tmp_path / "x.csv"
    run(["sample", str(path), "-n", "2", "--out", str(csv)], capsys)
    assert csv.read_text().count(",") == 2 * 63


def test_samples_without_a_seed_differ_and_with_one_repeat(tmp_path, capsys):
    path = tmp_path / "m.pt"
    run(["fit", "digits", "Independent", "--save", str(path)], capsys)
    draw = lambda *a: run(["sample", str(path), "-n", "4", *a], capsys).out  # noqa: E731
    assert draw() != draw()
    assert draw("--seed", "1") == draw("--seed", "1")


def test_a_series_fit_and_its_picture(tmp_path, capsys):
    path = tmp_path / "ar.pt"
    out = run(
        ["fit", "sunspots", "AutoRegressive", "--arg", "order=2", "--save", str(path)], capsys
    ).out
    assert "train nats" in out and "test nats" not in out and "no held-out split" in out
    png = tmp_path / "ar.png"
    run(["sample", str(path), "-n", "50", "--out", str(png)], capsys)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # a picture, not text


def test_fit_with_options_runs_nuts(capsys):
    out = run(
        [
            "fit",
            "digits",
            "Independent",
            "--method",
            "NUTS",
            "--option",
            "num_samples=30",
            "--option",
            "warmup_steps=30",
        ],
        capsys,
    )
    assert "nuts" in out.out and "available_cpu" not in out.err


MISTAKES = [
    (
        ["fit", "digits", "Markov", "--arg", "ordr=2"],
        ["Markov takes no argument 'ordr'", "did you mean --arg order=...?"],
    ),
    (["fit", "digits", "NADE"], ["NADE needs hidden", "--arg hidden=100"]),
    (["fit", "sunspots", "Markov"], ["sunspots is one series", "AutoRegressive"]),
    (["fit", "patches", "Independent"], ["--arg family=normal"]),
    (["fit", "patches", "NADE", "--arg", "hidden=5"], ["--arg output=mog"]),
    (["fit", "digits", "Markov", "--arg", "order=64"], ["order=64", "num_dims=64"]),
    (["fit", "digits", "Banana"], ["unknown model 'Banana'", "Markov"]),
    (["fit", "digits", "markov"], ["did you mean Markov?"]),
    (["fit", "mnist", "Markov"], ["unknown dataset 'mnist'"]),
    (["compare", "mnist"], ["compare knows", "digits"]),
    (
        ["fit", "digits", "Markov", "--method", "nuts", "--option", "steps=3"],
        ["steps", "method='nuts'"],
    ),
    (
        ["fit", "digits", "Independent", "--method", "svi", "--option", "lr=-1"],
        ["lr must be a finite number > 0"],
    ),
    (
        ["fit", "digits", "Markov", "--save", "/nonexistent/dir/m.pt"],
        ["/nonexistent/dir", "does not exist"],
    ),
    (["fit", "digits", "Markov", "--arg", "order"], ["--arg expects key=value"]),
    (["fit", "digits", "Markov", "--method", "bfgs"], ["invalid choice: 'bfgs'"]),
    (["sample", "/nonexistent.pt"], ["is not a file"]),
    (["fit", "digits", "Markov", "--device", "cuda:7"], ["cuda"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
]


@pytest.mark.parametrize("argv, words", MISTAKES, ids=[" ".join(m[0]) for m in MISTAKES])
def test_a_mistake_is_one_line_with_exit_status_2(argv, words, capsys, monkeypatch):
    fitted = []
    monkeypatch.setattr(inference, "fit", lambda *a, **k: fitted.append(a))
    with pytest.raises(SystemExit) as err:
        cli.main(argv)
    assert err.value.code == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1, message
    assert message.startswith("ppl-models: error: ")
    for w in words:
        assert w in message, f"{w!r} not in {message!r}"
    assert not fitted  # found before any fitting


def test_an_image_picture_for_data_without_one(tmp_path, capsys):
    path = tmp_path / "normal.pt"
    run(
        [
            "fit",
            "digits",
            "Independent",
            "--arg",
            "family=categorical",
            "--arg",
            "num_categories=2",
            "--save",
            str(path),
        ],
        capsys,
    )
    f = inference.load(path)
    f.data = f.data[:, :5]  # a width with no picture
    f.program.model.num_dims = 5
    with pytest.raises(SystemExit) as err:
        cli._picture_kind(f.data) or cli.fail("no picture")
    assert err.value.code == 2
