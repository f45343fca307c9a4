"""Built-in offline corpora and user text, as lists of documents with stable fingerprints and splits.

Every corpus is a list of documents (``str``). Built-ins need nothing but the Python standard
library (and NumPy for ``synthetic``), so they work offline:

    pydoc       the reference-manual prose of ``pydoc_data.topics.topics``, one document per topic
    docstrings  docstrings of :data:`DOCSTRING_MODULES`, one document per distinct docstring
    pycode      source of :data:`PYCODE_MODULES`, docstrings and comments stripped, one per module
    synthetic   K first-order Markov chains over one shared word vocabulary (known entropy rate)

Any other name is a path: a UTF-8 text file, or a folder of ``*.txt`` / ``*.md`` files.
The stdlib corpora depend on the Python version (``meta['python']``); their fingerprints are stable
for one version. See docs/data.md for each corpus and the split rule.
"""
from __future__ import annotations

import ast
import bisect
import hashlib
import importlib
import inspect
import platform
import re
import tokenize
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, RunError

BUILTIN_CORPORA = ("pydoc", "docstrings", "pycode", "synthetic")
SPLITS = ("train", "val", "test")
PER_DOCUMENT_META = ("domains",)      # meta entries aligned with documents; splits subset them
TEXT_SUFFIXES = (".txt", ".md")
DOC_SEPARATOR = re.compile(r"\n{3,}")  # two or more blank lines end a document in a user file

DOCSTRING_MODULES = (
    "argparse", "base64", "bisect", "calendar", "collections", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "enum", "fractions", "functools", "heapq",
    "inspect", "itertools", "json", "logging", "operator", "os", "pathlib", "pprint", "random",
    "re", "shlex", "shutil", "statistics", "string", "tempfile", "textwrap", "typing",
)
PYCODE_MODULES = (
    "_pydecimal", "argparse", "ast", "base64", "bisect", "calendar", "collections", "contextlib",
    "copy", "csv", "dataclasses", "datetime", "difflib", "enum", "fractions", "functools", "heapq",
    "inspect", "json", "json.decoder", "json.encoder", "logging", "logging.handlers", "pathlib",
    "pprint", "random", "shlex", "shutil", "statistics", "string", "tempfile", "textwrap", "tokenize",
)


# ----------------------------------------------------------------------------------------------
# Corpus and fingerprints
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Standard-library corpora
# ----------------------------------------------------------------------------------------------

def _python_meta(kind: str, modules=()) -> dict:
    meta = {"kind": kind, "python": platform.python_version()}
    if modules:
        meta["modules"] = list(modules)
    return meta


def pydoc_documents() -> list[str]:
    """Reference-manual topics of ``pydoc_data.topics.topics``, one document per topic, sorted by key."""
    from pydoc_data.topics import topics
    return [topics[k] for k in sorted(topics)]


def _own_module(obj, modname: str) -> bool:
    """True if ``obj`` is defined by module ``modname`` or its C accelerator ``_modname``."""
    return getattr(obj, "__module__", None) in (modname, "_" + modname)


def _member_doc(member) -> str | None:
    """Docstring of a class member (function, static/class method or property), or None."""
    if isinstance(member, (staticmethod, classmethod)):
        member = member.__func__
    if not (inspect.isroutine(member) or isinstance(member, property)):
        return None
    return member.__doc__


def _collect_docstrings(modname: str, entries: list) -> None:
    """Append (qualified name, raw docstring) of module ``modname``, its own public classes and
    functions, and those classes' public methods/properties (+ ``__init__``) to ``entries``."""
    mod = importlib.import_module(modname)
    entries.append((modname, mod.__doc__))
    for name, obj in vars(mod).items():
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)) or not _own_module(obj, modname):
            continue
        entries.append((f"{modname}.{name}", obj.__doc__))
        if inspect.isclass(obj):
            entries += [(f"{modname}.{name}.{attr}", _member_doc(m)) for attr, m in vars(obj).items()
                        if not attr.startswith("_") or attr == "__init__"]


