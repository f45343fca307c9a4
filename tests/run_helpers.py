"""Helpers and fixtures shared by tests/test_cli.py, tests/test_runs.py and tests/test_faults.py.

Runs go through ``alh_ref.cli.main([...])`` in-process on tiny models and small text files in tmp
folders; ``same_run`` is the bit-for-bit comparison of two runs' final states and histories.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from alh_ref import runs
from alh_ref.checkpoint import RESERVED_KEYS, load_checkpoint, save_checkpoint
from alh_ref.cli import main

DIMS = ["--block-size", "16", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--batch-size", "4"]
ALH = ["--D", "8", "--hyper-heads", "2", "--K", "2", "--R", "2"]
WORDS_A = "the cat sat on a mat and dog ran far from home while birds sang".split()
WORDS_B = "def return import class self value none true for while if else".split()


def write_docs(path, words, n_docs, seed):
    """A text file of n_docs documents (separated by two blank lines) of random words."""
    rng = np.random.default_rng(seed)
    docs = [" ".join(rng.choice(words, 50)) + "." for _ in range(n_docs)]
    path.write_text("\n\n\n".join(docs), encoding="utf-8")
    return str(path)


def run(capsys, *argv):
    """main(argv) in-process; returns (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err, code, want, expected_code):
    """The CLI failed with ``expected_code`` and one stderr line 'error: ...' containing ``want``
    (besides any 'warning: ' lines printed while the job ran)."""
    assert code == expected_code, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("warning: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and want in lines[0], lines[0]


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def final_state(rd):
    """Tensors and manifest of a run's newest checkpoint, and its loss history."""
    ckpt, _ = runs.resolve_checkpoint(rd)
    tensors, meta = load_checkpoint(ckpt)
    hist = [json.loads(line) for line in (Path(rd) / runs.HISTORY_FILE).read_text().splitlines()]
    return tensors, meta, hist


def same_run(a, b):
    """Two runs ended in bit-identical states with identical loss / grad-norm / lr histories."""
    ta, ma, ha = final_state(a)
    tb, mb, hb = final_state(b)
    assert ma["step"] == mb["step"] and ma["rng"] == mb["rng"]
    assert sorted(ta) == sorted(tb)
    # exact (the resume contract): the resumed run replays the same kernels on the same inputs in the same
    # order, and each step allocates the same fresh buffers whatever ran before, so every sum keeps its order
    for name in ta:
        assert np.array_equal(ta[name], tb[name]), name
    key = lambda h: [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in h]  # noqa: E731
    assert key(ha) == key(hb) and len(ha) == ma["step"]


def truncate(ckpt):
    p = ckpt / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-100])


def resave(change):
    """Re-save a checkpoint with one tensor changed (a consistent file that the model cannot use)."""
    def edit(ckpt):
        tensors, meta = load_checkpoint(ckpt)
        change(tensors)
        save_checkpoint(ckpt, tensors, {k: v for k, v in meta.items() if k not in RESERVED_KEYS})
    return edit


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Run every test from a scratch folder, so the default --out runs/ never lands in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    d = tmp_path_factory.mktemp("texts")
    return {"a": write_docs(d / "a.txt", WORDS_A, 60, 0), "b": write_docs(d / "b.txt", WORDS_B, 60, 1)}


@pytest.fixture(scope="module")
def base(tmp_path_factory, texts):
    """Root folder holding a pretrained base run 'base' (6 steps)."""
    out = tmp_path_factory.mktemp("runs")
    code = main(["pretrain", "--corpus", texts["a"], "--vocab-size", "300", *DIMS, "--steps", "6",
                 "--ckpt-every", "3", "--out", str(out), "--name", "base"])
    assert code == 0
    return out
