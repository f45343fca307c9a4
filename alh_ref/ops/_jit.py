"""The one place Numba is configured.

``kernel`` is ``numba.njit(cache=True)``: compiled machine code is cached next to the source, so
only the first run on a machine pays the compile. With the environment variable
``NUMBA_DISABLE_JIT=1`` Numba returns the plain Python function, so every kernel still runs (slowly)
and can be stepped through in a debugger. Kernels are serial (no ``parallel=True``): on 2 cores the
BLAS pool already uses both, and two thread pools spinning against each other cost more than they
give (../shared/PERF_NOTES.md).
"""
from numba import njit


def kernel(fn):
    """Decorate a hot loop as a cached, serial, no-Python-mode Numba kernel."""
    return njit(cache=True, nogil=True)(fn)
