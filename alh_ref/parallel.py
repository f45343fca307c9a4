"""Data parallelism over the CPU cores: a batch split into micro-batches that run at once.

    step = DataParallel(loss_and_grads, threads=2)                                   # on threads
    step = DataParallel(loss_and_grads, threads=2, workers="processes", state=params)  # on forked processes
    loss, grads = step(x, y)          # same contract as loss_and_grads(x, y)

The wrapped function must compute the mean loss over the batch's counted target tokens, every
sequence independently of the others (true for the base GPT and every method whose context is its
own sequence; not for alh-shuffled, which reads other sequences of the batch). Then, with the batch
cut into micro-batches k = 0..M-1 along B (near-equal contiguous slices, M = min(threads, B)) and
n_k the number of counted targets in micro-batch k (its tokens minus the ignored ones),

    loss  = sum_k w_k loss_k,   grads = sum_k w_k grads_k,   w_k = n_k / sum_j n_j

which is the same mean over all counted targets as one call on the whole batch (the sums are only
grouped differently, so results agree to rounding). The caller computes micro-batch 0; the others
run on ``threads - 1`` workers:

* ``workers="threads"`` (the default here): a pool of threads. The Numba kernels release the GIL
  (``nogil=True``) and so do NumPy's BLAS calls, so only the Python glue between kernels is
  serialised: on config tiny that cost a micro-batch 16.5% on one machine (docs/performance.md).
* ``workers="processes"`` (Linux; what ``alh-ref pretrain/adapt`` use there): forked processes,
  each with its own interpreter and GIL (alh_ref.forked). ``state`` names the tensors that change
  between calls (the ones the optimizer updates); they are copied into each worker before every
  call, and anything else the function reads must not change after the first call. Each micro-batch
  runs the same kernels on the same inputs as on a thread, so the two give identical results.

While they run, BLAS is limited to one thread per caller (a process-wide setting of OpenBLAS/MKL,
changed through threadpoolctl; a worker process keeps one thread): M callers each starting a
multi-threaded BLAS call would put M x threads busy threads on the cores. The sum is taken in
micro-batch order, so a run is reproducible for a fixed ``threads``; ``threads=1`` calls the
wrapped function unchanged (the exact serial path) with BLAS limited to one thread.

Memory: a step allocates and frees the same activation and gradient buffers every time. With
glibc's default settings, buffers above its mmap threshold (128 KiB, adapting upward) are handed
back to the kernel on free and faulted in again, page by page, on the next step; with two threads
each unmap also interrupts the other core (a TLB shootdown). :func:`keep_freed_memory`, called
once when a :class:`DataParallel` is made, tells malloc to keep freed blocks of up to 32 MiB for
reuse (``mallopt``: mmap threshold 32 MiB, no trimming; the study, which trains without a
DataParallel, calls it too), so the process's memory stays at its peak instead of being returned
between steps. A user's own ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` wins; on a C library without ``mallopt`` it does nothing.
"""
import ctypes
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import forked
from .errors import InputError

__all__ = ["WORKERS", "DataParallel", "available_cores", "blas_limit", "counted_targets", "keep_freed_memory",
           "resolve_threads", "resolve_workers", "split_sizes"]

WORKERS = ("threads", "processes")                  # what runs the micro-batches after the caller's first
_controller = None
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3        # glibc's mallopt parameter numbers (malloc.h)
_MMAP_THRESHOLD_MAX = 32 << 20                       # glibc's upper limit on 64-bit: 4 MiB * sizeof(long)
_kept = None