def docstring_documents(modules=DOCSTRING_MODULES) -> list[str]:
    """Docstrings of the modules, their public classes/functions and the classes' public methods.

    An object belongs to module ``m`` if its ``__module__`` is ``m`` or ``_m`` (C accelerator).
    Members considered: public names (no leading underscore) plus ``__init__``. Docstrings are
    cleaned with ``inspect.cleandoc``; entries are sorted by qualified name and each distinct
    text is kept once (at its first name), empty ones dropped.

    Parameters
    ----------
    modules : tuple of str
        Standard-library module names.

    Returns
    -------
    list of str
    """
    entries = []
    with warnings.catch_warnings():            # reading docs of deprecated aliases (typing.io) warns
        warnings.simplefilter("ignore", DeprecationWarning)
        for modname in modules:
            _collect_docstrings(modname, entries)
    docs, seen = [], set()
    for _, doc in sorted(entries, key=lambda e: e[0]):
        text = inspect.cleandoc(doc) if isinstance(doc, str) else ""
        if text.strip() and text not in seen:
            seen.add(text)
            docs.append(text)
    return docs


def strip_docstrings(source: str) -> str:
    """Python source without docstrings or comments: ``ast.unparse`` of the tree minus docstring nodes.

    Parameters
    ----------
    source : str
        Python module source.

    Returns
    -------
    str
        Equivalent code (comments vanish in ``ast.unparse``; an emptied body becomes ``pass``).
    """
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or ([ast.Pass()] if not isinstance(node, ast.Module) else [])
    return ast.unparse(tree) + "\n"


def pycode_documents(modules=PYCODE_MODULES) -> list[str]:
    """Source of each module file (``inspect.getsourcefile``), docstrings and comments stripped.

    Parameters
    ----------
    modules : tuple of str
        Standard-library module names with pure-Python source.

    Returns
    -------
    list of str
        One document per module, in the order given.
    """
    docs = []
    for modname in modules:
        path = inspect.getsourcefile(importlib.import_module(modname))
        if path is None:
            raise RunError(f"no Python source file for stdlib module {modname!r}; expected a full Python install")
        with tokenize.open(path) as f:      # honours the file's coding cookie
            docs.append(strip_docstrings(f.read()))
    return docs


# ----------------------------------------------------------------------------------------------
# Synthetic Markov corpus
# ----------------------------------------------------------------------------------------------

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


def synthetic_chains(K: int, n_symbols: int, n_successors: int, alpha: float, seed: int) -> np.ndarray:
    """K sparse transition matrices over one shared symbol set.

    Domain k (RNG seeded by ``(seed, 1, k)``): a random cyclic order of the symbols; state i's
    successors are its next state in that cycle (so the chain is irreducible) plus
    ``n_successors - 1`` other states drawn without replacement; their probabilities are
    ``Dirichlet(alpha, ..., alpha)``. ``P[k, i, j] = Pr(x_{t+1} = j | x_t = i, domain k)``.

    Returns
    -------
    np.ndarray, shape (K, V, V), float64
        Row-stochastic matrices, V = n_symbols.
    """
    V = n_symbols
    P = np.zeros((K, V, V))                                            # (K,V,V)
    for k in range(K):
        rng = np.random.default_rng([seed, 1, k])
        cycle = rng.permutation(V)                                      # (V,)
        nxt = np.empty(V, dtype=np.int64)                               # (V,)
        nxt[cycle] = np.roll(cycle, -1)
        for i in range(V):
            others = np.delete(np.arange(V), nxt[i])                    # (V-1,)
            succ = np.concatenate([[nxt[i]], rng.choice(others, n_successors - 1, replace=False)])  # (S,)
            P[k, i, succ] = rng.dirichlet(np.full(n_successors, float(alpha)))                      # (S,)
    return P


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
                     n_successors: int = 4, alpha: float = 1.0, seed: int = 0) -> Corpus:
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
    P = synthetic_chains(K, V, S, float(alpha), seed)                   # (K,V,V)
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
            "n_successors": S, "alpha": float(alpha), "seed": seed, "domains": domains, "words": words,
            "entropy_rate_nats": H, "first_symbol_entropy_nats": H0,
            "doc_nats": [h0 + (doc_len - 1) * h for h0, h in zip(H0, H)], "chars_per_symbol": CHARS_PER_SYMBOL}
    return Corpus("synthetic", docs, meta)


