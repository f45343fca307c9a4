"""``alh-ref demo`` (the main job) through the CLI: the --quick smoke test (files produced and well
formed, not the numbers) and the option errors."""
import json

import pytest

from alh_ref.cli import main

QUICK = ("--quick",)


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_quick_writes_a_well_formed_report(capsys, tmp_path):
    code, out, err = _run(capsys, "demo", *QUICK, "--out", tmp_path, "--progress", "off", "--json")
    assert code == 0, err
    s = json.loads(out.strip().splitlines()[-1])
    run = tmp_path / "demo"
    assert s["size"] == "quick" and len(s["verdict"]) == 4
    for f in s["files"]:
        assert (run / f).stat().st_size > 0
    for f in ("results.json", "report.md"):
        assert f in s["files"]
    png = [f for f in s["files"] if f.endswith(".png")]
    assert len(png) == 5 and all((run / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in png)
    res = json.loads((run / "results.json").read_text())
    assert res["complete"] is True
    for p in ("shift", "mix"):
        assert set(res["summary"][p]) == set(res["config"]["methods"])
        for name, e in res["summary"][p].items():
            for D in "ABC":
                t = e["test"][D]
                assert {"mean", "std", "ci"} <= set(t) and len(t["ci"]) == 2
    md = (run / "report.md").read_text()
    assert md.rstrip().splitlines()[-4].startswith("Claim 1:") and md.rstrip().splitlines()[-1].startswith("Claim 4:")


@pytest.mark.parametrize("argv", [("--quick", "--full"), ("--corpus-a", "x.txt"),
                                  ("--setting", "synthetic", "--corpus-a", "a", "--corpus-b", "b", "--corpus-c", "c")])
def test_demo_rejects_bad_option_combinations(capsys, tmp_path, argv):
    code, _, err = _run(capsys, "demo", *argv, "--out", tmp_path, "--progress", "off")
    assert code == 2 and "Traceback" not in err and err.strip()


def test_demo_reports_a_missing_corpus_in_one_line(capsys, tmp_path):
    code, _, err = _run(capsys, "demo", "--quick", "--corpus-a", tmp_path / "nope", "--corpus-b", "pycode",
                        "--corpus-c", "docstrings", "--out", tmp_path, "--progress", "off")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_demo_options_map_to_the_study_configuration():
    from argparse import Namespace

    from alh_ref.demo import demo_config

    def ns(**kw):
        return Namespace(**{"quick": False, "full": False, "setting": None, "corpus_a": None, "corpus_b": None,
                            "corpus_c": None, **kw})
    assert demo_config(ns()) == ("default", None, {})
    assert demo_config(ns(full=True, setting="synthetic")) == ("full", "synthetic", {})
    assert demo_config(ns(quick=True, corpus_a="a", corpus_b="b", corpus_c="c")) == \
        ("quick", "paths", {"corpus_a": "a", "corpus_b": "b", "corpus_c": "c"})


def test_demo_resume_refuses_a_foreign_cache_in_one_line(capsys, tmp_path):
    cache = tmp_path / "demo" / "cache"
    cache.mkdir(parents=True)
    (cache / "manifest.json").write_text(json.dumps({"hash": "0", "seeds": [0], "data_sha256": "0", "config": {}}))
    code, _, err = _run(capsys, "demo", "--quick", "--resume", "--out", tmp_path, "--progress", "off")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "different data" in err and "drop --resume" in err
    assert (cache / "manifest.json").read_text().startswith('{"hash": "0"')        # the foreign cache is left alone
