"""Tests for the alh-ref command line (alh_ref.cli): entry point, help, usage errors, the happy path,
bad input and damaged checkpoints (one line, exit 2), --json on failure. The run library behind it
is tested in tests/test_runs.py.

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

import alh_ref.runs.benchmark
import alh_ref.train
from alh_ref import runs
from alh_ref.cli import COMMANDS
from alh_ref.corpora import load_corpus, split_documents
from run_helpers import (ALH, DIMS, base, final_state, in_tmp, last_json, one_line_error, resave, run,  # noqa: F401
                         texts, truncate)

# ----------------------------------------------------------------------------------------------
# Entry point, help, usage errors

def test_python_m_entry_point_help():
    proc = subprocess.run([sys.executable, "-m", "alh_ref", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert all(cmd in proc.stdout for cmd in COMMANDS)


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_help_on_each_subcommand(capsys, cmd):
    code, out, _ = run(capsys, cmd, "--help")
    assert code == 0 and out.startswith(f"usage: alh-ref {cmd}")


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["pretrain", "--steps", "0"], ["pretrain", "--lr", "nan"],
                                  ["sample", "--prompt", "x"], ["golden"], ["eval", "--run", "r", "--bogus"]])
def test_usage_errors_exit_2(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2 and "Traceback" not in err and "usage: alh-ref" in err


# ----------------------------------------------------------------------------------------------
# The happy path

def test_pretrain_adapt_eval_sample_end_to_end(capsys, base, texts):
    rd = base / "base"
    for f in ("tokenizer/tokenizer.tiktoken", "tokenizer/tokenizer.json", "history.jsonl", "summary.json"):
        assert (rd / f).is_file(), f
    tensors, meta, hist = final_state(rd)
    assert meta["step"] == 6 and meta["kind"] == "base" and len(hist) == 6
    assert meta["gpt_config"] == {"vocab_size": 300, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 32, "tied": True}
    assert meta["tokenizer_sha256"] == runs.find_tokenizer(rd).sha256 and len(meta["corpus_fingerprint"]) == 64
    assert {"m.wte", "v.wte"} <= {k[4:] for k in tensors if k.startswith("opt.")} and meta["opt_t"] == 6
    assert meta["adamw_config"]["total_steps"] == 6 and meta["rng"]["bit_generator"] == "PCG64"

    code, out, err = run(capsys, "adapt", "--base", "base", "--method", "alh-householder", "--corpus", texts["b"],
                          *ALH, "--batch-size", "4", "--steps", "4", "--ckpt-every", "2", "--out", base, "--json")
    assert code == 0, err
    s = last_json(out)
    assert s["ok"] and s["status"] == "done" and s["step"] == 4 and s["method"] == "alh-householder"
    at, am, _ = final_state(base / "adapt-alh-householder")
    assert "wte" not in at and any(k.startswith("alh.head.") for k in at)          # adapter tensors only
    assert am["base"]["safetensors_sha256"] == meta["safetensors_sha256"] and am["alh_config"]["K"] == 2

    evals = {}
    for name in ("base", "adapt-alh-householder"):
        code, out, err = run(capsys, "eval", "--run", name, "--corpus", texts["b"], "--out", base, "--json")
        assert code == 0, err
        evals[name] = last_json(out)
        assert evals[name]["split"] == "val" and evals[name]["n_tokens"] > 0
        assert math.isclose(evals[name]["perplexity"], math.exp(evals[name]["loss"]))
    assert evals["base"]["corpus_fingerprint"] == evals["adapt-alh-householder"]["corpus_fingerprint"]
    assert evals["base"]["loss"] != evals["adapt-alh-householder"]["loss"]
    assert (base / "adapt-alh-householder" / "eval").is_dir()

    samples = []
    for seed in (3, 3, 4):
        code, out, err = run(capsys, "sample", "--run", base / "adapt-alh-householder", "--prompt", "def ",
                              "--max-new-tokens", "12", "--top-k", "20", "--seed", seed, "--out", base, "--json")
        assert code == 0, err
        samples.append(last_json(out))
    assert samples[0]["new_ids"] == samples[1]["new_ids"] and samples[0]["text"].startswith("def ")
    assert samples[0]["new_ids"] != samples[2]["new_ids"]
    tok = runs.find_tokenizer(base / "base")
    assert samples[0]["completion"] == tok.decode(np.array(samples[0]["new_ids"], dtype=np.int64))


def test_tokenizer_subcommand_then_pretrain_reuses_it(capsys, tmp_path, texts):
    code, out, err = run(capsys, "tokenizer", "--corpus", texts["a"], "--vocab-size", "280", "--out", tmp_path,
                          "--name", "r", "--json")
    assert code == 0, err
    sha = last_json(out)["sha256"]
    code, out, err = run(capsys, "pretrain", "--corpus", texts["a"], *DIMS, "--steps", "2", "--out", tmp_path,
                          "--name", "r", "--json")
    assert code == 0, err
    assert last_json(out)["tokenizer_sha256"] == sha and last_json(out)["gpt_config"]["vocab_size"] == 280


def test_golden_wiring(capsys, tmp_path):
    code, out, err = run(capsys, "golden", "--check", tmp_path / "missing", "--json")
    assert code == 2 and "Traceback" not in err and not last_json(out)["ok"]


def test_bench_runs_the_benchmark_script(capsys):
    code, out, err = run(capsys, "bench", "--config", "tiny", "--steps", "1", "--warmup", "1", "--threads", "1", "--json")
    assert code == 0, err
    r = last_json(out)["result"]
    assert r["config"] == "tiny" and r["steps"] == 1 and r["train_tok_s"] > 0


def test_bench_failure_is_one_line(capsys, monkeypatch):
    fake = subprocess.CompletedProcess([], 1, stdout="", stderr="Traceback (most recent call last):\n  ...\nValueError: bad\n")
    monkeypatch.setattr(alh_ref.runs.benchmark.subprocess, "run", lambda *a, **k: fake)
    code, _, err = run(capsys, "bench")
    assert code == 1 and err.strip() == "error: benchmarks/bench_train.py failed (exit 1): ValueError: bad"


@pytest.mark.parametrize("method", ["alh-lowrank", "alh-shuffled"])
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
    code, _, err = run(capsys, *argv(tmp_path, base, texts))
    one_line_error(err, code, want, 2)
    left = [d for d in tmp_path.rglob("*") if d.is_dir() and not any(d.iterdir()) and d.name != "runs"]
    assert not left                                                        # no empty run folder left behind


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_output_folder(capsys, tmp_path, texts):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, _, err = run(capsys, "pretrain", "--corpus", texts["a"], "--out", ro)
    finally:
        ro.chmod(0o700)
    one_line_error(err, code, "not writable", 2)


# ----------------------------------------------------------------------------------------------
# Damaged checkpoints: every one a clear one-line error

def _flip_byte(ckpt):
    p = ckpt / "model.safetensors"
    b = bytearray(p.read_bytes())
    b[-5] ^= 0xFF
    p.write_bytes(bytes(b))




def _edit_manifest(key, value):
    def edit(ckpt):
        p = ckpt / "manifest.json"
        meta = json.loads(p.read_text())
        meta[key] = value
        p.write_text(json.dumps(meta))
    return edit




DAMAGE = {
    "corrupted byte": (_flip_byte, "corrupted or truncated"),
    "truncated file": (truncate, "corrupted or truncated"),
    "wrong format version": (_edit_manifest("format_version", 99), "format_version 99 is not supported"),
    "wrong run format version": (_edit_manifest("run_format_version", 7), "run_format_version 7"),
    "tokenizer hash changed": (_edit_manifest("tokenizer_sha256", "0" * 64), "tokenizer mismatch"),
    "missing tensor": (resave(lambda t: t.pop("ln_f.w")), "no tensor 'ln_f.w'"),
    "mis-shaped tensor": (resave(lambda t: t.update(wte=np.zeros((300, 8), np.float32))), "tensor 'wte' has shape"),
    "missing manifest": (lambda c: (c / "manifest.json").unlink(), "holds no checkpoint"),
    "not JSON": (lambda c: (c / "manifest.json").write_text("{oops"), "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_checkpointone_line_error(capsys, tmp_path, base, case):
    shutil.copytree(base / "base", tmp_path / "copy")
    damage, want = DAMAGE[case]
    ckpt = runs.list_checkpoints(tmp_path / "copy")[-1][1]
    damage(ckpt)
    code, _, err = run(capsys, "eval", "--run", ckpt)
    one_line_error(err, code, want, 2)


# ----------------------------------------------------------------------------------------------
# Unexpected errors and --json on failure

def test_internal_error_has_no_traceback_unless_debug(capsys, monkeypatch):
    def boom(*a, **k):
        raise ValueError("boom")
    monkeypatch.setattr(runs, "evaluate", boom)
    monkeypatch.delenv("ALH_REF_DEBUG", raising=False)
    code, _, err = run(capsys, "eval", "--run", "x")
    assert code == 1 and "Traceback" not in err
    assert err.strip() == ("internal error: ValueError: boom (please report; rerun with ALH_REF_DEBUG=1 for a traceback)")
    monkeypatch.setenv("ALH_REF_DEBUG", "1")
    code, _, err = run(capsys, "eval", "--run", "x")
    assert code == 1 and "Traceback" in err


def test_json_error_line(capsys, tmp_path):
    code, out, err = run(capsys, "eval", "--run", tmp_path / "nope", "--json")
    s = last_json(out)
    assert code == 2 and s == {"ok": False, "exit_code": 2, "error": err.strip()}

