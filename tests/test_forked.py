"""alh_ref.forked and DataParallel(workers="processes"): the micro-batches on forked processes.

The same micro-batches as on threads, computed by the same kernels on the same inputs and summed in
the same order: the results agree with the threads' to rounding (exactly, on the machines measured;
a worker's arrays sit at other addresses, and a vector loop's split may follow alignment, so the
tests allow the parallel tests' 64 ulps). Failures in a worker reach the caller as exceptions.
"""
import os
import signal
import time

import numpy as np
import pytest

from alh_ref import cli, forked, parallel
from alh_ref.alh import ALHConfig
from alh_ref.alh.methods import METHODS, make_method
from alh_ref.errors import InputError, RunError
from alh_ref.model import decayed, init_params, param_shapes
from alh_ref.optim import AdamW, AdamWConfig
from alh_ref.parallel import DataParallel, resolve_workers

from test_parallel import CFG, _assert_same, _batch                     # the threads' tests' model, batches, 64-ulp check
from test_parallel import _alh_method
from test_parallel import _gpt_loss_and_grads as _gpt

pytestmark = pytest.mark.skipif(not forked.available(), reason="worker processes need os.fork on Linux")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("B,threads", [(4, 2), (7, 3)])
def test_processes_equal_threads(B, threads):
    """Loss and every gradient as on threads, with an ignore mask that weights the micro-batches unequally."""
    params = init_params(CFG, seed=1, dtype=np.float64)
    x, y = _batch(B, seed=2)
    ignore = np.random.default_rng(3).random(x.shape) < 0.3                           # (B,T)
    with DataParallel(_gpt(params), threads) as thr, \
            DataParallel(_gpt(params), threads, workers="processes", state=params) as proc:
        _assert_same(proc(x, y, ignore=ignore), thr(x, y, ignore=ignore))
        assert len(proc._procs.workers) == threads - 1


def test_training_on_processes_follows_the_trained_state():
    """Three AdamW steps: the workers see each update (state copied in before every call), as threads do."""
    names = list(param_shapes(CFG))
    out = {}
    for workers in ("threads", "processes"):
        params = init_params(CFG, seed=4, dtype=np.float64)
        opt = AdamW(params, names, AdamWConfig(lr=1e-2), decayed)
        with DataParallel(_gpt(params), 2, workers=workers, state=params) as step:
            losses = []
            for i in range(3):
                loss, grads = step(*_batch(4, seed=10 + i))
                opt.step(params, grads)
                losses.append(loss)
        out[workers] = (losses, params)
    np.testing.assert_allclose(out["processes"][0], out["threads"][0], rtol=1e-12)
    for n in names:
        # 3 steps from gradients equal to rounding; a worker on stale parameters moves them by ~lr = 1e-2
        np.testing.assert_allclose(out["processes"][1][n], out["threads"][1][n], rtol=1e-9, atol=1e-12, err_msg=n)


def test_alh_method_on_processes_splits_its_extra_arguments():
    """An ALH method (its hypernetwork the state) with domain labels: the extra (B,) argument is split too."""
    m = _alh_method()
    x, y = _batch(6, seed=8)
    dom = np.arange(6) % 2                                                            # (B,)
    with DataParallel(m.loss_and_grads, 2) as thr, \
            DataParallel(m.loss_and_grads, 2, workers="processes", state=m.params) as proc:
        _assert_same(proc(x, y, dom), thr(x, y, dom))


def test_a_state_change_in_place_reaches_the_worker():
    w = np.ones(3)                                                                    # (3,)

    def f(x, y):
        return float(w @ x[0, :3]), {"w": x[0, :3].astype(np.float64)}
    x = np.arange(12, dtype=np.float64).reshape(4, 3)                                 # (B,3): rows 0-1 here, 2-3 there
    with DataParallel(f, 2, workers="processes", state={"w": w}) as step:
        before, _ = step(x, x)
        w[...] = 2.0                                                                  # in place: the worker sees it
        after, _ = step(x, x)
    # loss = (w . x[0] + w . x[2]) / 2 with 4 counted targets each side; every value exact in float64
    assert before == (3.0 + 21.0) / 2 and after == 2 * before


