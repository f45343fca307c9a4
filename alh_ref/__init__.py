"""alh_ref: a NumPy-from-scratch reference implementation of Adaptive Latent Hypersurfaces.

Dimension glossary (used in every shape comment and docstring; see docs/glossary.md):

    B   batch size                      T   sequence length (context)
    C   model width (n_embd)            V   vocabulary size
    NH  number of attention heads       hs  head size, C // NH
    L   number of transformer blocks    N   B * T, flattened positions
    D   hypernetwork (context-encoder) width
    Lh  hypernetwork blocks             NHh hypernetwork heads
    K   number of Householder reflectors (even)    J   Householder pairs, K // 2
    R   rank of a low-rank transform
    P   number of transform parameters per position (family-specific)
    S   positions a transform is applied to (T at a site; T + 1 slots out of the head)

Every op runs on Numba kernels by default; ``alh_ref.ops.use("ref")`` (or ``with
alh_ref.ops.using("ref"):``) runs everything on the pure-NumPy twins instead (alh_ref/ops/impl.py).
"""
import os as _os

# Thread pools: let OpenBLAS workers sleep soon after a matmul so they do not spin against the
# Numba/NumPy loops on a small machine (2 cores: two busy-waiting thread pools slow each other
# down). Must be set before numpy loads; a user's own setting wins.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")

__version__ = "0.1.0"
