"""Pictures for the report folder: sample grids next to real data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def image_rows(rows: dict[str, np.ndarray], path, title: str = "", cmap="gray_r",
               vmin=None, vmax=None) -> None:
    """One row of small images per entry (label -> (n, H, W) or (n, H, W, 3) array)."""
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(0.75 * n + 2.2, 0.8 * len(rows) + 0.4),
                             squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(images):
                ax.imshow(images[c], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def digit_images(x, n: int = 12) -> np.ndarray:
    return np.asarray(x[:n], dtype=float).reshape(-1, 8, 8)


def pixel_swatches(x, side: int = 16, n: int = 4) -> np.ndarray:
    """RGB triples (0..255) as n square swatches of side x side pixels."""
    a = np.asarray(x[: n * side * side], dtype=float) / 255.0
    return a.reshape(-1, side, side, 3)


def patch_images(x, n: int = 12) -> np.ndarray:
    """Mean-removed 8x8 patches stored without their last pixel (63 values) as (n, 8, 8)
    images: the dropped pixel is minus the sum of the other 63."""
    a = np.asarray(x[:n], dtype=float)
    return np.concatenate([a, -a.sum(1, keepdims=True)], 1).reshape(-1, 8, 8)
