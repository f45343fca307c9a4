"""Only alh_ref.torch imports torch: the NumPy package runs, and its tests pass, without it."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_no_module_outside_alh_ref_torch_imports_torch():
    pkg = ROOT / "alh_ref"
    offenders = [str(p.relative_to(ROOT)) for p in pkg.rglob("*.py")
                 if p.relative_to(pkg).parts[0] != "torch"
                 and re.search(r"^\s*(import torch|from torch|from \.+torch|import .*\btorch\b)", p.read_text(encoding="utf-8"), re.M)]
    assert offenders == []


def test_importing_the_numpy_package_does_not_load_torch():
    code = ("import sys, alh_ref, alh_ref.cli, alh_ref.runs, alh_ref.golden, alh_ref.study, alh_ref.alh.methods; "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "False"


def test_without_torch_the_torch_command_fails_in_one_line():
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here; this test checks the message given without it")
    r = subprocess.run([sys.executable, "-m", "alh_ref.torch", "golden-check"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=False)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "needs PyTorch" in r.stderr
