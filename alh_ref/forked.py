"""Worker processes for :class:`alh_ref.parallel.DataParallel`: micro-batches run in forked processes.

Why: two threads of one process share one GIL, so on small models the Python glue between the
kernels of one micro-batch waits for the other's (docs/performance.md, "Where the second thread's
time goes"). A forked process has its own interpreter and GIL, so nothing is shared but the cores.

How (Linux; ``available()``):

* ``ForkedWorkers(fn, state, n)`` forks ``n`` processes at once. Each inherits the parent's whole
  memory as it is at that moment (copy-on-write): ``fn``, the model, everything ``fn`` reads.
* ``state`` (name -> ndarray) are the tensors that change between calls (the ones the optimizer
  updates). Before every call the parent copies them into one shared mapping, and each worker
  copies them from there into *its own copies of the same arrays*, in place. So every reference a
  worker holds to them (a dict, a view, a closure) sees the new values, as in the parent.
  Anything else ``fn`` reads must not change after the fork: the worker would go on with the old
  value. Replacing an entry of ``state`` by another array is caught (RunError) at the next call.
* A call sends each worker its arguments through a pipe (pickled; a micro-batch of token ids is a
  few KiB). The worker runs ``fn``, copies the gradients into its own shared mapping (one slot per
  tensor of ``state``, same shape and dtype: a gradient of anything else is a RunError) and sends
  back the loss and the names. The parent reads them there: it must use them (DataParallel sums
  them into new arrays) before the next call overwrites them.
* An exception in ``fn`` is sent back and raised in the parent. A worker that dies (killed, out of
  memory) closes its pipe, and the parent raises RunError. Workers ignore Ctrl-C (the parent
  handles it and closes them), leave through ``os._exit`` (never running the parent's exit code
  twice), and end when the parent ends: then their pipe reads end-of-file.
* A worker closes every file it inherited but its pipe and standard streams (so a run folder's
  lock is not held by it), and runs BLAS on one thread (set once), as on the threads of a split.
"""
import mmap
import os
import pickle
import signal
import sys
import time
import warnings
from multiprocessing.connection import Pipe

import numpy as np

from .errors import RunError

__all__ = ["ForkedWorkers", "available", "shared_like"]

_ALIGN = 64                              # bytes: each tensor starts on a cache line
_MAX_FD = 1 << 20                        # closerange's end (close_range(2) on Linux: cheap for any bound)
CLOSE_S = 5.0                            # seconds close() waits for the workers to end before it kills them
SPIN_S = 0.001                           # seconds a waiting side polls its pipe before it blocks (see _recv)


