"""Every numeric option is checked before anything runs (issue 11): one row per bad value."""

import pytest
import torch

import inference
from ppl_models import Independent, datasets

X = datasets.load("digits").train[:50]
CASES = [
    ("svi lr=-1", "svi", {"lr": -1}, "lr must be a finite number > 0"),
    ("svi lr=inf", "svi", {"lr": float("inf")}, "lr must be a finite number > 0"),
    ("svi lr=nan", "svi", {"lr": float("nan")}, "lr must be a finite number > 0"),
    ("svi steps=0", "svi", {"steps": 0}, "steps must be an integer >= 1"),
    ("svi steps=2.5", "svi", {"steps": 2.5}, "steps must be an integer >= 1"),
    ("svi num_particles=0", "svi", {"num_particles": 0}, "num_particles must be"),
    ("nuts num_samples=-5", "nuts", {"num_samples": -5}, "num_samples must be an integer"),
    ("nuts warmup_steps=-1", "nuts", {"warmup_steps": -1}, "warmup_steps must be an integer >= 0"),
    ("nuts num_chains=0", "nuts", {"num_chains": 0}, "num_chains must be"),
    (
        "nuts target_accept_prob=1.5",
        "nuts",
        {"target_accept_prob": 1.5},
        "target_accept_prob must be a number strictly between 0 and 1",
    ),
    ("nuts max_tree_depth=0", "nuts", {"max_tree_depth": 0}, "max_tree_depth must be"),
    (
        "nuts jit_compile='yes'",
        "nuts",
        {"jit_compile": "yes"},
        "jit_compile must be True, False or 'inductor'",
    ),
    ("mle lr=0", "mle", {"lr": 0, "solver": "adam"}, "lr must be a finite number > 0"),
    ("mle batch_size=0", "mle", {"batch_size": 0}, "batch_size must be an integer >= 1"),
    ("mle max_epochs=-1", "mle", {"max_epochs": -1}, "max_epochs must be"),
    ("mle patience=0", "mle", {"patience": 0}, "patience must be"),
    ("mle lr_decay=0", "mle", {"lr_decay": 0}, "lr_decay must be in (0, 1]"),
    ("map restarts=0", "map", {"restarts": 0}, "restarts must be"),
    ("exact num_samples=0", "exact", {"num_samples": 0}, "num_samples must be an integer >= 1"),
    ("unknown method", "bfgs", {}, "unknown method 'bfgs'"),
    ("an option of another method", "svi", {"warmup_steps": 3}, "do not apply to method='svi'"),
    ("device", "mle", {"device": "tpu"}, "device"),
    ("dtype", "mle", {"dtype": torch.int64}, "dtype must be torch.float32 or torch.float64"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_bad_option_is_named_before_anything_runs(case, monkeypatch):
    _, method, options, words = case
    calls = []
    monkeypatch.setattr(Independent, "validate", lambda self, x: calls.append(x) or x)
    with pytest.raises(ValueError, match=None) as err:
        inference.fit(Independent(64), X, method, **options)
    assert words in str(err.value), str(err.value)
    assert not calls  # nothing ran: the data were never even validated


def test_method_names_are_case_insensitive():
    assert inference.fit(Independent(64), X, "MLE").method == "mle"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU.*device='cpu'"):
        inference.fit(Independent(64), X, device="cuda")
