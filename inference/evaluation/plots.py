"""Pictures: thin wrappers over ArviZ and matplotlib, each writing one PNG.

plots.forest({"exact": f1, "nuts": f2, "svi": f3}, "forest.png", var_names=["phi"])
plots.ppc(fit, "ppc.png")                        # posterior predictive check
plots.energy(nuts_fit, "energy.png")             # NUTS energy transitions (BFMI)
plots.compare(inference.compare(fits), "compare.png")
plots.tradeoff(reports, "tradeoff.png")          # free parameters vs test nats
plots.image_rows({"data": x, "Markov": s}, "samples.png", kind="digits")
"""

from __future__ import annotations

import math

import numpy as np
import torch

from inference.evaluation import arviz_generations as generations


def _save(fig, path) -> None:
    import matplotlib.pyplot as plt  # the backend is chosen when a figure is made

    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def forest(
    fits: dict, path, var_names=None, coords=None, title: str = "", hdi_prob: float = 0.9
) -> None:
    """One forest plot of several fits' posteriors (e.g. exact vs NUTS vs SVI): ArviZ 0.23's
    `az.plot_forest` or arviz-plots' `plot_forest` (`inference.evaluation.arviz_generations`)."""
    data = {k: f.to_arviz(log_likelihood=False) for k, f in fits.items()}
    generations.plot_forest(
        data, path, var_names=var_names, coords=coords, title=title, hdi_prob=hdi_prob
    )


def ppc(fit, path, title: str = "", draws: int = 100, idata=None) -> None:
    """The posterior predictive (replicated for the first `draws` draws of each chain) against
    the observed data: `az.plot_ppc` (0.23) or `plot_ppc_dist` (1.x)."""
    idata = idata or fit.to_arviz(
        posterior_predictive=True, log_likelihood=False, predictive_draws=draws
    )
    generations.plot_ppc(idata, path, title=title)


def energy(fit, path, title: str = "") -> None:
    """`plot_energy` of a NUTS fit (marginal energy vs energy transitions; BFMI)."""
    if "energy" not in fit.sample_stats:
        raise ValueError(
            f"a {fit.method} fit has no energy statistics; the energy plot is for NUTS fits"
        )
    generations.plot_energy(fit.to_arviz(log_likelihood=False), path, title=title)


def compare(table, path, title: str = "") -> None:
    """`plot_compare` of an `inference.compare` table."""
    generations.plot_compare(table, path, title=title)


def tradeoff(rows, path, title: str = "") -> None:
    """The seed's trade-off in one picture: free parameters (log scale) against test nats per
    datum, one labelled point per assumption. `rows`: `Report`s (or objects with `model`,
    `num_parameters` and `nats`); models with infinite nats are drawn at the top edge."""
    import matplotlib.pyplot as plt  # the backend is chosen when a figure is made

    rows = list(rows)
    finite = [r.nats for r in rows if math.isfinite(r.nats)]
    top = max(finite) + 0.15 * (max(finite) - min(finite) + 1) if finite else 1.0
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    # a legend, not labels beside the points: assumptions of similar size would overlap
    markers = "osDvP<>pXh*d"
    for i, r in enumerate(sorted(rows, key=lambda r: (float(r.num_parameters), -r.nats))):
        finite_r = math.isfinite(r.nats)
        ax.scatter(
            float(r.num_parameters),
            r.nats if finite_r else top,
            s=40,
            marker=markers[i % len(markers)] if finite_r else "^",
            label=f"{r.model}: {r.nats:.2f}" if finite_r else f"{r.model}: inf (drawn at the top)",
        )
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize=8,
        frameon=False,
        title="test nats",
        title_fontsize=8,
    )
    ax.set_xscale("log")
    ax.set_xlabel("free parameters (log scale)")
    ax.set_ylabel("test nats per datum (lower is better)")
    ax.set_title(title or "parameters vs held-out log-likelihood")
    ax.grid(alpha=0.3)
    _save(fig, path)


# -- sample grids ---------------------------------------------------------------------------------
def _array(x) -> np.ndarray:
    """float numpy of a tensor on any device, or of an array."""
    x = x.detach().cpu().numpy() if torch.is_tensor(x) else x
    return np.asarray(x, dtype=float)


def digit_images(x, n: int = 12) -> np.ndarray:
    return _array(x[:n]).reshape(-1, 8, 8)


def fashion_images(x, n: int = 12) -> np.ndarray:
    """28x28 images stored as 784 values in raster order."""
    return _array(x[:n]).reshape(-1, 28, 28)


def pixel_swatches(x, side: int = 16, n: int = 4) -> np.ndarray:
    """RGB triples (0..255) as n square swatches of side x side pixels."""
    a = _array(x[: n * side * side]) / 255.0
    return a.reshape(-1, side, side, 3)


def patch_images(x, n: int = 12) -> np.ndarray:
    """Mean-removed 8x8 patches stored without their last pixel (63 values) as (n, 8, 8)
    images: the dropped pixel is minus the sum of the other 63."""
    a = _array(x[:n])
    return np.concatenate([a, -a.sum(1, keepdims=True)], 1).reshape(-1, 8, 8)


KINDS = {
    "digits": (digit_images, {"cmap": "gray_r", "vmin": 0, "vmax": 1}),
    "fashion": (fashion_images, {"cmap": "gray_r", "vmin": 0, "vmax": 1}),
    "pixels": (pixel_swatches, {}),
    "patches": (patch_images, {"cmap": "gray"}),
}


def kind_of(x) -> str | None:
    """The picture for data of this width: 64 binary dims (digits), 784 (28x28 images), 3
    (pixels), 63 (patches)."""
    d = x.shape[1] if getattr(x, "ndim", 0) == 2 else None
    return {64: "digits", 784: "fashion", 3: "pixels", 63: "patches"}.get(d)


def image_rows(rows: dict, path, kind: str | None = None, title: str = "", **style) -> None:
    """One row of small images per entry (label -> data of one kind, or (n, H, W[, 3]) images
    when `kind` is None)."""
    import matplotlib.pyplot as plt  # the backend is chosen when a figure is made

    if kind is not None:
        to_images, defaults = KINDS[kind]
        rows = {k: to_images(v) for k, v in rows.items()}
        style = {**defaults, **style}
        if kind == "patches" and "vmin" not in style:
            v = float(np.quantile(np.abs(next(iter(rows.values()))), 0.99))
            style.update(vmin=-v, vmax=v)
    style.setdefault("cmap", "gray_r")
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(
        len(rows), n, figsize=(0.75 * n + 2.2, 0.8 * len(rows) + 0.4), squeeze=False
    )
    for r, (label, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c < len(images):
                ax.imshow(images[c], interpolation="nearest", **style)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
