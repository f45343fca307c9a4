"""A run's data: corpus splits, their sizes, the token stream, and the tokenizer (found or trained).

Data flows one way: alh_ref.corpora (documents, split by hash) -> alh_ref.tokenizer -> one int32
token stream per split, documents joined by end-of-text.
"""
from pathlib import Path

from ..corpora import BUILTIN_CORPORA, encode_documents, load_corpus, split_documents
from ..errors import InputError
from ..tokenizer import META_FILE, Tokenizer, train_bpe
from .folders import TOKENIZER_DIR, RunLock, list_checkpoints, run_path
from .options import SPLIT_CHOICES

SMALL_SPLIT_CONTEXTS = 8       # a val/test split under this many contexts of T+1 tokens draws a warning


def load_splits(corpus, corpus_opts=None, errors="strict"):
    """Load a corpus and split its documents by hash (alh_ref.corpora.split_documents).

    Returns
    -------
    whole : Corpus;  parts : dict split name -> Corpus (train, val, test)
    """
    whole = load_corpus(corpus, errors=errors, **(corpus_opts or {}))
    return whole, split_documents(whole)


def load_split(corpus, corpus_opts=None, split="train", errors="strict"):
    """Load a corpus and take one split of it (by document hash, alh_ref.corpora.split_documents).

    Parameters
    ----------
    corpus : str   a built-in name (pydoc, docstrings, pycode, synthetic) or a text file / folder path
    corpus_opts : dict or None   options of the synthetic corpus
    split : str   train | val | test | all
    errors : str   strict | replace (undecodable bytes in user files)

    Returns
    -------
    Corpus   non-empty
    """
    if split not in SPLIT_CHOICES:
        raise InputError(f"split {split!r} is unknown; expected one of {', '.join(SPLIT_CHOICES)}")
    whole, parts = load_splits(corpus, corpus_opts, errors)
    return pick_split(whole, parts, split, corpus)


def pick_split(whole, parts, split, corpus):
    """One split of a loaded corpus; InputError if it holds no text."""
    if split == "all":
        return whole
    part = parts[split]
    if not any(d.strip() for d in part.documents):
        raise InputError(f"split {split!r} of corpus {str(corpus)!r} is empty (its {len(whole.documents)} document(s) "
                         "are assigned to train/val/test by a hash of their text); separate documents with two blank "
                         "lines, use --split all, or pass another file with --corpus")
    return part


def split_sizes(tokenizer, parts) -> dict:
    """Documents and tokens of every split: {split: {"documents": int, "tokens": int}}."""
    return {name: {"documents": len(p.documents), "tokens": int(encode_documents(tokenizer, p.documents).shape[0])}
            for name, p in parts.items()}


def small_split_warnings(sizes, T, used) -> list:
    """A warning for each split other than the one trained on (``used``) that holds under
    SMALL_SPLIT_CONTEXTS contexts of T+1 tokens (an evaluation on it would be noisy or impossible)."""
    if used == "all":
        return []
    out = []
    for name, s in sizes.items():
        if name != used and s["tokens"] < SMALL_SPLIT_CONTEXTS * (T + 1):
            out.append(f"the {name} split is small: {s['documents']} document(s), {s['tokens']} tokens (under "
                       f"{SMALL_SPLIT_CONTEXTS} contexts of T+1 = {T + 1}); an evaluation on it will be noisy or "
                       "fail; give the text more documents, or evaluate on a held-out file with --split all")
    return out


def corpus_key(corpus) -> str:
    """How a corpus is named in manifests: a built-in name as is, a path made absolute."""
    name = str(corpus)
    return name if name in BUILTIN_CORPORA else str(Path(name).resolve())


def stream_tokens(tokenizer, corpus, T):
    """Encode a corpus into one token stream (documents joined by end-of-text) of at least T+1 ids.

    Parameters
    ----------
    tokenizer : Tokenizer;  corpus : Corpus;  T : int context length

    Returns
    -------
    tokens : ndarray (n,) int32, n >= T + 1
    """
    tokens = encode_documents(tokenizer, corpus.documents)                                    # (n,)
    if tokens.shape[0] < T + 1:
        raise InputError(f"corpus {corpus.name!r} gives {tokens.shape[0]} tokens, shorter than one context of "
                         f"T+1 = {T + 1}; use more text, --split all, or a smaller --block-size")
    return tokens


def find_tokenizer(path) -> Tokenizer:
    """Load a tokenizer from a tokenizer folder or from a run folder holding ``tokenizer/``.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    Tokenizer
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"tokenizer path {str(p)!r} does not exist; expected a run folder or its tokenizer/ folder")
    if not (p / META_FILE).is_file() and (p / TOKENIZER_DIR / META_FILE).is_file():
        p = p / TOKENIZER_DIR
    return Tokenizer.load(p)


def train_tokenizer(out, name, *, corpus, corpus_opts=None, split="train", vocab_size=512, errors="strict") -> dict:
    """Train a byte-level BPE on a corpus split and save it to ``out/name/tokenizer/``.

    Parameters
    ----------
    out, name : run root and run name
    corpus, corpus_opts, split, errors : what to train on (see :func:`load_split`)
    vocab_size : int   wanted V = 256 bytes + merges + 1 special (>= 257)

    Returns
    -------
    dict   job, run, tokenizer (folder), n_vocab, vocab_size (asked), sha256, corpus, corpus_fingerprint
    """
    rd = run_path(out, name)
    with RunLock(rd):
        if list_checkpoints(rd):
            raise InputError(f"run {str(rd)!r} already has checkpoints trained with its tokenizer; choose another --name")
        data = load_split(corpus, corpus_opts, split, errors)
        tok = train_bpe(data.documents, vocab_size)
        folder = tok.save(rd / TOKENIZER_DIR)
    return {"job": "tokenizer", "run": str(rd), "tokenizer": str(folder), "n_vocab": tok.n_vocab,
            "vocab_size": vocab_size, "sha256": tok.sha256, "corpus": data.name, "corpus_fingerprint": data.fingerprint}
