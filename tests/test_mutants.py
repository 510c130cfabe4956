"""tools/mutants.py stays in step with the source: each mutant's edit matches exactly once where it points."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_mutants():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("mutants", ROOT / "tools" / "mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutants"] = module
    spec.loader.exec_module(module)
    return module


MUTANTS = _load_mutants().MUTANTS


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_each_mutant_matches_its_source_once_and_changes_it(mutant) -> None:  # type: ignore[no-untyped-def]
    text = (ROOT / mutant.path).read_text()
    assert text.count(mutant.old) == 1, f"{mutant.name}: update tools/mutants.py to the current {mutant.path}"
    assert mutant.old != mutant.new
    for arg in mutant.tests:
        assert (ROOT / arg.split("::")[0]).is_file(), f"{mutant.name}: no test file {arg}"


def test_mutant_names_are_unique() -> None:
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names))
