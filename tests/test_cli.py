"""Tests for the alh-ref command line (alh_ref.cli) and the run library behind it (alh_ref.runs).

Everything runs in-process through ``main([...])`` on tiny models and small text files in tmp
folders; one subprocess checks the ``python -m alh_ref`` entry point.
"""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as stnp

import alh_ref.train
from alh_ref import runs
from alh_ref.checkpoint import load_checkpoint, save_checkpoint, RESERVED_KEYS
from alh_ref.cli import COMMANDS, main
from alh_ref.corpora import load_corpus, split_documents
from alh_ref.errors import InputError

DIMS = ["--block-size", "16", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--batch-size", "4"]
ALH = ["--D", "8", "--hyper-heads", "2", "--K", "2", "--R", "2"]


def _write_docs(path, words, n_docs, seed):
    """A text file of n_docs documents (separated by two blank lines) of random words."""
    rng = np.random.default_rng(seed)
    docs = [" ".join(rng.choice(words, 50)) + "." for _ in range(n_docs)]
    path.write_text("\n\n\n".join(docs), encoding="utf-8")
    return str(path)


def _run(capsys, *argv):
    """main(argv) in-process; returns (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err, code, want, expected_code):
    """The CLI failed with ``expected_code`` and exactly one stderr line 'error: ...' containing ``want``."""
    assert code == expected_code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and want in lines[0], lines[0]


def _last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def _final_state(run):
    """Tensors and manifest of a run's newest checkpoint, and its loss history."""
    ckpt, _ = runs.resolve_checkpoint(run)
    tensors, meta = load_checkpoint(ckpt)
    hist = [json.loads(line) for line in (Path(run) / runs.HISTORY_FILE).read_text().splitlines()]
    return tensors, meta, hist


def _same_run(a, b):
    """Two runs ended in bit-identical states with identical loss / grad-norm / lr histories."""
    ta, ma, ha = _final_state(a)
    tb, mb, hb = _final_state(b)
    assert ma["step"] == mb["step"] and ma["rng"] == mb["rng"]
    assert sorted(ta) == sorted(tb)
    # exact (the resume contract): the resumed run replays the same kernels on the same inputs in the same
    # order, and each step allocates the same fresh buffers whatever ran before, so every sum keeps its order
    for name in ta:
        assert np.array_equal(ta[name], tb[name]), name
    key = lambda h: [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in h]  # noqa: E731
    assert key(ha) == key(hb) and len(ha) == ma["step"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Run every test from a scratch folder, so the default --out runs/ never lands in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    d = tmp_path_factory.mktemp("texts")
    return {"a": _write_docs(d / "a.txt", "the cat sat on a mat and dog ran far from home while birds sang".split(), 60, 0),
            "b": _write_docs(d / "b.txt", "def return import class self value none true for while if else".split(), 60, 1)}


@pytest.fixture(scope="module")
def base(tmp_path_factory, texts):
    """Root folder holding a pretrained base run 'base' (6 steps)."""
    out = tmp_path_factory.mktemp("runs")
    code = main(["pretrain", "--corpus", texts["a"], "--vocab-size", "300", *DIMS, "--steps", "6",
                 "--ckpt-every", "3", "--out", str(out), "--name", "base"])
    assert code == 0
    return out


# ----------------------------------------------------------------------------------------------
# Entry point, help, usage errors

def test_python_m_entry_point_help():
    proc = subprocess.run([sys.executable, "-m", "alh_ref", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert all(cmd in proc.stdout for cmd in COMMANDS)


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_help_on_each_subcommand(capsys, cmd):
    code, out, _ = _run(capsys, cmd, "--help")
    assert code == 0 and out.startswith(f"usage: alh-ref {cmd}")


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["pretrain", "--steps", "0"], ["pretrain", "--lr", "nan"],
                                  ["sample", "--prompt", "x"], ["golden"], ["eval", "--run", "r", "--bogus"]])
def test_usage_errors_exit_2(capsys, argv):
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "Traceback" not in err and "usage: alh-ref" in err


# ----------------------------------------------------------------------------------------------
# The happy path

def test_pretrain_adapt_eval_sample_end_to_end(capsys, base, texts):
    rd = base / "base"
    for f in ("tokenizer/tokenizer.tiktoken", "tokenizer/tokenizer.json", "history.jsonl", "summary.json"):
        assert (rd / f).is_file(), f
    tensors, meta, hist = _final_state(rd)
    assert meta["step"] == 6 and meta["kind"] == "base" and len(hist) == 6
    assert meta["gpt_config"] == {"vocab_size": 300, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 32, "tied": True}
    assert meta["tokenizer_sha256"] == runs.find_tokenizer(rd).sha256 and len(meta["corpus_fingerprint"]) == 64
    assert {"m.wte", "v.wte"} <= {k[4:] for k in tensors if k.startswith("opt.")} and meta["opt_t"] == 6
    assert meta["adamw_config"]["total_steps"] == 6 and meta["rng"]["bit_generator"] == "PCG64"

    code, out, err = _run(capsys, "adapt", "--base", "base", "--method", "alh-householder", "--corpus", texts["b"],
                          *ALH, "--batch-size", "4", "--steps", "4", "--ckpt-every", "2", "--out", base, "--json")
    assert code == 0, err
    s = _last_json(out)
    assert s["ok"] and s["status"] == "done" and s["step"] == 4 and s["method"] == "alh-householder"
    at, am, _ = _final_state(base / "adapt-alh-householder")
    assert "wte" not in at and any(k.startswith("alh.head.") for k in at)          # adapter tensors only
    assert am["base"]["safetensors_sha256"] == meta["safetensors_sha256"] and am["alh_config"]["K"] == 2

    evals = {}
    for run in ("base", "adapt-alh-householder"):
        code, out, err = _run(capsys, "eval", "--run", run, "--corpus", texts["b"], "--out", base, "--json")
        assert code == 0, err
        evals[run] = _last_json(out)
        assert evals[run]["split"] == "val" and evals[run]["n_tokens"] > 0
        assert math.isclose(evals[run]["perplexity"], math.exp(evals[run]["loss"]))
    assert evals["base"]["corpus_fingerprint"] == evals["adapt-alh-householder"]["corpus_fingerprint"]
    assert evals["base"]["loss"] != evals["adapt-alh-householder"]["loss"]
    assert (base / "adapt-alh-householder" / "eval").is_dir()

    samples = []
    for seed in (3, 3, 4):
        code, out, err = _run(capsys, "sample", "--run", base / "adapt-alh-householder", "--prompt", "def ",
                              "--max-new-tokens", "12", "--top-k", "20", "--seed", seed, "--out", base, "--json")
        assert code == 0, err
        samples.append(_last_json(out))
    assert samples[0]["new_ids"] == samples[1]["new_ids"] and samples[0]["text"].startswith("def ")
    assert samples[0]["new_ids"] != samples[2]["new_ids"]
    tok = runs.find_tokenizer(base / "base")
    assert samples[0]["completion"] == tok.decode(np.array(samples[0]["new_ids"], dtype=np.int64))


def test_tokenizer_subcommand_then_pretrain_reuses_it(capsys, tmp_path, texts):
    code, out, err = _run(capsys, "tokenizer", "--corpus", texts["a"], "--vocab-size", "280", "--out", tmp_path,
                          "--name", "r", "--json")
    assert code == 0, err
    sha = _last_json(out)["sha256"]
    code, out, err = _run(capsys, "pretrain", "--corpus", texts["a"], *DIMS, "--steps", "2", "--out", tmp_path,
                          "--name", "r", "--json")
    assert code == 0, err
    assert _last_json(out)["tokenizer_sha256"] == sha and _last_json(out)["gpt_config"]["vocab_size"] == 280


def test_golden_wiring(capsys, tmp_path):
    code, out, err = _run(capsys, "golden", "--check", tmp_path / "missing", "--json")
    assert code == 2 and "Traceback" not in err and not _last_json(out)["ok"]


def test_bench_runs_the_benchmark_script(capsys):
    code, out, err = _run(capsys, "bench", "--config", "tiny", "--steps", "1", "--warmup", "1", "--threads", "1", "--json")
    assert code == 0, err
    r = _last_json(out)["result"]
    assert r["config"] == "tiny" and r["steps"] == 1 and r["train_tok_s"] > 0


def test_bench_failure_is_one_line(capsys, monkeypatch):
    fake = subprocess.CompletedProcess([], 1, stdout="", stderr="Traceback (most recent call last):\n  ...\nValueError: bad\n")
    monkeypatch.setattr(runs.subprocess, "run", lambda *a, **k: fake)
    code, _, err = _run(capsys, "bench")
    assert code == 1 and err.strip() == "error: benchmarks/bench_train.py failed (exit 1): ValueError: bad"


# ----------------------------------------------------------------------------------------------
# Resume: bit-for-bit

def test_pretrain_resume_is_bit_for_bit(capsys, tmp_path, texts, monkeypatch):
    common = ["--corpus", texts["a"], "--vocab-size", "300", *DIMS, "--ckpt-every", "4", "--out", tmp_path]
    assert _run(capsys, "pretrain", *common, "--steps", "8", "--name", "full")[0] == 0
    # in two sessions: 4 steps (same schedule), then --resume to 8
    assert _run(capsys, "pretrain", *common, "--steps", "4", "--decay-steps", "8", "--name", "chunks")[0] == 0
    code, out, err = _run(capsys, "pretrain", "--resume", "--steps", "8", "--out", tmp_path, "--name", "chunks", "--json")
    assert code == 0, err
    assert _last_json(out)["resumed_from"] == 4 and _last_json(out)["steps_this_session"] == 4
    _same_run(tmp_path / "full", tmp_path / "chunks")

    # interrupted at step 7 (Ctrl-C): steps 5-6 are lost, resuming redoes them from the step-4 checkpoint
    real, calls = alh_ref.train.sample_batch, []

    def interrupt_at_7(*a, **k):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(alh_ref.train, "sample_batch", interrupt_at_7)
    code, _, err = _run(capsys, "pretrain", *common, "--steps", "8", "--name", "crash")
    monkeypatch.undo()
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert json.loads((tmp_path / "crash" / runs.SUMMARY_FILE).read_text())["status"] == "interrupted"
    assert [s for s, _ in runs.list_checkpoints(tmp_path / "crash")] == [4]
    assert _run(capsys, "pretrain", "--resume", "--out", tmp_path, "--name", "crash")[0] == 0
    _same_run(tmp_path / "full", tmp_path / "crash")


@pytest.mark.parametrize("method", ["alh-lowrank", "alh-shuffled"])
def test_adapt_resume_is_bit_for_bit(capsys, base, texts, method):
    common = ["--base", "base", "--method", method, "--corpus", texts["b"], *ALH, "--batch-size", "4",
              "--ckpt-every", "3", "--out", base]
    assert _run(capsys, "adapt", *common, "--steps", "6", "--name", f"{method}-full")[0] == 0
    assert _run(capsys, "adapt", *common, "--steps", "3", "--decay-steps", "6", "--name", f"{method}-chunks")[0] == 0
    code, _, err = _run(capsys, "adapt", "--resume", "--steps", "6", "--out", base, "--name", f"{method}-chunks")
    assert code == 0, err
    _same_run(base / f"{method}-full", base / f"{method}-chunks")


def test_adapted_run_follows_and_checks_its_base(capsys, tmp_path, texts):
    old, new = tmp_path / "old", tmp_path / "new"
    assert _run(capsys, "pretrain", "--corpus", texts["a"], "--vocab-size", "280", *DIMS, "--steps", "2",
                "--out", old, "--name", "b")[0] == 0
    assert _run(capsys, "adapt", "--base", "b", "--method", "alh-film", *ALH, "--corpus", texts["b"], "--steps", "2",
                "--decay-steps", "4", "--batch-size", "4", "--out", old, "--name", "ad")[0] == 0
    shutil.move(old, new)                                                  # the whole runs/ tree moves: relpath
    assert _run(capsys, "eval", "--run", "ad", "--corpus", texts["b"], "--out", new)[0] == 0
    shutil.move(new / "b", tmp_path / "elsewhere")
    code, _, err = _run(capsys, "eval", "--run", new / "ad", "--corpus", texts["b"])
    _one_line_error(err, code, "base checkpoint of this adapted run not found", 2)
    code, _, err = _run(capsys, "adapt", "--resume", "--steps", "4", "--base", tmp_path / "elsewhere", "--out", new,
                        "--name", "ad")
    assert code == 0, err                                                  # --base on resume: the moved base
    assert _run(capsys, "eval", "--run", new / "ad", "--corpus", texts["b"])[0] == 0
    ckpt = runs.list_checkpoints(tmp_path / "elsewhere")[-1][1]
    _resave(lambda t: t["wte"].__imul__(2))(ckpt)                          # same tokenizer, other weights
    code, _, err = _run(capsys, "eval", "--run", new / "ad", "--corpus", texts["b"])
    _one_line_error(err, code, "is not the one this run was adapted from", 2)


def test_resume_must_keep_the_run_identity(capsys, base, texts):
    code, _, err = _run(capsys, "pretrain", "--resume", "--seed", "5", "--out", base, "--name", "base")
    _one_line_error(err, code, "--seed 5 differs from this run's 0", 2)
    code, _, err = _run(capsys, "pretrain", "--resume", "--corpus", texts["b"], "--out", base, "--name", "base")
    _one_line_error(err, code, "corpus mismatch", 2)
    code, _, err = _run(capsys, "pretrain", "--corpus", texts["a"], "--out", base, "--name", "base")
    _one_line_error(err, code, "already has checkpoints; pass --resume", 2)


# ----------------------------------------------------------------------------------------------
# NaN / inf during training

def test_nan_stops_with_message_and_keeps_last_good_checkpoint(capsys, tmp_path, texts):
    code, out, err = _run(capsys, "pretrain", "--corpus", texts["a"], "--vocab-size", "300", *DIMS, "--steps", "40",
                          "--lr", "1e6", "--warmup-steps", "0", "--ckpt-every", "1", "--keep", "0",
                          "--out", tmp_path, "--name", "nan", "--json")
    _one_line_error(err, code, "became", 1)
    assert "the last good checkpoint is kept" in err and "--resume" in err
    s = json.loads((tmp_path / "nan" / runs.SUMMARY_FILE).read_text())
    assert s["status"] == "failed" and s["step"] < 40 and _last_json(out)["exit_code"] == 1
    steps = [st for st, _ in runs.list_checkpoints(tmp_path / "nan")]
    assert steps == list(range(1, steps[-1] + 1)) and steps[-1] < 40
    tensors, meta = load_checkpoint(runs.checkpoint_path(tmp_path / "nan", steps[-1]))
    assert str(runs.checkpoint_path(tmp_path / "nan", steps[-1])) in err
    assert all(np.isfinite(a).all() for a in tensors.values())
    assert (tmp_path / "nan" / runs.HISTORY_FILE).read_text().count("\n") >= steps[-1]


# ----------------------------------------------------------------------------------------------
# Bad input: exit 2, one line, no traceback

def _file(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def _empty_split(path):
    """A split (train/val/test) holding none of the documents of a one-document file."""
    parts = split_documents(load_corpus(str(path)))
    return next(name for name, part in parts.items() if not part.documents)


BAD_INPUT = {
    "empty corpus": (lambda t, b, x: ["pretrain", "--corpus", _file(t, "e.txt", ""), *DIMS], "has no text"),
    "whitespace corpus": (lambda t, b, x: ["tokenizer", "--corpus", _file(t, "w.txt", " \n\n  \n")], "has no text"),
    "corpus shorter than one context": (
        lambda t, b, x: ["pretrain", "--corpus", _file(t, "s.txt", "hi there"), "--split", "all", *DIMS],
        "shorter than one context"),
    "empty split": (lambda t, b, x: ["pretrain", "--corpus", _file(t, "one.txt", "one small document"), *DIMS,
                                     "--split", _empty_split(t / "one.txt")], "is empty"),
    "vocab below 256 + specials (tokenizer)": (
        lambda t, b, x: ["tokenizer", "--corpus", x["a"], "--vocab-size", "256"], "too small"),
    "vocab below 256 + specials (pretrain)": (
        lambda t, b, x: ["pretrain", "--corpus", x["a"], "--vocab-size", "100", *DIMS], "too small"),
    "missing corpus path": (lambda t, b, x: ["pretrain", "--corpus", str(t / "nope.txt")], "neither a built-in"),
    "missing run": (lambda t, b, x: ["eval", "--run", str(t / "nope")], "not found"),
    "missing run name": (lambda t, b, x: ["sample", "--run", "nope", "--out", str(b)], "not found"),
    "missing tokenizer": (lambda t, b, x: ["pretrain", "--corpus", x["a"], "--tokenizer", str(t / "nope")],
                          "does not exist"),
    "missing base": (lambda t, b, x: ["adapt", "--base", str(t / "nope"), "--method", "alh-film", "--corpus", x["b"]],
                     "not found"),
    "unwritable output folder": (lambda t, b, x: ["pretrain", "--corpus", x["a"],
                                                  "--out", str(Path(_file(t, "f", "x")) / "runs")],
                                 "cannot create output folder"),
    "output folder is a file": (lambda t, b, x: ["tokenizer", "--corpus", x["a"], "--out", _file(t, "g", "x")],
                                "is not a folder"),
    "bad run name": (lambda t, b, x: ["pretrain", "--corpus", x["a"], "--out", str(t), "--name", "../up"],
                     "not a plain folder name"),
    "unknown method": (lambda t, b, x: ["adapt", "--base", "base", "--method", "alh-magic", "--corpus", x["b"],
                                        "--out", str(b)], "unknown method"),
    "option of another method": (lambda t, b, x: ["adapt", "--base", "base", "--method", "lora-embed", "--K", "2",
                                                  "--corpus", x["b"], "--out", str(b)], "does not apply"),
    "odd K": (lambda t, b, x: ["adapt", "--base", "base", "--method", "alh-householder", "--K", "3",
                               "--corpus", x["b"], "--out", str(b), "--name", "oddk"], "even number"),
    "nothing to resume": (lambda t, b, x: ["pretrain", "--resume", "--out", str(t), "--name", "fresh"],
                          "nothing to resume"),
    "token id out of range": (lambda t, b, x: ["sample", "--run", "base", "--prompt-ids", "1,2,300", "--out", str(b)],
                              "outside the vocabulary"),
    "prompt and ids": (lambda t, b, x: ["sample", "--run", "base", "--prompt", "a", "--prompt-ids", "1",
                                        "--out", str(b)], "not both"),
    "heads do not divide width": (lambda t, b, x: ["pretrain", "--corpus", x["a"], "--n-embd", "30", "--n-head", "4",
                                                   "--vocab-size", "280", "--out", str(t)], "not divisible"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_one_line_exit_2(capsys, tmp_path, base, texts, case):
    argv, want = BAD_INPUT[case]
    code, _, err = _run(capsys, *argv(tmp_path, base, texts))
    _one_line_error(err, code, want, 2)
    left = [d for d in tmp_path.rglob("*") if d.is_dir() and not any(d.iterdir()) and d.name != "runs"]
    assert not left                                                        # no empty run folder left behind


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_output_folder(capsys, tmp_path, texts):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, _, err = _run(capsys, "pretrain", "--corpus", texts["a"], "--out", ro)
    finally:
        ro.chmod(0o700)
    _one_line_error(err, code, "not writable", 2)


def test_bad_ids_given_to_the_api(base):
    m = runs.load_model("base", out=base)
    rng = np.random.default_rng(0)
    for ids, want in ((np.array([1, 2, 300]), "outside the vocabulary"), (np.array([-1]), "outside the vocabulary"),
                      (np.array([1.0, 2.0]), "integer dtype"), (np.array([[1, 2]]), "1-D"), ([1, 2], "1-D"),
                      (np.array([], dtype=np.int64), "non-empty")):
        with pytest.raises(InputError, match=want):
            runs.generate(m["method"].forward, ids, m["cfg"], max_new_tokens=2, rng=rng)
    for ids in ([1.5, 2.0], [[1, 2]], ["a"], []):
        with pytest.raises(InputError, match="prompt ids"):
            runs.sample("base", out=base, prompt_ids=ids)
    with pytest.raises(InputError, match="temperature"):
        runs.generate(m["method"].forward, np.array([1]), m["cfg"], temperature=-1.0, rng=rng)
    x = np.zeros((1, 17), dtype=np.int64)                                                      # T > block_size
    with pytest.raises(InputError, match="block_size"):
        m["method"].forward(x)


def test_tokenizer_mismatch_on_adapt(capsys, base, texts):
    assert _run(capsys, "tokenizer", "--corpus", texts["b"], "--vocab-size", "280", "--out", base, "--name", "other")[0] == 0
    code, _, err = _run(capsys, "adapt", "--base", "base", "--tokenizer", base / "other", "--method", "alh-film",
                        "--corpus", texts["b"], "--out", base, "--name", "mismatch")
    _one_line_error(err, code, "tokenizer mismatch", 2)
    assert not runs.list_checkpoints(base / "mismatch")


# ----------------------------------------------------------------------------------------------
# Damaged checkpoints: every one a clear one-line error

def _flip_byte(ckpt):
    p = ckpt / "model.safetensors"
    b = bytearray(p.read_bytes())
    b[-5] ^= 0xFF
    p.write_bytes(bytes(b))


def _truncate(ckpt):
    p = ckpt / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-100])


def _edit_manifest(key, value):
    def edit(ckpt):
        p = ckpt / "manifest.json"
        meta = json.loads(p.read_text())
        meta[key] = value
        p.write_text(json.dumps(meta))
    return edit


def _resave(change):
    """Re-save a checkpoint with one tensor changed (a consistent file that the model cannot use)."""
    def edit(ckpt):
        tensors, meta = load_checkpoint(ckpt)
        change(tensors)
        save_checkpoint(ckpt, tensors, {k: v for k, v in meta.items() if k not in RESERVED_KEYS})
    return edit


DAMAGE = {
    "corrupted byte": (_flip_byte, "corrupted or truncated"),
    "truncated file": (_truncate, "corrupted or truncated"),
    "wrong format version": (_edit_manifest("format_version", 99), "format_version 99 is not supported"),
    "wrong run format version": (_edit_manifest("run_format_version", 7), "run_format_version 7"),
    "tokenizer hash changed": (_edit_manifest("tokenizer_sha256", "0" * 64), "tokenizer mismatch"),
    "missing tensor": (_resave(lambda t: t.pop("ln_f.w")), "no tensor 'ln_f.w'"),
    "mis-shaped tensor": (_resave(lambda t: t.update(wte=np.zeros((300, 8), np.float32))), "tensor 'wte' has shape"),
    "missing manifest": (lambda c: (c / "manifest.json").unlink(), "holds no checkpoint"),
    "not JSON": (lambda c: (c / "manifest.json").write_text("{oops"), "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_checkpoint_one_line_error(capsys, tmp_path, base, case):
    shutil.copytree(base / "base", tmp_path / "copy")
    damage, want = DAMAGE[case]
    ckpt = runs.list_checkpoints(tmp_path / "copy")[-1][1]
    damage(ckpt)
    code, _, err = _run(capsys, "eval", "--run", ckpt)
    _one_line_error(err, code, want, 2)


def test_resume_from_damaged_checkpoint_names_the_previous_one(capsys, tmp_path, base):
    shutil.copytree(base / "base", tmp_path / "copy")
    _truncate(runs.checkpoint_path(tmp_path / "copy", 6))
    code, _, err = _run(capsys, "pretrain", "--resume", "--steps", "9", "--out", tmp_path, "--name", "copy")
    _one_line_error(err, code, "step-000003", 2)


# ----------------------------------------------------------------------------------------------
# Unexpected errors and --json on failure

def test_internal_error_has_no_traceback_unless_debug(capsys, monkeypatch):
    def boom(*a, **k):
        raise ValueError("boom")
    monkeypatch.setattr(runs, "evaluate", boom)
    monkeypatch.delenv("ALH_REF_DEBUG", raising=False)
    code, _, err = _run(capsys, "eval", "--run", "x")
    assert code == 1 and "Traceback" not in err
    assert err.strip() == ("internal error: ValueError: boom (please report; rerun with ALH_REF_DEBUG=1 for a traceback)")
    monkeypatch.setenv("ALH_REF_DEBUG", "1")
    code, _, err = _run(capsys, "eval", "--run", "x")
    assert code == 1 and "Traceback" in err


def test_json_error_line(capsys, tmp_path):
    code, out, err = _run(capsys, "eval", "--run", tmp_path / "nope", "--json")
    s = _last_json(out)
    assert code == 2 and s == {"ok": False, "exit_code": 2, "error": err.strip()}


def test_checkpoint_tensors_are_plain_safetensors(base):
    ckpt, _ = runs.resolve_checkpoint("base", base)
    names = set(stnp.load_file(str(ckpt / "model.safetensors")))
    assert "wte" in names and "opt.m.wte" in names and not list(ckpt.glob("*.pkl"))
