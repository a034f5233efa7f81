"""The C library `inference.c_graph` writes: compiled by the system's C compiler (``cc -O1``) in
a temporary folder, loaded at once (a forked chain process shares it; nothing of it is read
back later or saved with a fit), and called through ctypes with its constants, index tables
and buffers (`CGraph`)."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile

import numpy as np
import torch

# -O1: HMM model_1's 709 operations compile in 1.0 s and run in 30 us; -O2 2.5 s and 26 us
FLAGS = ("-O1", "-shared", "-fPIC")


class Unsupported(Exception):
    """A graph `inference.c_graph` does not write out or compile (the reason)."""


class CGraph:
    """The compiled graph: called with z (a contiguous tensor of the graph's dtype), returns
    (gradient, value) as new tensors, as a TorchScript graph does; `numpy_value_and_grad` the
    same for a float64 numpy vector with no tensor made. Its buffers are its own: one call at
    a time (a sampler's evaluations take turns, `nutpie_engine.EVALUATING`)."""

    def __init__(self, library, constants, tables, size: int, dim: int, dtype):
        self.library, self.dim, self.dtype = library, dim, dtype
        self.function = library.run
        self.function.restype = None
        self.function.argtypes = [ctypes.c_void_p] * 6
        self.np_dtype = np.float64 if dtype == torch.float64 else np.float32
        self.K = np.concatenate(constants or [np.zeros(1)]).astype(self.np_dtype)
        self.I = np.ascontiguousarray(np.concatenate(tables or [np.zeros(1, np.int32)]))
        self.W = np.zeros(max(size, 1), dtype=self.np_dtype)
        self.pointers = (self.K.ctypes.data, self.I.ctypes.data, self.W.ctypes.data)

    def __call__(self, z: torch.Tensor):
        z = z.to(self.dtype).contiguous()
        grad, value = torch.empty(self.dim, dtype=self.dtype), torch.empty((), dtype=self.dtype)
        self.function(z.data_ptr(), *self.pointers, grad.data_ptr(), value.data_ptr())
        return grad, value

    def numpy_value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=self.np_dtype)
        grad, value = np.empty(self.dim, self.np_dtype), np.empty(1, self.np_dtype)
        self.function(x.ctypes.data, *self.pointers, grad.ctypes.data, value.ctypes.data)
        return float(value[0]), grad.astype(np.float64, copy=False)


def compiler() -> str | None:
    """The C compiler this backend calls (``$CC``, else cc or gcc), None where there is none."""
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def built(text: str) -> ctypes.CDLL:
    """The C source `text` compiled and loaded; `Unsupported` where there is no compiler or
    it fails."""
    cc = compiler()
    if cc is None:
        raise Unsupported("no C compiler (cc, gcc or $CC)")
    with tempfile.TemporaryDirectory(prefix="ppl-models-c-") as folder:
        path_c, path_so = os.path.join(folder, "graph.c"), os.path.join(folder, "graph.so")
        with open(path_c, "w") as f:
            f.write(text)
        done = subprocess.run(
            [cc, *FLAGS, "-o", path_so, path_c, "-lm"], capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise Unsupported(f"the C compiler failed: {done.stderr.strip()[:300]}")
        return ctypes.CDLL(path_so)


__all__ = ["CGraph", "FLAGS", "Unsupported", "built", "compiler"]
