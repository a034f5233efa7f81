"""Compare fits on held-out data: one `Report` per fit and one table for all."""

from __future__ import annotations

import math

from inference.result import Report

COLUMNS = [("model", "model"), ("method", "method"), ("factorization", "factorization"),
           ("free params", "num_parameters"), ("test nats", "nats"), ("bits/dim", "bits_per_dim"),
           ("zero-prob", "num_zero_prob"), ("fit s", "fit_seconds")]


def compare(fits: dict, x) -> list[Report]:
    """`Fit.report(x)` for each fit, keyed by a label that becomes the report's model name."""
    reports = []
    for label, f in fits.items():
        r = f.report(x)
        r.model = label
        reports.append(r)
    return reports


def _cell(value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.3f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def table(reports: list[Report], markdown: bool = False, columns=COLUMNS) -> str:
    """A text (or Markdown) table of the reports, one row each."""
    rows = [[_cell(getattr(r, attr)) for _, attr in columns] for r in reports]
    head = [name for name, _ in columns]
    if markdown:
        rows = [[c.replace("|", "\\|") for c in row] for row in rows]  # '|' in formulas
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*r) for r in rows])
