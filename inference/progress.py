"""When progress bars show: on by default wherever tqdm can draw (a terminal, a notebook through
`tqdm.auto`, a log file), off with ``progress_bar=False`` or in CI (``CI`` set in the
environment, as CI services do) or with ``PPL_MODELS_PROGRESS=0``."""

from __future__ import annotations

import os


def show_progress(progress_bar=None) -> bool:
    if progress_bar is not None:
        if not isinstance(progress_bar, bool):
            raise ValueError(f"progress_bar must be True, False or None (the default: on unless "
                             f"in CI), got {progress_bar!r}")
        return progress_bar
    if os.environ.get("PPL_MODELS_PROGRESS", "").strip() in ("0", "false", "no"):
        return False
    return not os.environ.get("CI")
