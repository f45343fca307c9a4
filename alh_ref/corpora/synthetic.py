"""The synthetic corpus: Markov-chain domains over one word vocabulary, with their exact entropies.

With ``shared > 0`` the domains share part of their transition rows, so the current symbol alone
often does not say which domain a document is in; the exact loss floor given a document's whole
history is then the forward algorithm over the latent domain (:func:`bayes_entropies`).
"""
from __future__ import annotations

import bisect

import numpy as np

from ..errors import InputError
from .documents import Corpus


_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"
_SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS]   # 70 syllables
CHARS_PER_SYMBOL = 5                                           # 4-letter word + 1 space


def synthetic_words(n_symbols: int) -> list[str]:
    """Distinct 4-letter words (two consonant-vowel syllables) for symbols 0..n_symbols-1.

    Symbol i -> ``syl[a] + syl[b]`` with ``a = i mod 70``, ``b = (i // 70 + 3a) mod 70``, a bijection
    for i < 4900 that varies both syllables between neighbouring symbols.
    """
    n = len(_SYLLABLES)
    return [_SYLLABLES[i % n] + _SYLLABLES[(i // n + 3 * (i % n)) % n] for i in range(n_symbols)]


def synthetic_chains(K: int, n_symbols: int, n_successors: int, alpha: float, seed: int,
                     shared: float = 0.0) -> np.ndarray:
    """K sparse transition matrices over one shared symbol set.

    Domain k (RNG seeded by ``(seed, 1, k)``): a random cyclic order of the symbols; state i's
    successors are its next state in that cycle (so the chain is irreducible) plus
    ``n_successors - 1`` other states drawn without replacement; their probabilities are
    ``Dirichlet(alpha, ..., alpha)``. ``P[k, i, j] = Pr(x_{t+1} = j | x_t = i, domain k)``.

    With ``shared > 0``: every domain uses domain 0's cycle (so each chain stays irreducible), and
    the rows of ``round(shared * V)`` states (the first of a permutation seeded ``(seed, 3)``)
    are domain 0's rows in every domain. ``shared = 0`` gives the independent chains above.

    Returns
    -------
    np.ndarray, shape (K, V, V), float64
        Row-stochastic matrices, V = n_symbols.
    """
    V = n_symbols
    if not 0.0 <= float(shared) <= 1.0:
        raise InputError(f"synthetic option shared={shared!r} is invalid; expected a fraction in [0, 1]")
    P = np.zeros((K, V, V))                                            # (K,V,V)
    cycle0 = np.random.default_rng([seed, 1, 0]).permutation(V)        # (V,) domain 0's cycle
    for k in range(K):
        rng = np.random.default_rng([seed, 1, k])
        cycle = rng.permutation(V)                                      # (V,)
        if shared > 0:
            cycle = cycle0
        nxt = np.empty(V, dtype=np.int64)                               # (V,)
        nxt[cycle] = np.roll(cycle, -1)
        for i in range(V):
            others = np.delete(np.arange(V), nxt[i])                    # (V-1,)
            succ = np.concatenate([[nxt[i]], rng.choice(others, n_successors - 1, replace=False)])  # (S,)
            P[k, i, succ] = rng.dirichlet(np.full(n_successors, float(alpha)))                      # (S,)
    n_shared = int(round(float(shared) * V))
    if n_shared:
        rows = np.random.default_rng([seed, 3]).permutation(V)[:n_shared]                          # (n_shared,)
        P[1:, rows] = P[0, rows]
    return P


def _entropy_rows(p: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each distribution on the last axis, 0 log 0 = 0."""
    return -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(-1)


def bayes_entropies(P: np.ndarray, x: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Entropy of the exact next-symbol distribution given a document's whole history.

    The domain k is latent with prior ``prior``; the first symbol follows domain k's stationary
    distribution pi_k, then the chain P_k. The forward algorithm keeps the posterior
    ``w_t(k) = Pr(k | x_0..x_{t-1})``:

        p(x_0 = . )           = sum_k prior_k pi_k(.)
        p(x_t = . | x_<t)     = sum_k w_t(k) P_k[x_{t-1}, .]
        w_{t+1}(k)           ~ w_t(k) P_k[x_{t-1}, x_t]   (w_1(k) ~ prior_k pi_k(x_0))

    and h_t = H(p(x_t | x_<t)). Its mean over positions is the lowest expected loss any model can
    reach on these histories; a one-hot prior gives the known-domain floor.

    Parameters
    ----------
    P : np.ndarray, shape (K, V, V)   the domains' transition matrices
    x : np.ndarray, shape (n,), int   one document's symbols
    prior : np.ndarray, shape (K,)    probabilities of the domains

    Returns
    -------
    np.ndarray, shape (n,), float64   h_0 .. h_{n-1}
    """
    P = np.asarray(P, dtype=np.float64)                                 # (K,V,V)
    w = np.asarray(prior, dtype=np.float64) / np.sum(prior)             # (K,)
    pis = np.stack([markov_entropy_rate(P[k])[1] if w[k] > 0 else np.full(P.shape[1], 1.0 / P.shape[1])
                    for k in range(P.shape[0])])                        # (K,V)
    h = np.empty(len(x))                                                # (n,)
    pred = w @ pis                                                      # (V,)
    h[0] = _entropy_rows(pred)
    w = w * pis[:, x[0]]                                                # (K,)
    for t in range(1, len(x)):
        w = w / w.sum()
        rows = P[:, x[t - 1]]                                           # (K,V)
        h[t] = _entropy_rows(w @ rows)
        w = w * rows[:, x[t]]                                           # (K,)
    return h


def markov_entropy_rate(P: np.ndarray) -> tuple[float, np.ndarray]:
    """Entropy rate and stationary distribution of an irreducible Markov chain.

    ``H = -sum_i pi_i sum_j P_ij log P_ij`` (nats per step, 0 log 0 = 0), with ``pi P = pi`` the
    left eigenvector of P for eigenvalue 1, normalised to sum 1.

    Parameters
    ----------
    P : np.ndarray, shape (V, V), float
        Row-stochastic transition matrix with a unique stationary distribution.

    Returns
    -------
    H : float
        Entropy rate in nats per symbol.
    pi : np.ndarray, shape (V,), float64
        Stationary distribution.
    """
    P = np.asarray(P, dtype=np.float64)                                 # (V,V)
    if P.ndim != 2 or P.shape[0] != P.shape[1] or (P < 0).any() or not np.allclose(P.sum(1), 1.0, atol=1e-9):
        raise InputError(f"P of shape {P.shape} is not a square row-stochastic matrix; expected (V,V), rows summing to 1")
    w, vecs = np.linalg.eig(P.T)                                        # (V,), (V,V) complex
    order = np.argsort(np.abs(w - 1.0))                                 # (V,)
    if P.shape[0] > 1 and abs(w[order[1]] - 1.0) < 1e-8:
        raise InputError("P has more than one stationary distribution; expected an irreducible chain")
    pi = np.real(vecs[:, order[0]])                                     # (V,)
    pi = np.clip(pi / pi.sum(), 0.0, None)                              # (V,)
    pi /= pi.sum()
    plogp = np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0)), 0.0)   # (V,V)
    return float(-(pi @ plogp.sum(1))), pi


def sample_chain(P: np.ndarray, n: int, rng: np.random.Generator, start_dist: np.ndarray) -> np.ndarray:
    """Sample n states: ``x_0 ~ start_dist``, ``x_{t+1} ~ P[x_t]``, using only positive-probability moves.

    Parameters
    ----------
    P : np.ndarray, shape (V, V), float64
    n : int
    rng : np.random.Generator
    start_dist : np.ndarray, shape (V,), float64

    Returns
    -------
    np.ndarray, shape (n,), int64
    """
    def table(p):                       # (V,) probabilities -> (support ids, cumulative with last == 1.0)
        ids = np.flatnonzero(p > 0)                                     # (S,)
        cum = np.cumsum(p[ids]) / p[ids].sum()                          # (S,)
        cum[-1] = 1.0
        return ids.tolist(), cum.tolist()
    rows = [table(P[i]) for i in range(P.shape[0])]
    u = rng.random(n).tolist()                                          # (n,) uniforms
    ids, cum = table(np.asarray(start_dist, dtype=np.float64))
    x = [ids[bisect.bisect_right(cum, u[0])]]
    for t in range(1, n):
        ids, cum = rows[x[-1]]
        x.append(ids[bisect.bisect_right(cum, u[t])])
    return np.array(x, dtype=np.int64)                                  # (n,)


def _check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo or (hi is not None and value > hi):
        bounds = f"{lo} <= {name}" + (f" <= {hi}" if hi is not None else "")
        raise InputError(f"synthetic option {name}={value!r} is invalid; expected an integer with {bounds}")
    return int(value)


def synthetic_corpus(K: int = 2, n_docs: int = 200, doc_len: int = 256, n_symbols: int = 64,
                     n_successors: int = 4, alpha: float = 1.0, seed: int = 0, shared: float = 0.0) -> Corpus:
    """K Markov-chain domains over one 4-letter-word vocabulary; documents alternate domains.

    Document d has domain ``d mod K`` and is ``doc_len`` symbols sampled with RNG ``(seed, 2, d)``:
    first symbol from the domain's stationary distribution, then the chain; symbols are written as
    words joined by single spaces.

    Parameters
    ----------
    K, n_docs, doc_len, n_symbols, n_successors : int
        Domains, documents, symbols per document (>= 2), vocabulary size V_s (<= 4900),
        allowed successors per state (1..V_s).
    alpha : float
        Dirichlet concentration of each state's successor probabilities (> 0).
    seed : int
        Everything is a deterministic function of the options.
    shared : float
        Fraction of states whose transition row is the same in every domain (see :func:`synthetic_chains`).

    Returns
    -------
    Corpus
        meta: the options, ``domains`` (list[int], aligned with documents), ``words``,
        ``entropy_rate_nats`` (per domain, nats per symbol: the per-transition loss floor),
        ``first_symbol_entropy_nats`` (H(pi) per domain), ``doc_nats`` per domain
        (``H(pi) + (doc_len - 1) H``: the floor of a whole document's loss when the domain is known),
        ``chars_per_symbol`` (5).
    """
    K, n_docs, doc_len = _check_int("K", K, 1), _check_int("n_docs", n_docs, 1), _check_int("doc_len", doc_len, 2)
    V = _check_int("n_symbols", n_symbols, 2, len(_SYLLABLES) ** 2)
    S = _check_int("n_successors", n_successors, 1, V)
    seed = _check_int("seed", seed, 0)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0 or not np.isfinite(alpha):
        raise InputError(f"synthetic option alpha={alpha!r} is invalid; expected a positive number")
    if isinstance(shared, bool) or not isinstance(shared, (int, float)) or not 0 <= shared <= 1:
        raise InputError(f"synthetic option shared={shared!r} is invalid; expected a fraction in [0, 1]")
    P = synthetic_chains(K, V, S, float(alpha), seed, float(shared))   # (K,V,V)
    rates = [markov_entropy_rate(P[k]) for k in range(K)]
    words = synthetic_words(V)
    domains = [d % K for d in range(n_docs)]
    docs = []
    for d, k in enumerate(domains):
        x = sample_chain(P[k], doc_len, np.random.default_rng([seed, 2, d]), rates[k][1])   # (doc_len,)
        docs.append(" ".join(words[i] for i in x.tolist()))
    H = [h for h, _ in rates]
    H0 = [float(-(pi[pi > 0] * np.log(pi[pi > 0])).sum()) for _, pi in rates]
    meta = {"kind": "synthetic", "K": K, "n_docs": n_docs, "doc_len": doc_len, "n_symbols": V,
            "n_successors": S, "alpha": float(alpha), "seed": seed, "shared": float(shared), "domains": domains,
            "words": words,
            "entropy_rate_nats": H, "first_symbol_entropy_nats": H0,
            "doc_nats": [h0 + (doc_len - 1) * h for h0, h in zip(H0, H)], "chars_per_symbol": CHARS_PER_SYMBOL}
    return Corpus("synthetic", docs, meta)
