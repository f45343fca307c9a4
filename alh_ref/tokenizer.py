"""Byte-level BPE trained locally, used through tiktoken.

Training (:func:`train_bpe`) is plain byte-pair encoding over GPT-2-style pre-tokens; encoding and
decoding go through a ``tiktoken.Encoding`` built from the trained ranks, so the hot path is Rust.
Nothing here touches the network: no hosted encoding is ever fetched (``tiktoken.get_encoding`` is
never called) and files are read from local paths only. See docs/data.md for the algorithm.

Vocabulary layout (V = n_vocab):

    ids 0..255          the 256 single bytes, in byte order (id == byte value)
    ids 256..M-1        merged tokens, in the order they were learned (rank == merge priority)
    ids M..V-1          special tokens (``<|endoftext|>`` first), never produced by ordinary text

Domain: any Python ``str`` that can be encoded as UTF-8 (i.e. without unpaired surrogates
U+D800..U+DFFF). For those, ``decode(encode(s)) == s`` exactly.
"""
from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tiktoken
import tiktoken.load

from .bpe import GPT2_PATTERN, count_pretokens, learn_merges
from .errors import InputError
from .io_utils import atomic_write_bytes, atomic_write_json, ensure_writable_dir

EOT = "<|endoftext|>"
RANKS_FILE = "tokenizer.tiktoken"
META_FILE = "tokenizer.json"
FORMAT_VERSION = 1
_HASH_DOMAIN = b"alh_ref.tokenizer/1\n"


# ----------------------------------------------------------------------------------------------
# Training (the merge learning itself is in alh_ref.bpe)
# ----------------------------------------------------------------------------------------------

def train_bpe(text: str | Iterable[str], vocab_size: int, *, pattern: str = GPT2_PATTERN,
              special_tokens: tuple[str, ...] = (EOT,)) -> "Tokenizer":
    """Train a byte-level BPE tokenizer on local text.

    Parameters
    ----------
    text : str or iterable of str
        Training text; an iterable (list, tuple, generator) is treated as separate documents (no
        pre-token spans two), e.g. the train splits of two corpora together,
        ``a_train.documents + b_train.documents``. Only the pre-token counts matter, so neither the
        order of the documents nor how they are grouped changes the result.
    vocab_size : int
        Wanted V = 256 + merges + len(special_tokens). The result has fewer merges only if the
        text runs out of adjacent pairs (check ``tokenizer.n_vocab``).
    pattern : str
        Pre-tokenisation regex; default the GPT-2 pattern.
    special_tokens : tuple of str
        Special token strings, given ids after all mergeable tokens; the first is the
        end-of-text token (``eot_id``). At least one is required.

    Returns
    -------
    Tokenizer
        Deterministic: the same text, vocab_size, pattern and specials give the same ``sha256``.
    """
    special_tokens = _check_specials(special_tokens)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
        raise InputError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    floor = 256 + len(special_tokens)
    if vocab_size < floor:
        raise InputError(f"vocab_size={vocab_size} is too small; expected >= 256 byte tokens + "
                         f"{len(special_tokens)} special token(s) = {floor}")
    if not isinstance(text, (str, Iterable)):
        raise InputError(f"training text is {type(text).__name__}; expected a str or a list of str documents")
    texts = [text] if isinstance(text, str) else text
    vocab = learn_merges(count_pretokens(texts, pattern), int(vocab_size) - floor)
    return Tokenizer({t: i for i, t in enumerate(vocab)}, pattern, special_tokens)


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------

def _check_specials(special_tokens) -> tuple[str, ...]:
    """Validate special-token strings: a non-empty tuple of distinct non-empty str."""
    if isinstance(special_tokens, str):
        special_tokens = (special_tokens,)
    special_tokens = tuple(special_tokens)
    if not special_tokens or not all(isinstance(s, str) and s for s in special_tokens):
        raise InputError(f"special_tokens={special_tokens!r} is invalid; expected one or more non-empty strings "
                         f"(the first is the end-of-text token, e.g. {EOT!r})")
    if len(set(special_tokens)) != len(special_tokens):
        raise InputError(f"special_tokens={special_tokens!r} has duplicates; expected distinct strings")
    return special_tokens


def ranks_file_bytes(mergeable_ranks: dict[bytes, int]) -> bytes:
    """The ``.tiktoken`` file for ``mergeable_ranks``: one ``base64(token_bytes) rank\\n`` line per token, by rank."""
    return b"".join(base64.b64encode(t) + b" " + str(r).encode() + b"\n"
                    for t, r in sorted(mergeable_ranks.items(), key=lambda kv: kv[1]))


