"""The two error kinds a user can see.

Every error raised for bad input or a failed run carries a one-line message saying what was wrong
and what was expected. The CLI prints ``error: <message>`` and exits 2 for :class:`InputError`
(usage: bad arguments, paths, ids, corpora) and 1 for :class:`RunError` (a run that failed:
non-finite loss, corrupted checkpoint found mid-run).
"""


class ALHRefError(Exception):
    """Base class of all errors alh_ref raises on purpose."""

    exit_code = 1


class InputError(ALHRefError, ValueError):
    """Bad input from the user: wrong arguments, shapes, dtypes, paths or files. CLI exit code 2."""

    exit_code = 2


class RunError(ALHRefError, RuntimeError):
    """A run that could not go on (e.g. NaN/inf loss). CLI exit code 1."""

    exit_code = 1


class DiskError(RunError):
    """A run could not write its files (disk full, folder made read-only, I/O error). CLI exit code 1."""
