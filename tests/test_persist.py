"""A saved fit is data, never code (issue 10): crafted files run nothing, damaged files are
named, saves are atomic, and every model and method round-trips exactly."""

import math
import warnings

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroSample

import inference
from inference import persist
from ppl_models import NADE, AutoRegressive, FullJoint, Independent, LinearGaussian, Markov
from ppl_models.app import cli
from ppl_models.example_programs import shared_markov


# -- crafted files ----------------------------------------------------------------------------
def v2(cls, config=None, state=None, **extra):
    return {
        "format": persist.FORMAT,
        "version": persist.VERSION,
        "written_by": {"ppl_models": "0.1.0"},
        "model": {"kind": "builtin", "class": cls, "config": config or {}},
        "state": state or {},
        "values": {},
        "method": "mle",
        "data": torch.zeros(4, 3),
        "draws": {},
        "sample_stats": {},
        "losses": [],
        "info": {},
        "fit_seconds": 0.0,
        "priors": {},
        "priors_not_saved": [],
        **extra,
    }


def v1(cls, config):
    return {
        "format": 1,
        "class": cls,
        "config": config,
        "state": {},
        "method": "mle",
        "data": torch.zeros(4, 3),
        "draws": {},
        "sample_stats": {},
        "losses": [],
        "info": {},
        "fit_seconds": 0.0,
    }


def marker_command(marker):
    return f"echo pwned > {marker}"


CRAFTED = [
    (
        "os.system",
        lambda m: v2("os.system", {"command": marker_command(m)}),
        ["'os.system'", "not a ppl-models model", "model="],
    ),
    (
        "os.system, first format",
        lambda m: v1("os.system", {"command": marker_command(m)}),
        ["'os.system'", "nothing was imported or run"],
    ),
    (
        "subprocess.getoutput",
        lambda m: v1("subprocess.getoutput", {"cmd": marker_command(m)}),
        ["'subprocess.getoutput'"],
    ),
    (
        "builtins.open",
        lambda m: v2("builtins.open", {"file": str(m), "mode": "w"}),
        ["'builtins.open'"],
    ),
    (
        "builtins.eval",
        lambda m: v2("builtins.eval", {"source": f"open({str(m)!r}, 'w').write('x')"}),
        ["'builtins.eval'"],
    ),
    (
        "private name of our package",
        lambda m: v2("_write_atomic", {}),
        ["'_write_atomic'", "not a ppl-models model"],
    ),
    (
        "our function by path",
        lambda m: v1("ppl_models.cli.main", {"argv": ["datasets"]}),
        ["'ppl_models.cli.main'"],
    ),
    (
        "our class, an argument it does not take",
        lambda m: v2("Markov", {"num_dims": 3, "order": 1, "command": marker_command(m)}),
        ["takes no argument(s) command"],
    ),
    (
        "our class, a callable as argument",
        lambda m: v2("Markov", {"num_dims": 3, "order": [1, 2]}),
        ["Markov", "not a valid model"],
    ),
    (
        "our class, state of the wrong shape",
        lambda m: v2(
            "Markov", {"num_dims": 3, "order": 1}, state={"probs_unconstrained": torch.zeros(99, 1)}
        ),
        ["'probs_unconstrained'", "(99, 1)", "(5, 2)"],
    ),
    (
        "our class, unknown state key",
        lambda m: v2("Independent", {"num_dims": 3}, state={"os_system": torch.zeros(1)}),
        ["does not fit Independent", "unexpected os_system"],
    ),
    (
        "no model at all",
        lambda m: {"format": persist.FORMAT, "version": 2},
        ["does not say which model"],
    ),
    (
        "newer format",
        lambda m: {
            **v2("Markov", {"num_dims": 3}),
            "version": 99,
            "written_by": {"ppl_models": "9.0"},
        },
        ["ppl-models 9.0", "format 99", "upgrade"],
    ),
]