def tokenizer_sha256(ranks_bytes: bytes, pattern: str, special_tokens: dict[str, int]) -> str:
    """Identity of a tokenizer: sha256 over length-prefixed (ranks file bytes, pattern, specials by id).

    ``sha256(tag | u64 len(ranks) | ranks | u64 len(pat) | pat | u64 S | (u64 len(name) | name | u64 id)*)``,
    all integers little-endian, strings UTF-8; stable across machines.
    """
    def u64(n: int) -> bytes:
        return int(n).to_bytes(8, "little")
    pat = pattern.encode("utf-8")
    h = hashlib.sha256(_HASH_DOMAIN + u64(len(ranks_bytes)) + ranks_bytes + u64(len(pat)) + pat)
    h.update(u64(len(special_tokens)))
    for name, i in sorted(special_tokens.items(), key=lambda kv: kv[1]):
        nb = name.encode("utf-8")
        h.update(u64(len(nb)) + nb + u64(i))
    return h.hexdigest()


def _check_ranks(mergeable_ranks: dict[bytes, int]) -> None:
    """Ranks must be 0..M-1 exactly once, with ranks 0..255 the single bytes in byte order."""
    ranks = sorted(mergeable_ranks.values())
    if ranks != list(range(len(ranks))):
        raise InputError("mergeable ranks are not the consecutive integers 0..M-1; expected one rank per token")
    if any(mergeable_ranks.get(bytes([b])) != b for b in range(256)):
        raise InputError("ranks 0..255 are not the 256 single bytes in byte order; expected a byte-level BPE vocabulary")