# ----------------------------------------------------------------------------------------------
# User files
# ----------------------------------------------------------------------------------------------

def read_text_file(path: Path, errors: str = "strict") -> str:
    """Read a UTF-8 file; newlines normalised to ``\\n`` and a leading BOM dropped.

    Undecodable bytes raise InputError naming the file and byte offset, or become U+FFFD with
    ``errors="replace"``.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {str(path)!r}: {e.strerror or e}; expected a readable text file") from None
    try:
        text = data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise InputError(f"{str(path)!r} is not valid UTF-8 at byte offset {e.start} ({e.reason}); "
                         "expected UTF-8 text, or pass errors='replace'") from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def path_documents(path: Path, errors: str = "strict") -> tuple[list[str], list[str]]:
    """Documents of a file or folder: files split on two or more blank lines, whitespace-only pieces dropped.

    A folder contributes every ``*.txt`` / ``*.md`` file below it (recursively), sorted by
    relative path.

    Returns
    -------
    documents : list of str
    files : list of str
        The files read, as POSIX paths relative to ``path`` (the file name if ``path`` is a file).
    """
    if path.is_file():
        files = [(path.name, path)]
    elif path.is_dir():
        files = sorted((f.relative_to(path).as_posix(), f) for f in path.rglob("*")
                       if f.suffix.lower() in TEXT_SUFFIXES and f.is_file())
        if not files:
            raise InputError(f"folder {str(path)!r} has no .txt or .md files; expected a folder of UTF-8 text files")
    else:
        raise InputError(f"corpus {str(path)!r} is neither a built-in ({', '.join(BUILTIN_CORPORA)}) "
                         "nor an existing file or folder")
    docs = [d for _, f in files for d in DOC_SEPARATOR.split(read_text_file(f, errors)) if d.strip()]
    return docs, [rel for rel, _ in files]


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------

def load_corpus(name_or_path: str, *, errors: str = "strict", **opts) -> Corpus:
    """Load a built-in corpus by name, or a UTF-8 text file / folder by path.

    Built-in names win over same-named paths (write ``./pydoc`` for a local folder).

    Parameters
    ----------
    name_or_path : str or Path
        One of :data:`BUILTIN_CORPORA`, or a path.
    errors : {"strict", "replace"}
        How undecodable bytes in user files are handled.
    **opts
        Options of ``synthetic`` (see :func:`synthetic_corpus`); other corpora take none.

    Returns
    -------
    Corpus
        Non-empty (InputError if no document has non-whitespace text).
    """
    if errors not in ("strict", "replace"):
        raise InputError(f"errors={errors!r} is invalid; expected 'strict' or 'replace'")
    name = str(name_or_path)
    if not name.strip():
        raise InputError(f"corpus name {name_or_path!r} is empty; expected one of {', '.join(BUILTIN_CORPORA)} or a path")
    if name == "synthetic":
        corpus = synthetic_corpus(**_check_opts(name, opts, synthetic_corpus))
    elif opts:
        raise InputError(f"corpus {name!r} takes no options; got {sorted(opts)}")
    elif name == "pydoc":
        corpus = Corpus(name, pydoc_documents(), _python_meta(name))
    elif name == "docstrings":
        corpus = Corpus(name, docstring_documents(), _python_meta(name, DOCSTRING_MODULES))
    elif name == "pycode":
        corpus = Corpus(name, pycode_documents(), _python_meta(name, PYCODE_MODULES))
    else:
        path = Path(name_or_path)
        docs, files = path_documents(path, errors)
        corpus = Corpus(name, docs, {"kind": "path", "path": str(path.resolve()), "files": files, "errors": errors})
    if not any(d.strip() for d in corpus.documents):
        raise InputError(f"corpus {name!r} has no text (only whitespace or nothing); expected at least one non-empty document")
    return corpus


def _check_opts(name: str, opts: dict, fn) -> dict:
    known = [p for p in inspect.signature(fn).parameters]
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise InputError(f"unknown option(s) {unknown} for corpus {name!r}; expected some of {known}")
    return opts
