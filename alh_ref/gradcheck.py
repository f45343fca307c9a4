"""Finite-difference gradient checks: the three helpers every backward pass is tested with.

A hand-written backward is checked against centered differences of the forward,

    dL/dx_i  ~=  (L(x + h e_i) - L(x - h e_i)) / (2 h),

in float64 (h = 1e-5 leaves a truncation error of order h^2 and a rounding error of order
eps |L| / h, both about 1e-11 for L of order one). To make every gradient entry matter, the scalar
checked is ``L = sum(out * G)`` with ``G`` standard normal (so dL/dout = G, never all ones), and the
inputs are non-degenerate (LayerNorm gains not all one, biases not all zero, ...).
Usage: tests/test_ops_grad.py and tests/test_model.py; background: docs/glossary.md.
"""
import numpy as np

from .errors import InputError


def rel_error(a, n, floor=1e-10):
    """Largest elementwise relative error between an analytic and a numerical gradient.

    Parameters
    ----------
    a : array_like (...), analytic gradient
    n : array_like (...), numerical gradient, same shape as ``a``
    floor : float
        Lower bound of the denominator, so entries where both gradients are (near) zero do not
        divide by zero.

    Returns
    -------
    float
        ``max_i |a_i - n_i| / max(|a_i|, |n_i|, floor)``; 0.0 for empty inputs.
    """
    a = np.asarray(a, dtype=np.float64)                                   # (...)
    n = np.asarray(n, dtype=np.float64)                                   # (...)
    if a.shape != n.shape:
        raise InputError(f"rel_error got shapes {a.shape} and {n.shape}; expected equal shapes")
    if a.size == 0:
        return 0.0
    den = np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)             # (...)
    return float(np.max(np.abs(a - n) / den))


def numerical_grad(f, x, index=None, h=1e-5):
    """Centered-difference gradient of a scalar function with respect to an array, in place.

    Each chosen entry ``x.flat[i]`` is set to ``x_i + h`` and ``x_i - h`` in turn, ``f()`` is
    evaluated, and the entry is restored bit for bit. The step actually taken,
    ``(x_i + h) - (x_i - h)`` in floating point, is the denominator (not ``2h``), which removes the
    representation error of the step.

    Parameters
    ----------
    f : callable () -> float     the scalar objective; reads ``x`` (and anything else) by reference
    x : ndarray (...), float64   perturbed in place, restored on return (also on error)
    index : sequence of int or None
        Flat indices to differentiate; None means every entry.
    h : float                    step size

    Returns
    -------
    ndarray
        ``x.shape`` float64 if ``index`` is None, else ``(len(index),)`` float64 aligned with
        ``index``:  g_i = (f(x + h e_i) - f(x - h e_i)) / ((x_i + h) - (x_i - h)).
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise InputError(f"numerical_grad needs a float64 ndarray; got {getattr(x, 'dtype', type(x).__name__)} "
                         "(finite differences in float32 cannot resolve gradients)")
    idx = np.arange(x.size) if index is None else np.asarray(index, dtype=np.int64).reshape(-1)  # (k,)
    g = np.empty(idx.shape[0], dtype=np.float64)                          # (k,)
    for j, i in enumerate(idx):
        old = x.flat[i]
        up, dn = old + h, old - h
        try:
            x.flat[i] = up
            fp = float(f())
            x.flat[i] = dn
            fm = float(f())
        finally:
            x.flat[i] = old
        g[j] = (fp - fm) / (up - dn)
    return g.reshape(x.shape) if index is None else g


def check_named(f, params, analytic, names, n_samples=None, h=1e-5, rng=None, floor=1e-10):
    """Compare analytic gradients of named tensors with centered differences.

    Parameters
    ----------
    f : callable () -> float          scalar objective reading ``params`` by reference
    params : dict name -> ndarray float64, perturbed in place (and restored)
    analytic : dict name -> ndarray    analytic dL/dparams[name], same shapes
    names : iterable of str            which tensors to check
    n_samples : int or None
        Entries checked per tensor, drawn without replacement; every entry when None or when the
        tensor has at most ``n_samples`` entries.
    h : float                          finite-difference step
    rng : np.random.Generator or None  sampler of the entries (default ``default_rng(0)``)
    floor : float                      denominator floor of :func:`rel_error`

    Returns
    -------
    dict name -> float
        max relative error (:func:`rel_error`) over the checked entries of each name.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    errs = {}
    for name in names:
        x, a = params[name], np.asarray(analytic[name])
        if a.shape != x.shape:
            raise InputError(f"analytic gradient of {name} has shape {a.shape}; expected {x.shape}")
        if n_samples is None or x.size <= n_samples:
            idx = np.arange(x.size)                                       # (size,)
        else:
            idx = rng.choice(x.size, size=n_samples, replace=False)       # (n_samples,)
        num = numerical_grad(f, x, idx, h)                                # (k,)
        errs[name] = rel_error(a.reshape(-1)[idx], num, floor)
    return errs
