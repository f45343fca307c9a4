"""Run folders: their layout, the one-writer lock, checkpoint lists, pins, pruning and the loss history.

A run folder ``<out>/<name>/`` holds::

    .lock                           the writer's lock file (its pid); see :class:`RunLock`
    tokenizer/                      tokenizer.tiktoken + tokenizer.json
    checkpoints/step-NNNNNN/        one checkpoint folder per saved step
    pins/<id>.json                  "keep this checkpoint": written by each adapted run that uses one
    history.jsonl                   one JSON record per optimisation step
    summary.json                    what the last job did
    eval/<split>-<fingerprint>.json results of evaluations

Pruning keeps the newest ``keep`` checkpoints and every checkpoint another run uses (a pin names
it while the pinning run exists, or a run beside this one has it as its base), and says which it
kept and why.
"""
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

from ..checkpoint import MANIFEST_FILE
from ..errors import InputError
from ..io_utils import atomic_write_json, atomic_write_text, ensure_writable_dir

CKPT_DIR, TOKENIZER_DIR, PINS_DIR = "checkpoints", "tokenizer", "pins"
HISTORY_FILE, SUMMARY_FILE, LOCK_FILE = "history.jsonl", "summary.json", ".lock"
CKPT_PREFIX = "step-"

try:
    import fcntl
except ImportError:                     # not POSIX: no OS lock (documented in docs/usage.md)
    fcntl = None


def run_path(out, name) -> Path:
    """The run folder ``out/name``, after checking ``name`` is a plain folder name and ``out`` a writable folder.

    ``out`` is created if needed; ``out/name`` is not (the job creates it once its inputs are checked).

    Parameters
    ----------
    out : str or Path   root of all runs (e.g. ``runs``)
    name : str          a plain folder name (no path separators)

    Returns
    -------
    Path
    """
    if not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name or "\\" in name:
        raise InputError(f"run name {name!r} is not a plain folder name; expected e.g. 'base' (no '/' or '..')")
    return ensure_writable_dir(out) / name


def run_dir(out, name) -> Path:
    """The run folder ``out/name``, created (with parents) and checked writable."""
    return ensure_writable_dir(run_path(out, name))


