"""Tests of alh_ref.corpora: built-ins, fingerprints, content-hash splits, synthetic entropy, user files."""
import ast

import numpy as np
import pytest

from alh_ref.corpora import (BUILTIN_CORPORA, MIN_REST_CHARS, Corpus, cut_documents, encode_documents,
                             fingerprint_documents, load_corpus, markov_entropy_rate, module_units, pydoc_sections,
                             require_split_sizes, sample_chain, split_documents, split_sizes, strip_docstrings,
                             synthetic_chains, synthetic_words)
from alh_ref.errors import InputError
from alh_ref.tokenizer import EOT, train_bpe


@pytest.mark.parametrize("name", BUILTIN_CORPORA)
def test_builtin_loads_nonempty_and_deterministic(name):
    a, b = load_corpus(name), load_corpus(name)
    assert len(a.documents) > 0 and all(isinstance(d, str) and d.strip() for d in a.documents)
    assert sum(map(len, a.documents)) > 100_000
    assert a.fingerprint == b.fingerprint == fingerprint_documents(b.documents)
    assert a.name == name


def test_builtin_contents():
    from pydoc_data.topics import topics
    pydoc = load_corpus("pydoc").documents
    assert pydoc == list(dict.fromkeys(p for k in sorted(topics) for p in pydoc_sections(topics[k])))
    assert len(set(pydoc)) == len(pydoc) > len(topics)
    for k in sorted(topics):                               # cutting keeps every non-blank character, in order
        assert "".join(topics[k].split()) == "".join("".join(p.split()) for p in pydoc_sections(topics[k]))
    docs = load_corpus("docstrings").documents
    assert len(set(docs)) == len(docs)
    import heapq, inspect, textwrap
    assert inspect.cleandoc(heapq.heappush.__doc__) in docs          # C accelerator (_heapq) counted
    assert inspect.cleandoc(textwrap.dedent.__doc__) in docs
    assert docs[0] == inspect.cleandoc(__import__("argparse").__doc__)   # sorted by qualified name
    code = load_corpus("pycode").documents
    for src in code:
        tree = ast.parse(src)                           # still valid Python
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
                first = node.body[0]
                assert not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                            and isinstance(first.value.value, str))
    assert len(set(code)) == len(code)
    assert "def nlargest(" in "".join(code) and any(d.startswith("class ArgumentParser(") for d in code)


def test_pydoc_sections_cut_before_full_width_equals_underline():
    topic = ("Title\n*****\n\nintro\n\nFirst section\n=============\n\nbody = 1\n==\n\n"
             "Second\n======\ntext\n  \n")
    assert pydoc_sections(topic) == ["Title\n*****\n\nintro", "First section\n=============\n\nbody = 1\n==",
                                     "Second\n======\ntext"]
    assert pydoc_sections("no heading\n") == ["no heading"]


def test_module_units_cut_at_top_level_defs():
    src = ('import os\nX = 1\n@staticmethod\ndef f(x):\n    """doc"""\n    return x\n'
           'class A:\n    def m(self):\n        pass\nasync def g():\n    pass\nY = 2  # comment\n')
    assert module_units(src, min_rest_chars=0) == ["import os\nX = 1\nY = 2\n", "@staticmethod\ndef f(x):\n    return x\n",
                                                   "class A:\n\n    def m(self):\n        pass\n", "async def g():\n    pass\n"]
    assert module_units(src)[0].startswith("@staticmethod")                 # 20 chars of module code < MIN_REST_CHARS
    assert module_units("Z = 0\n" * MIN_REST_CHARS)[0].startswith("Z = 0")


@pytest.mark.parametrize("name", ["pydoc", "pycode", "docstrings"])
def test_stdlib_splits_hold_enough_documents(name):
    sp = split_documents(load_corpus(name), (0.8, 0.1, 0.1))             # the study's fractions
    assert min(len(s.documents) for s in sp.values()) >= 10
    assert require_split_sizes(sp, 10, what="domain B") is sp
    sizes = split_sizes(sp)
    assert sum(v["docs"] for v in sizes.values()) == len(load_corpus(name).documents)
    assert sizes["val"] == {"docs": len(sp["val"].documents), "chars": sum(map(len, sp["val"].documents))}


