"""User text: a text file or a folder of .txt / .md files, decoded and cut into documents.

Decoding (:func:`read_text_file`): UTF-8, or UTF-16 / UTF-32 recognised by a byte-order mark;
binary data is refused. Cutting (:func:`cut_documents`): the first of three rules that gives
enough documents for usable train/val/test splits (see docs/data.md):

    blank-lines   documents separated by two or more blank lines
    paragraphs    paragraphs (one or more blank lines) packed into chunks of about ``chunk_chars``
    lines         lines packed into chunks of about ``chunk_chars`` (for text with no blank lines)
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import InputError

TEXT_SUFFIXES = (".txt", ".md")
_BLANK = r"\n[ \t]*\n"                                    # a line end, then one blank (whitespace-only) line
DOC_SEPARATOR = re.compile(_BLANK + r"(?:[ \t]*\n)+")     # two or more blank lines end a document
PARAGRAPH_SEPARATOR = re.compile(_BLANK + r"(?:[ \t]*\n)*")   # one or more blank lines end a paragraph
LINE_END = re.compile(r"\n")
_WHITESPACE = re.compile(r"\s+")
_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\n)+")
DOCUMENT_RULES = ("blank-lines", "paragraphs", "lines")
MIN_DOCS = 100                 # a rule is used if it gives at least this many documents (about 10 per 10% split)
TARGET_DOCS = 200              # chunk rules aim at this many documents ...
CHUNK_CHARS = (1000, 8000)     # ... with chunks of total_chars / TARGET_DOCS, clipped to this range

# Byte-order marks, longest first (the UTF-32-LE mark begins with the UTF-16-LE one).
_BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xef\xbb\xbf", "utf-8"),
         (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
BINARY_FRACTION = 0.3          # more control/undecodable characters than this -> binary data
_NOT_TEXT = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\ufffd]")     # C0 controls except \t \n \v \f \r, DEL, U+FFFD


def _codec(data: bytes) -> tuple[str, int]:
    """(codec name, BOM length) of raw file bytes: the byte-order mark's encoding, else UTF-8."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return codec, len(bom)
    return "utf-8", 0


def _binary_reason(text: str) -> str | None:
    """Why decoded text looks like binary data (a NUL, or too many control/undecodable characters), or None."""
    if "\x00" in text:
        return "it holds NUL bytes"
    bad = len(_NOT_TEXT.findall(text))
    if text and bad > BINARY_FRACTION * len(text):
        return f"{bad / len(text):.0%} of its characters are control codes or undecodable bytes"
    return None