def _pid_alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive OS lock (``fcntl.flock``) on ``<run>/.lock`` while a process writes the run.

    The kernel drops the lock when its process exits in any way (kill -9 included), so a lock file
    left behind is *stale*: the next writer takes it over and reports the dead pid it found in it.
    A second writer while the first is alive gets InputError (CLI exit 2) naming the holder's pid.
    If the folder was created by this lock and holds nothing else when the lock is released, the
    folder is removed (a job that failed on bad input leaves no run folder behind).
    """

    def __init__(self, rd):
        self.rd, self.fd, self.created, self.stale_pid = Path(rd), None, False, None

    def __enter__(self):
        self.created = not self.rd.exists()
        ensure_writable_dir(self.rd)
        path = self.rd / LOCK_FILE
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                holder = os.pread(self.fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(self.fd)
                self.fd = None
                raise InputError(f"run folder {str(self.rd)!r} is being written by another process (pid {holder}); "
                                 "wait for it to finish, or use another --name") from None
        old = os.pread(self.fd, 64, 0).decode("ascii", "replace").strip()
        if old.isdigit() and int(old) != os.getpid() and not _pid_alive(int(old)):
            self.stale_pid = int(old)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def __exit__(self, *exc):
        if self.fd is None:
            return False
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        os.close(self.fd)                          # closing the descriptor releases the flock
        self.fd = None
        if self.created and [p.name for p in self.rd.iterdir()] == [LOCK_FILE]:
            (self.rd / LOCK_FILE).unlink(missing_ok=True)
            self.rd.rmdir()
        return False


# ----------------------------------------------------------------------------------------------
# Checkpoint folders

def checkpoint_path(rd, step) -> Path:
    """``rd/checkpoints/step-NNNNNN`` for a step count."""
    return Path(rd) / CKPT_DIR / f"{CKPT_PREFIX}{int(step):06d}"


def list_checkpoints(rd) -> list:
    """Complete checkpoints of a run (manifest present), oldest first, as [(step, Path)]."""
    folder = Path(rd) / CKPT_DIR
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        tail = p.name[len(CKPT_PREFIX):]
        if p.name.startswith(CKPT_PREFIX) and tail.isdigit() and (p / MANIFEST_FILE).is_file():
            out.append((int(tail), p))
    return sorted(out)


def resolve_checkpoint(ref, out="runs"):
    """Find the checkpoint a user means: a checkpoint folder, a run folder (its newest), or a run name.

    Parameters
    ----------
    ref : str or Path   checkpoint folder, run folder, or the name of a run under ``out``
    out : str or Path   run root used for bare names

    Returns
    -------
    ckpt : Path   the checkpoint folder
    rd : Path or None   the run folder it belongs to (None for a loose checkpoint)
    """
    p = Path(ref)
    if not p.exists() and (Path(out) / str(ref)).exists():
        p = Path(out) / str(ref)
    if not p.exists():
        raise InputError(f"run or checkpoint {str(ref)!r} not found (looked at {str(ref)!r} and "
                         f"{str(Path(out) / str(ref))!r}); "
                         "expected a run folder written by pretrain/adapt, or one of its checkpoint folders")
    if (p / MANIFEST_FILE).is_file():
        rd = p.parent.parent if p.parent.name == CKPT_DIR else None
        return p, rd
    ckpts = list_checkpoints(p)
    if not ckpts:
        raise InputError(f"{str(p)!r} holds no checkpoint; expected a run folder with {CKPT_DIR}/{CKPT_PREFIX}* "
                         "(written by pretrain/adapt) or a checkpoint folder")
    return ckpts[-1][1], p


# ----------------------------------------------------------------------------------------------
# Pins and pruning

def pin_checkpoint(ckpt, by) -> Path | None:
    """Record in the checkpoint's run folder that run ``by`` depends on checkpoint ``ckpt``.

    Writes ``<run>/pins/<id>.json`` = {checkpoint (folder name), run (absolute path of ``by``),
    relpath (``by`` relative to the pinned run)}; ``id`` is a hash of ``by`` and ``ckpt``, so
    pinning again is idempotent. A loose checkpoint (not in a run folder) needs no pin: None.
    OSError (e.g. a read-only base run) is the caller's to report.
    """
    ckpt = Path(ckpt).resolve()
    if ckpt.parent.name != CKPT_DIR:
        return None
    rd, by = ckpt.parent.parent, Path(by).resolve()
    key = hashlib.sha256(f"{by}\n{ckpt.name}".encode()).hexdigest()[:16]
    path = rd / PINS_DIR / f"{key}.json"
    atomic_write_json(path, {"checkpoint": ckpt.name, "run": str(by), "relpath": os.path.relpath(by, rd)})
    return path


def read_pins(rd) -> dict:
    """Pins of a run that still hold: {checkpoint folder name: [pinning run, ...]}.

    A pin holds while its run exists at its absolute path or at its path relative to ``rd`` (so a
    whole ``runs/`` tree can move); a pin whose run is gone, or an unreadable pin file, holds nothing.
    """
    folder, out = Path(rd) / PINS_DIR, {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.glob("*.json")):
        try:
            pin = json.loads(p.read_text(encoding="utf-8"))
            name, run = pin["checkpoint"], pin["run"]
            alive = Path(run).is_dir() or (Path(rd) / pin.get("relpath", "\0")).is_dir()
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if alive:
            out.setdefault(name, []).append(run)
    return out


def references(rd) -> dict:
    """Checkpoints of run ``rd`` that other runs use: {checkpoint folder name: [run, ...]}.

    The pins (:func:`read_pins`), and, for adapted runs written before pins existed, every run
    folder beside ``rd`` whose newest checkpoint names a base checkpoint inside ``rd``.
    """
    refs, rd = read_pins(rd), Path(rd).resolve()
    for other in sorted(rd.parent.iterdir()):
        ckpts = list_checkpoints(other) if other != rd and other.is_dir() else []
        if not ckpts:
            continue
        try:
            base = json.loads((ckpts[-1][1] / MANIFEST_FILE).read_text(encoding="utf-8"))["base"]
            cands = [(other / base["relpath"]).resolve(), Path(base["path"]).resolve()]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for c in cands:
            if c.parent.parent == rd and str(other) not in refs.get(c.name, []):
                refs.setdefault(c.name, []).append(str(other))
                break
    return refs


def prune(rd, keep) -> list:
    """Delete all but the newest ``keep`` complete checkpoints (keep 0: keep all), sparing those other
    runs use (:func:`references`).

    Returns
    -------
    list of str   one line per older checkpoint kept because a pin names it ("kept step-000300:
        pinned by run '/abs/path' (delete that run to release it)")
    """
    if not keep:
        return []
    pins, notes = references(rd), []
    for _, p in list_checkpoints(rd)[:-keep]:
        if p.name in pins:
            notes.append(f"kept {p.name}: pinned by run {', '.join(map(repr, pins[p.name]))} "
                         "(an adapted run uses it as its base; delete that run to release it)")
        else:
            (p / MANIFEST_FILE).unlink(missing_ok=True)      # un-commit first: a crash mid-delete leaves no
            shutil.rmtree(p, ignore_errors=True)             # folder that looks complete
    return notes


# ----------------------------------------------------------------------------------------------
# History

def read_history(rd, upto) -> list:
    """Records of ``rd/history.jsonl`` with step <= ``upto`` (steps after the last checkpoint are dropped)."""
    path = Path(rd) / HISTORY_FILE
    if not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        try:
            rec = json.loads(line)
            step = int(rec["step"])
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{str(path)!r} line {i + 1} is not a history record; expected JSON with a 'step'") from None
        if step <= upto:
            out.append(rec)
    return out


def write_history(rd, history):
    """Write the loss history (one JSON record per line) atomically."""
    atomic_write_text(Path(rd) / HISTORY_FILE, "".join(json.dumps(r) + "\n" for r in history))
