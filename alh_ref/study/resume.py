"""A resumable study: every finished unit of work is kept in ``<out>/cache/`` as one JSON file.

Units: ``base-<seed>.json`` (the base's record and the frozen base's own measurements) and
``<protocol>-<method>-<seed>.json`` (one method's per-seed record; on the first seed also its tuning
entry and frontier points, i.e. the whole learning-rate sweep). Bases are not stored: they are
re-pretrained from their seed (deterministic, and a small share of the study), and only when a unit
of that seed is still missing. ``manifest.json`` holds the hash of the resolved configuration, the
seeds and a fingerprint of the data; a resumed run refuses a cache whose hash differs.

Several processes may work on one cache at once (``run_study(..., jobs=N)``, or the same
``--resume`` command started twice): a process computes a unit only while it holds that unit's
lock, ``locks/<unit>.lock`` (an ``flock``, released by the kernel if the process dies), and skips a
unit another process holds.
"""
import contextlib
import fcntl
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io_utils import atomic_write_json


def data_fingerprint(data):
    """sha256 over every domain's token arrays (train, val and test, in order)."""
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, dict):
            for k in sorted(x):
                h.update(str(k).encode())
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                feed(v)
        elif isinstance(x, np.ndarray):
            h.update(str((x.dtype.str, x.shape)).encode())
            h.update(np.ascontiguousarray(x).tobytes())
        else:
            h.update(repr(x).encode())

    for D in sorted(data["domains"]):
        feed({k: data["domains"][D][k] for k in ("train", "val", "test")})
    return h.hexdigest()


def code_fingerprint():
    """sha256 over the package's own .py files (path and bytes, in path order): which code computed a unit."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def manifest(cfg, seeds, data):
    """What a cache belongs to: the resolved configuration, the seeds and the data fingerprint, and their hash
    (plus, outside the hash, the code's fingerprint: other code may resume, with a warning)."""
    body = {"config": json.loads(json.dumps(cfg)), "seeds": list(seeds), "data_sha256": data_fingerprint(data)}
    return dict(body, hash=hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest(),
                code_sha256=code_fingerprint())


class StudyCache:
    """The cache folder of one run (``folder`` None: the units are kept in memory only)."""

    def __init__(self, folder, man, resume):
        self.folder = None if folder is None else Path(folder)
        self.memory = {}
        self.warning = None
        if self.folder is None:
            return
        path = self.folder / "manifest.json"
        if resume and path.exists():
            old = json.loads(path.read_text(encoding="utf-8"))
            if old.get("hash") != man["hash"]:
                raise InputError(f"cannot resume from {str(self.folder)!r}: it was written with a different "
                                 f"{_differs(old, man)}; expected the same options (drop --resume to start fresh)")
            if old.get("code_sha256") != man.get("code_sha256"):
                self.warning = (f"warning: the units in {str(self.folder)!r} were computed by other alh_ref code "
                                f"(fingerprint {str(old.get('code_sha256'))[:12]} vs {str(man.get('code_sha256'))[:12]}); they "
                                "are kept, and new units may differ from them by more than rounding if the maths changed")
                man = dict(man, code_sha256=old.get("code_sha256"), resumed_with=man.get("code_sha256"))
        elif self.folder.exists():
            units = sorted(f.name for f in self.folder.glob("*.json") if f.name != "manifest.json")
            if units and not _complete(path):                                               # hours of training: keep them
                raise InputError(f"{str(self.folder)!r} holds {len(units)} finished unit(s) of an unfinished run; "
                                 "continue it with --resume, or give another --name (or delete that folder) "
                                 "to start fresh")
            shutil.rmtree(self.folder)                                 # a fresh run after a complete one: recomputed
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, man)
        self.manifest = man

    def mark_complete(self):
        """Record that every unit is in: a later fresh run may then replace this cache (it is reproducible)."""
        if self.folder is not None:
            atomic_write_json(self.folder / "manifest.json", dict(self.manifest, complete=True))

    def has(self, unit):
        """True if the unit is finished (by this process or any other)."""
        return unit in self.memory if self.folder is None else (self.folder / f"{unit}.json").exists()

    def get(self, unit):
        """The stored unit (a dict) or None."""
        if not self.has(unit):
            return None
        if self.folder is None:
            return json.loads(self.memory[unit])
        return json.loads((self.folder / f"{unit}.json").read_text(encoding="utf-8"))

    def put(self, unit, value):
        """Store a finished unit atomically, then call :func:`unit_done` (the tests' interruption hook).
        Every reader gets the unit back from its JSON, so a fresh and a resumed run carry the same values."""
        text = json.dumps(value)
        if self.folder is None:
            self.memory[unit] = text
        else:
            atomic_write_json(self.folder / f"{unit}.json", json.loads(text))
        unit_done(unit)

    @contextlib.contextmanager
    def claim(self, unit):
        """Hold unit's lock while the block runs; yields False (at once) if another process holds it."""
        if self.folder is None:
            yield True
            return
        (self.folder / "locks").mkdir(exist_ok=True)
        with open(self.folder / "locks" / f"{unit}.lock", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _complete(path):
    """True if the manifest at ``path`` says its run finished."""
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("complete"))
    except (OSError, ValueError):
        return False


def unit_done(unit):
    """Called after every stored unit; does nothing (tests replace it to interrupt a run)."""


def _differs(old, new):
    """A short phrase naming what differs between two manifests."""
    if old.get("data_sha256") != new["data_sha256"]:
        return "data (the corpora's tokens differ)"
    if old.get("seeds") != new["seeds"]:
        return f"seeds ({old.get('seeds')} vs {new['seeds']})"
    a, b = old.get("config", {}), new["config"]
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return "configuration (" + ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys)[:300] + ")"
