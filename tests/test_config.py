from __future__ import annotations

from pathlib import Path

import pytest

from inspector.cli import main
from inspector.config import Config, load_calibration, load_config
from inspector.errors import ConfigError
from tests.spot_model import write_spot_model

CAL = """\
mm_per_px: 0.5             # at the belt plane
belt_direction: "+x"
belt_speed_mm_s: 300.0
camera_to_ejector_mm: 800
spider_span_mm: [4, 12]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_calibration_file_of_the_interface_loads(tmp_path: Path) -> None:
    cal = load_calibration(write(tmp_path, "cal.yaml", CAL))
    assert cal.mm_per_px == 0.5 and cal.spider_span_mm == (4.0, 12.0) and cal.px_per_s == 600.0
    again = load_calibration(write(tmp_path, "again.yaml", cal.to_yaml()))
    assert again == cal


def test_embedded_defaults_validate() -> None:
    config = Config()
    assert config.metrics.port == 9108 and config.model.path.name == "demo.onnx"


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("decision:\n  threshold: 0.5\n  treshold: 0.4\n", 3, ["decision.treshold", "extra", "spelling"]),
        ("decision:\n  threshold: high\n", 2, ["decision.threshold", "'high'", "number"]),
        ("decision:\n  threshold: 1.5\n", 2, ["decision.threshold", "1.5", "<= 1"]),
        ("belt:\n  mode: sideways\n", 2, ["belt.mode", "sideways", "'belt' or 'whole_frame'"]),
        ("model:\n  path: missing.onnx\n", 2, ["model.path", "not found"]),
        ("calibration: nowhere.yaml\n", 1, ["calibration", "not found", "inspector calibrate"]),
        ("tiling:\n  min_fraction: 0.06\n", 1, ["tiling: min_fraction must be below max_fraction"]),
        ("decision:\n  agree_frames: 0\n", 2, ["decision.agree_frames", ">= 1"]),
        (
            "belt:\n  inspections_per_point: 2\ndecision:\n  agree_frames: 3\n",
            3,
            ["decision: agree_frames 3 is above belt.inspections_per_point 2", "lower it"],
        ),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "out-of-range",
        "bad-choice",
        "model-missing",
        "calibration-missing",
        "values-that-disagree",
        "agree-frames-range",
        "agree-frames-above-inspections",
    ],
)
def test_each_mistake_names_file_line_key_value_and_what_is_allowed(
    tmp_path: Path, text: str, line: int, words: list[str]
) -> None:
    path = write(tmp_path, "config.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert f"{path}:{line}:" in message
    for word in words:
        assert word in message
    assert "\n" not in message  # one problem, one line
    assert "Value error" not in message and message.count("must be below") <= 1  # said once, in our words


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "config.yaml", "decision:\n  threshold: [0.5\nbelt: {}\n")
    with pytest.raises(ConfigError, match=r"config.yaml:\d+: YAML syntax error"):
        load_config(path)


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "list.yaml", "- 1\n- 2\n"))


def test_calibration_mistakes(tmp_path: Path) -> None:
    bad = CAL.replace('"+x"', '"up"').replace("[4, 12]", "[12, 4]")
    with pytest.raises(ConfigError) as err:
        load_calibration(write(tmp_path, "cal.yaml", bad))
    lines = str(err.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{tmp_path / 'cal.yaml'}:2: belt_direction")
    assert "cal.yaml:5: spider_span_mm" in lines[1] and "[smallest, largest]" in lines[1]


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    write(tmp_path, "cal.yaml", CAL)
    config = load_config(write(tmp_path, "config.yaml", "calibration: cal.yaml\n"))
    assert config.calibration == tmp_path / "cal.yaml"


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spot = write_spot_model(tmp_path)
    good = write(tmp_path, "good.yaml", f"model:\n  path: {spot.name}\ndecision:\n  threshold: 0.7\n")
    assert main(["check-config", str(good)]) == 0
    bad = write(tmp_path, "bad.yaml", "decision:\n  threshold: 7\n")
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml:2: decision.threshold" in err and "Traceback" not in err
    cal = write(tmp_path, "cal.yaml", CAL)
    assert main(["check-config", "--calibration", str(cal)]) == 0
