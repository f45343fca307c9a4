"""``alh-ref demo`` (the main job) end to end through the CLI, at toy size."""
import json

from alh_ref.cli import main


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def test_demo_runs_the_study(capsys, tmp_path):
    code, out, err = _run(capsys, "demo", "--preset", "micro", "--out", tmp_path, "--progress", "off", "--json")
    assert code == 0, err
    s = _last_json(out)
    assert "results.json" in s["files"] and (tmp_path / "demo" / "results.md").is_file()
    assert "| alh-householder |" in out