def available():
    """True where worker processes can be forked safely: Linux (macOS's fork is unsafe beside Accelerate)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def _recv(conn):
    """``conn.recv()``, after polling for up to SPIN_S seconds.

    A process blocked on a pipe took 50-150 us to be woken on the machines of docs/performance.md;
    a polling one sees the message at once. Each side waits here once a call: the caller for the
    workers' results, a worker for the next call while the caller sums the gradients and updates
    the parameters (under a ms on config tiny; a longer wait blocks after SPIN_S). The poll yields
    the core to any other runnable thread on it, so it spins on otherwise idle time.
    """
    end = time.perf_counter() + SPIN_S
    while not conn.poll() and time.perf_counter() < end:
        os.sched_yield()
    return conn.recv()


def shared_like(arrays):
    """{name: zero array} of the shapes and dtypes of ``arrays``, all views of one anonymous shared mapping.

    The mapping lives as long as one of the views does; a forked child sees the same memory.
    """
    offsets, end = {}, 0
    for n, a in arrays.items():
        offsets[n] = end
        end += -(-a.nbytes // _ALIGN) * _ALIGN
    buf = mmap.mmap(-1, max(end, 1), flags=mmap.MAP_SHARED)
    return {n: np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=offsets[n]).reshape(a.shape)  # a.shape
            for n, a in arrays.items()}


class ForkedWorkers:
    """``n`` forked processes, each running ``fn(*args, **kwargs) -> (loss, grads)`` once per call.

    Parameters
    ----------
    fn : callable returning (loss float, grads dict name -> ndarray), grads for names of ``state``
    state : dict name -> ndarray   the tensors that change between calls (see the module docstring)
    n : int   worker processes to fork (now)

    ``start(calls)`` hands ``calls[k] = (args, kwargs)`` to worker k (len(calls) <= n);
    ``finish()`` waits for them and returns their [(loss, grads)] in the same order;
    ``close()`` ends the processes.
    """

    def __init__(self, fn, state, n):
        if not available():
            raise RunError("worker processes need os.fork on Linux; use threads on this platform")
        self.arrays = dict(state)                     # the objects forked: checked by identity every call
        self.shared = shared_like(self.arrays)        # parent -> workers: the state before each call
        self.workers = []                             # [(pid, connection, gradient slots)]
        self.pending = 0
        for _ in range(n):
            self._fork(fn)

    def _fork(self, fn):
        conn, child = Pipe()
        grads = shared_like(self.arrays)              # worker -> parent: its gradients
        with warnings.catch_warnings():               # 3.12+ warns on forking a process with threads: BLAS's
            warnings.simplefilter("ignore", DeprecationWarning)   # idle pool (its atfork handlers reset it)
            pid = os.fork()
        if pid == 0:                                  # the worker: never returns into the parent's code
            code = 1
            try:
                keep = child.fileno()                 # every other inherited file is closed: the other pipes
                os.closerange(3, keep)                # (so each reaches EOF when its owner ends), a run folder's
                os.closerange(keep + 1, _MAX_FD)      # lock (released when the parent ends), open outputs
                code = _serve(child, fn, self.arrays, self.shared, grads)
            finally:
                os._exit(code)
        child.close()
        self.workers.append((pid, conn, grads))

    def start(self, calls):
        """Bring the workers' state up to date and hand worker k the arguments ``calls[k] = (args, kwargs)``."""
        if self.pending:
            raise RunError("ForkedWorkers.start called again before finish()")
        for n, a in self.arrays.items():
            np.copyto(self.shared[n], a)
        self.pending = len(calls)
        for (pid, conn, _), call in zip(self.workers, calls):
            try:
                conn.send(call)
            except OSError:                           # its end of the pipe is closed: it has died
                self._lost(pid)

    def check_state(self, state):
        """Raise RunError unless ``state`` holds the very arrays that were forked (updated in place only)."""
        if state.keys() != self.arrays.keys() or any(state[n] is not a for n, a in self.arrays.items()):
            changed = sorted(set(state) ^ set(self.arrays)) or [n for n, a in self.arrays.items() if state[n] is not a]
            raise RunError(f"the trained tensors {changed[:3]} were replaced after the worker processes started; "
                           "update them in place (p[...] = new) or make a new DataParallel")

    def finish(self):
        """[(loss, grads)] of the pending calls, in order; the first worker's exception is raised after all reply."""
        out, error = [], None
        for pid, conn, grads in self.workers[:self.pending]:
            try:
                msg = _recv(conn)
            except (EOFError, OSError):
                self._lost(pid)
            if msg[0] == "ok":
                out.append((msg[1], {n: grads[n] for n in msg[2]}))
            elif error is None:
                error = msg[1]
        self.pending = 0
        if error is not None:
            raise error
        return out

    def _lost(self, pid):
        """A worker has died: end the others (mid-call), reap them all, raise RunError."""
        self.close()
        raise RunError(f"the worker process {pid} of the data-parallel step ended unexpectedly "
                       "(killed, or out of memory?); the next call starts new workers") from None

    def close(self):
        """End the worker processes (killed if a call is pending: its reply would never be read) and reap them."""
        for pid, conn, _ in self.workers:
            try:
                if self.pending:
                    os.kill(pid, signal.SIGKILL)
                else:
                    conn.send(None)
            except (OSError, ValueError):             # already gone
                pass
            conn.close()
        deadline = time.monotonic() + CLOSE_S
        for pid, _, _ in self.workers:
            try:
                while os.waitpid(pid, os.WNOHANG) == (0, 0):
                    if time.monotonic() > deadline:   # stuck (it had CLOSE_S to read its stop): killed
                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                        break
                    time.sleep(0.001)
            except ChildProcessError:                 # reaped already
                pass
        self.workers, self.pending = [], 0


def _serve(conn, fn, arrays, shared, grads):
    """The worker's loop: state in, ``fn`` on the arguments, gradients out; returns the exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=1, user_api="blas")      # for the life of this process
    while True:
        try:
            call = _recv(conn)
        except (EOFError, OSError):                   # the parent has ended
            return 0
        if call is None:
            return 0
        try:
            for n, a in arrays.items():
                np.copyto(a, shared[n])
            args, kwargs = call
            loss, g = fn(*args, **kwargs)
            for n, v in g.items():
                if n not in grads or v.shape != grads[n].shape or v.dtype != grads[n].dtype:
                    raise RunError(f"gradient {n!r} {v.dtype} {v.shape} is not one of the trained tensors' "
                                   "(name, shape, dtype); worker processes return gradients of the state only")
                np.copyto(grads[n], v)
            reply = ("ok", float(loss), list(g))
        except Exception as e:                        # noqa: BLE001 - sent to the parent, raised there
            reply = ("error", e)
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError):
            conn.send(("error", RunError(f"in a worker process: {reply[1]!r}")))