def keep_freed_memory():
    """Let malloc keep freed blocks for reuse instead of unmapping them (once per process).

    Sets glibc's mmap threshold to 32 MiB and turns trimming off (see the module docstring), unless
    the environment sets ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_``. Returns True when
    the setting was made, False when it was left to the user or the C library has no ``mallopt``.
    """
    global _kept
    if _kept is None:
        _kept = False
        if not any(v in os.environ for v in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
            try:
                mallopt = ctypes.CDLL(None).mallopt  # the C library's symbols, as linked into Python
            except (OSError, AttributeError, TypeError):  # no mallopt (macOS) or no CDLL(None) (Windows)
                return _kept
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            _kept = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _kept


def available_cores():
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_threads(threads):
    """``threads`` as a positive int: None means all available cores; anything else below 1 is an InputError."""
    if threads is None:
        return available_cores()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise InputError(f"threads must be a positive integer (or None for all {available_cores()} cores); got {threads!r}")
    return int(threads)


def resolve_workers(workers):
    """``workers`` as one of WORKERS: None means processes where they can be forked (Linux), else threads."""
    if workers is None:
        return "processes" if forked.available() else "threads"
    if workers not in WORKERS:
        raise InputError(f"workers={workers!r}; expected one of {', '.join(WORKERS)}")
    return workers


def blas_limit(n):
    """Context manager: BLAS (OpenBLAS / MKL / BLIS) runs on at most ``n`` threads inside the block.

    The library is found once (threadpoolctl's controller is cached; entering costs ~20 us).
    """
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    return _controller.limit(limits=int(n), user_api="blas")


def split_sizes(B, parts):
    """Sizes of ``min(parts, B)`` near-equal contiguous micro-batches of a batch of B (larger ones first)."""
    m = max(1, min(parts, B))
    q, r = divmod(B, m)
    return [q + 1] * r + [q] * (m - r)


def counted_targets(y, ignore=None):
    """Number of target tokens that count in the mean loss: all of y (B,T), minus ``ignore`` (B,T) bool's Trues."""
    return int(y.size) if ignore is None else int(y.size - np.count_nonzero(ignore))


class DataParallel:
    """``loss_and_grads`` run on micro-batches over ``threads`` threads (see the module docstring).

    Parameters
    ----------
    loss_and_grads : callable (x (B,T), y (B,T), *rest[, ignore=(B,T) bool]) -> (loss float, grads dict)
        every positional argument after x, y that is an ndarray with B rows (e.g. domain labels
        ``dom`` (B,)) is split with the batch; other arguments are passed to every call unchanged;
        ``ignore`` (when given) is split too and sets the weights. The function must return fresh
        gradient arrays (they are read, never written, here).
    threads : int or None   cores to use (None: all available cores); 1: the serial path
    split : bool   False for a function whose sequences depend on each other (e.g. alh-shuffled): it
        is then called on the whole batch, with BLAS on ``threads`` threads
    workers : "threads", "processes" or None (as training: processes where they can be forked)
        what runs the micro-batches after the caller's (module docstring)
    state : dict name -> ndarray   with processes: every tensor that changes between calls (updated in
        place only; replacing an entry is a RunError at the next call); the gradients must be of these

    Call it like ``loss_and_grads``; ``close()`` (or leaving a ``with`` block) stops the workers (a
    later call starts them again: processes are forked at the first call that splits).
    """

    def __init__(self, loss_and_grads, threads=None, split=True, workers="threads", state=None):
        workers = resolve_workers(workers)
        if workers == "processes" and not isinstance(state, dict):
            raise InputError("workers='processes' needs state=, the dict of the tensors the optimizer updates")
        if workers == "processes" and not forked.available():
            raise InputError("workers='processes' needs os.fork on Linux; use workers='threads' here")
        self.loss_and_grads = loss_and_grads
        self.threads = resolve_threads(threads)
        self.split = split
        self.workers = workers
        self.state = state
        self._pool = None
        self._procs = None
        keep_freed_memory()

    def __call__(self, x, y, *rest, **kwargs):
        B = x.shape[0]
        sizes = split_sizes(B, self.threads if self.split else 1)
        if len(sizes) == 1:
            with blas_limit(self.threads):
                return self.loss_and_grads(x, y, *rest, **kwargs)
        ignore = kwargs.get("ignore")
        bounds = np.cumsum([0] + sizes)                                          # (M+1,)
        parts = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

        def cut(v, s):
            return v[s] if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == B else v

        def call_of(s):
            """(args, kwargs) of micro-batch ``s``: every (B, ...) array cut along B, the rest as given."""
            return (x[s], y[s], *(cut(v, s) for v in rest)), {k: cut(v, s) for k, v in kwargs.items()}

        def run(s):
            args, kw = call_of(s)
            return self.loss_and_grads(*args, **kw)

        with blas_limit(1):
            if self.workers == "processes":
                results = self._on_processes(run, parts, call_of)
            else:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=self.threads - 1, thread_name_prefix="alh_ref-dp")
                futures = [self._pool.submit(run, s) for s in parts[1:]]
                results = [run(parts[0])] + [f.result() for f in futures]       # the caller takes the first part
        n = [counted_targets(y[s], None if ignore is None else ignore[s]) for s in parts]
        total = max(sum(n), 1)
        return reduce_weighted(results, [nk / total for nk in n])

    def _on_processes(self, run, parts, call_of):
        """The parts after the first on forked workers (alh_ref.forked), the first here; their results in order."""
        if self._procs is None or not self._procs.workers:
            self._procs = forked.ForkedWorkers(self.loss_and_grads, self.state, self.threads - 1)
        self._procs.check_state(self.state)
        self._procs.start([call_of(s) for s in parts[1:]])
        try:
            first = run(parts[0])
            return [first] + self._procs.finish()
        except BaseException:
            if self._procs.pending:                # interrupted mid-call: the workers' replies are out of step
                self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Stop the worker threads or processes (a later call starts them again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._procs is not None:
            self._procs.close()
            self._procs = None

    def __del__(self):
        try:
            self.close()
        except Exception:      # interpreter shutdown: the pool may already be gone
            pass


def reduce_weighted(results, weights):
    """(sum_k w_k loss_k, {name: sum_k w_k grads_k[name]}), summed in the order of ``results``.

    Parameters
    ----------
    results : list of (loss float, grads dict name -> ndarray), every dict with the same names and shapes
    weights : list of float, one per result

    Returns
    -------
    loss : float;  grads : dict name -> ndarray (new arrays, the dtype of the micro-batch gradients)
    """
    loss = float(sum(w * float(lk) for w, (lk, _) in zip(weights, results)))
    grads = {}
    for name, g0 in results[0][1].items():
        acc = g0 * g0.dtype.type(weights[0])                                      # same shape as the parameter
        for w, (_, gk) in zip(weights[1:], results[1:]):
            acc += gk[name] * g0.dtype.type(w)
        grads[name] = acc
    return loss, grads
