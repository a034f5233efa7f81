"""Real data that ships inside installed packages, with fixed, documented splits.

Nothing is downloaded: digits and the sample images come with scikit-learn, sunspots with
statsmodels, Fashion-MNIST with Debian's `dataset-fashion-mnist` package (the one dataset that
needs an install step: `apt-get install dataset-fashion-mnist`, or a folder of the IDX files).
`load(name)` returns `Split(train, valid, test)` of tensors; an empty split has zero rows.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch


class Split(NamedTuple):
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor


DATASETS = {
    "digits": "scikit-learn 8x8 digits binarised as pixel > 7: (N, 64) int64 in {0, 1}; "
    "1297 train / 250 valid / 250 test",
    "pixels": "RGB pixels of scikit-learn's china and flower images: (N, 3) int64 in 0..255; "
    "437,248 train / 0 valid / 109,312 test",
    "patches": "8x8 grey patches of the same images, dequantised, mean removed, last pixel "
    "dropped: (N, 63) float32; 20,000 train / 5,000 valid / 5,000 test",
    "sunspots": "yearly sunspot numbers 1700-2008 from statsmodels: (309,) float64, all train "
    "(evaluate a series by leave-future-out)",
    "fashion": "28x28 Fashion-MNIST binarised as pixel > 127, raster order: (N, 784) int64 in "
    "{0, 1}; 50,000 train / 10,000 valid (the training file's last) / 10,000 test",
}
# Where Debian's dataset-fashion-mnist puts the gzipped IDX files; PPL_MODELS_FASHION or
# load("fashion", folder=...) names another folder
FASHION_FOLDER = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz")


def names() -> list[str]:
    return list(DATASETS)


def load(name: str, num_train: int | None = None, folder=None) -> Split:
    """The named dataset as `Split(train, valid, test)`; see `DATASETS` for each recipe.

    ``folder`` (fashion only): the folder holding ``train-images-idx3-ubyte.gz`` and
    ``t10k-images-idx3-ubyte.gz``; default: the environment variable ``PPL_MODELS_FASHION``,
    else Debian's ``/usr/share/datasets/fashion-mnist`` (``apt-get install
    dataset-fashion-mnist``).

    ``num_train`` (patches only, for scale runs): that many training patches. The default
    30,000 patches are drawn exactly as documented (valid and test never change); beyond the
    default 20,000 training patches, more are drawn by the same recipe from
    ``numpy.random.default_rng(1)``; fewer are the first `num_train` of the default ones.

    Data of your own need no loader: `inference.fit` takes any (N, D) tensor, numpy array or
    numpy memmap (``np.load(path, mmap_mode="r")``: read-only memory is never written, and
    minibatch fits read only the rows of each batch once it is a tensor view)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if folder is not None and name != "fashion":
        raise ValueError(
            f"folder applies to fashion (files you install); {name} ships inside a package"
        )
    if name == "fashion":
        if num_train is not None:
            raise ValueError("num_train applies to patches; fashion has a fixed split")
        return _fashion(_fashion_folder(folder))
    if num_train is None:
        return _LOADERS[name]()
    if name != "patches":
        raise ValueError(
            f"num_train applies to patches (drawn by a recipe); {name} ships with a fixed size"
        )
    if isinstance(num_train, bool) or not isinstance(num_train, int) or num_train < 1:
        raise ValueError(
            f"num_train must be a positive integer (the training patches to draw), "
            f"got {num_train!r}"
        )
    return _patches_with(num_train)


def _split(x: np.ndarray, sizes: tuple[int, int]) -> Split:
    a, b = sizes
    t = torch.from_numpy(np.ascontiguousarray(x))
    return Split(t[:a], t[a : a + b], t[a + b :])


@functools.cache
def _digits() -> Split:
    """8x8 digits, pixel > 7; rows permuted by default_rng(0).permutation(1797)."""
    from sklearn.datasets import load_digits

    x = (load_digits().data > 7).astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    return _split(x[perm], (1297, 250))