def test_require_split_sizes_refuses_small_split():
    c = Corpus("tiny", [f"document {i}" for i in range(12)])
    sp = split_documents(c, (0.8, 0.1, 0.1))
    n = len(sp["val"].documents)
    assert n < 10
    with pytest.raises(InputError, match=rf"^domain B: the val split of corpus 'tiny' holds {n} document\(s\).*"
                                         r"expected at least 10"):
        require_split_sizes({"val": sp["val"]}, 10, what="domain B")
    require_split_sizes({"val": sp["val"]}, n, what="domain B")             # exactly the minimum passes


def test_docstrings_do_not_repeat_pydoc_or_pycode_documents():
    docs = set(load_corpus("docstrings").documents)
    for other in ("pydoc", "pycode"):
        assert docs.isdisjoint(load_corpus(other).documents), other


def test_strip_docstrings_keeps_code():
    src = 'def f(x):\n    """doc"""\n    # comment\n    return x + 1\nclass A:\n    "only a docstring"\n'
    out = strip_docstrings(src)
    assert "doc" not in out and "comment" not in out
    ns = {}
    exec(out, ns)
    assert ns["f"](1) == 2 and ns["A"].__doc__ is None


def test_fingerprint_counts_boundaries_and_order():
    assert fingerprint_documents(["ab", "c"]) != fingerprint_documents(["a", "bc"])
    assert fingerprint_documents(["a", "b"]) != fingerprint_documents(["b", "a"])
    assert fingerprint_documents(["a"]) != fingerprint_documents(["a", ""])
    assert Corpus("x", ["ab", "c"]).fingerprint == fingerprint_documents(["ab", "c"])


def test_splits_disjoint_cover_and_fingerprinted():
    c = load_corpus("docstrings")
    sp = split_documents(c)
    assert set(sp) == {"train", "val", "test"}
    idx = [i for s in sp.values() for i in s.meta["indices"]]
    assert sorted(idx) == list(range(len(c.documents)))          # cover, and disjoint by index
    assert set(sp["train"].documents).isdisjoint(sp["val"].documents)
    assert set(sp["train"].documents).isdisjoint(sp["test"].documents)
    assert set(sp["val"].documents).isdisjoint(sp["test"].documents)
    for name, s in sp.items():
        assert s.documents == [c.documents[i] for i in s.meta["indices"]]
        assert s.fingerprint == fingerprint_documents(s.documents)
        assert s.meta["parent_fingerprint"] == c.fingerprint and s.meta["split"] == name
    n = len(c.documents)
    assert 0.85 * n < len(sp["train"].documents) < 0.95 * n
    assert len({s.fingerprint for s in sp.values()}) == 3


def test_splits_stable_when_documents_added():
    c = load_corpus("docstrings")
    before = {d: s for s, part in split_documents(c).items() for d in part.documents}
    grown = Corpus("grown", ["a brand new document"] + c.documents + [f"extra {i}" for i in range(50)])
    after = {d: s for s, part in split_documents(grown).items() for d in part.documents}
    assert all(after[d] == s for d, s in before.items())
    other = split_documents(c, (0.5, 0.25, 0.25))
    assert len(other["val"].documents) > len(split_documents(c)["val"].documents)


def test_split_rejects_bad_fractions():
    c = Corpus("x", ["a", "b"])
    for bad in [(0.5, 0.5), (0.9, 0.2, -0.1), (0.5, 0.3, 0.3), "abc", ["a", "b", "c"], (float("nan"), 0.5, 0.5)]:
        with pytest.raises(InputError):
            split_documents(c, bad)


