"""Atomic file writes: nothing a user wrote is ever half-overwritten.

Every file alh_ref writes goes to a temporary file in the destination folder, is flushed and
fsynced, then renamed over the destination (``os.replace`` is atomic on POSIX and Windows).
"""
import json
import os
import tempfile
from pathlib import Path

from .errors import InputError


def ensure_writable_dir(path) -> Path:
    """Create ``path`` (and parents) if needed and check it is a writable folder; InputError if not."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"output path {str(p)!r} exists and is not a folder; expected a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output folder {str(p)!r}: {e.strerror or e}; expected a writable folder path") from None
    if not os.access(p, os.W_OK):
        raise InputError(f"output folder {str(p)!r} is not writable; choose a folder you can write to")
    return p


def _file_mode(path) -> int:
    """The mode a new file would get (0666 minus the umask), or the existing file's mode."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + fsync + rename)."""
    path = Path(path)
    folder = ensure_writable_dir(path.parent if str(path.parent) else ".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        os.chmod(tmp, _file_mode(path))                     # mkstemp makes 0600; use the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
