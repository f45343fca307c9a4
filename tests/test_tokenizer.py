"""Tests of alh_ref.tokenizer: BPE training, tiktoken round trips, save/load and their failures."""
import json
import time
from collections import Counter

import numpy as np
import pytest
import regex
import tiktoken.load
from hypothesis import given
from hypothesis import strategies as st

from alh_ref.errors import InputError
from alh_ref.tokenizer import (EOT, GPT2_PATTERN, META_FILE, RANKS_FILE, Tokenizer, count_pretokens,
                               learn_merges, train_bpe)

TRAIN_TEXT = (
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox doesn't.\n"
    "def add(a, b):\n    return a + b\n\n"
    "Numbers 12345 and 67890, symbols <<= >>= != ==, unicode: café naïve Ελληνικά 日本語 🙂\n"
) * 40
NO_SURROGATES = st.characters(blacklist_categories=("Cs",))


@pytest.fixture(scope="module")
def tok():
    return train_bpe(TRAIN_TEXT, 380)


def naive_bpe(word_counts, n_merges):
    """Reference trainer: recount every pair from scratch before each merge (slow, obviously right)."""
    vocab = [bytes([i]) for i in range(256)]
    words = [(list(w.encode()), c) for w, c in word_counts.items()]
    n_new = 0
    while n_new < n_merges:
        counts = Counter()
        for w, c in words:
            for p in zip(w, w[1:]):
                counts[p] += c
        if not counts:
            break
        a, b = min(counts, key=lambda p: (-counts[p], vocab[p[0]], vocab[p[1]]))
        merged = vocab[a] + vocab[b]
        if merged in vocab:
            new = vocab.index(merged)
        else:
            new, n_new = len(vocab), n_new + 1
            vocab.append(merged)
        for k, (w, c) in enumerate(words):
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == (a, b):
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[k] = (out, c)
    return vocab


def test_hand_checkable_first_merges():
    # "aaab" x10 is one pre-token with pairs (a,a):20, (a,b):10 -> merge "aa" first; then (aa,a) and
    # (a,b) tie at 10 and the byte-order tie-break picks (b"a", b"b") < (b"aa", b"a"); then "aaab".
    t = train_bpe(["aaab"] * 10, 260)
    learned = [t.encoding.decode_single_token_bytes(i) for i in range(256, 259)]
    assert learned == [b"aa", b"ab", b"aaab"]
    assert t.n_vocab == 260 and t.eot_id == 259
    assert t.encode("aaab").tolist() == [258]
    assert t.encode("aaaab").tolist() == [256, 256, ord("b")]   # lowest rank first, leftmost first


def test_incremental_training_matches_naive_recount():
    counts = count_pretokens([TRAIN_TEXT[:3000]])
    assert learn_merges(counts, 150) == naive_bpe(counts, 150)


@given(st.lists(st.text(alphabet="ab c\n", max_size=30), min_size=1, max_size=8), st.integers(0, 40))
def test_incremental_matches_naive_on_tie_heavy_texts(docs, n_merges):
    counts = count_pretokens(docs)
    assert learn_merges(counts, n_merges) == naive_bpe(counts, n_merges)


@given(st.text(alphabet=NO_SURROGATES))
def test_roundtrip_arbitrary_unicode(tok, s):
    ids = tok.encode(s)
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert tok.decode(ids) == s
    assert ids.tolist() == tok.encoding.encode_ordinary(s)
    assert (ids < tok.eot_id).all()          # ordinary text never yields a special id


@given(st.text(alphabet=NO_SURROGATES))
def test_pretokeniser_agrees_with_tiktoken_split(tok, s):
    # Training splits with the `regex` package, tiktoken with fancy-regex: encoding each regex piece
    # alone must give the same ids as encoding the whole string.
    pieces = regex.findall(GPT2_PATTERN, s)
    assert "".join(pieces) == s
    assert sum((tok.encode(p).tolist() for p in pieces), []) == tok.encode(s).tolist()


@given(st.text(alphabet=NO_SURROGATES, max_size=20), st.text(alphabet=NO_SURROGATES, max_size=20))
def test_literal_endoftext_is_ordinary_text(tok, a, b):
    s = a + EOT + b + EOT
    ids = tok.encode(s)
    assert tok.eot_id not in ids.tolist()
    assert tok.decode(ids) == s
    special = tok.encode(s, allow_special=True)
    assert special.tolist().count(tok.eot_id) == s.count(EOT)
    assert tok.decode(special) == s


def test_training_text_is_compressed(tok):
    ids = tok.encode(TRAIN_TEXT)
    n_bytes = len(TRAIN_TEXT.encode())
    assert len(ids) < 0.5 * n_bytes, (len(ids), n_bytes)
    assert tok.n_vocab == 380 and tok.eot_id == 379
    assert tok.special_tokens == {EOT: 379}


def test_vocab_size_below_bytes_plus_specials_is_input_error():
    with pytest.raises(InputError, match="257"):
        train_bpe("hello", 256)
    with pytest.raises(InputError, match="258"):
        train_bpe("hello", 257, special_tokens=(EOT, "<|pad|>"))
    t = train_bpe("hello", 257)              # exactly bytes + one special: no merges
    assert t.n_vocab == 257 and t.decode(t.encode("hello")) == "hello"
    with pytest.raises(InputError):
        train_bpe("hello", 300, special_tokens=())


def test_small_text_runs_out_of_pairs():
    t = train_bpe("ab", 1000)
    assert t.n_vocab == 256 + 1 + 1            # one merge ("ab") + eot
    assert t.encode("ab").tolist() == [256]