def test_synthetic_split_keeps_domains_aligned():
    c = load_corpus("synthetic", n_docs=60, doc_len=20)
    for s in split_documents(c).values():
        assert s.meta["domains"] == [c.meta["domains"][i] for i in s.meta["indices"]]


def test_two_state_entropy_rate_by_hand():
    a, b = 0.2, 0.6
    P = np.array([[1 - a, a], [b, 1 - b]])
    H, pi = markov_entropy_rate(P)

    def h(p):
        return -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert np.allclose(pi, [b / (a + b), a / (a + b)])
    assert H == pytest.approx(pi[0] * h(a) + pi[1] * h(b), rel=1e-12)
    with pytest.raises(InputError):
        markov_entropy_rate(np.eye(2))                 # reducible: two stationary distributions
    with pytest.raises(InputError):
        markov_entropy_rate(np.array([[0.5, 0.6], [0.5, 0.5]]))


def test_synthetic_entropy_rate_matches_monte_carlo():
    opts = dict(K=2, n_docs=40, doc_len=2500, n_symbols=48, n_successors=5, alpha=0.7, seed=3)
    c = load_corpus("synthetic", **opts)
    P = synthetic_chains(2, 48, 5, 0.7, 3)                                   # (K,V,V)
    index = {w: i for i, w in enumerate(synthetic_words(48))}
    for k in range(2):
        nll, visits = [], np.zeros(48)
        for doc, dom in zip(c.documents, c.meta["domains"]):
            if dom != k:
                continue
            x = np.array([index[w] for w in doc.split(" ")])                  # (doc_len,)
            assert len(x) == opts["doc_len"]
            nll.append(-np.log(P[k, x[:-1], x[1:]]))                          # (doc_len-1,)
            np.add.at(visits, x, 1)
        H, pi = markov_entropy_rate(P[k])
        assert c.meta["entropy_rate_nats"][k] == pytest.approx(H)
        assert np.concatenate(nll).mean() == pytest.approx(H, abs=0.015)     # observed |err| <= 0.005 over 8 seeds
        assert np.abs(visits / visits.sum() - pi).sum() < 0.06
    assert c.meta["entropy_rate_nats"][0] != c.meta["entropy_rate_nats"][1]


def test_sample_chain_long_run_matches_entropy_rate():
    P = synthetic_chains(1, 32, 3, 1.0, 11)[0]                                # (V,V)
    H, pi = markov_entropy_rate(P)
    x = sample_chain(P, 100_000, np.random.default_rng(0), pi)                # (n,)
    assert (P[x[:-1], x[1:]] > 0).all()
    assert -np.log(P[x[:-1], x[1:]]).mean() == pytest.approx(H, abs=0.02)


def test_synthetic_options_and_determinism():
    a = load_corpus("synthetic", n_docs=10, doc_len=30, seed=1)
    assert a.fingerprint == load_corpus("synthetic", n_docs=10, doc_len=30, seed=1).fingerprint
    assert a.fingerprint != load_corpus("synthetic", n_docs=10, doc_len=30, seed=2).fingerprint
    more = load_corpus("synthetic", n_docs=12, doc_len=30, seed=1)
    assert more.documents[:10] == a.documents                                 # doc d depends on d only
    assert a.meta["domains"] == [d % 2 for d in range(10)]
    assert all(len(d) == 30 * 5 - 1 for d in a.documents)
    for bad in [dict(K=0), dict(n_symbols=1), dict(n_successors=100), dict(alpha=0.0), dict(bogus=1)]:
        with pytest.raises(InputError):
            load_corpus("synthetic", **bad)
    with pytest.raises(InputError, match="no options"):
        load_corpus("pydoc", K=3)


