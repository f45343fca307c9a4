"""Tests for the run library (alh_ref.runs): resume bit-for-bit, adapted runs and their bases, pins and
pruning, the run-folder lock, divergence before saving, the memory check, split sizes, and the
messages of eval and of the option checks. Runs go through the CLI's main() in-process.
"""
import json
import math
import os
import re
import shutil

import numpy as np
import pytest
import safetensors.numpy as stnp

import alh_ref.cli as cli
import alh_ref.runs.inference as inference
import alh_ref.runs.jobs as jobs
import alh_ref.train
from alh_ref import runs
from alh_ref.errors import InputError
from alh_ref.model import GPTConfig, gpt_forward, init_params
from alh_ref.runs import memory, options
from alh_ref.train import divergence
from run_helpers import (ALH, DIMS, WORDS_A, base, final_state, in_tmp, last_json, one_line_error, resave,  # noqa: F401
                         run, same_run, texts, truncate, write_docs)


# ----------------------------------------------------------------------------------------------
# Resume: bit-for-bit; a resumed run keeps its identity

def test_pretrain_resume_is_bit_for_bit(capsys, tmp_path, texts, monkeypatch):
    common = ["--corpus", texts["a"], "--vocab-size", "300", *DIMS, "--ckpt-every", "4", "--out", tmp_path]
    assert run(capsys, "pretrain", *common, "--steps", "8", "--name", "full")[0] == 0
    # in two sessions: 4 steps (same schedule), then --resume to 8
    assert run(capsys, "pretrain", *common, "--steps", "4", "--decay-steps", "8", "--name", "chunks")[0] == 0
    code, out, err = run(capsys, "pretrain", "--resume", "--steps", "8", "--out", tmp_path, "--name", "chunks", "--json")
    assert code == 0, err
    assert last_json(out)["resumed_from"] == 4 and last_json(out)["steps_this_session"] == 4
    same_run(tmp_path / "full", tmp_path / "chunks")

    # interrupted at step 7 (Ctrl-C): steps 5-6 are lost, resuming redoes them from the step-4 checkpoint
    real, calls = alh_ref.train.sample_batch, []

    def interrupt_at_7(*a, **k):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(alh_ref.train, "sample_batch", interrupt_at_7)
    code, _, err = run(capsys, "pretrain", *common, "--steps", "8", "--name", "crash")
    monkeypatch.undo()
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert json.loads((tmp_path / "crash" / runs.SUMMARY_FILE).read_text())["status"] == "interrupted"
    assert [s for s, _ in runs.list_checkpoints(tmp_path / "crash")] == [4]
    assert run(capsys, "pretrain", "--resume", "--out", tmp_path, "--name", "crash")[0] == 0
    same_run(tmp_path / "full", tmp_path / "crash")


@pytest.mark.parametrize("method", ["alh-lowrank", "alh-shuffled"])
def test_adapt_resume_is_bit_for_bit(capsys, base, texts, method):
    common = ["--base", "base", "--method", method, "--corpus", texts["b"], *ALH, "--batch-size", "4",
              "--ckpt-every", "3", "--out", base]
    assert run(capsys, "adapt", *common, "--steps", "6", "--name", f"{method}-full")[0] == 0
    assert run(capsys, "adapt", *common, "--steps", "3", "--decay-steps", "6", "--name", f"{method}-chunks")[0] == 0
    code, _, err = run(capsys, "adapt", "--resume", "--steps", "6", "--out", base, "--name", f"{method}-chunks")
    assert code == 0, err
    same_run(base / f"{method}-full", base / f"{method}-chunks")


