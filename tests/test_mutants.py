"""tools/mutants.py stays in step with the source: each mutant's edit matches exactly once where it points."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_mutants() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutants", ROOT / "tools" / "mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutants"] = module  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


mutants = _load_mutants()


@pytest.mark.parametrize("mutant", mutants.MUTANTS, ids=[m.name for m in mutants.MUTANTS])
def test_each_mutant_matches_its_source_once_and_changes_it(mutant: Any) -> None:
    assert mutants.stale(mutant, ROOT) is None
    assert mutant.old != mutant.new


def test_mutant_names_are_unique() -> None:
    names = [m.name for m in mutants.MUTANTS]
    assert len(names) == len(set(names))
