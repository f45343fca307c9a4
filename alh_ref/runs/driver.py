"""The training driver: run a job's steps, save the checkpoints that pass the divergence check, write the
history and summary, and turn a failure into one line naming the good checkpoint and a command that works.

It is called once per job (alh_ref.runs.jobs) with a :class:`Setup`, fresh or resumed.
"""
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DiskError, InputError, RunError
from ..io_utils import atomic_write_json
from ..optim import AdamW
from ..train import train
from .folders import SUMMARY_FILE, list_checkpoints, prune, write_history
from .loading import save_state
from .options import Schedule, as_dict


@dataclass
class Setup:
    """Everything :func:`_fit` needs: the trainable state, the data, the manifest, the session's schedule."""

    params: dict
    opt: AdamW
    loss_and_grads: object
    tokens: np.ndarray          # (n,) int32
    B: int
    T: int
    rng: np.random.Generator
    schedule: Schedule
    manifest: dict
    history: list
    info: dict
    memory: dict
    new_tokenizer: object = None   # a Tokenizer to save into the run folder once the checks pass (new runs)


def _write_summary(rd, s):
    try:
        atomic_write_json(Path(rd) / SUMMARY_FILE, s)
    except (OSError, InputError):
        pass                                         # the summary is also returned (and printed by the CLI)


def fit(rd, job, setup, progress, notes, writer=True) -> dict:
    """Train up to the schedule's steps, saving checkpoints that pass the divergence check; write history and summary.

    writer : bool   False: write nothing (the other processes of a data parallel torch run)

    Returns
    -------
    dict   the summary (also written to rd/summary.json)
    """
    st, sched = setup, setup.schedule
    start, t0, target = st.opt.t, time.perf_counter(), sched.steps
    manifest = dict(st.manifest, target_steps=target, schedule=as_dict(sched))
    ckpts = list_checkpoints(rd)
    last, kept = [ckpts[-1][1] if ckpts else None], []

    def on_step(step, rec):
        st.history.append({k: rec[k] for k in ("step", "loss", "grad_norm", "lr", "dt")})

    def on_save(step, rng_state):
        if not writer:
            return
        try:
            write_history(rd, st.history)
        except (OSError, InputError) as e:                     # InputError: the folder was made read-only
            raise DiskError(f"could not write {str(Path(rd) / 'history.jsonl')!r}: "
                            f"{getattr(e, 'strerror', None) or e}") from None
        last[0] = save_state(rd, step, st.params, st.opt, rng_state, manifest)
        kept[:] = prune(rd, sched.keep)

    def summary(status, message=None):
        sec = time.perf_counter() - t0
        step = st.history[-1]["step"] if st.history else start                                 # last completed step
        done = step - start
        s = dict(st.info, job=job, run=str(rd), status=status, step=step, target_steps=target,
                 checkpoint=None if last[0] is None else str(last[0]), steps_this_session=done,
                 loss_first=st.history[0]["loss"] if st.history else None,
                 loss_last=st.history[-1]["loss"] if st.history else None,
                 elapsed_s=round(sec, 3), tokens_per_s=round(done * st.B * st.T / sec, 1) if done and sec > 0 else None,
                 tokenizer_sha256=manifest["tokenizer_sha256"], corpus_fingerprint=manifest["corpus_fingerprint"],
                 schedule=as_dict(sched), warnings=list(notes), kept=list(kept))
        if message:
            s["message"] = message
        if writer:
            _write_summary(rd, s)
        return s

    past = [float(r["loss"]) for r in st.history]
    try:
        train(st.params, st.opt, st.loss_and_grads, st.tokens, st.B, st.T, max(0, target - start), st.rng,
              on_step=on_step, progress=progress, save_every=sched.ckpt_every, on_save=on_save, past_losses=past)
    except KeyboardInterrupt:
        if writer:
            _keep_history(rd, st.history)
        summary("interrupted")
        raise
    except RunError as e:
        if writer:
            _keep_history(rd, st.history)
        msg = _failure_message(e, job, rd, last[0], st.opt.cfg.lr, sched.ckpt_every)
        summary("failed", msg)
        raise type(e)(msg) from None
    return summary("done")


def _keep_history(rd, history):
    """Write the history after a stop (best effort: the disk may be full)."""
    try:
        write_history(rd, history)
    except OSError:
        pass


def _failure_message(e, job, rd, last, lr, ckpt_every):
    """What failed, the checkpoint that is good, and a command that works from it."""
    if isinstance(e, DiskError):
        again = f"alh-ref {job} --resume --out {str(Path(rd).parent)!r} --name {Path(rd).name!r}"
        where = (f"the last complete checkpoint is {str(last)!r}" if last is not None else "no checkpoint was saved yet")
        return f"{e}; {where}; free disk space (or make the folder writable), then continue with: {again}"
    lower = f"{lr / 10:.3g}" if math.isfinite(lr) else "1e-3"
    if last is None:
        return (f"{e}; no checkpoint was saved yet; start again with a lower learning rate, e.g. --lr {lower}"
                + (" (a smaller --ckpt-every saves earlier)" if ckpt_every > 1 else ""))
    return (f"{e}; the last good checkpoint is {str(last)!r} (its parameters gave a finite loss that had not blown "
            f"up): evaluate it with `alh-ref eval --run {str(last)!r}`, or train again from scratch with a lower "
            f"learning rate, e.g. --lr {lower} and a new --name")