def test_adapted_run_follows_and_checks_its_base(capsys, tmp_path, texts):
    old, new = tmp_path / "old", tmp_path / "new"
    assert run(capsys, "pretrain", "--corpus", texts["a"], "--vocab-size", "280", *DIMS, "--steps", "2",
                "--out", old, "--name", "b")[0] == 0
    assert run(capsys, "adapt", "--base", "b", "--method", "alh-film", *ALH, "--corpus", texts["b"], "--steps", "2",
                "--decay-steps", "4", "--batch-size", "4", "--out", old, "--name", "ad")[0] == 0
    shutil.move(old, new)                                                  # the whole runs/ tree moves: relpath
    assert run(capsys, "eval", "--run", "ad", "--corpus", texts["b"], "--out", new)[0] == 0
    shutil.move(new / "b", tmp_path / "elsewhere")
    code, _, err = run(capsys, "eval", "--run", new / "ad", "--corpus", texts["b"])
    one_line_error(err, code, "base checkpoint of this adapted run not found", 2)
    code, _, err = run(capsys, "adapt", "--resume", "--steps", "4", "--base", tmp_path / "elsewhere", "--out", new,
                        "--name", "ad")
    assert code == 0, err                                                  # --base on resume: the moved base
    assert run(capsys, "eval", "--run", new / "ad", "--corpus", texts["b"])[0] == 0
    ckpt = runs.list_checkpoints(tmp_path / "elsewhere")[-1][1]
    resave(lambda t: t["wte"].__imul__(2))(ckpt)                          # same tokenizer, other weights
    code, _, err = run(capsys, "eval", "--run", new / "ad", "--corpus", texts["b"])
    one_line_error(err, code, "is not the one this run was adapted from", 2)


def test_resume_must_keep_the_run_identity(capsys, base, texts):
    code, _, err = run(capsys, "pretrain", "--resume", "--seed", "5", "--out", base, "--name", "base")
    one_line_error(err, code, "--seed 5 differs from this run's 0", 2)
    code, _, err = run(capsys, "pretrain", "--resume", "--corpus", texts["b"], "--out", base, "--name", "base")
    one_line_error(err, code, "corpus mismatch", 2)
    code, _, err = run(capsys, "pretrain", "--corpus", texts["a"], "--out", base, "--name", "base")
    one_line_error(err, code, "already has checkpoints; pass --resume", 2)



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
    assert run(capsys, "tokenizer", "--corpus", texts["b"], "--vocab-size", "280", "--out", base, "--name", "other")[0] == 0
    code, _, err = run(capsys, "adapt", "--base", "base", "--tokenizer", base / "other", "--method", "alh-film",
                        "--corpus", texts["b"], "--out", base, "--name", "mismatch")
    one_line_error(err, code, "tokenizer mismatch", 2)
    assert not runs.list_checkpoints(base / "mismatch")


def test_resume_from_damaged_checkpoint_names_the_previous_one(capsys, tmp_path, base):
    shutil.copytree(base / "base", tmp_path / "copy")
    truncate(runs.checkpoint_path(tmp_path / "copy", 6))
    code, _, err = run(capsys, "pretrain", "--resume", "--steps", "9", "--out", tmp_path, "--name", "copy")
    one_line_error(err, code, "step-000003", 2)


def test_checkpoint_tensors_are_plain_safetensors(base):
    ckpt, _ = runs.resolve_checkpoint("base", base)
    names = set(stnp.load_file(str(ckpt / "model.safetensors")))
    assert "wte" in names and "opt.m.wte" in names and not list(ckpt.glob("*.pkl"))


# ----------------------------------------------------------------------------------------------
# Pins: a base checkpoint an adapted run uses is never pruned; --resume keeps --keep / --ckpt-every