def test_determinism_and_sensitivity():
    a, b = train_bpe(TRAIN_TEXT, 350), train_bpe(TRAIN_TEXT, 350)
    assert a.sha256 == b.sha256
    assert train_bpe(TRAIN_TEXT, 351).sha256 != a.sha256
    assert train_bpe(TRAIN_TEXT, 350, special_tokens=("<|eot|>",)).sha256 != a.sha256


def test_documents_of_two_corpora_train_one_tokenizer():
    a = ["The quick brown fox jumps.", "A lazy dog sleeps."] * 20
    b = ["def add(a, b):\n    return a + b\n", "x = [i * i for i in range(9)]"] * 20
    ab = train_bpe(a + b, 320)
    assert train_bpe(b + a, 320).sha256 == ab.sha256                        # order of documents is irrelevant
    assert train_bpe(iter(a + b), 320).sha256 == ab.sha256                  # any iterable of documents
    assert train_bpe(tuple(a) + tuple(b), 320).sha256 == ab.sha256
    assert train_bpe(a, 320).sha256 != ab.sha256
    assert len(ab.encode("def add(a, b):")) < len(train_bpe(a, 320).encode("def add(a, b):"))
    for bad in (42, None, ["ok", 3]):
        with pytest.raises(InputError, match="expected"):
            train_bpe(bad, 320)


def test_decode_rejects_bad_ids(tok):
    with pytest.raises(InputError, match="out of range"):
        tok.decode([1, tok.n_vocab])
    with pytest.raises(InputError, match="out of range"):
        tok.decode(np.array([-1], dtype=np.int64))
    with pytest.raises(InputError):
        tok.decode(np.array([1.0, 2.0]))
    assert tok.decode([]) == ""
    assert tok.decode([tok.eot_id]) == EOT


def test_encode_rejects_unpaired_surrogate(tok):
    with pytest.raises(InputError, match="surrogate"):
        tok.encode("ab\ud800c")
    with pytest.raises(InputError):
        tok.encode(b"bytes")
    with pytest.raises(InputError, match="surrogate"):
        train_bpe(["fine", "bad \udc80"], 300)
    with pytest.raises(InputError, match="expected str"):
        train_bpe(["fine", 3], 300)


def test_save_load_roundtrip(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    tok.save(tmp_path / "t")
    back = Tokenizer.load(tmp_path / "t")
    assert back.sha256 == tok.sha256 and back.n_vocab == tok.n_vocab and back.eot_id == tok.eot_id
    for s in (TRAIN_TEXT, "unseen text ✓", EOT):
        assert back.encode(s).tolist() == tok.encode(s).tolist()
    ranks = tiktoken.load.load_tiktoken_bpe(str(tmp_path / "t" / RANKS_FILE))
    assert ranks == {tok.encoding.decode_single_token_bytes(i): i for i in range(tok.eot_id)}
    meta = json.loads((tmp_path / "t" / META_FILE).read_text())
    assert meta["special_tokens"] == {EOT: tok.eot_id} and meta["sha256"] == tok.sha256
    assert meta["pattern"] == GPT2_PATTERN and meta["n_vocab"] == tok.n_vocab


def test_overwritten_folder_is_not_served_from_tiktoken_cache(tmp_path, monkeypatch):
    # tiktoken caches files by path; a second tokenizer saved to the same folder must load as itself.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    a, b = train_bpe(TRAIN_TEXT, 300), train_bpe(TRAIN_TEXT, 320)
    a.save(tmp_path / "t")
    assert Tokenizer.load(tmp_path / "t").sha256 == a.sha256
    b.save(tmp_path / "t")
    assert Tokenizer.load(tmp_path / "t").sha256 == b.sha256


def test_tampered_missing_or_corrupt_files_are_input_errors(tok, tmp_path):
    folder = tok.save(tmp_path / "t")
    ranks_path, meta_path = folder / RANKS_FILE, folder / META_FILE
    good = ranks_path.read_bytes()
    lines = good.splitlines()
    lines[300], lines[301] = lines[301].split()[0] + b" 300", lines[300].split()[0] + b" 301"   # swap two ranks
    ranks_path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(InputError, match="sha256"):
        Tokenizer.load(folder)
    ranks_path.write_bytes(good[:-20])                          # truncated
    with pytest.raises(InputError):
        Tokenizer.load(folder)
    ranks_path.write_bytes(good)
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "special_tokens": {EOT: "x"}}))
    with pytest.raises(InputError, match="malformed"):
        Tokenizer.load(folder)
    meta_path.write_text(json.dumps({**meta, "pattern": r"\S+|\s+"}))       # another tokenizer's metadata
    with pytest.raises(InputError, match="sha256"):
        Tokenizer.load(folder)
    meta_path.write_text("{not json")
    with pytest.raises(InputError, match="metadata"):
        Tokenizer.load(folder)
    meta_path.unlink()
    with pytest.raises(InputError, match="not found"):
        Tokenizer.load(folder)
    with pytest.raises(InputError, match="not found"):
        Tokenizer.load(tmp_path / "nowhere")


@pytest.mark.slow
def test_train_one_megabyte_to_2048_in_seconds():
    from alh_ref.corpora import load_corpus
    text = "".join(d for n in ("pydoc", "docstrings", "pycode") for d in load_corpus(n).documents)[:1_000_000]
    t0 = time.perf_counter()
    t = train_bpe(text, 2048)
    assert time.perf_counter() - t0 < 30.0
    assert t.n_vocab == 2048 and t.decode(t.encode(text)) == text
