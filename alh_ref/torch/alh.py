"""The ALH hypernetwork as torch modules: encoders, the head, the three transform families, the sites.

The normative definitions are docs/alh.md (sections 3-8); this is a line-by-line port with
autograd in place of the hand-written backward:

    c = Enc(ctx)                     (B,T,D)     transformer | mean | static
    c_ext = [c0, c]                  (B,T+1,D)   slot s has read ctx[:, 0..s-1]
    raw = c_ext @ head.w + head.b    (B,T+1,P)   split per family into theta
    input site:   tok_t = T_{slot t} wte[x_t]
    z = body(tok)                    the frozen base
    output site:  logits_t = (A^T z_t) wte^T + z_t . b,  slot t+1 ("current") or t ("prev")
    side head:    z_t <- z_t + c_t @ side.w + side.b   (instead of any transform)

:class:`ALHNet` holds the parameters; ``ALHNet.canonical()`` is ``{name: Parameter}`` with exactly
the keys of ``alh_ref.alh.alh_param_shapes(bcfg, acfg)``, in that order.
"""
import torch
from torch import nn

from ..alh.adapted import alh_param_shapes
from .model import MLP, Body, LayerNorm, Linear, cross_entropy


class MeanEncoder(nn.Module):
    """m_t = (1/(t+1)) sum_{s<=t} E[ctx_s];  c_t = LN_f(m_t + c_proj(GELU(c_fc(m_t))))."""

    def __init__(self, V, D):
        super().__init__()
        self.wte = nn.Parameter(torch.zeros(V, D))                                  # (V,D)
        self.mlp = MLP(D)
        self.ln_f = LayerNorm(D)

    def forward(self, ctx):
        """ctx (B,T) int64 -> c (B,T,D)."""
        e = self.wte[ctx]                                                           # (B,T,D)
        counts = torch.arange(1, ctx.shape[1] + 1, dtype=e.dtype, device=e.device)[None, :, None]  # (1,T,1)
        m = torch.cumsum(e, dim=1) / counts                                         # (B,T,D) causal running mean
        return self.ln_f(m + self.mlp(m))                                           # (B,T,D)


class StaticEncoder(nn.Module):
    """c_t = c for every t: one learned vector, no context (the static-<family> baselines)."""

    def __init__(self, D):
        super().__init__()
        self.c = nn.Parameter(torch.zeros(D))                                       # (D,)

    def forward(self, ctx):
        """ctx (B,T) -> c (B,T,D), the same vector everywhere."""
        return self.c.expand(ctx.shape[0], ctx.shape[1], -1)                        # (D,) -> (B,T,D)


class TransformerEncoder(Body):
    """c = LN_f(blocks(E[ctx] + P[0..T-1])): the base model's body at width D, no output head."""

    def forward(self, ctx):
        """ctx (B,T) int64 -> c (B,T,D)."""
        return self.body(self.wte[ctx])                                             # (B,T,D)


def make_encoder(bcfg, acfg):
    """The encoder module of ``acfg.encoder`` for vocabulary and block size of ``bcfg``."""
    if acfg.encoder == "transformer":
        return TransformerEncoder(bcfg.vocab_size, bcfg.block_size, acfg.D, acfg.n_layer, acfg.n_head)
    if acfg.encoder == "mean":
        return MeanEncoder(bcfg.vocab_size, acfg.D)
    return StaticEncoder(acfg.D)


