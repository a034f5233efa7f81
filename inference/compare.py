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


def table(rows, markdown: bool = False, columns=COLUMNS) -> str:
    """A text (or Markdown) table, one row per object (a `Report`, or any object with the
    attributes named in `columns`: (heading, attribute) pairs). Numbers are right-aligned."""
    body = [[_cell(getattr(r, attr)) for _, attr in columns] for r in rows]
    head = [name for name, _ in columns]
    if markdown:
        body = [[c.replace("|", "\\|") for c in row] for row in body]  # '|' in formulas
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    numeric = [all(isinstance(getattr(r, attr), int | float) for r in rows) for _, attr in columns]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'>' if num else '<'}{w}}}" for num, w in zip(numeric, widths))
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*r) for r in body])