def test_pinned_base_checkpoint_survives_pruning(capsys, tmp_path, texts):
    pre = ["--corpus", texts["a"], "--vocab-size", "280", *DIMS, "--ckpt-every", "2", "--out", tmp_path, "--name", "b"]
    assert run(capsys, "pretrain", *pre, "--steps", "2", "--decay-steps", "10")[0] == 0
    assert run(capsys, "adapt", "--base", "b", "--method", "alh-film", *ALH, "--corpus", texts["b"], "--steps", "2",
               "--out", tmp_path, "--name", "ad")[0] == 0
    assert runs.read_pins(tmp_path / "b") == {"step-000002": [str((tmp_path / "ad").resolve())]}
    code, out, err = run(capsys, "pretrain", "--resume", "--steps", "10", "--keep", "1", "--out", tmp_path,
                         "--name", "b", "--json")
    assert code == 0, err
    assert [s for s, _ in runs.list_checkpoints(tmp_path / "b")] == [2, 10]          # 4, 6, 8 pruned; 2 pinned
    kept = last_json(out)["kept"]
    assert len(kept) == 1 and kept[0].startswith("kept step-000002: pinned by run") and kept[0] in out
    for cmd in (["eval", "--run", "ad", "--corpus", texts["b"]], ["sample", "--run", "ad", "--max-new-tokens", "2"],
                ["adapt", "--resume", "--steps", "3", "--name", "ad"]):
        assert run(capsys, *cmd, "--out", tmp_path)[0] == 0, cmd
    shutil.rmtree(tmp_path / "b" / runs.PINS_DIR)                                     # a run made before pins:
    assert run(capsys, "pretrain", "--resume", "--steps", "11", "--out", tmp_path, "--name", "b")[0] == 0
    assert [s for s, _ in runs.list_checkpoints(tmp_path / "b")] == [2, 11]          # found by its manifest
    shutil.rmtree(tmp_path / "ad")                                                    # the pin's run is gone
    assert runs.read_pins(tmp_path / "b") == {}
    assert run(capsys, "pretrain", "--resume", "--steps", "12", "--out", tmp_path, "--name", "b")[0] == 0
    assert [s for s, _ in runs.list_checkpoints(tmp_path / "b")] == [12]              # the run's own --keep 1


def test_resume_keeps_the_runs_own_keep_and_ckpt_every(capsys, tmp_path, texts):
    common = ["--out", tmp_path, "--name", "k"]
    assert run(capsys, "pretrain", "--corpus", texts["a"], "--vocab-size", "280", *DIMS, "--steps", "4",
               "--decay-steps", "8", "--ckpt-every", "1", "--keep", "0", *common)[0] == 0
    code, out, err = run(capsys, "pretrain", "--resume", "--steps", "8", *common, "--json")
    assert code == 0, err
    assert [s for s, _ in runs.list_checkpoints(tmp_path / "k")] == list(range(1, 9))
    assert last_json(out)["schedule"] == {"steps": 8, "ckpt_every": 1, "keep": 0}
    assert run(capsys, "pretrain", "--resume", "--steps", "10", "--keep", "2", *common)[0] == 0  # given again: wins
    assert [s for s, _ in runs.list_checkpoints(tmp_path / "k")] == [9, 10]


# ----------------------------------------------------------------------------------------------
# The run-folder lock

def test_second_writer_exits_2_naming_the_holder(capsys, tmp_path, texts):
    rd = tmp_path / "dup"
    with runs.RunLock(rd):
        code, _, err = run(capsys, "pretrain", "--corpus", texts["a"], *DIMS, "--steps", "2", "--out", tmp_path,
                           "--name", "dup")
        one_line_error(err, code, f"being written by another process (pid {os.getpid()})", 2)
        assert not runs.list_checkpoints(rd)
    assert not rd.exists()                                   # the lock made the folder, and nothing else came
    assert run(capsys, "pretrain", "--corpus", texts["a"], "--vocab-size", "280", *DIMS, "--steps", "2",
               "--out", tmp_path, "--name", "dup")[0] == 0   # released: the next writer gets it


def test_stale_lock_is_taken_over(capsys, tmp_path, texts):
    rd = tmp_path / "stale"
    rd.mkdir()
    dead = 2**22 + 12345                                     # above the default pid_max: no such process
    (rd / runs.LOCK_FILE).write_text(f"{dead}\n")
    code, out, err = run(capsys, "pretrain", "--corpus", texts["a"], "--vocab-size", "280", *DIMS, "--steps", "2",
                         "--out", tmp_path, "--name", "stale", "--json")
    assert code == 0, err
    assert any(f"left by pid {dead}" in w for w in last_json(out)["warnings"]) and f"pid {dead}" in err
    assert (rd / runs.LOCK_FILE).read_text() == ""           # released on exit


# ----------------------------------------------------------------------------------------------
# Divergence: a checkpoint is saved only once its parameters gave a sound loss

