"""The C library `inference.c_graph` writes: compiled by the system's C compiler (``cc -O1``;
loops marked ``omp simd`` vectorised, for this machine's CPU, calling glibc's vector exp, log,
... where that library is there) in a temporary folder, loaded at once (a forked chain process
shares it; nothing of it is read back later or saved with a fit), and called through ctypes
with its constants, index tables and buffers (`CGraph`)."""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import shutil
import subprocess
import tempfile

import numpy as np
import torch

# -O1: HMM model_1's 709 operations compile in 1.4 s in one file and run in 17 us; -O2
# compiles 2.2x as long, 6% faster.
# Loops marked `omp simd` are vectorised at -O1 too (-fopenmp-simd; nothing of OpenMP's
# threads); errno is never read, so a libm call may be a vector one; -fexpensive-optimizations
# clears the vector registers' upper halves before a call (its vzeroupper pass: without it a
# libm pow after AVX code ran ~0.2 us a call, the hierarchical AR(1)'s gradient 52 -> 360 us)
FLAGS = ("-O1", "-shared", "-fPIC", "-fopenmp-simd", "-fno-math-errno", "-fexpensive-optimizations")


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


@functools.cache
def vector_math() -> tuple[str, ...]:
    """Flags for glibc's vector math library (libmvec, glibc >= 2.35 on x86-64: a vector exp,
    log, log1p, ... that a loop marked ``omp simd`` calls, 4-8 values at once, within 4 units
    in the last place, against one at a time by libm) and this machine's vector instructions;
    none where it is missing (the loops then call libm's)."""
    cc = compiler()
    version = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
    if cc is None or platform.machine() != "x86_64" or not (version or "").startswith("glibc"):
        return ()
    if tuple(int(x) for x in version.split()[1].split(".")[:2]) < (2, 35):
        return ()
    found = subprocess.run([cc, "-print-file-name=libmvec.so"], capture_output=True, text=True)
    if not os.path.isabs(found.stdout.strip()):
        return ()
    return ("-march=native", "-DVECTOR_MATH", "-lmvec")


def built(texts: list[str]) -> ctypes.CDLL:
    """The C source `texts` (files of one library) compiled side by side, linked and loaded;
    `Unsupported` where there is no compiler or it fails."""
    cc = compiler()
    if cc is None:
        raise Unsupported("no C compiler (cc, gcc or $CC)")
    options = [f for f in vector_math() if not f.startswith("-l")]
    libraries = [f for f in vector_math() if f.startswith("-l")] + ["-lm"]
    with tempfile.TemporaryDirectory(prefix="ppl-models-c-") as folder:
        sources = [os.path.join(folder, f"graph{k}.c") for k in range(len(texts))]
        for path, text in zip(sources, texts):
            with open(path, "w") as f:
                f.write(text)
        path_so = os.path.join(folder, "graph.so")
        if len(texts) == 1:
            _run([[cc, *FLAGS, *options, "-o", path_so, sources[0], *libraries]])
        else:
            objects = [path[:-2] + ".o" for path in sources]
            _run([[cc, *FLAGS, *options, "-c", "-o", o, c] for o, c in zip(objects, sources)])
            _run([[cc, "-shared", "-o", path_so, *objects, *libraries]])
        return ctypes.CDLL(path_so)


def _run(commands: list[list[str]]) -> None:
    """The commands run side by side; `Unsupported` with the first one's error where one fails."""
    running = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    failed = []
    for p in running:
        try:
            _, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            err = "timed out after 300 s"
        if p.returncode != 0:
            failed.append(err.strip())
    if failed:
        raise Unsupported(f"the C compiler failed: {failed[0][:300]}")


__all__ = ["CGraph", "FLAGS", "Unsupported", "built", "compiler", "vector_math"]
