"""What a run needs from its surroundings: seeds, threads, progress bars.

- `seeded(seed)`: reproducible draws that leave the global RNG as it was;
- `few_threads(x)`: one intra-op thread while sampling a small problem;
- `warn(message)`: a RuntimeWarning attributed to the caller's line, not ours;
- `show_progress(progress_bar)`: progress bars on by default wherever tqdm can draw (a
  terminal, a notebook through `tqdm.auto`, a log file), off with ``progress_bar=False`` or in
  CI (``CI`` set in the environment, as CI services do) or with ``PPL_MODELS_PROGRESS=0``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings

import torch

_OURS = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), part) + os.sep
    for part in ("ppl_models", "inference")
)

SMALL = 1_000_000  # data entries up to which sampling runs on one thread (`few_threads`)


@contextlib.contextmanager
def seeded(seed):
    """With a seed: reproducible draws that leave the global RNG as it was. Without: draws
    from the global RNG, which advances (each call gives fresh ones)."""
    if seed is None:
        yield
        return
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(
            f"seed must be an integer (or None for fresh draws from the global RNG), got {seed!r}"
        )
    # the CUDA generators too where CUDA is in use (manual_seed seeds them all)
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def few_threads(x: torch.Tensor):
    """One intra-op thread while sampling a small problem (at most SMALL data entries): its
    tensor ops are tiny, gain nothing from threads and, on a busy machine, lose much to their
    synchronisation (measured on 2 busy cores: NUTS on AR(2) sunspots 27 s with one thread,
    133 s with two)."""
    before = torch.get_num_threads()
    if x.numel() <= SMALL:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def show_progress(progress_bar=None) -> bool:
    if progress_bar is not None:
        if not isinstance(progress_bar, bool):
            raise ValueError(
                f"progress_bar must be True, False or None (the default: on unless "
                f"in CI), got {progress_bar!r}"
            )
        return progress_bar
    if os.environ.get("PPL_MODELS_PROGRESS", "").strip() in ("0", "false", "no"):
        return False
    return not os.environ.get("CI")


def warn(message: str, category=RuntimeWarning) -> None:
    """`warnings.warn` pointing at the first frame outside this library (the user's call of
    `inference.fit`, say), however deep inside it the warning arises."""
    here = inspect.currentframe()
    level, frame = 1, here.f_back if here is not None else None
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_OURS):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