def test_replacing_a_state_tensor_is_an_error():
    params = init_params(CFG, seed=9, dtype=np.float64)
    x, y = _batch(4)
    with DataParallel(_gpt(params), 2, workers="processes", state=params) as step:
        step(x, y)
        params["wte"] = params["wte"].copy()                                          # the worker still has the old one
        with pytest.raises(RunError, match=r"\['wte'\] were replaced .* in place"):
            step(x, y)


def test_an_exception_in_a_worker_is_raised_in_the_caller_and_the_workers_go_on():
    def f(x, y):
        if x[0, 0] < 0:
            raise ValueError(f"bad row starting {x[0, 0]}")
        return 1.0, {"w": np.zeros(2)}
    x = np.zeros((4, 2))
    x[2, 0] = -5.0                                                                    # micro-batch 1: a worker's
    with DataParallel(f, 2, workers="processes", state={"w": np.zeros(2)}) as step:
        with pytest.raises(ValueError, match="bad row starting -5.0"):
            step(x, x)
        pid = step._procs.workers[0][0]
        assert step(np.zeros((4, 2)), x)[0] == 1.0                                    # same worker, still in step
        assert step._procs.workers[0][0] == pid


def test_a_gradient_of_another_tensor_is_an_error():
    def f(x, y):
        return 1.0, {"other": np.zeros(3)}
    with DataParallel(f, 2, workers="processes", state={"w": np.zeros(2)}) as step:
        with pytest.raises(RunError, match="gradient 'other' .* not one of the trained tensors"):
            step(np.zeros((4, 2)), np.zeros((4, 2)))


def test_a_killed_worker_is_an_error_and_the_next_call_forks_anew():
    params = init_params(CFG, seed=10, dtype=np.float64)
    x, y = _batch(4)
    with DataParallel(_gpt(params), 2, workers="processes", state=params) as step:
        expected = step(x, y)
        pid = step._procs.workers[0][0]
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(RunError, match=f"worker process {pid} .* ended unexpectedly"):
            step(x, y)
        assert not _alive(pid)                                                        # reaped, not a zombie
        _assert_same(step(x, y), expected)
        assert step._procs.workers[0][0] != pid


def test_workers_ignore_ctrl_c_and_close_ends_them():
    with DataParallel(lambda x, y: (0.0, {}), 2, workers="processes", state={}) as step:
        step(np.zeros((2, 1)), np.zeros((2, 1)))
        pid = step._procs.workers[0][0]
        os.kill(pid, signal.SIGINT)                                                   # a terminal's Ctrl-C reaches it too
        time.sleep(0.05)
        assert step(np.zeros((2, 1)), np.zeros((2, 1)))[0] == 0.0 and _alive(pid)
    assert not _alive(pid)                                                            # closed and reaped with the block


def test_an_interrupted_call_closes_the_workers():
    """An exception in the caller's own micro-batch (e.g. Ctrl-C) leaves no worker behind mid-call."""
    def f(x, y):
        if x[0, 0] < 0:
            raise KeyboardInterrupt
        time.sleep(0.01)
        return 0.0, {}
    x = np.zeros((2, 1))
    x[0, 0] = -1.0                                                                    # the caller's micro-batch
    step = DataParallel(f, 2, workers="processes", state={})
    step(np.zeros((2, 1)), x)
    pid = step._procs.workers[0][0]
    with pytest.raises(KeyboardInterrupt):
        step(x, x)
    assert step._procs is None and not _alive(pid)
    assert step(np.zeros((2, 1)), x)[0] == 0.0                                        # forks anew
    step.close()


