"""Byte-pair-encoding training: count GPT-2-style pre-tokens, then learn merges greedily.

The merge rule (docs/data.md, "Training algorithm"): repeatedly merge the most frequent adjacent
pair of token ids over all pre-tokens (weighted by their counts), ties broken by the pair's bytes;
each merge is a new token whose bytes are the two parts' bytes joined. alh_ref.tokenizer turns the
learned merges into tiktoken ranks.
"""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable

import regex

from .errors import InputError

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def count_pretokens(texts: Iterable[str], pattern: str = GPT2_PATTERN) -> Counter:
    """Split texts into pre-tokens with ``pattern`` and count each distinct pre-token.

    Parameters
    ----------
    texts : iterable of str
        Documents; each is split on its own (pre-tokens never span two documents).
    pattern : str
        Pre-tokenisation regex (``regex`` package syntax, the same one tiktoken is given).

    Returns
    -------
    collections.Counter
        ``{pre_token: count}``, in first-seen order (deterministic for the same input).
    """
    try:
        split = regex.compile(pattern).findall
    except regex.error as e:
        raise InputError(f"pre-tokenisation pattern does not compile: {e}; expected a regex-package pattern") from None
    counts: Counter = Counter()
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"training text item {i} is {type(text).__name__}; expected str")
        counts.update(split(text))
    return counts


def _word_ids(word: str) -> list[int]:
    """UTF-8 bytes of one pre-token as a list of byte ids; InputError on unpaired surrogates."""
    try:
        return list(word.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise InputError(f"training text contains an unpaired surrogate {word[e.start]!r}; "
                         "expected text encodable as UTF-8") from None


def _move_pair(pair_count, where, changed, old, new, f, wi) -> None:
    """Move weight ``f`` of word ``wi`` from pair ``old`` to pair ``new`` (both marked changed)."""
    pair_count[old] -= f
    pair_count[new] += f
    where[new].add(wi)
    changed.add(old)
    changed.add(new)


def learn_merges(word_counts: dict[str, int], n_merges: int) -> list[bytes]:
    """Learn up to ``n_merges`` new BPE tokens from pre-token counts, incrementally.

    Each step merges the adjacent token pair with the highest count, weighted by pre-token
    frequency: ``(a, b)* = argmax_{(a,b)} sum_w freq(w) * #(a,b in w)``. Ties go to the smallest
    pair ``(bytes(a), bytes(b))`` in lexicographic byte order. Each merge visits only the words
    listed for that pair and changes only the counts of the pairs beside each merge site,
    ``(l, a) -> (l, new)`` and ``(b, r) -> (new, r)``. A max-heap keyed on
    ``(-count, bytes(a), bytes(b))`` holds the counts (an entry whose count has since changed is
    skipped when popped); the pair -> words index is pruned lazily (a listed word that no longer
    holds the pair is left unchanged). Should the merged bytes already be a token (``ab|c`` and
    ``a|bc`` both spell ``abc``; not seen in practice) the existing id is reused and no vocabulary
    slot is spent.

    Parameters
    ----------
    word_counts : dict[str, int]
        Distinct pre-tokens and how often each occurs.
    n_merges : int
        Number of new tokens wanted; fewer are returned if the text runs out of pairs.

    Returns
    -------
    list of bytes
        ``vocab[id]`` = the bytes of token ``id``; ids 0..255 are single bytes, then new tokens in
        the order learned (length 256 + number of new tokens).
    """
    vocab = [bytes([i]) for i in range(256)]
    id_of = {t: i for i, t in enumerate(vocab)}
    words, freqs = [], []
    for w, c in word_counts.items():
        ids = _word_ids(w)
        if len(ids) > 1:                      # single-byte words hold no pair
            words.append(ids)
            freqs.append(c)

    pair_count: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)   # pair -> indices of words holding it
    for wi, (w, f) in enumerate(zip(words, freqs)):
        for p in zip(w, w[1:]):
            pair_count[p] += f
            where[p].add(wi)
    heap = [(-c, vocab[a], vocab[b], a, b) for (a, b), c in pair_count.items()]
    heapq.heapify(heap)

    n_new = 0
    while n_new < n_merges and heap:
        neg, _, _, a, b = heapq.heappop(heap)
        if pair_count.get((a, b), 0) != -neg:
            continue                          # stale entry: the count changed after it was pushed
        merged = vocab[a] + vocab[b]
        new = id_of.get(merged)
        if new is None:
            new = len(vocab)
            vocab.append(merged)
            id_of[merged] = new
            n_new += 1
        changed = {(a, b)}
        for wi in where.pop((a, b)):
            w, f = words[wi], freqs[wi]
            out, i, n = [], 0, len(w)
            while i < n:                      # merge left to right; update only the neighbours of each hit
                if i + 1 < n and w[i] == a and w[i + 1] == b:
                    if out:                   # (left, a) -> (left, new); left may be a `new` just made
                        _move_pair(pair_count, where, changed, (out[-1], a), (out[-1], new), f, wi)
                    if i + 2 < n:             # (b, right) -> (new, right)
                        _move_pair(pair_count, where, changed, (b, w[i + 2]), (new, w[i + 2]), f, wi)
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[wi] = out                   # unchanged if the pair had already left this word
        pair_count[(a, b)] = 0                # every occurrence is merged
        for p in changed:
            c = pair_count[p]
            if c > 0:
                heapq.heappush(heap, (-c, vocab[p[0]], vocab[p[1]], p[0], p[1]))
            else:
                del pair_count[p]
                where.pop(p, None)
    return vocab
