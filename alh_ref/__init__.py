"""alh_ref: a NumPy-from-scratch reference implementation of Adaptive Latent Hypersurfaces.

Dimension glossary (used in every shape comment and docstring; see docs/glossary.md):

    B   batch size                      T   sequence length (context)
    C   model width (n_embd)            V   vocabulary size
    NH  number of attention heads       hs  head size, C // NH
    L   number of transformer blocks    N   B * T, flattened positions
    D   hypernetwork (context-encoder) width
    Lh  hypernetwork blocks             NHh hypernetwork heads
    K   number of Householder reflectors (even)
    R   rank of a low-rank transform
    P   number of transform parameters per position (family-specific)
"""
import os as _os

# Thread pools: let OpenBLAS workers sleep soon after a matmul so they do not spin against
# Numba/NumPy loops on small machines (see ../shared/PERF_NOTES.md). Must be set before numpy
# loads; a user's own setting wins.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")

__version__ = "0.1.0"
