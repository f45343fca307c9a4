"""Fault injection: kill -9 during pretrain and adapt, a full disk during a save, a read-only run folder,
and two writers at once.

After each fault, the newest checkpoint loads, evaluates to a finite loss, and resuming ends in the
same bits (parameters, AdamW moments, sampler state, history) as a run that was never disturbed.
A kill -9 is delivered from inside a child process at a seeded point: at the k-th batch, or just
before / just after the j-th atomic rename (inside a checkpoint save, between its tensor file and
its manifest, or while writing the history).
"""
import errno
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import alh_ref.checkpoint
import alh_ref.io_utils
import alh_ref.runs.folders
from alh_ref import runs
from alh_ref.checkpoint import load_checkpoint
from run_helpers import ALH, DIMS, in_tmp, one_line_error, run, same_run, texts  # noqa: F401

STEPS = 8
PRE = ["--vocab-size", "300", *DIMS, "--steps", str(STEPS), "--ckpt-every", "1"]
ADA = ["--method", "alh-householder", *ALH, "--batch-size", "4", "--steps", str(STEPS), "--ckpt-every", "1"]

# A child that runs the CLI with a fault armed: {"at": "batch" | "before_replace" | "after_replace", "k": n,
# "pause": marker file, "go": file}. "batch" kills (or, with "pause", waits for "go") at the k-th batch.
CHILD = r'''
import json, os, signal, sys, time
spec, argv = json.loads(sys.argv[1]), sys.argv[2:]
import alh_ref.io_utils as io
import alh_ref.train as train
n = [0]
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if spec["at"] == "batch":
    real_batch = train.sample_batch
    def batch(*a, **k):
        n[0] += 1
        if n[0] == spec["k"]:
            if "pause" not in spec:
                die()
            open(spec["pause"], "w").close()
            t0 = time.time()
            while not os.path.exists(spec["go"]) and time.time() - t0 < 120:
                time.sleep(0.05)
        return real_batch(*a, **k)
    train.sample_batch = batch
else:
    real_replace = io.os.replace
    def replace(src, dst):
        n[0] += 1
        if n[0] == spec["k"] and spec["at"] == "before_replace":
            die()
        real_replace(src, dst)
        if n[0] == spec["k"]:
            die()
    io.os.replace = replace
from alh_ref.cli import main
sys.exit(main(argv))
'''


def _child(spec, argv):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), OPENBLAS_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec), *map(str, argv)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def ref(tmp_path_factory, texts):
    """Undisturbed runs: base 'full' (pretrain) and 'ad-full' (adapt from it), in root folder ``out``."""
    out = tmp_path_factory.mktemp("ref")
    assert run_quiet("pretrain", "--corpus", texts["a"], *PRE, "--out", out, "--name", "full") == 0
    assert run_quiet("adapt", "--base", "full", "--corpus", texts["b"], *ADA, "--out", out, "--name", "ad-full") == 0
    return out


def run_quiet(*argv):
    from alh_ref.cli import main
    return main([str(a) for a in argv])


def _check_last_checkpoint(rd):
    """The newest checkpoint loads and evaluates to a finite loss."""
    ckpts = runs.list_checkpoints(rd)
    if not ckpts:
        return False
    load_checkpoint(ckpts[-1][1])
    assert math.isfinite(runs.evaluate(ckpts[-1][1], split="all", max_tokens=64)["loss"])
    return True


def _job_argv(job, texts, ref, name):
    if job == "pretrain":
        return ["pretrain", "--corpus", texts["a"], *PRE, "--out", ref, "--name", name]
    return ["adapt", "--base", "full", "--corpus", texts["b"], *ADA, "--out", ref, "--name", name]


def _finish(capsys, job, texts, ref, name):
    """Resume the disturbed run (or start it again if no checkpoint survived) and compare with the reference."""
    rd = ref / name
    argv = ([job, "--resume", "--steps", STEPS, "--out", ref, "--name", name] if runs.list_checkpoints(rd)
            else _job_argv(job, texts, ref, name))
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    same_run(ref / ("full" if job == "pretrain" else "ad-full"), rd)


def _kill_points(seed, n):
    """n seeded kill points: the k-th batch (k >= 2) or the j-th atomic rename (before or after it)."""
    rng = np.random.default_rng(seed)
    kinds = ("batch", "before_replace", "after_replace")
    return [{"at": kinds[i % 3], "k": int(rng.integers(2, STEPS + 1) if i % 3 == 0 else rng.integers(3, 3 * STEPS)),
             "id": f"{seed}.{i}"} for i in range(n)]


FAST = [("pretrain", p) for p in _kill_points(0, 2)] + [("adapt", p) for p in _kill_points(1, 2)]
SLOW = [("pretrain", p) for p in _kill_points(2, 6)] + [("adapt", p) for p in _kill_points(3, 6)]


