"""Which implementation every op runs: the Numba kernels ("fast", the default) or their NumPy twins ("ref").

    ops.use("ref")              # from now on, every layer, ALH transform and optimizer update runs on the twins
    with ops.using("ref"):      # the same for a block of code, restored on exit
        ...
    ops.current()               # "fast" or "ref"

An op that has two implementations is built with :func:`dispatch`, next to both of them in its own
module (e.g. ``layernorm_forward = dispatch(layernorm_forward_fast, layernorm_forward_ref)``); the
model, the hypernetwork and the optimizer call that one name, and the choice is made at call time.
Ops that are plain NumPy/BLAS (the linear layers' matmuls, the embedding gather, FiLM) have one
implementation and need no dispatch. The setting is process-wide (one global, not per thread).
"""
from contextlib import contextmanager

from ..errors import InputError

IMPLS = ("fast", "ref")
_current = "fast"


def use(impl):
    """Set the process-wide implementation: "fast" (Numba kernels) or "ref" (pure-NumPy twins)."""
    global _current
    if impl not in IMPLS:
        raise InputError(f"unknown implementation {impl!r}; expected one of {', '.join(IMPLS)}")
    _current = impl


def current():
    """The name of the implementation in use: "fast" or "ref"."""
    return _current


@contextmanager
def using(impl):
    """Context manager: run the block under ``impl`` (see :func:`use`), restore the previous one on exit."""
    previous = _current
    use(impl)
    try:
        yield impl
    finally:
        use(previous)


def dispatch(fast, ref):
    """One op from its two implementations: a function that calls ``fast`` or ``ref``, by :func:`current`.

    Parameters
    ----------
    fast, ref : callables with the same contract (the Numba path and its NumPy twin)

    Returns
    -------
    callable with that contract; ``.impls`` is its table {"fast": fast, "ref": ref}
    """
    impls = {"fast": fast, "ref": ref}

    def op(*args, **kwargs):
        return impls[_current](*args, **kwargs)

    op.__name__ = op.__qualname__ = fast.__name__.removesuffix("_fast")
    op.__module__ = fast.__module__
    op.__doc__ = (f"{fast.__name__} (Numba) or {ref.__name__} (NumPy twin), whichever alh_ref.ops.current() "
                  f"names; the contract is {ref.__name__}'s:\n\n" + (ref.__doc__ or ""))
    op.impls = impls
    return op