class Head(nn.Module):
    """raw = c @ w + b (B,S,P), split into the family's theta (docs/alh.md section 5).

    householder: w (D,J C), b (J C,), a (J,C);  lowrank: w (D,2RC), b (2RC,);  film: w (D,2C), b (2C,).
    """

    def __init__(self, family, D, C, K, R):
        super().__init__()
        self.family, self.C, self.K, self.R = family, C, K, R
        P = {"householder": K // 2 * C, "lowrank": 2 * R * C, "film": 2 * C}[family]
        self.w = nn.Parameter(torch.zeros(D, P))                                    # (D,P)
        self.b = nn.Parameter(torch.zeros(P))                                       # (P,)
        if family == "householder":
            self.a = nn.Parameter(torch.zeros(K // 2, C))                           # (J,C) shared by all positions

    def forward(self, c):
        """c (B,S,D) -> theta: householder {"v": (B,S,J,C), "a": (J,C)}; lowrank {"U", "V": (B,S,R,C)};
        film {"gamma", "beta": (B,S,C)} (the keys of the golden bundle's alh.theta.*)."""
        raw = c @ self.w + self.b                                                   # (B,S,D) -> (B,S,P)
        B, S, _ = raw.shape
        if self.family == "householder":
            return {"v": raw.reshape(B, S, self.K // 2, self.C), "a": self.a}       # (B,S,J,C), (J,C)
        if self.family == "lowrank":
            r = raw.reshape(B, S, 2, self.R, self.C)                                # (B,S,2,R,C)
            return {"U": r[:, :, 0], "V": r[:, :, 1]}                               # 2 x (B,S,R,C)
        r = raw.reshape(B, S, 2, self.C)                                            # (B,S,2,C)
        return {"gamma": r[:, :, 0], "beta": r[:, :, 1]}                            # 2 x (B,S,C)


def reflect(u, s, x):
    """H(u) x = x - (2/s) (u . x) u with s = u . u.  u (...,C) broadcasts against x (...,C)."""
    alpha = (u * x).sum(-1, keepdim=True)                                           # (...,1)
    return x - (2.0 / s).unsqueeze(-1) * alpha * u                                  # (...,C)


def householder(theta, e, transpose):
    """A e (or A^T e), A = H(u_K) ... H(u_1); pairs u_{2j-1} = a^_j, u_{2j} = a^_j + P_j v_j.

    theta {"v": (B,S,J,C), "a": (J,C)}, e (B,S,C) -> (B,S,C).  a^ = a/||a||, P_j v = v - (a^.v) a^.
    """
    a, v = theta["a"], theta["v"]
    anorm = torch.sqrt((a * a).sum(-1))                                             # (J,)
    ahat = a / anorm[:, None]                                                       # (J,C)
    sa = (ahat * ahat).sum(-1)                                                      # (J,) 1 up to rounding
    proj = (v * ahat).sum(-1)                                                       # (B,S,J)
    u2 = ahat + v - proj[..., None] * ahat                                          # (B,S,J,C)  a^ + P v
    s2 = (u2 * u2).sum(-1)                                                          # (B,S,J) >= 1
    ops = [(kind, j) for j in range(ahat.shape[0]) for kind in ("a", "u")]          # H(a^_1), H(u_2), ...
    if transpose:
        ops.reverse()                                                               # A^T = H(u_1) ... H(u_K)
    x = e
    for kind, j in ops:
        x = reflect(ahat[j], sa[j], x) if kind == "a" else reflect(u2[:, :, j], s2[:, :, j], x)  # (B,S,C)
    return x, None


def lowrank(theta, e, transpose):
    """A e = e + U^T (V e);  A^T z = z + V^T (U z).  U, V (B,S,R,C), e (B,S,C) -> (B,S,C)."""
    L, Rr = (theta["U"], theta["V"]) if transpose else (theta["V"], theta["U"])     # read with L, write with Rr
    s = (L * e[..., None, :]).sum(-1)                                               # (B,S,R)
    return e + (s[..., None] * Rr).sum(-2), None                                    # (B,S,C)


def film(theta, e, transpose):
    """Input: (1 + gamma) e + beta.  Output: (1 + gamma) z with the offset z . beta (B,S)."""
    g, b = theta["gamma"], theta["beta"]
    if transpose:
        return (1.0 + g) * e, (e * b).sum(-1)                                       # (B,S,C), (B,S)
    return (1.0 + g) * e + b, None                                                  # (B,S,C)


TRANSFORMS = {"householder": householder, "lowrank": lowrank, "film": film}


def slots(theta, start, T):
    """theta at slots start..start+T-1 (the shared householder "a" passes through)."""
    return {k: (v if k == "a" else v[:, start:start + T]) for k, v in theta.items()}


class ALHNet(nn.Module):
    """The hypernetwork's parameters: enc.*, c0 (D,) (encoder not static, head transform), head.* or side.*."""

    def __init__(self, bcfg, acfg):
        super().__init__()
        self.bcfg, self.acfg = bcfg, acfg
        self.enc = make_encoder(bcfg, acfg)
        if acfg.encoder != "static" and acfg.head == "transform":
            self.c0 = nn.Parameter(torch.zeros(acfg.D))                             # (D,) the empty context
        if acfg.head == "side":
            self.side = Linear(acfg.D, bcfg.n_embd)                          # side.w (D,C), side.b (C,)
        else:
            self.head = Head(acfg.family, acfg.D, bcfg.n_embd, acfg.K, acfg.R)

    def canonical(self):
        """{name: Parameter} under the NumPy names "alh.*", in the order of alh_param_shapes (encoder,
        c0, head; torch's own named_parameters lists c0 before the submodules)."""
        named = dict(self.named_parameters(prefix="alh"))
        return {n: named[n] for n in alh_param_shapes(self.bcfg, self.acfg)}


def alh_forward(net, base, x, y=None, ctx=None, extras=None):
    """Forward pass of the adapted model (docs/alh.md section 7).

    Parameters
    ----------
    net : ALHNet;  base : alh_ref.torch.model.GPT (frozen; its parameters are read only)
    x : (B,T) int64;  y : (B,T) int64 or None;  ctx : (B,T) int64 or None (what the encoder reads; default x)
    extras : dict or None   receives "alh.context" (B,T+1,D), "alh.theta.<k>" and "alh.tok" (B,T,C)

    Returns
    -------
    logits : (B,T,V);  loss : () tensor or None (mean cross-entropy)
    """
    acfg = net.acfg
    B, T = x.shape
    c = net.enc(x if ctx is None else ctx)                                          # (B,T,D)
    c0 = net.c0 if hasattr(net, "c0") else net.enc.c if acfg.encoder == "static" else None
    tok = base.wte[x]                                                               # (B,T,C)
    off = theta = None
    if acfg.head == "transform":
        c_ext = torch.cat([c0.expand(B, 1, -1), c], dim=1)                          # (B,T+1,D)
        theta = net.head(c_ext)                                                     # slots 0..T
        fn = TRANSFORMS[acfg.family]
        if acfg.site in ("input", "both"):
            tok, _ = fn(slots(theta, 0, T), tok, False)                             # (B,T,C)
    z = base.body(tok)                                                              # (B,T,C)
    if acfg.head == "side":
        z = z + net.side(c)                                                         # (B,T,D) -> (B,T,C)
    elif acfg.site in ("output", "both"):
        s0 = 1 if acfg.out_context == "current" else 0
        z, off = fn(slots(theta, s0, T), z, True)                                   # (B,T,C): A^T z
    logits = z @ base.dictionary().t()                                              # (B,T,C) @ (C,V) -> (B,T,V)
    if off is not None:
        logits = logits + off[..., None]                                            # (B,T,V) + (B,T,1)
    if extras is not None and theta is not None:
        extras["alh.context"] = c_ext
        extras.update({"alh.theta." + k: v for k, v in theta.items()})
        extras["alh.tok"] = tok
    if y is None:
        return logits, None
    return logits, cross_entropy(logits, y)
