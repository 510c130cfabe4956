"""Progress bars of the long steps: drawn on a terminal, silent otherwise (logs, CI, pipes)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from inspector.config import DEFAULT_CALIBRATION
from inspector.progress import Progress, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_quiet_when_not_a_terminal() -> None:
    stream = io.StringIO()
    assert list(progress(range(5), desc="replay", unit="frame", stream=stream)) == [0, 1, 2, 3, 4]
    with Progress(5, desc="replay", unit="frame", stream=stream) as bar:
        assert not bar.enabled
        bar.update(1, rejects=2)
    assert stream.getvalue() == ""


def test_a_bar_on_a_terminal_with_counts_and_figures() -> None:
    stream = Terminal()
    assert list(progress(range(7), desc="footage", unit="frame", stream=stream)) == list(range(7))
    assert "footage" in stream.getvalue() and "7/7" in stream.getvalue()
    stream = Terminal()
    with Progress(3, desc="replay", unit="frame", stream=stream) as bar:
        assert bar.enabled
        for _ in range(3):
            bar.update(1, rejects=2)
    text = stream.getvalue()
    assert "replay" in text and "3/3" in text and "rejects=2" in text


def test_a_closed_stream_is_quiet() -> None:
    stream = Terminal()
    stream.close()
    assert list(progress([1, 2], desc="x", unit="y", stream=stream)) == [1, 2]


@pytest.mark.parametrize("step", ["footage", "tiles", "evaluate"])
def test_the_long_steps_draw_a_bar(step: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    if step == "footage":
        from inspector.synth.footage import generate_footage

        generate_footage(tmp_path, width=320, height=240, fps=10, seconds=1.0, calibration=DEFAULT_CALIBRATION)
        assert "footage" in terminal.getvalue() and "10/10" in terminal.getvalue()
        return
    from inspector.synth.scene import ProceduralSource
    from inspector.synth.tiles import make_tile_set

    tiles = make_tile_set(4, ProceduralSource(), DEFAULT_CALIBRATION, seed=1, bunch_pool=2)
    assert "tiles" in terminal.getvalue() and "4/4" in terminal.getvalue()
    if step == "evaluate":
        from inspector.config import DEMO_MODEL
        from inspector.training.evaluation import evaluate_model

        evaluate_model(DEMO_MODEL, tiles, batch=2, threads=1)
        assert "evaluate" in terminal.getvalue() and "2/2" in terminal.getvalue()