@pytest.mark.parametrize("loss, past, diverged", [
    (float("nan"), [6.0], True), (float("inf"), [], True), (9e10, [6.2], True),
    (95.5, [6.2] + [40.0] * 20, True),                 # far above the first loss, though not 3 x the median
    (5.0, [6.0, 1.0, 1.0], False),                     # below where the run started: never divergence
    (6.1, [6.2, 1.5, 1.5], False), (6.3, [6.2, 1.5, 1.5], True), (6.3, [6.2, 5.0, 5.5], False)])
def test_divergence_rule(loss, past, diverged):
    assert (divergence(loss, past) is not None) == diverged


def test_blow_up_is_caught_before_its_checkpoint_is_saved(capsys, tmp_path, texts, monkeypatch):
    real, calls = jobs.gpt_loss_and_grads, []

    def blows_up_at_call_6(*a):
        loss, grads = real(*a)
        calls.append(1)
        return (loss * 1e4 if len(calls) >= 6 else loss), grads
    monkeypatch.setattr(jobs, "gpt_loss_and_grads", blows_up_at_call_6)
    code, out, err = run(capsys, "pretrain", "--corpus", texts["a"], "--vocab-size", "280", *DIMS, "--steps", "10",
                         "--ckpt-every", "1", "--keep", "0", "--out", tmp_path, "--name", "div", "--json",
                         "--threads", "1")                 # one call per step (more threads: one per micro-batch)
    one_line_error(err, code, "is above 3 x the median", 1)
    # step 6 computes the loss of the parameters after step 5: checkpoint 5 is never written
    assert [s for s, _ in runs.list_checkpoints(tmp_path / "div")] == [1, 2, 3, 4]
    good = str(runs.checkpoint_path(tmp_path / "div", 4))
    assert f"the last good checkpoint is {good!r}" in err and f"alh-ref eval --run {good!r}" in err
    assert "--resume" not in err and last_json(out)["exit_code"] == 1
    monkeypatch.undo()
    code, out, err = run(capsys, "eval", "--run", good, "--json")
    assert code == 0 and math.isfinite(last_json(out)["loss"]), err


def test_huge_lr_leaves_only_evaluable_checkpoints(capsys, tmp_path, texts):
    code, _, err = run(capsys, "pretrain", "--corpus", texts["a"], "--vocab-size", "300", *DIMS, "--steps", "40",
                       "--lr", "1e6", "--warmup-steps", "0", "--ckpt-every", "1", "--keep", "0",
                       "--out", tmp_path, "--name", "nan")
    one_line_error(err, code, "stopping without applying it", 1)
    assert "--resume" not in err and "--lr 1e+05" in err
    s = json.loads((tmp_path / "nan" / runs.SUMMARY_FILE).read_text())
    assert s["status"] == "failed" and s["step"] < 40
    for _, ckpt in runs.list_checkpoints(tmp_path / "nan"):
        assert str(ckpt) in err
        r = runs.evaluate(ckpt, split="all")
        assert math.isfinite(r["loss"]) and r["loss"] < 3 * s["loss_first"], r


# ----------------------------------------------------------------------------------------------
# Memory check

def test_memory_estimate_covers_the_cached_activations():
    cfg = GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=4, n_embd=32)
    params = init_params(cfg)
    B = 3
    ids = np.random.default_rng(0).integers(0, 300, size=(B, 32))                        # (B,T)
    _, _, cache = gpt_forward(params, cfg, ids, ids)
    seen, total = set(), 0
    stack = [cache]
    while stack:
        c = stack.pop()
        if isinstance(c, np.ndarray) and id(c) not in seen:
            seen.add(id(c))
            total += c.nbytes
        elif isinstance(c, (tuple, list)):
            stack.extend(c)
        elif isinstance(c, dict):
            stack.extend(c.values())
    n = sum(a.size for a in params.values())
    est = memory.estimate_step_memory(cfg, B, n, n)
    assert total <= est["activations"] <= 4 * total, (total, est)
    assert est["total"] == est["activations"] + est["parameters"] + est["optimizer"] and est["optimizer"] == 3 * 4 * n


