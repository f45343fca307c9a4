"""User text: a UTF-8 file or a folder of .txt / .md files, read as documents."""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import InputError

TEXT_SUFFIXES = (".txt", ".md")
DOC_SEPARATOR = re.compile(r"\n{3,}")  # two or more blank lines end a document in a user file


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


def path_documents(path: Path, errors: str = "strict", builtins=()) -> tuple[list[str], list[str]]:
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
        raise InputError(f"corpus {str(path)!r} is neither a built-in ({', '.join(builtins)}) "
                         "nor an existing file or folder")
    docs = [d for _, f in files for d in DOC_SEPARATOR.split(read_text_file(f, errors)) if d.strip()]
    return docs, [rel for rel, _ in files]