def read_text_file(path: Path, errors: str = "strict") -> str:
    """Read a text file: UTF-8, or UTF-16 / UTF-32 with a byte-order mark; newlines normalised to ``\\n``.

    The encoding is taken from a leading byte-order mark (dropped), else UTF-8. Text holding a NUL
    character, or more than ``BINARY_FRACTION`` control characters (C0 other than ``\\t\\n\\v\\f\\r``,
    DEL) and undecodable bytes, is refused as binary data. Undecodable bytes raise InputError
    naming the file and byte offset, or become U+FFFD with ``errors="replace"``.

    Parameters
    ----------
    path : Path
    errors : {"strict", "replace"}

    Returns
    -------
    str
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {str(path)!r}: {e.strerror or e}; expected a readable text file") from None
    codec, skip = _codec(data)
    loose = data[skip:].decode(codec, errors="replace")
    why = _binary_reason(loose)
    if why:
        raise InputError(f"{str(path)!r} looks like binary data ({why}); expected a text file "
                         "(UTF-8, or UTF-16/UTF-32 with a byte-order mark)")
    if errors == "strict":
        try:
            data[skip:].decode(codec)
        except UnicodeDecodeError as e:
            raise InputError(f"{str(path)!r} is not valid {codec.upper()} at byte offset {skip + e.start} ({e.reason}); "
                             "expected UTF-8 (or UTF-16 with a byte-order mark), or use --errors replace to read "
                             "undecodable bytes as U+FFFD") from None
    return loose.replace("\r\n", "\n").replace("\r", "\n")


def _pieces(text: str, separator: re.Pattern) -> list[str]:
    """``text`` cut after every match of ``separator`` (each separator stays with the piece before it)."""
    cuts = [0] + [m.end() for m in separator.finditer(text)] + [len(text)]
    return [text[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


def _trim(doc: str) -> str:
    """A document without leading blank lines or trailing whitespace (the first line's indent is kept)."""
    return _LEADING_BLANK_LINES.sub("", doc).rstrip()


def _pack(pieces: list[str], chunk_chars: int, cut_long: bool = False) -> list[str]:
    """Consecutive pieces joined until a chunk reaches ``chunk_chars`` characters.

    With ``cut_long``, a piece (a line) longer than ``2 * chunk_chars`` is first cut after
    whitespace, so a text without line ends still gives chunks.
    """
    chunks, cur = [], ""
    for piece in pieces:
        for part in (_pieces(piece, _WHITESPACE) if cut_long and len(piece) > 2 * chunk_chars else [piece]):
            cur += part
            if len(cur) >= chunk_chars:
                chunks.append(cur)
                cur = ""
    return chunks + [cur]


def chunk_size(total_chars: int) -> int:
    """Target chunk size of the chunk rules: ``total_chars // TARGET_DOCS`` clipped to ``CHUNK_CHARS``."""
    lo, hi = CHUNK_CHARS
    return int(min(hi, max(lo, total_chars // TARGET_DOCS)))


def cut_documents(texts: list[str], rule: str = "auto") -> tuple[list[str], dict]:
    """Cut file texts into documents by the first rule that gives at least ``MIN_DOCS`` documents.

    Rules, tried in :data:`DOCUMENT_RULES` order over all texts together (documents never span
    two texts; leading blank lines and trailing whitespace are trimmed; whitespace-only documents
    are dropped):

    1. ``blank-lines``: split on two or more blank (whitespace-only) lines;
    2. ``paragraphs``: split on one or more blank lines, then consecutive paragraphs packed into
       chunks of at least ``chunk_chars`` characters (the last chunk of a text may be shorter);
    3. ``lines``: the same packing over lines (a line longer than ``2 * chunk_chars`` cut after
       whitespace first).

    ``chunk_chars = chunk_size(total characters)``. If no rule reaches ``MIN_DOCS``, the rule
    giving the most documents is used (the earliest on ties), so a short file stays whole.

    Parameters
    ----------
    texts : list of str
        Decoded file texts.
    rule : {"auto", "blank-lines", "paragraphs", "lines"}
        "auto" applies the choice above; a rule name forces that rule.

    Returns
    -------
    documents : list of str
    meta : dict
        ``document_rule`` (the rule used) and ``chunk_chars`` (None for blank-lines).
    """
    if rule != "auto" and rule not in DOCUMENT_RULES:
        raise InputError(f"document rule {rule!r} is unknown; expected 'auto' or one of {', '.join(DOCUMENT_RULES)}")
    size = chunk_size(sum(map(len, texts)))
    cutters = {"blank-lines": DOC_SEPARATOR.split,
               "paragraphs": lambda t: _pack(_pieces(t, PARAGRAPH_SEPARATOR), size),
               "lines": lambda t: _pack(_pieces(t, LINE_END), size, cut_long=True)}
    best = None
    for name in ([rule] if rule != "auto" else DOCUMENT_RULES):
        docs = [_trim(d) for t in texts for d in cutters[name](t) if d.strip()]
        if best is None or len(docs) > len(best[1]):
            best = (name, docs)
        if len(docs) >= MIN_DOCS:
            break
    name, docs = best
    return docs, {"document_rule": name, "chunk_chars": None if name == "blank-lines" else size}


def path_documents(path: Path, errors: str = "strict", builtins=()) -> tuple[list[str], dict]:
    """Documents of a file or folder (:func:`read_text_file`, then :func:`cut_documents`).

    A folder contributes every ``*.txt`` / ``*.md`` file below it (recursively), sorted by
    relative path.

    Returns
    -------
    documents : list of str
    meta : dict
        ``files`` (the files read, as POSIX paths relative to ``path``; the file name if ``path`` is
        a file), ``document_rule`` and ``chunk_chars``.
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
    docs, meta = cut_documents([read_text_file(f, errors) for _, f in files])
    return docs, {"files": [rel for rel, _ in files], **meta}
