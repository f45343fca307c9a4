"""The standard-library corpora: pydoc topics, docstrings, and pycode (functions, classes and module code, docstrings stripped).

They depend on the Python version (``meta['python']``); their fingerprints are stable for one version.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import platform
import re
import tokenize
import warnings

from ..errors import RunError

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


def _python_meta(kind: str, modules=()) -> dict:
    meta = {"kind": kind, "python": platform.python_version()}
    if modules:
        meta["modules"] = list(modules)
    return meta


_SECTION = re.compile(r"^(?=[^\n]*\S[^\n]*\n=+$)", re.M)   # before a line underlined with "=" (a section title)


def pydoc_sections(topic: str) -> list[str]:
    """One pydoc topic cut before each section heading (a non-blank line underlined with ``=``).

    Only a full-width underline counts (``len(underline) == len(title)``). Pieces keep their text
    exactly, surrounding whitespace stripped; whitespace-only pieces are dropped.

    Parameters
    ----------
    topic : str
        Text of one ``pydoc_data.topics.topics`` entry.

    Returns
    -------
    list of str
        The leading part (topic title, underlined with ``*``, and its introduction), then one
        document per section.
    """
    cuts = [m.start() for m in _SECTION.finditer(topic)
            if len(topic[m.start():].split("\n", 2)[1]) == len(topic[m.start():].split("\n", 1)[0])]
    bounds = [0] + cuts + [len(topic)]
    return [p for a, b in zip(bounds, bounds[1:]) if (p := topic[a:b].strip())]


def pydoc_documents() -> list[str]:
    """Reference-manual prose of ``pydoc_data.topics.topics``, one document per section (:func:`pydoc_sections`).

    Topics are taken in sorted key order, sections in text order; a text equal to an earlier
    document is dropped.

    Returns
    -------
    list of str
    """
    from pydoc_data.topics import topics
    return _distinct(p for k in sorted(topics) for p in pydoc_sections(topics[k]))


def _distinct(texts) -> list[str]:
    """The texts in order, each distinct one once (at its first occurrence)."""
    return list(dict.fromkeys(texts))


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


MIN_REST_CHARS = 200      # a module's code outside its functions/classes is a document from this many characters


def module_units(source: str, min_rest_chars: int = MIN_REST_CHARS) -> list[str]:
    """One module's source cut into documents: its remaining top-level code, then each top-level def/class.

    The source is first cleaned with :func:`strip_docstrings`. Every top-level ``def``,
    ``async def`` and ``class`` statement (with its decorators) is one document, in source order;
    the other top-level statements (imports, assignments, ``if __name__ == ...`` blocks) together
    form one more document, placed first, if their ``ast.unparse`` has at least
    ``min_rest_chars`` characters.

    Parameters
    ----------
    source : str
        Python module source.
    min_rest_chars : int
        Size from which the remaining top-level code is kept.

    Returns
    -------
    list of str
        Each ends with a newline and is valid Python on its own (``ast.parse`` accepts it).
    """
    tree = ast.parse(strip_docstrings(source))
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    units = [ast.unparse(n) + "\n" for n in tree.body if isinstance(n, defs)]
    rest = ast.unparse(ast.Module([n for n in tree.body if not isinstance(n, defs)], type_ignores=[]))
    return ([rest + "\n"] if len(rest) >= min_rest_chars else []) + units


def pycode_documents(modules=PYCODE_MODULES) -> list[str]:
    """Source of each module file cut at function/class level (:func:`module_units`), distinct texts once.

    Each module is found with ``inspect.getsourcefile`` and read with ``tokenize.open`` (which
    honours a coding cookie). Documents come in module order, then source order; a text equal to
    an earlier one is dropped (so no copy can fall in another split).

    Parameters
    ----------
    modules : tuple of str
        Standard-library module names with pure-Python source.

    Returns
    -------
    list of str
    """
    docs = []
    for modname in modules:
        path = inspect.getsourcefile(importlib.import_module(modname))
        if path is None:
            raise RunError(f"no Python source file for stdlib module {modname!r}; expected a full Python install")
        with tokenize.open(path) as f:
            docs += module_units(f.read())
    return _distinct(docs)
