"""Every example in examples/ runs, in reading order, and prints what its docstring promises."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _run(name, *args, env=None):
    r = subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], capture_output=True, text=True,
                       cwd=ROOT, timeout=300, env=dict(os.environ, OPENBLAS_NUM_THREADS="1", **(env or {})))
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_examples_are_numbered_in_reading_order():
    numbered = sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]_*.py"))
    assert [n[:2] for n in numbered] == ["01", "02", "03", "04"]
    assert {p.name for p in EXAMPLES.glob("*.py")} - set(numbered) == {"alh_study.py"}   # the study's own script


def test_01_gradient_check_by_hand():
    out = _run("01_gradcheck_layer.py")
    errs = [float(line.split()[-1]) for line in out.splitlines() if line.startswith("d L / d")]
    assert len(errs) == 3 and max(errs) < 1e-7 and "PASS" in out


def test_02_train_and_sample():
    out = _run("02_train_tiny_gpt.py", 120)
    steps = [line for line in out.splitlines() if line.startswith("step")]
    assert float(steps[-1].split()[3]) < float(steps[0].split()[3]) - 1.0      # the loss fell by more than 1 nat
    sample = next(line for line in out.splitlines() if line.startswith("sample: "))
    assert len(sample) > len("sample: 'The '")


def test_03_alh_context_helps_on_average():
    out = _run("03_alh_context.py")
    assert "tokens the context helped most:" in out and "tokens the context helped least:" in out
    rows = [line for line in out.splitlines() if line.strip().startswith("position")]
    assert len(rows) == 10
    gains = [float(r.rsplit("gain", 1)[1].strip(" +)")) for r in rows]
    assert gains[:5] == sorted(gains[:5], reverse=True) and min(gains[:5]) >= max(gains[5:])


def test_04_port_check_without_alh_ref(tmp_path):
    out = _run("04_port_check.py", ROOT / "tests" / "golden", tmp_path)
    assert "gpt_f64                                  act.h.0" in out
    assert out.splitlines()[-1].startswith("PASS: ") and "missing and not checked" in out.splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt_f32.safetensors", "gpt_f64.safetensors"]


@pytest.mark.parametrize("name", ["01_gradcheck_layer.py", "02_train_tiny_gpt.py", "03_alh_context.py",
                                  "04_port_check.py"])
def test_examples_say_how_to_run_them(name):
    doc = (EXAMPLES / name).read_text().split('"""')[1]
    assert f"python examples/{name}" in doc