def _sample_images() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    images = load_sample_images()
    order = [
        next(i for i, f in enumerate(images.filenames) if f.endswith(name))
        for name in ("china.jpg", "flower.jpg")
    ]
    return [images.images[i] for i in order]


@functools.cache
def _pixels() -> Split:
    """RGB triples of china then flower, permuted by default_rng(0).permutation(546560)."""
    x = np.concatenate([im.reshape(-1, 3) for im in _sample_images()]).astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    return _split(x[perm], (437_248, 0))


@functools.cache
def _patches(n: int = 30_000) -> Split:
    """The RNADE recipe for BSDS300, on the two sample images (see DESIGN.md)."""
    x = _draw_patches(np.random.default_rng(0), n)
    return _split(x, (20_000, 5_000))


@functools.cache
def _patches_with(num_train: int) -> Split:
    base = _patches()
    if num_train <= len(base.train):
        return Split(base.train[:num_train], base.valid, base.test)
    extra = torch.from_numpy(_draw_patches(np.random.default_rng(1), num_train - len(base.train)))
    return Split(torch.cat([base.train, extra]), base.valid, base.test)


def _draw_patches(rng, n: int) -> np.ndarray:
    """n patches: image index, then rows, then columns, then the dequantising noise, all
    from `rng`; mean removed, last pixel dropped; (n, 63) float32."""
    grey = [im.mean(-1) / 255.0 for im in _sample_images()]
    img = rng.integers(0, 2, n)
    H, W = grey[0].shape
    rows = rng.integers(0, H - 7, n)
    cols = rng.integers(0, W - 7, n)
    stack = np.stack(grey)
    r = rows[:, None, None] + np.arange(8)[None, :, None]
    c = cols[:, None, None] + np.arange(8)[None, None, :]
    x = stack[img[:, None, None], r, c].reshape(n, 64)
    x = x + rng.uniform(0, 1 / 256, (n, 64))
    x = x - x.mean(1, keepdims=True)
    return np.ascontiguousarray(x[:, :63].astype(np.float32))


@functools.cache
def _sunspots() -> Split:
    try:
        from statsmodels.datasets import sunspots
    except ImportError:
        raise ValueError(
            "the sunspots data ships with statsmodels, which is not installed; "
            "pip install statsmodels (or pip install 'ppl-models[dev]')"
        ) from None
    y = sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(dtype=np.float64, copy=True)
    t = torch.from_numpy(y)
    return Split(t, t[:0], t[:0])


def _fashion_folder(folder) -> Path:
    chosen = folder if folder is not None else os.environ.get("PPL_MODELS_FASHION")
    path = Path(chosen) if chosen else FASHION_FOLDER
    missing = [f for f in FASHION_FILES if not (path / f).is_file()]
    if missing:
        where = "the folder you named" if chosen else "Debian's default folder"
        raise ValueError(
            f"Fashion-MNIST is not in {path} ({where}): {', '.join(missing)} missing. Install "
            "Debian's package (apt-get install dataset-fashion-mnist, as root), or pass "
            "load('fashion', folder=...) / set PPL_MODELS_FASHION to a folder holding "
            f"{' and '.join(FASHION_FILES)}"
        )
    return path.resolve()


def read_idx_images(path) -> np.ndarray:
    """A gzipped IDX image file (magic 2051, big-endian counts) as (N, rows * cols) uint8."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n, rows, cols = np.frombuffer(data[:16], dtype=">i4")
    if magic != 2051 or len(data) != 16 + n * rows * cols:
        raise ValueError(f"{path} is not an IDX image file (magic {magic}, {len(data)} bytes)")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows * cols)


@functools.cache
def _fashion(folder: Path) -> Split:
    """Fashion-MNIST, pixel > 127: train = the training file's first 50,000 images, valid its
    last 10,000, test the 10,000 of the test file."""
    train = (read_idx_images(folder / FASHION_FILES[0]) > 127).astype(np.int64)
    test = (read_idx_images(folder / FASHION_FILES[1]) > 127).astype(np.int64)
    return _split(np.concatenate([train, test]), (50_000, 10_000))


_LOADERS = {"digits": _digits, "pixels": _pixels, "patches": _patches, "sunspots": _sunspots}
