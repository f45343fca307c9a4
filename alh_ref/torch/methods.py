"""ALH and its baselines as one torch module, :class:`TorchMethod`, built from the NumPy method.

``make_method(name, base, bcfg, acfg, seed, lora_rank)`` builds the NumPy
``alh_ref.alh.methods.make_method`` first and copies its tensors, so a seed gives the same
initial parameters on both sides (the torch side has no init of its own). The methods are those
of docs/alh.md section 11: none, embed-ft, lora-embed, full-ft, side, alh-shuffled,
alh-<family>, static-<family>.

``method.trainable()`` is ``{NumPy name: Parameter}`` of what the method trains (``wte``,
``h.0.ln_1.w``, ``lora.a``, ``alh.head.w``, ...), in the NumPy method's order; every other
parameter has ``requires_grad=False``. ``method(x, y, ctx)`` returns ``(logits (B,T,V), loss)``.
"""
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ..alh.adapted import ALHConfig
from ..alh.methods import derangement, shuffle_rng
from ..alh.methods import make_method as make_numpy_method
from .alh import ALHNet, alh_forward
from .model import GPT, cross_entropy, load_numpy


class Lora(nn.Module):
    """wte_eff = wte + a @ b with a (V,R), b (R,C)."""

    def __init__(self, V, C, R):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(V, R))                                    # (V,R)
        self.b = nn.Parameter(torch.zeros(R, C))                                    # (R,C)


class TorchMethod(nn.Module):
    """A trainable adaptation of a frozen base GPT (see the module docstring).

    Attributes: name; base (GPT); alh (ALHNet or absent); lora (Lora or absent); kind "alh" |
    "base" | "lora"; shuffled (bool); seed (int, for alh-shuffled's derangement); decay (name -> bool).
    """

    def __init__(self, name, bcfg, acfg=None, lora_rank=4, trained=(), seed=0, decay=None):
        super().__init__()
        self.name, self.bcfg, self.acfg, self.seed = name, bcfg, acfg, seed
        self.base = GPT(bcfg)
        self.kind = "alh" if acfg is not None else "lora" if name == "lora-embed" else "base"
        self.shuffled = name == "alh-shuffled"
        if self.kind == "alh":
            self.alh = ALHNet(bcfg, acfg)
        if self.kind == "lora":
            self.lora = Lora(bcfg.vocab_size, bcfg.n_embd, lora_rank)
        self.trained = tuple(trained)
        self.decay = decay
        self.l2, self.l2_anchor = 0.0, {}                                           # embed-ft-l2: set by make_method
        for n, p in self.named_parameters():
            p.requires_grad_(False)
        for p in self.trainable().values():
            p.requires_grad_(True)

    def trainable(self):
        """{NumPy name: Parameter} of the trained tensors, in the NumPy method's order."""
        if self.kind == "alh":
            return self.alh.canonical()
        if self.kind == "lora":
            return {"lora.a": self.lora.a, "lora.b": self.lora.b}
        base = dict(self.base.named_parameters())
        return {n: base[n] for n in self.trained}

    def context(self, x):
        """What the encoder reads for batch x (B,T) int64: x itself, or (alh-shuffled) x[perm] with
        the same derangement as the NumPy method (a function of the seed and the batch)."""
        if not self.shuffled:
            return None
        xn = x.cpu().numpy()
        perm = derangement(xn.shape[0], shuffle_rng(self.seed, xn))                 # (B,)
        return x[torch.as_tensor(perm, device=x.device)]

    def forward(self, x, y=None, ctx=None, extras=None):
        """x (B,T) int64, y (B,T) int64 or None, ctx (B,T) or None -> logits (B,T,V), loss () or None.

        ctx: the encoder's input; None means :meth:`context` of x (give it explicitly when x is a
        slice of a larger batch whose derangement must be kept, as in data parallel training).
        """
        if self.kind == "alh":
            ctx = self.context(x) if ctx is None else ctx
            return alh_forward(self.alh, self.base, x, y, ctx, extras)
        if self.kind == "lora":
            tok = (self.base.wte + self.lora.a @ self.lora.b)                       # (V,C) + (V,R) @ (R,C)
            return _lora_forward(self.base, tok, x, y)
        logits, loss = self.base(x, y, acts=extras)
        if self.l2 and loss is not None:                                            # + (l2/2) ||p - p0||^2
            loss = loss + 0.5 * self.l2 * sum(((p - self.l2_anchor[n]) ** 2).sum() for n, p in self.trainable().items())
        return logits, loss


def _lora_forward(base, wte_eff, x, y):
    """The base GPT with wte replaced by wte_eff (V,C): at the input, and at the output when tied."""
    z = base.body(wte_eff[x])                                                       # (B,T,C)
    W = wte_eff if base.cfg.tied else base.lm_head.w.t()                            # (V,C)
    logits = z @ W.t()                                                              # (B,T,V)
    return logits, (None if y is None else cross_entropy(logits, y))


def make_method(name, base, bcfg, acfg=None, seed=0, lora_rank=4, dtype=torch.float32, device="cpu"):
    """A TorchMethod with the initial parameters of the NumPy method of the same name and seed.

    Parameters
    ----------
    name : str, one of alh_ref.alh.methods.METHODS
    base : dict name -> ndarray, the base parameters (never modified)
    bcfg : GPTConfig;  acfg : ALHConfig or None (defaults);  seed, lora_rank : as for the NumPy method
    dtype : torch.float32 | torch.float64;  device : "cpu" | "cuda" | torch.device

    Returns
    -------
    TorchMethod on ``device`` in ``dtype``
    """
    npm = make_numpy_method(name, {k: np.asarray(v, dtype=np.float64) for k, v in base.items()}, bcfg, acfg,
                            seed, lora_rank)
    a = npm.info.get("alh")
    m = TorchMethod(name, bcfg, None if a is None else ALHConfig(**a), lora_rank=npm.info.get("rank", lora_rank),
                    trained=list(npm.params) if a is None and name != "lora-embed" else (), seed=seed,
                    decay=npm.decay)
    m.to(dtype=dtype, device=device)
    load_numpy(m.base, npm.base)
    load_numpy(m, {_module_name(m, n): p for n, p in npm.params.items()}, [_module_name(m, n) for n in npm.params])
    m.l2 = float(npm.info.get("l2", 0.0))
    m.l2_anchor = {n: p.detach().clone() for n, p in m.trainable().items()} if m.l2 else {}  # the pretrained values
    return m


def _module_name(m, name):
    """The module path of a NumPy name inside a TorchMethod (alh.* and lora.* as is, base names under base.)."""
    return name if m.kind in ("alh", "lora") else "base." + name


class TrainedArrays(Mapping):
    """{NumPy name: ndarray} view of a method's trained tensors: each read is a CPU copy in the
    method's dtype (what alh_ref.runs.save_state writes into a checkpoint)."""

    def __init__(self, method):
        self.method = method

    def __getitem__(self, name):
        return self.method.trainable()[name].detach().cpu().numpy().copy()

    def __iter__(self):
        return iter(self.method.trainable())

    def __len__(self):
        return len(self.method.trainable())


def load_trainable(method, arrays):
    """Copy {NumPy name: ndarray} into the method's trained tensors (e.g. from a checkpoint)."""
    load_numpy(method, {_module_name(method, n): arrays[n] for n in method.trainable()},
               [_module_name(method, n) for n in method.trainable()])


__all__ = ["TorchMethod", "TrainedArrays", "load_trainable", "make_method"]
