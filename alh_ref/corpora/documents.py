"""Corpus, document fingerprints, hash-stable train/val/test splits, and encoding to one token stream."""
from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

SPLITS = ("train", "val", "test")
PER_DOCUMENT_META = ("domains",)      # meta entries aligned with documents; splits subset them


def fingerprint_documents(documents: list[str]) -> str:
    """sha256 hex of documents in order, each length-prefixed so boundaries count.

    ``sha256(tag | (u64le len(utf8(d)) | utf8(d)) for d in documents)``; ``["ab", "c"]`` and
    ``["a", "bc"]`` differ.

    Parameters
    ----------
    documents : list of str
        UTF-8-encodable documents.

    Returns
    -------
    str
        64 hex digits.
    """
    h = hashlib.sha256(b"alh_ref.corpus/1\n")
    for i, d in enumerate(documents):
        if not isinstance(d, str):
            raise InputError(f"document {i} is {type(d).__name__}; expected str")
        try:
            b = d.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError(f"document {i} has an unpaired surrogate at index {e.start}; expected UTF-8-encodable text") from None
        h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()


@dataclass(frozen=True)
class Corpus:
    """A named list of documents; ``fingerprint`` is computed from the documents on creation.

    Attributes
    ----------
    name : str
        Built-in name, path, or ``"<parent>/<split>"`` for a split.
    documents : list of str
        The documents, in corpus order.
    meta : dict
        Corpus-specific facts (JSON-serialisable). Entries named in :data:`PER_DOCUMENT_META`
        (e.g. ``domains``) are lists aligned with ``documents``.
    fingerprint : str
        :func:`fingerprint_documents` of ``documents``.
    """

    name: str
    documents: list[str] = field(repr=False)
    meta: dict = field(default_factory=dict, repr=False)
    fingerprint: str = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "fingerprint", fingerprint_documents(self.documents))

    def __repr__(self) -> str:
        n_chars = sum(map(len, self.documents))
        return (f"Corpus(name={self.name!r}, n_docs={len(self.documents)}, n_chars={n_chars}, "
                f"fingerprint={self.fingerprint[:12]}...)")


def document_unit(doc: str) -> float:
    """Stable position of a document in [0, 1): the first 8 bytes of sha256(utf8(doc)) / 2**64."""
    return int.from_bytes(hashlib.sha256(doc.encode("utf-8")).digest()[:8], "big") / 2.0**64


def split_documents(corpus: Corpus, fractions=(0.9, 0.05, 0.05)) -> dict[str, Corpus]:
    """Split a corpus into train/val/test by a hash of each document's content.

    Document d goes to train if ``u(d) < f0``, to val if ``u(d) < f0 + f1``, else to test, with
    ``u(d) = document_unit(d)``. A document's split depends only on its own text, so adding or
    removing other documents never moves it, and identical documents share a split.

    Parameters
    ----------
    corpus : Corpus
    fractions : tuple of 3 float
        Non-negative (train, val, test) fractions summing to 1.

    Returns
    -------
    dict[str, Corpus]
        Keys ``'train'``, ``'val'``, ``'test'``; each a Corpus named ``"<name>/<split>"`` with its
        own fingerprint, documents in corpus order, and meta = the parent's meta with
        per-document entries subset, plus ``parent``, ``parent_fingerprint``, ``split``,
        ``fractions`` and ``indices`` (positions in the parent). A split may be empty.
    """
    try:
        f = tuple(float(x) for x in fractions) if np.ndim(fractions) == 1 else ()
    except (TypeError, ValueError):
        f = ()
    if len(f) != 3 or min(f) < 0 or not np.isfinite(f).all() or abs(sum(f) - 1.0) > 1e-9:
        raise InputError(f"fractions={fractions!r} is invalid; expected 3 non-negative numbers (train, val, test) summing to 1")
    edges = (f[0], f[0] + f[1])
    which = [bisect.bisect_right(edges, document_unit(d)) for d in corpus.documents]
    out = {}
    for s, name in enumerate(SPLITS):
        idx = [i for i, w in enumerate(which) if w == s]
        meta = dict(corpus.meta)
        meta.update({k: [corpus.meta[k][i] for i in idx] for k in PER_DOCUMENT_META if k in corpus.meta})
        meta.update(parent=corpus.name, parent_fingerprint=corpus.fingerprint, split=name,
                    fractions=list(f), indices=idx)
        out[name] = Corpus(f"{corpus.name}/{name}", [corpus.documents[i] for i in idx], meta)
    return out


def encode_documents(tokenizer, documents: list[str]) -> np.ndarray:
    """Encode documents one by one and append the end-of-text id after each.

    ``ids = enc(d_0) | eot | enc(d_1) | eot | ...``; special-token strings inside documents are
    ordinary text.

    Parameters
    ----------
    tokenizer : alh_ref.tokenizer.Tokenizer
    documents : list of str

    Returns
    -------
    np.ndarray, shape (N_tok,), int32
        N_tok = sum of document token counts + len(documents).
    """
    eot = np.array([tokenizer.eot_id], dtype=np.int32)          # (1,)
    parts = [p for d in documents for p in (tokenizer.encode(d), eot)]   # [(T_0,), (1,), (T_1,), (1,), ...]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)   # -> (N_tok,)


def split_sizes(splits: dict[str, Corpus]) -> dict[str, dict[str, int]]:
    """Documents and characters of each split, e.g. for a run manifest.

    Parameters
    ----------
    splits : dict[str, Corpus]
        As returned by :func:`split_documents` (any subset of its keys).

    Returns
    -------
    dict[str, dict[str, int]]
        ``{split: {"docs": n_documents, "chars": n_characters}}``, in the order of ``splits``.
    """
    return {s: {"docs": len(c.documents), "chars": sum(map(len, c.documents))} for s, c in splits.items()}


def require_split_sizes(splits: dict[str, Corpus], min_docs: int = 10, what: str = "corpus") -> dict[str, Corpus]:
    """Refuse splits holding fewer than ``min_docs`` documents (too few for a held-out estimate).

    Parameters
    ----------
    splits : dict[str, Corpus]
        As returned by :func:`split_documents` (any subset of its keys is checked).
    min_docs : int
        Fewest documents each split must hold.
    what : str
        What the corpus is used for, named in the message (e.g. ``"domain B"``).

    Returns
    -------
    dict[str, Corpus]
        ``splits`` unchanged.

    Raises
    ------
    InputError
        At the first split that is too small, naming the corpus, the split, its count and ``min_docs``.
    """
    for s, c in splits.items():
        if len(c.documents) < min_docs:
            parent = c.meta.get("parent", c.name)
            raise InputError(f"{what}: the {s} split of corpus {parent!r} holds {len(c.documents)} document(s) "
                             f"at fractions {c.meta.get('fractions')}; expected at least {min_docs} (use a larger "
                             "corpus, more documents, or other fractions)")
    return splits