@pytest.mark.parametrize("case", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_a_crafted_file_runs_nothing(case, tmp_path, capsys):
    _, make, words = case
    marker = tmp_path / "marker.txt"
    path = tmp_path / "crafted.pt"
    torch.save(make(marker), path)
    with pytest.raises(ValueError) as err:
        inference.load(path)
    for w in words:
        assert w in str(err.value), f"{w!r} not in {err.value}"
    assert not marker.exists()
    with pytest.raises(SystemExit) as exit_:  # the command line reads files the same way
        cli.main(["sample", str(path)])
    assert exit_.value.code == 2 and not marker.exists()
    assert str(path) in capsys.readouterr().err


DAMAGED = [
    ("empty", lambda p: p.write_bytes(b"")),
    ("text", lambda p: p.write_text("probs = [0.5, 0.5]\n")),
    ("truncated", lambda p: p.write_bytes(p.with_suffix(".good").read_bytes()[:200])),
    ("a tensor, not a fit", lambda p: torch.save(torch.zeros(3), p)),
    ("another format", lambda p: torch.save({"format": "something else"}, p)),
]


@pytest.mark.parametrize("case", DAMAGED, ids=[c[0] for c in DAMAGED])
def test_a_damaged_file_is_named(case, tmp_path, digits):
    name, damage = case
    path = tmp_path / "fit.pt"
    inference.fit(Independent(64), digits.train, "mle").save(path.with_suffix(".good"))
    damage(path)
    with pytest.raises(ValueError) as err:
        inference.load(path)
    assert str(path) in str(err.value)


def test_missing_file_and_folders(tmp_path, digits):
    with pytest.raises(ValueError, match="is not a file"):
        inference.load(tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="is not a file"):
        inference.load(tmp_path)
    f = inference.fit(Independent(64), digits.train, "mle")
    with pytest.raises(ValueError, match="does not exist"):
        f.save(tmp_path / "no" / "such" / "dir" / "fit.pt")
    with pytest.raises(ValueError, match="is a folder"):
        f.save(tmp_path)


def test_an_interrupted_save_keeps_the_old_file(tmp_path, digits, monkeypatch):
    path = tmp_path / "fit.pt"
    old = inference.fit(Independent(64), digits.train, "mle")
    old.save(path)
    new = inference.fit(Markov(64, order=2), digits.train, "mle")

    def partial_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half of a zip file")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(persist.torch, "save", partial_write)
    with pytest.raises(KeyboardInterrupt):
        new.save(path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.pt"]  # no debris
    back = inference.load(path)
    assert torch.equal(back.log_density(digits.test), old.log_density(digits.test))


def test_the_file_records_versions(tmp_path, digits):
    path = tmp_path / "fit.pt"
    inference.fit(Independent(64), digits.train, "mle").save(path)
    blob = torch.load(path, weights_only=True)
    assert blob["version"] == persist.VERSION and blob["format"] == persist.FORMAT
    assert set(blob["written_by"]) >= {"ppl_models", "torch", "pyro", "python"}


def test_a_file_of_the_first_format_is_read(tmp_path, digits):
    f = inference.fit(Markov(64, order=2), digits.train, "mle")
    path = tmp_path / "old.pt"
    torch.save(
        {
            "format": 1,
            "class": "ppl_models.markov.Markov",
            "config": f.model.config,
            "state": f.model.state_dict(),
            "method": "mle",
            "data": f.data,
            "draws": {},
            "sample_stats": {},
            "losses": [],
            "info": {},
            "fit_seconds": 1.0,
        },
        path,
    )
    g = inference.load(path)
    torch.testing.assert_close(g.log_density(digits.test), f.log_density(digits.test))


# -- round trips ---------------------------------------------------------------------------------
def data_for(name, digits):
    g = torch.Generator().manual_seed(0)
    if name == "series":
        return torch.sin(torch.arange(80.0) / 4) * 10 + torch.randn(80, generator=g)
    if name == "real":
        return torch.randn(60, 4, generator=g, dtype=torch.float64) @ torch.tensor(
            [[1.0, 0.3, 0, 0], [0, 1, 0.2, 0], [0, 0, 1, 0.5], [0, 0, 0, 1]], dtype=torch.float64
        )
    if name == "categories":
        return torch.randint(0, 3, (60, 4), generator=g)
    return digits.train[:120, 20:28]


MODELS = [
    ("FullJoint dense", lambda: FullJoint(8), "bits", ("mle", "map", "exact", "svi")),
    ("FullJoint sparse", lambda: FullJoint(8, sparse=True), "bits", ("exact",)),
    ("Independent", lambda: Independent(8), "bits", ("mle", "map", "exact", "svi", "nuts")),
    (
        "Independent categorical",
        lambda: Independent(4, "categorical", 3),
        "categories",
        ("mle", "exact", "svi"),
    ),
    ("Independent normal", lambda: Independent(4, "normal"), "real", ("mle", "map", "svi")),
    ("Markov", lambda: Markov(8, order=2), "bits", ("mle", "map", "exact", "svi", "nuts")),
    ("LinearGaussian", lambda: LinearGaussian(4), "real", ("mle", "map", "svi")),
    ("AutoRegressive", lambda: AutoRegressive(2), "series", ("mle", "map", "exact", "svi", "nuts")),
    ("NADE", lambda: NADE(8, 4), "bits", ("mle", "map")),
    ("RNADE", lambda: NADE(4, 3, "mog", components=2), "real", ("mle",)),
    ("your program", lambda: shared_markov, "digits", ("mle", "svi")),
]
OPTIONS = {
    "svi": {"steps": 30, "num_samples": 20},
    "nuts": {"num_samples": 20, "warmup_steps": 20, "num_chains": 1},
    "exact": {"num_samples": 20},
    "mle": {"max_epochs": 5},
    "map": {"max_epochs": 5},
}
CASES = [(name, make, data, method) for name, make, data, methods in MODELS for method in methods]


@pytest.mark.parametrize("name, make, data, method", CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_round_trip(name, make, data, method, tmp_path, digits):
    x = digits.train[:60] if data == "digits" else data_for(data, digits)
    options = dict(OPTIONS[method])
    if method in ("mle", "map") and not isinstance(make(), NADE) and name != "your program":
        options = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = inference.fit(make(), x, method, **options)
    path = tmp_path / "fit.pt"
    f.save(path)
    program = make() if name == "your program" else None
    g = inference.load(path, model=program) if program else inference.load(path)
    assert torch.equal(g.log_density(x), f.log_density(x))
    assert g.method == f.method and g.fit_seconds == f.fit_seconds
    try:
        a = f.to_arviz()
    except ValueError as e:  # a point fit with no Laplace approximation: the same on reload
        assert f.method in ("mle", "map") and "no Laplace approximation" in str(e)
        with pytest.raises(ValueError, match="no Laplace approximation"):
            g.to_arviz()
        return
    b = g.to_arviz()
    for group in ("posterior", "log_likelihood", "observed_data"):
        for var in getattr(a, group).data_vars:
            np.testing.assert_array_equal(
                getattr(a, group)[var].values, getattr(b, group)[var].values
            )
    if name == "your program":
        with pytest.raises(ValueError, match="model=shared_markov"):
            inference.load(path)


def test_custom_priors_are_saved_as_data(tmp_path, digits):
    m = Independent(64)
    m.probs = PyroSample(
        dist.Beta(
            torch.full((64,), 2.0, dtype=torch.float64), torch.full((64,), 3.0, dtype=torch.float64)
        ).to_event(1)
    )
    f = inference.fit(m, digits.train, "map")
    path = tmp_path / "fit.pt"
    f.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a prior saved as data: no warning
        g = inference.load(path)
    k, n = digits.train.sum(0).double(), len(digits.train)
    refit = inference.fit(g.model, digits.train, "map")  # the loaded prior drives a refit
    torch.testing.assert_close(refit.params["probs"], (k + 1) / (n + 3))


def test_a_prior_that_is_code_is_reported(tmp_path, digits):
    m = Independent(8)
    m.probs = PyroSample(
        lambda self: dist.Beta(
            torch.full((8,), 2.0, dtype=torch.float64), torch.full((8,), 2.0, dtype=torch.float64)
        ).to_event(1)
    )
    f = inference.fit(m, digits.train[:, 20:28], "map")
    path = tmp_path / "fit.pt"
    f.save(path)
    assert torch.load(path, weights_only=True)["priors_not_saved"] == ["probs"]
    with pytest.warns(UserWarning, match="custom prior.*probs.*not saved") as caught:
        g = inference.load(path)
    assert len(caught) == 1
    assert torch.equal(g.log_density(digits.test[:, 20:28]), f.log_density(digits.test[:, 20:28]))
    assert math.isfinite(g.report(digits.test[:, 20:28]).nats)