def test_block_size_5000_is_refused_with_estimate_and_available(capsys, tmp_path, texts, monkeypatch):
    monkeypatch.setattr(jobs, "available_memory", lambda: (8 * 2**30, "MemAvailable"))
    code, _, err = run(capsys, "pretrain", "--corpus", texts["a"], "--vocab-size", "280", "--block-size", "5000",
                       "--split", "all", "--steps", "3", "--out", tmp_path, "--name", "big")
    one_line_error(err, code, "needs an estimated", 2)
    assert "8.00 GB available (MemAvailable)" in err and "--batch-size or --block-size" in err
    est = float(err.split("needs an estimated ")[1].split(" GB")[0])
    assert est > 20                                       # B=16, 4 heads, T=5000: attention alone is ~13 GB
    assert not (tmp_path / "big").exists()                 # refused before anything was written


def test_memory_is_in_the_json_summary(capsys, tmp_path, texts):
    code, out, err = run(capsys, "pretrain", "--corpus", texts["a"], "--vocab-size", "280", *DIMS, "--steps", "1",
                         "--out", tmp_path, "--json")
    m = last_json(out)["memory"]
    assert code == 0 and m["total"] > m["activations"] > 0 and m["available_source"] in ("MemAvailable",
                                                                                      "free physical pages", "unknown")


def test_available_memory_falls_back(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "MEMINFO", str(tmp_path / "none"))
    avail, source = memory.available_memory()
    assert source in ("free physical pages", "unknown") and (avail is None or avail > 0)


# ----------------------------------------------------------------------------------------------
# Split sizes; eval and option messages

def test_split_sizes_in_manifest_and_small_split_warning(capsys, tmp_path):
    path = write_docs(tmp_path / "few.txt", WORDS_A, 6, 3)
    code, out, err = run(capsys, "pretrain", "--corpus", path, "--vocab-size", "280", *DIMS, "--steps", "1",
                         "--split", "all", "--out", tmp_path, "--name", "all", "--json")
    assert code == 0 and not [w for w in last_json(out)["warnings"] if "split" in w], err  # --split all: none held out
    rd = tmp_path / "small"
    code, out, err = run(capsys, "pretrain", "--corpus", texts_file(tmp_path), "--vocab-size", "280", *DIMS,
                         "--steps", "1", "--out", tmp_path, "--name", "small", "--json")
    assert code == 0, err
    _, meta, _ = final_state(rd)
    sizes = meta["corpus"]["splits"]
    assert set(sizes) == {"train", "val", "test"} and sizes["train"]["tokens"] == meta["corpus"]["n_tokens"]
    assert sum(s["documents"] for s in sizes.values()) == 20
    small = [n for n in ("val", "test") if sizes[n]["tokens"] < 8 * 17]
    warned = [w for w in last_json(out)["warnings"] if "split is small" in w]
    assert small and len(warned) == len(small) and all(f"warning: {w}" in err for w in warned)


def texts_file(tmp_path):
    return write_docs(tmp_path / "twenty.txt", WORDS_A, 20, 4)


def test_eval_max_tokens_below_one_window_is_refused(capsys, base):
    code, _, err = run(capsys, "eval", "--run", "base", "--split", "all", "--max-tokens", "10", "--out", base)
    one_line_error(err, code, "--max-tokens 10 is less than one window of T = 16", 2)
    code, out, err = run(capsys, "eval", "--run", "base", "--split", "all", "--max-tokens", "40", "--out", base, "--json")
    assert code == 0 and last_json(out)["n_tokens"] == 32, err                 # two whole windows of 16


