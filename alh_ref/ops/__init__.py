"""Layer families, forward and backward side by side, each with a NumPy reference twin.

Contract (CS231n style): ``out, cache = f_forward(...)`` and ``grads = f_backward(dout, cache)``.
Fast path = Numba kernel (``f_forward``), reference = pure NumPy (``f_forward_ref``).
"""
from .attention import attention_backward, attention_backward_ref, attention_forward, attention_forward_ref
from .embedding import embedding_backward, embedding_backward_ref, embedding_forward
from .gelu import gelu_backward, gelu_backward_ref, gelu_forward, gelu_forward_ref
from .layernorm import layernorm_backward, layernorm_backward_ref, layernorm_forward, layernorm_forward_ref
from .linear import linear_backward, linear_forward
from .softmax_ce import (softmax_cross_entropy_backward, softmax_cross_entropy_backward_ref,
                         softmax_cross_entropy_forward, softmax_cross_entropy_forward_ref, softmax_ref)

__all__ = [
    "attention_backward",
    "attention_backward_ref",
    "attention_forward",
    "attention_forward_ref",
    "embedding_backward",
    "embedding_backward_ref",
    "embedding_forward",
    "gelu_backward",
    "gelu_backward_ref",
    "gelu_forward",
    "gelu_forward_ref",
    "layernorm_backward",
    "layernorm_backward_ref",
    "layernorm_forward",
    "layernorm_forward_ref",
    "linear_backward",
    "linear_forward",
    "softmax_cross_entropy_backward",
    "softmax_cross_entropy_backward_ref",
    "softmax_cross_entropy_forward",
    "softmax_cross_entropy_forward_ref",
    "softmax_ref",
]