class Tokenizer:
    """A trained byte-level BPE vocabulary wrapped in a ``tiktoken.Encoding``.

    Parameters
    ----------
    mergeable_ranks : dict[bytes, int]
        Token bytes -> rank (= id), ranks 0..M-1, the 256 single bytes first in byte order.
    pattern : str
        Pre-tokenisation regex.
    special_tokens : tuple of str
        Special token strings; they get ids M, M+1, ... in this order. The first is end-of-text.

    Attributes
    ----------
    encoding : tiktoken.Encoding
        The Rust encoder/decoder.
    pattern : str
    special_tokens : dict[str, int]
        Special token string -> id.
    sha256 : str
        :func:`tokenizer_sha256` of the ranks file bytes, pattern and specials.
    """

    def __init__(self, mergeable_ranks: dict[bytes, int], pattern: str, special_tokens: tuple[str, ...] = (EOT,)):
        _check_ranks(mergeable_ranks)
        names = _check_specials(special_tokens)
        m = len(mergeable_ranks)
        self.pattern = pattern
        self.special_tokens = {s: m + j for j, s in enumerate(names)}
        self._ranks_bytes = ranks_file_bytes(mergeable_ranks)
        self.sha256 = tokenizer_sha256(self._ranks_bytes, pattern, self.special_tokens)
        try:
            self.encoding = tiktoken.Encoding(name=f"alh_ref_bpe_{self.sha256[:12]}", pat_str=pattern,
                                              mergeable_ranks=mergeable_ranks, special_tokens=self.special_tokens)
        except ValueError as e:
            raise InputError(f"tiktoken rejected the tokenizer (pattern {pattern!r}): {e}") from None

    @property
    def n_vocab(self) -> int:
        """V: mergeable tokens + special tokens (ids are 0..V-1)."""
        return self.encoding.n_vocab

    @property
    def eot_id(self) -> int:
        """Id of the end-of-text token (the first special token)."""
        return next(iter(self.special_tokens.values()))

    def __repr__(self) -> str:
        return f"Tokenizer(n_vocab={self.n_vocab}, eot_id={self.eot_id}, sha256={self.sha256[:12]}...)"

    def encode(self, s: str, *, allow_special: bool = False) -> np.ndarray:
        """Encode text to token ids.

        Parameters
        ----------
        s : str
            Text encodable as UTF-8 (no unpaired surrogates).
        allow_special : bool
            If False (default) special-token strings such as ``<|endoftext|>`` in ``s`` are
            encoded as ordinary text; if True they become their special ids.

        Returns
        -------
        ids : np.ndarray, shape (T,), int32
            Token ids in [0, V).
        """
        if not isinstance(s, str):
            raise InputError(f"encode expects str, got {type(s).__name__}")
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError(f"text has an unpaired surrogate {s[e.start]!r} at index {e.start}; "
                             "expected a string encodable as UTF-8") from None
        if allow_special:
            ids = self.encoding.encode_to_numpy(s, allowed_special="all")  # (T,) uint32
        else:
            ids = self.encoding.encode_to_numpy(s, disallowed_special=())  # (T,) uint32
        return ids.astype(np.int32)                                        # (T,) uint32 -> (T,) int32

    def decode(self, ids, errors: str = "replace") -> str:
        """Decode token ids to text: the concatenated token bytes, decoded as UTF-8.

        Parameters
        ----------
        ids : array-like of int, shape (T,)
            Token ids in [0, V).
        errors : str
            UTF-8 error handler for byte sequences that are not valid UTF-8 (possible for
            arbitrary id sequences, never for the output of ``encode``).

        Returns
        -------
        str
            ``decode(encode(s)) == s`` for every UTF-8-encodable ``s``.
        """
        arr = np.asarray(ids)                 # (T,)
        if arr.size == 0:
            return ""
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"decode expects a 1-D sequence of integer ids, got shape {arr.shape} dtype {arr.dtype}")
        bad = np.flatnonzero((arr < 0) | (arr >= self.n_vocab))   # (T,) -> (n_bad,)
        if bad.size:
            i = int(bad[0])
            raise InputError(f"token id {int(arr[i])} at position {i} is out of range; expected 0 <= id < {self.n_vocab}")
        return self.encoding.decode(arr.tolist(), errors=errors)

    def save(self, folder) -> Path:
        """Write ``tokenizer.tiktoken`` (ranks) and ``tokenizer.json`` (metadata) into ``folder``, atomically.

        Parameters
        ----------
        folder : str or Path
            Output folder (created if needed).

        Returns
        -------
        Path
            The folder.
        """
        out = ensure_writable_dir(folder)
        atomic_write_bytes(out / RANKS_FILE, self._ranks_bytes)   # ranks first: the json's sha256 covers them
        atomic_write_json(out / META_FILE, {
            "format": "alh_ref.tokenizer", "format_version": FORMAT_VERSION, "ranks_file": RANKS_FILE,
            "pattern": self.pattern, "special_tokens": self.special_tokens,
            "n_vocab": self.n_vocab, "n_mergeable": self.n_vocab - len(self.special_tokens),
            "sha256": self.sha256,
        })
        return out

    @classmethod
    def load(cls, folder) -> "Tokenizer":
        """Read a tokenizer written by :meth:`save`; InputError if a file is missing, corrupted or mismatching.

        The ranks are parsed by ``tiktoken.load.load_tiktoken_bpe`` given an absolute local path
        and the sha256 of the file bytes we verified, so tiktoken never goes to the network and
        never serves a stale copy from its cache (it may write a copy into its cache folder,
        ``$TIKTOKEN_CACHE_DIR`` or ``<tmp>/data-gym-cache``).

        Parameters
        ----------
        folder : str or Path
            Folder holding ``tokenizer.tiktoken`` and ``tokenizer.json``.

        Returns
        -------
        Tokenizer
        """
        folder = Path(folder)
        meta_path, ranks_path = folder / META_FILE, (folder / RANKS_FILE).resolve()
        for p in (meta_path, ranks_path):
            if not p.is_file():
                raise InputError(f"tokenizer file {str(p)!r} not found; expected a folder written by Tokenizer.save")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            version, pattern, specials, sha = (meta["format_version"], meta["pattern"], meta["special_tokens"],
                                               meta["sha256"])
            ranks_bytes = ranks_path.read_bytes()
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"cannot read tokenizer metadata {str(meta_path)!r}: {e!r}; expected the JSON "
                             "written by Tokenizer.save") from None
        if version != FORMAT_VERSION:
            raise InputError(f"{str(meta_path)!r} has format_version {version!r}; expected {FORMAT_VERSION}")
        if not (isinstance(pattern, str) and isinstance(specials, dict)
                and all(isinstance(k, str) and type(v) is int for k, v in specials.items())):
            raise InputError(f"{str(meta_path)!r} has malformed pattern/special_tokens; expected str and {{name: id}}")
        if tokenizer_sha256(ranks_bytes, pattern, specials) != sha:
            raise InputError(f"tokenizer files in {str(folder)!r} do not match their sha256 ({sha[:12]}...); "
                             "the ranks file or metadata was modified or is from another tokenizer")
        path = str(ranks_path)
        if "://" in path:                     # tiktoken would treat it as a URL; a resolved local path never has it
            raise InputError(f"tokenizer path {path!r} looks like a URL; expected a local folder")
        try:
            ranks = tiktoken.load.load_tiktoken_bpe(path, expected_hash=hashlib.sha256(ranks_bytes).hexdigest())
        except (OSError, ValueError) as e:
            raise InputError(f"cannot parse tokenizer ranks {path!r}: {e}; expected lines 'base64(token) rank'") from None
        names = tuple(sorted(specials, key=specials.get))
        tok = cls(ranks, pattern, names)
        if tok.special_tokens != specials or tok.sha256 != sha:
            raise InputError(f"special token ids in {str(meta_path)!r} are {specials}; expected consecutive ids "
                             f"after the {len(ranks)} mergeable tokens")
        return tok