def test_eval_on_a_read_only_run_still_prints_the_loss(capsys, base, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(inference, "atomic_write_json", refuse)
    code, out, err = run(capsys, "eval", "--run", "base", "--split", "all", "--out", base, "--json")
    assert code == 0 and "loss " in out and math.isfinite(last_json(out)["loss"])
    assert last_json(out)["saved"] is None and err.startswith("warning: could not save the result")


def test_warmup_longer_than_the_schedule(capsys, tmp_path, texts):
    code, _, err = run(capsys, "pretrain", "--corpus", texts["a"], *DIMS, "--warmup-steps", "1000", "--steps", "10",
                       "--out", tmp_path)
    one_line_error(err, code, "--warmup-steps 1000 is not below the schedule's 10 steps", 2)
    code, out, err = run(capsys, "pretrain", "--corpus", texts["a"], "--vocab-size", "280", *DIMS, "--steps", "5",
                         "--out", tmp_path, "--json")
    assert code == 0 and "warning: the default warmup of 20 steps" in err


def test_errors_option_reaches_the_corpus_loader(capsys, tmp_path):
    p = tmp_path / "latin1.txt"
    text = "\n\n\n".join(" ".join(np.random.default_rng(i).choice(WORDS_A, 40)) + " caf\xe9." for i in range(40))
    p.write_bytes(text.encode("latin-1"))
    code, _, err = run(capsys, "pretrain", "--corpus", p, *DIMS, "--steps", "1", "--out", tmp_path)
    assert code == 2 and "Traceback" not in err
    code, out, err = run(capsys, "pretrain", "--corpus", p, "--errors", "replace", "--vocab-size", "280", *DIMS,
                         "--steps", "1", "--out", tmp_path, "--json")
    assert code == 0, err
    _, meta, _ = final_state(tmp_path / "base")
    assert meta["corpus"]["errors"] == "replace"
    assert run(capsys, "pretrain", "--resume", "--steps", "2", "--out", tmp_path)[0] == 0   # reloaded the same way


# ----------------------------------------------------------------------------------------------
# The CLI's defaults and choices are the library's

def _cli_option(cmd, dest):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[cmd]
    return next(a for a in sub._actions if a.dest == dest)


def test_cli_defaults_and_choices_match_the_library_tables():
    from alh_ref.model import CONFIGS
    assert _cli_option("pretrain", "config").choices == tuple(CONFIGS)
    for cmd in ("pretrain", "adapt", "eval", "tokenizer"):
        assert tuple(_cli_option(cmd, "split").choices) == options.SPLIT_CHOICES
        assert tuple(_cli_option(cmd, "errors").choices) == options.ERRORS_CHOICES
    for cls, cmd in ((options.Schedule, "pretrain"), (options.Optim, "pretrain"), (options.PretrainSpec, "pretrain"),
                     (options.AdaptSpec, "adapt")):
        for f in options.fields(cls):
            act = _cli_option(cmd, f.name)
            assert act.default is None, f.name                     # not given -> the library's default
            if f.default is None:
                continue
            m = re.search(r"default:? ([\w.+-]+)", act.help)
            assert m, (f.name, act.help)
            said = m.group(1)
            assert (said == f.default if isinstance(f.default, str) else float(said) == f.default), (f.name, act.help)
    from alh_ref.alh.adapted import ENCODERS, OUT_CONTEXTS, SITES
    for dest, table in (("encoder", ENCODERS), ("site", SITES), ("out_context", OUT_CONTEXTS)):
        assert tuple(_cli_option("adapt", dest).choices) == table, dest
    assert tuple(_cli_option("bench", "config").choices) == (*CONFIGS, "all")


def test_contract_names_stay_importable_from_runs():
    names = ("run_dir run_path load_split find_tokenizer stream_tokens save_state load_run_checkpoint load_model "
             "load_base evaluate model_config generate next_token list_checkpoints resolve_checkpoint pretrain adapt")
    assert all(callable(getattr(runs, n)) for n in names.split())


def test_golden_prints_the_lines_golden_command_returns(capsys, monkeypatch):
    import alh_ref.golden as golden
    seen = {}

    def fake(out=None, check=None, reference=None, impl="fast"):
        seen.update(out=out, impl=impl)
        return 0, ["wrote 17 cases", "ok"]
    monkeypatch.setattr(golden, "golden_command", fake)
    code, out, err = run(capsys, "golden", "--out", "g", "--impl", "ref", "--json")
    assert code == 0 and seen == {"out": "g", "impl": "ref"} and out.startswith("wrote 17 cases\nok\n"), err
    assert last_json(out)["impl"] == "ref" and last_json(out)["ok"]