def test_user_file_folder_and_errors(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"first doc\nline two\n\n\nsecond doc\r\n\r\n\r\n\r\nthird\n\n\n   \n")
    c = load_corpus(str(f))
    assert c.documents == ["first doc\nline two", "second doc", "third"]
    assert c.meta["document_rule"] == "blank-lines" and c.meta["chunk_chars"] is None
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "b.md").write_text("markdown doc\n")
    (tmp_path / "ignored.bin").write_bytes(b"\xff\xfe")
    folder = load_corpus(tmp_path)
    assert folder.documents == c.documents + ["markdown doc"]
    assert folder.meta["files"] == ["a.txt", "sub/b.md"]

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello\xffworld")
    with pytest.raises(InputError, match=r"bad\.txt.*byte offset 5.*use --errors replace") as e:
        load_corpus(str(bad))
    assert "\n" not in str(e.value) and "errors='replace'" not in str(e.value)
    with pytest.raises(InputError, match="byte offset 5"):
        load_corpus(tmp_path)
    assert load_corpus(str(bad), errors="replace").documents == ["hello\ufffdworld"]
    with pytest.raises(InputError):
        load_corpus(str(bad), errors="ignore")

    with pytest.raises(InputError, match="neither a built-in"):
        load_corpus(str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(InputError, match="no text"):
        load_corpus(str(empty))
    empty.write_text("  \n\n\t\n")
    with pytest.raises(InputError, match="no text"):
        load_corpus(str(empty))
    (tmp_path / "none").mkdir()
    with pytest.raises(InputError, match="no .txt or .md"):
        load_corpus(str(tmp_path / "none"))


def test_encode_documents_appends_eot():
    docs = ["hello world", "", f"literal {EOT} inside"]
    tok = train_bpe(docs * 5, 300)
    ids = encode_documents(tok, docs)
    assert ids.dtype == np.int32
    cuts = np.flatnonzero(ids == tok.eot_id)
    assert len(cuts) == 3 and cuts[-1] == len(ids) - 1
    pieces = np.split(ids, cuts + 1)[:-1]
    assert [tok.decode(p[:-1]) for p in pieces] == docs
    assert encode_documents(tok, []).shape == (0,)


def _words(rng, n):
    syl = ["ka", "lo", "mi", "ne", "to", "ru", "sa", "vi", "de", "po"]
    return " ".join("".join(rng.choice(syl, size=rng.integers(1, 4))) for _ in range(n))


def _wrapped(text, width=70):
    import textwrap
    return "\n".join(textwrap.wrap(text, width))


def test_play_and_novel_give_usable_splits(tmp_path):
    rng = np.random.default_rng(0)
    acts = []                                   # a play: 3 acts (two blank lines apart), speeches one blank line apart
    while sum(map(len, acts)) < 3 * 340_000:
        speeches = []
        while sum(map(len, speeches)) < 340_000:
            speeches.append(f"{rng.choice(['HAMLET', 'OPHELIA', 'KING'])}.\n" + _wrapped(_words(rng, rng.integers(5, 60))))
        acts.append("\n\n".join(speeches))
    play = tmp_path / "play.txt"
    play.write_text("\n\n\n".join(acts))
    novel = tmp_path / "novel.txt"                # a novel: wrapped lines, no blank line at all
    novel.write_text(_wrapped(_words(rng, 30_000)) + "\n")
    assert play.stat().st_size > 1_000_000 and 140_000 < novel.stat().st_size < 160_000
    for path, rule in ((play, "paragraphs"), (novel, "lines")):
        c = load_corpus(str(path))
        assert c.meta["document_rule"] == rule
        assert len(c.documents) >= 100
        short = [len(d) for d in c.documents[:-1] if len(d) < c.meta["chunk_chars"] - 3]   # the trimmed separator aside,
        assert not short                                                                  # only a text's last chunk is short
        assert "".join("".join(d.split()) for d in c.documents) == "".join(path.read_text().split())   # nothing lost
        for fractions in ((0.9, 0.05, 0.05), (0.8, 0.1, 0.1)):
            sizes = split_sizes(split_documents(c, fractions))
            assert min(sizes["val"]["docs"], sizes["test"]["docs"]) >= 3, (path.name, fractions, sizes)
    blank = load_corpus(str(play), errors="strict")
    assert blank.documents[0].startswith(("HAMLET.", "OPHELIA.", "KING."))


def test_cut_documents_rules_by_hand():
    docs, meta = cut_documents(["a\n\n\nb\n \n\t\nc"])               # whitespace-only lines are blank
    assert docs == ["a", "b", "c"] and meta == {"document_rule": "blank-lines", "chunk_chars": None}
    para = "\n\n".join(f"paragraph {i:03d} " + "x" * 480 for i in range(400))     # 400 x ~495 chars, one blank line apart
    docs, meta = cut_documents([para])
    assert meta["document_rule"] == "paragraphs" and meta["chunk_chars"] == 1000    # 198k chars // 200 -> clipped to 1000
    assert docs[0] == "\n\n".join(para.split("\n\n")[:3])                        # 3 paragraphs reach 1000 chars
    one_line = " ".join(["word"] * 60_000)                                          # no line end at all
    docs, meta = cut_documents([one_line])
    assert meta["document_rule"] == "lines" and len(docs) >= 100 and all(d.startswith("word") for d in docs)
    docs, meta = cut_documents(["short text\nin two lines"])                        # no rule reaches MIN_DOCS: most docs, earliest
    assert docs == ["short text\nin two lines"] and meta["document_rule"] == "blank-lines"
    assert cut_documents([para], rule="lines")[1]["document_rule"] == "lines"
    with pytest.raises(InputError, match="unknown"):
        cut_documents([para], rule="words")


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"])
def test_byte_order_mark_selects_encoding(tmp_path, codec):
    text = "caf\u00e9 \u2603 \U0001f600\r\nline two\n\n\nsecond"
    bom = {"utf-16-le": "\ufeff", "utf-16-be": "\ufeff"}.get(codec, "")             # explicit-endian codecs write no BOM
    f = tmp_path / "u.txt"
    f.write_bytes((bom + text).encode(codec))
    assert f.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff", b"\xef\xbb")
    assert load_corpus(str(f)).documents == ["caf\u00e9 \u2603 \U0001f600\nline two", "second"]


def test_binary_files_refused(tmp_path):
    nul = tmp_path / "zeros.txt"
    nul.write_bytes(bytes(200_000))
    with pytest.raises(InputError, match=r"^'.*zeros\.txt' looks like binary data \(it holds NUL bytes\)[^\n]*$"):
        load_corpus(str(nul))
    noise = tmp_path / "noise.txt"
    noise.write_bytes(np.random.default_rng(0).integers(1, 256, 50_000, dtype=np.uint8).tobytes().replace(b"\x00", b""))
    for errors in ("strict", "replace"):
        with pytest.raises(InputError, match="looks like binary data .* control codes or undecodable"):
            load_corpus(str(noise), errors=errors)
    latin = tmp_path / "latin1.txt"                 # a few undecodable bytes in text: not binary, just not UTF-8
    latin.write_bytes("d\u00e9j\u00e0 vu, na\u00efve caf\u00e9\n".encode("latin-1") * 100)
    with pytest.raises(InputError, match="not valid UTF-8 at byte offset 1"):
        load_corpus(str(latin))
    assert load_corpus(str(latin), errors="replace").documents[0].startswith("d\ufffdj\ufffd vu")


def test_builtin_name_clashing_with_local_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pydoc").mkdir()
    (tmp_path / "pydoc" / "mine.txt").write_text("my own text\n")
    with pytest.raises(InputError, match=r"'pydoc' is ambiguous: .*local folder .*write \./pydoc .*without a 'pydoc' entry"):
        load_corpus("pydoc")
    assert load_corpus("./pydoc").documents == ["my own text"]
    (tmp_path / "synthetic").write_text("a file\n")
    with pytest.raises(InputError, match="local file"):
        load_corpus("synthetic", n_docs=4)
    monkeypatch.chdir(tmp_path / "pydoc")
    assert load_corpus("pydoc").meta["kind"] == "pydoc"               # no clash from another folder