def test_bad_worker_settings_are_input_errors():
    with pytest.raises(InputError, match="workers='gpu'; expected one of threads, processes"):
        DataParallel(lambda x, y: None, 2, workers="gpu")
    with pytest.raises(InputError, match="needs state="):
        DataParallel(lambda x, y: None, 2, workers="processes")
    with pytest.raises(InputError, match="workers='gpu'"):
        resolve_workers("gpu")
    assert resolve_workers(None) == "processes" and resolve_workers("threads") == "threads"
    assert cli.WORKERS == parallel.WORKERS                          # the CLI's copy (it starts without NumPy)


def test_cli_workers_train_the_same_run(capsys, tmp_path):
    """alh-ref pretrain --workers processes trains what --workers threads trains, and says which it used."""
    import json

    from run_helpers import DIMS, WORDS_A, last_json, run, write_docs
    write_docs(tmp_path / "a.txt", WORDS_A, 30, 0)
    hist = {}
    for w in ("threads", "processes"):
        code, out, err = run(capsys, "pretrain", "--corpus", tmp_path / "a.txt", "--vocab-size", "270", *DIMS,
                             "--steps", "3", "--out", tmp_path, "--name", w, "--threads", "2", "--workers", w, "--json")
        assert code == 0, err
        assert last_json(out)["workers"] == w
        hist[w] = [json.loads(line)["loss"] for line in (tmp_path / w / "history.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(hist["processes"], hist["threads"], rtol=1e-6)        # float32, rounding only
    code, out, err = run(capsys, "pretrain", "--corpus", tmp_path / "a.txt", "--workers", "gpu", "--out", tmp_path)
    assert code == 2 and "argument --workers: invalid choice" in err and "Traceback" not in err


def test_a_worker_keeps_no_inherited_file_open(tmp_path):
    """Only the standard streams and its pipe: e.g. a run folder's lock is not held by a worker."""
    with open(tmp_path / "held", "w") as held, \
            DataParallel(lambda x, y: (0.0, {}), 2, workers="processes", state={}) as step:
        step(np.zeros((2, 1)), np.zeros((2, 1)))
        pid, conn, _ = step._procs.workers[0]
        fds = {int(f) for f in os.listdir(f"/proc/{pid}/fd")}
        assert held.fileno() not in fds and len(fds - {0, 1, 2}) == 1, fds          # the pipe's end alone


def test_close_kills_a_worker_that_does_not_end(monkeypatch):
    """A worker that cannot read its stop (here: stopped by SIGSTOP) is killed after CLOSE_S."""
    monkeypatch.setattr(forked, "CLOSE_S", 0.2)
    step = DataParallel(lambda x, y: (0.0, {}), 2, workers="processes", state={})
    step(np.zeros((2, 1)), np.zeros((2, 1)))
    pid = step._procs.workers[0][0]
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    step.close()
    assert not _alive(pid) and time.monotonic() - t0 < 5                            # killed, reaped, not hung


def test_the_torch_command_line_refuses_workers(capsys):
    """--workers is the NumPy backend's: the torch commands (which take alh-ref's options over) refuse it in one line."""
    from alh_ref.torch.cli import main
    assert main(["pretrain", "--corpus", "synthetic", "--workers", "threads"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--workers is an option of the NumPy backend" in err[0]


@pytest.mark.parametrize("name", [m for m in METHODS if m != "alh-shuffled"])   # alh-shuffled is never split
def test_every_method_trains_alike_on_processes(name):
    """Every method's state is its trained tensors (what adapt's AdamW updates): processes reproduce threads."""
    base = init_params(CFG, seed=11, dtype=np.float64)
    m = make_method(name, base, CFG, ALHConfig(D=8, n_head=2), seed=12)
    rng = np.random.default_rng(13)
    for a in m.params.values():                   # off the init point (lora's zero a, the identity transforms)
        a += 0.05 * rng.standard_normal(a.shape)
    x, y = _batch(4, seed=14)
    with DataParallel(m.loss_and_grads, 2) as thr, \
            DataParallel(m.loss_and_grads, 2, workers="processes", state=m.params) as proc:
        _assert_same(proc(x, y), thr(x, y))
