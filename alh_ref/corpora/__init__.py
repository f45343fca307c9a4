"""Built-in offline corpora and user text, as lists of documents with stable fingerprints and splits.

Every corpus is a list of documents (``str``). Built-ins need nothing but the Python standard
library (and NumPy for ``synthetic``), so they work offline:

    pydoc       the reference-manual prose of ``pydoc_data.topics.topics``, one document per section
    docstrings  docstrings of :data:`DOCSTRING_MODULES`, one document per distinct docstring
    pycode      source of :data:`PYCODE_MODULES`, docstrings and comments stripped, one per top-level
                function/class (plus each module's remaining code)
    synthetic   K first-order Markov chains over one shared word vocabulary (known entropy rate)

Any other name is a path: a text file (UTF-8, or UTF-16/32 with a byte-order mark), or a folder of
``*.txt`` / ``*.md`` files, cut into documents by the first rule of :data:`DOCUMENT_RULES` that gives
enough of them (``meta['document_rule']``). A built-in name that is also an existing local path is
refused as ambiguous.
The stdlib corpora depend on the Python version (``meta['python']``); their fingerprints are stable
for one version. See docs/data.md for each corpus and the split rule.
"""
from __future__ import annotations

import inspect
from pathlib import Path

from ..errors import InputError
from .documents import (PER_DOCUMENT_META, SPLITS, Corpus, document_unit, encode_documents, fingerprint_documents,
                        require_split_sizes, split_documents, split_sizes)
from .files import DOC_SEPARATOR, DOCUMENT_RULES, TEXT_SUFFIXES, cut_documents, path_documents, read_text_file
from .python_text import (DOCSTRING_MODULES, MIN_REST_CHARS, PYCODE_MODULES, _python_meta, docstring_documents,
                          module_units, pycode_documents, pydoc_documents, pydoc_sections, strip_docstrings)
from .synthetic import (CHARS_PER_SYMBOL, markov_entropy_rate, sample_chain, synthetic_chains, synthetic_corpus,
                        synthetic_words)

BUILTIN_CORPORA = ("pydoc", "docstrings", "pycode", "synthetic")

__all__ = ["BUILTIN_CORPORA", "CHARS_PER_SYMBOL", "DOCSTRING_MODULES", "DOCUMENT_RULES", "DOC_SEPARATOR",
           "MIN_REST_CHARS", "PER_DOCUMENT_META", "PYCODE_MODULES", "SPLITS", "TEXT_SUFFIXES", "Corpus",
           "cut_documents", "docstring_documents", "document_unit", "encode_documents", "fingerprint_documents",
           "load_corpus", "markov_entropy_rate", "module_units", "path_documents", "pycode_documents",
           "pydoc_documents", "pydoc_sections", "read_text_file", "require_split_sizes", "sample_chain",
           "split_documents", "split_sizes", "strip_docstrings", "synthetic_chains", "synthetic_corpus",
           "synthetic_words"]


def load_corpus(name_or_path: str, *, errors: str = "strict", **opts) -> Corpus:
    """Load a built-in corpus by name, or a text file / folder by path.

    A built-in name that is also an existing path (a folder ``./pydoc`` in the working directory)
    is an InputError: write ``./pydoc`` for the local one, or run from another folder for the built-in.

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
    if name in BUILTIN_CORPORA and Path(name).exists():
        kind = "folder" if Path(name).is_dir() else "file"
        raise InputError(f"corpus {name!r} is ambiguous: it is a built-in corpus and a local {kind} "
                         f"{str(Path(name).resolve())!r}; write ./{name} for the local {kind}, or run from a folder "
                         f"without a {name!r} entry for the built-in")
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
        docs, meta = path_documents(path, errors, BUILTIN_CORPORA)
        corpus = Corpus(name, docs, {"kind": "path", "path": str(path.resolve()), **meta, "errors": errors})
    if not any(d.strip() for d in corpus.documents):
        raise InputError(f"corpus {name!r} has no text (only whitespace or nothing); expected at least one non-empty document")
    return corpus


def _check_opts(name: str, opts: dict, fn) -> dict:
    known = [p for p in inspect.signature(fn).parameters]
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise InputError(f"unknown option(s) {unknown} for corpus {name!r}; expected some of {known}")
    return opts