@pytest.mark.parametrize("job, point", FAST + [pytest.param(*c, marks=pytest.mark.slow) for c in SLOW],
                         ids=lambda v: v if isinstance(v, str) else f"{v['at']}{v['k']}-{v['id']}")
def test_kill_9_then_resume_is_bit_for_bit(capsys, ref, texts, job, point):
    name = f"kill-{job}-{point['id']}"
    proc = _child(point, _job_argv(job, texts, ref, name))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -9, err                      # every kill point lies inside the run
    assert "Traceback" not in err
    _check_last_checkpoint(ref / name)
    _finish(capsys, job, texts, ref, name)


@pytest.mark.parametrize("where", ["tensors", "manifest", "history"])
def test_full_disk_during_a_save(capsys, monkeypatch, ref, texts, where):
    module, attr = {"tensors": (alh_ref.checkpoint, "atomic_write_bytes"),
                    "manifest": (alh_ref.checkpoint, "atomic_write_json"),
                    "history": (alh_ref.runs.folders, "atomic_write_text")}[where]
    real, calls = getattr(module, attr), []

    def full(path, data):
        calls.append(1)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)
    name = f"full-{where}"
    with monkeypatch.context() as m:
        m.setattr(module, attr, full)
        code, _, err = run(capsys, *_job_argv("pretrain", texts, ref, name))
    one_line_error(err, code, "No space left on device", 1)
    line = err.strip().splitlines()[-1]
    assert "--lr" not in line and "free disk space" in line and f"--resume --out {str(ref)!r} --name {name!r}" in line
    assert json.loads((ref / name / runs.SUMMARY_FILE).read_text())["status"] == "failed"
    assert _check_last_checkpoint(ref / name)
    assert not list((ref / name / runs.CKPT_DIR).glob("*/.*.tmp"))          # no temp file left behind
    _finish(capsys, "pretrain", texts, ref, name)


class ReadOnly:
    """Make a folder read-only: chmod for a normal user; for root (who may write anyway) the refusals the
    OS gives a normal user, injected where alh_ref writes (os.access and the temp-file creation)."""

    def __init__(self):
        self.mp, self.dirs = pytest.MonkeyPatch(), []

    def apply(self, folder):
        folder = Path(folder).resolve()
        if os.geteuid() != 0:
            self.dirs = [p for p in [folder, *folder.rglob("*")] if p.is_dir()]
            for p in self.dirs:
                p.chmod(0o555)
            return
        access, mkstemp = os.access, alh_ref.io_utils.tempfile.mkstemp

        def inside(p):
            p = Path(p).resolve()
            return p == folder or folder in p.parents

        def no_access(p, mode, **k):
            return False if mode & os.W_OK and inside(p) else access(p, mode, **k)

        def no_temp(*a, dir=None, **k):
            if dir is not None and inside(dir):
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return mkstemp(*a, dir=dir, **k)
        self.mp.setattr(alh_ref.io_utils.os, "access", no_access)
        self.mp.setattr(alh_ref.io_utils.tempfile, "mkstemp", no_temp)

    def undo(self):
        for p in self.dirs:
            p.chmod(0o755)
        self.dirs = []
        self.mp.undo()


@pytest.fixture
def read_only():
    ro = ReadOnly()
    yield ro
    ro.undo()


def test_read_only_run_folder(capsys, ref, texts, read_only):
    name = "ro"
    code, _, err = run(capsys, *_job_argv("pretrain", texts, ref, name), "--steps", "4", "--decay-steps", STEPS)
    assert code == 0, err
    read_only.apply(ref / name)
    code, out, err = run(capsys, "eval", "--run", ref / name, "--split", "all")
    assert code == 0 and "loss " in out and err.startswith("warning: could not save the result"), err
    code, _, err = run(capsys, "pretrain", "--resume", "--steps", STEPS, "--out", ref, "--name", name)
    one_line_error(err, code, "not writable", 2)
    assert _check_last_checkpoint(ref / name)
    read_only.undo()
    _finish(capsys, "pretrain", texts, ref, name)


def test_two_writers_at_once(capsys, ref, texts, tmp_path):
    name = "dup"
    pause, go = tmp_path / "paused", tmp_path / "go"
    proc = _child({"at": "batch", "k": 3, "pause": str(pause), "go": str(go)}, _job_argv("pretrain", texts, ref, name))
    try:
        t0 = time.time()
        while not pause.exists() and proc.poll() is None and time.time() - t0 < 120:
            time.sleep(0.05)
        assert pause.exists(), proc.communicate()[1]
        for argv in (_job_argv("pretrain", texts, ref, name), ["pretrain", "--resume", "--out", ref, "--name", name]):
            code, _, err = run(capsys, *argv)
            one_line_error(err, code, f"being written by another process (pid {proc.pid})", 2)
        go.touch()
        _, err = proc.communicate(timeout=300)
    finally:
        go.touch()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    same_run(ref / "full", ref / name)
