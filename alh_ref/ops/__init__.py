"""Layer families, forward and backward side by side, each with a NumPy reference twin.

Contract (CS231n style): ``out, cache = f_forward(...)`` and ``grads = f_backward(dout, cache, *, flags)``,
the gradients in the order of the forward's arguments (the backward rule: docs/glossary.md).
Each family has a fast path (``f_forward_fast``: Numba kernels) and a reference twin
(``f_forward_ref``: pure NumPy) with the same contract; ``f_forward`` is the one the model calls,
and runs whichever :func:`current` names. Switch with :func:`use` or, for a block, :func:`using`
(alh_ref/ops/impl.py). The linear layers' matmuls and the embedding gather are plain NumPy/BLAS:
one version (a linear layer's bias add is a kernel with a twin, ``bias_add``).
"""
from .attention import (attention_backward, attention_backward_fast, attention_backward_ref, attention_forward,
                        attention_forward_fast, attention_forward_ref)
from .embedding import embedding_backward, embedding_backward_fast, embedding_backward_ref, embedding_forward
from .gelu import gelu_backward, gelu_backward_fast, gelu_backward_ref, gelu_forward, gelu_forward_fast, gelu_forward_ref
from .impl import IMPLS, current, dispatch, use, using
from .layernorm import (layernorm_backward, layernorm_backward_fast, layernorm_backward_ref, layernorm_forward,
                        layernorm_forward_fast, layernorm_forward_ref)
from .linear import bias_add, bias_add_fast, bias_add_ref, linear_backward, linear_forward
from .softmax_ce import (softmax_cross_entropy_backward, softmax_cross_entropy_backward_fast,
                         softmax_cross_entropy_backward_ref, softmax_cross_entropy_forward,
                         softmax_cross_entropy_forward_fast, softmax_cross_entropy_forward_ref, softmax_ref)

__all__ = [
    "IMPLS",
    "attention_backward",
    "attention_backward_fast",
    "attention_backward_ref",
    "attention_forward",
    "attention_forward_fast",
    "attention_forward_ref",
    "bias_add",
    "bias_add_fast",
    "bias_add_ref",
    "current",
    "dispatch",
    "embedding_backward",
    "embedding_backward_fast",
    "embedding_backward_ref",
    "embedding_forward",
    "gelu_backward",
    "gelu_backward_fast",
    "gelu_backward_ref",
    "gelu_forward",
    "gelu_forward_fast",
    "gelu_forward_ref",
    "layernorm_backward",
    "layernorm_backward_fast",
    "layernorm_backward_ref",
    "layernorm_forward",
    "layernorm_forward_fast",
    "layernorm_forward_ref",
    "linear_backward",
    "linear_forward",
    "softmax_cross_entropy_backward",
    "softmax_cross_entropy_backward_fast",
    "softmax_cross_entropy_backward_ref",
    "softmax_cross_entropy_forward",
    "softmax_cross_entropy_forward_fast",
    "softmax_cross_entropy_forward_ref",
    "softmax_ref",
    "use",
    "using",
]
