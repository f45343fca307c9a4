"""The one backward rule of the core (docs/glossary.md, "The backward rule") holds for every backward.

Every public ``*_backward`` of alh_ref, and every ``_fast`` / ``_ref`` twin, (the NumPy core; alh_ref.torch uses autograd) takes its
upstream gradients, then ``cache``, then keyword-only options only, and is listed in the glossary's
table with exactly its parameters, so the table cannot go stale.
"""
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import alh_ref

GLOSSARY = Path(__file__).resolve().parents[1] / "docs" / "glossary.md"


def _backwards():
    """{qualified name: function} of every public *_backward (and its _fast / _ref twin) in alh_ref, torch excluded."""
    out = {}
    for info in pkgutil.walk_packages(alh_ref.__path__, "alh_ref."):
        if info.name.startswith("alh_ref.torch"):
            continue
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if re.search(r"_backward(_fast|_ref)?$", name) and not name.startswith("_") and callable(obj) \
                    and getattr(obj, "__module__", None) == info.name:
                out[f"{info.name}.{name}"] = obj
    return out


def _params(fn):
    """The parameter names of fn, with "*" where the keyword-only ones start (a dispatched op: its twin's)."""
    fn = getattr(fn, "impls", {}).get("ref", fn)
    names, star = [], False
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star:
            names.append("*")
            star = True
        names.append(p.name)
    return names


def _table():
    """{backward name: [parameter names as written]} from the glossary's table of backward signatures."""
    text = GLOSSARY.read_text()
    section = text[text.index("**The backward rule.**"):]
    section = section[:section.index("\n\n", section.index("| forward | backward | returns |"))]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[1].startswith("`"):
            continue
        spans = re.findall(r"`([^`]*)`", cells[1])
        sig = next((s for s in spans if "(" in s), None)
        for s in spans:
            name = s.split("(", 1)[0].strip()
            if name.endswith("_backward"):
                rows[name] = sig
    return {n: [a.split("=")[0].strip() for a in s[s.index("(") + 1:s.rindex(")")].split(",")] for n, s in rows.items()}


BACKWARDS = _backwards()


def test_every_backward_is_found():
    """The walk sees the core (a broken import or a rename would silently empty the checks below)."""
    short = {q.rsplit(".", 1)[1] for q in BACKWARDS}
    assert {"linear_backward", "gpt_backward", "alh_backward", "theta_backward", "householder_backward"} <= short


@pytest.mark.parametrize("qual", sorted(BACKWARDS))
def test_backward_follows_the_rule(qual):
    """Upstream gradients, then cache, then keyword-only options; and the glossary lists it as it is."""
    names = _params(BACKWARDS[qual])
    assert "cache" in names, f"{qual}{tuple(names)} has no cache argument"
    after = names[names.index("cache") + 1:]
    assert not after or after[0] == "*", f"{qual}{tuple(names)}: options after cache must be keyword-only"
    short = qual.rsplit(".", 1)[1]
    table = _table()
    family = re.sub(r"_(fast|ref)$", "", short)                                  # a twin: the dispatched name
    listed = table.get(short, table.get(family))
    assert listed is not None, f"{short} is not in the table of docs/glossary.md"
    assert listed == names, f"docs/glossary.md lists {short}({', '.join(listed)}); the code has ({', '.join(names)})"
