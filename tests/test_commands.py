"""The command line as a whole: the training and data commands are registered, `inspector --help` loads no heavy
optional module, and a missing extra is a one-line error naming what to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from inspector.cli import build_parser, main
from inspector.cliopts import named_item, require_extra
from inspector.errors import InspectorError


def test_training_and_data_commands_are_registered() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"train", "evaluate", "tiles", "footage", "tradeoff"} <= set(sub.choices)
    tiles = next(a for a in sub.choices["tiles"]._actions if a.dest == "tiles_command")
    assert set(tiles.choices) == {"make", "mine", "cross-style"}


def test_help_loads_no_heavy_optional_module() -> None:
    code = (
        "import sys\n"
        "from inspector.cli import build_parser\n"
        "build_parser().format_help()\n"
        "print(sorted(m for m in ('torch', 'onnx', 'matplotlib') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
    helped = subprocess.run([sys.executable, "-m", "inspector", "--help"], capture_output=True, text=True, check=False)
    assert helped.returncode == 0 and "tiles" in helped.stdout and "tradeoff" in helped.stdout


def test_missing_extra_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails as where the extra is not installed
    with pytest.raises(InspectorError, match=r"pip install 'grape-spider-inspector\[train\]'"):
        require_extra("torch", "inspector train")
    assert main(["train", "--tiles", "t", "--out", "m.onnx"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("inspector: error: inspector train needs torch") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("val=tiles/v3_val", ("val", "tiles/v3_val")),
        ("tiles/v3_val", ("v3_val", "tiles/v3_val")),
        ("a=b=c", ("a", "b=c")),
    ],
)
def test_named_item(text: str, expected: tuple[str, str]) -> None:
    assert named_item(text) == expected
