"""The study's data: domains A, B and C as token streams (train) and documents (val, test).

    text       A = pydoc, B = pycode, C = docstrings; byte-level BPE trained on the train splits of
               A and B only (C is never seen by the tokenizer or any model)
    paths      the same with the user's own files or folders for A, B and C
    synthetic  three latent-chain domains (corpora.synthetic, shared rows) with one id per word;
               the exact loss floors are known (:func:`synthetic_floors`)

Evaluation windows are aligned to document starts (:func:`doc_windows`): window d is
[eot, doc_d ...] so the target at position t is predicted from exactly t tokens of the document.
"""
import numpy as np

from ..corpora import encode_documents, load_corpus, require_split_sizes, split_documents
from ..corpora.synthetic import bayes_entropies, synthetic_chains
from ..errors import InputError

DOMAINS = ("A", "B", "C")


def doc_windows(docs, eot, T):
    """One evaluation window per document, starting at the document.

    Parameters
    ----------
    docs : list of ndarray (n_d,) int   the documents' token ids
    eot : int   the end-of-text id (the context before a document, and its last target)
    T : int     window length

    Returns
    -------
    x : ndarray (N,T) int64      x[d] = [eot, doc_d[0], ..., doc_d[T-2]] (padded with eot)
    y : ndarray (N,T) int64      y[d, t] = doc_d[t], then eot at t = n_d
    valid : ndarray (N,T) bool   t <= n_d (targets inside the document or its closing eot)
    """
    N = len(docs)
    w = np.full((N, T + 1), eot, dtype=np.int64)                                      # (N,T+1)
    valid = np.zeros((N, T), dtype=bool)                                               # (N,T)
    for d, ids in enumerate(docs):
        n = min(len(ids), T)
        w[d, 1:1 + n] = ids[:n]
        valid[d, :min(len(ids) + 1, T)] = True
    return w[:, :-1], w[:, 1:], valid


def _stream(docs, eot):
    """Documents joined into one training stream, each followed by eot:  (n,) int64."""
    return np.concatenate([np.append(np.asarray(d, dtype=np.int64), eot) for d in docs])


def _pick(docs, n):
    """At most n documents, evenly spaced over the split (deterministic)."""
    if len(docs) <= n:
        return list(docs)
    return [docs[i] for i in np.linspace(0, len(docs) - 1, n).round().astype(int)]


def _assemble(cfg, ids, eot, V, describe):
    """Training streams and evaluation windows from per-split document ids {D: {split: [ndarray]}}."""
    T = cfg["block_size"]
    out = {"V": V, "eot": eot, "describe": describe, "domains": {}}
    for D in DOMAINS:
        sp = ids[D]
        if sum(len(d) + 1 for d in sp["train"]) < T + 1 and D != "C":
            raise InputError(f"domain {D}'s train split has fewer than block_size + 1 = {T + 1} tokens; use more text")
        val, test = _pick(sp["val"], cfg["max_val_docs"]), _pick(sp["test"], cfg["max_test_docs"])
        out["domains"][D] = {"train": _stream(sp["train"], eot), "val": doc_windows(val, eot, T),
                             "test": doc_windows(test, eot, T), "test_docs": test,
                             "n_docs": {s: len(v) for s, v in sp.items()},
                             "tokens": {s: int(sum(len(d) + 1 for d in v)) for s, v in sp.items()}}
    return out


def text_data(cfg):
    """Domains from text corpora (built-in names or paths): BPE on the train splits of A and B.

    Returns
    -------
    dict  V, eot, describe, tokenizer_sha256, domains {A, B, C: {train (n,), val/test (x, y, valid), ...}}
    """
    from ..tokenizer import train_bpe
    splits = {}
    for D, key in zip(DOMAINS, ("corpus_a", "corpus_b", "corpus_c")):
        splits[D] = require_split_sizes(split_documents(load_corpus(cfg[key]), tuple(cfg["fractions"])),
                                        cfg["min_docs"], f"domain {D} ({cfg[key]})")
    tok = train_bpe(splits["A"]["train"].documents + splits["B"]["train"].documents, cfg["bpe_vocab"])
    ids = {D: {s: [np.asarray(encode_documents(tok, [d])[:-1], dtype=np.int64) for d in c.documents]
               for s, c in splits[D].items()} for D in DOMAINS}
    describe = (f"A = {cfg['corpus_a']!r}, B = {cfg['corpus_b']!r}, C = {cfg['corpus_c']!r} (never trained on); "
                f"byte-level BPE, V = {tok.n_vocab}, trained on the train splits of A and B")
    out = _assemble(cfg, ids, tok.eot_id, tok.n_vocab, describe)
    out["tokenizer_sha256"] = tok.sha256
    return out


def synthetic_data(cfg):
    """Domains from the synthetic corpus: A, B, C = chains 0, 1, 2 (one id per word, eot = V - 1).

    Returns
    -------
    dict  as :func:`text_data`, plus "P" (3,Vs,Vs) the chains (for the floors)
    """
    opts = dict(cfg["synthetic"])
    if opts.get("K") != 3:
        raise InputError(f"synthetic option K={opts.get('K')!r}; the study needs K = 3 domains (A, B, C)")
    corpus = load_corpus("synthetic", **opts)
    words = {w: i for i, w in enumerate(corpus.meta["words"])}
    eot = len(words)
    ids = {D: {} for D in DOMAINS}
    for s, c in split_documents(corpus, tuple(cfg["fractions"])).items():
        for k, D in enumerate(DOMAINS):
            ids[D][s] = [np.array([words[w] for w in d.split(" ")], dtype=np.int64)
                         for d, dom in zip(c.documents, c.meta["domains"]) if dom == k]
            if len(ids[D][s]) < cfg["min_docs"]:
                raise InputError(f"synthetic domain {D} has {len(ids[D][s])} documents in the {s} split; expected at "
                                 f"least {cfg['min_docs']} (use more synthetic documents, n_docs)")
    describe = (f"synthetic latent chains {opts}: A, B, C = domains 0, 1, 2 (C never trained on); "
                f"V = {eot + 1} (one id per word + end-of-text)")
    out = _assemble(cfg, ids, eot, eot + 1, describe)
    out["P"] = synthetic_chains(3, opts["n_symbols"], opts["n_successors"], float(opts["alpha"]), opts["seed"],
                                float(opts.get("shared", 0.0)))                              # (3,Vs,Vs)
    return out


def synthetic_floors(data, T):
    """Exact loss floors on the test windows of each domain (synthetic setting only).

    known: the domain is given (prior one-hot); history: the domain is inferred from the
    document's own history with a uniform prior over A, B and C (corpora.bayes_entropies). The
    closing eot target has entropy 0 (documents have a fixed length).

    Returns
    -------
    dict  {D: {"known": {"doc_sum" (N,), "pos_sum" (T,)}, "history": {...}}}  (nats, summed over valid targets)
    """
    P = data["P"]
    out = {}
    for k, D in enumerate(DOMAINS):
        res = {}
        for kind, prior in (("known", np.eye(3)[k]), ("history", np.full(3, 1 / 3))):
            h = np.zeros((len(data["domains"][D]["test_docs"]), T))                           # (N,T)
            for d, ids in enumerate(data["domains"][D]["test_docs"]):
                n = min(len(ids), T)
                h[d, :n] = bayes_entropies(P, ids[:n], prior)                                  # (n,)
            res[kind] = {"doc_sum": h.sum(1).tolist(), "pos_sum": h.sum(0).tolist()}
        out[D] = res
    return out


def load_data(cfg):
    """The study's data for cfg["setting"] (text and paths share :func:`text_data`)."""
    return synthetic_data(cfg) if cfg["setting"] == "synthetic" else text_data(cfg)
