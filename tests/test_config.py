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
        ("decision:\n  threshold: 0.5\n  treshold: 0.4\n", 3, ["decision.treshold: unknown key; did you mean threshold?"]),
        ("decision:\n  threshold: high\n", 2, ["decision.threshold: must be a number; got 'high'"]),
        ("decision:\n  threshold: 1.5\n", 2, ["decision.threshold: must be at most 1; got 1.5"]),
        ("belt:\n  mode: sideways\n", 2, ["belt.mode: must be 'belt' or 'whole_frame'; got 'sideways'"]),
        ("model:\n  path: missing.onnx\n", 2, ["model.path", "not found"]),
        ("calibration: nowhere.yaml\n", 1, ["calibration", "not found", "inspector calibrate"]),
        ("tiling:\n  min_fraction: 0.06\n", 1, ["tiling: min_fraction must be below max_fraction"]),
        ("decision:\n  agree_frames: 0\n", 2, ["decision.agree_frames: must be at least 1; got 0"]),
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
    for jargon in JARGON:
        assert jargon not in message


JARGON = ("extra forbidden", "Input should", "type=", "Field required", "Value error", "pydantic", "literal_error")


def test_many_mistakes_come_in_file_order_one_line_each_in_plain_words(tmp_path: Path) -> None:
    text = """\
model:
  batch_size: many
  fam_mode: fancy
tiling:
  min_fraction: 0.2
  max_fraction: 0.1
link:
  heartbeat_interval_s: -1
  controler: tcp://127.0.0.1:5560
decision:
  treshold: 0.4
  reject_uninspected: false
frobnicate: 3
source:
  fps: [1, 2]
recording: 5
"""
    path = write(tmp_path, "config.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    got = str(err.value).splitlines()
    assert got == [
        f"{path}:2: model.batch_size: must be a whole number; got 'many'",
        f"{path}:3: model.fam_mode: must be 'paper' or 'normalized'; got 'fancy'",
        f"{path}:4: tiling: min_fraction must be below max_fraction",
        f"{path}:8: link.heartbeat_interval_s: must be greater than 0; got -1",
        f"{path}:9: link.controler: unknown key; did you mean controller?",
        f"{path}:11: decision.treshold: unknown key; did you mean threshold?",
        f"{path}:12: decision.reject_uninspected: must be true; got false",
        f"{path}:13: frobnicate: unknown key; the keys here are " + ", ".join(Config.model_fields),
        f"{path}:15: source.fps: must be a number; got [1, 2]",
        f"{path}:16: recording: must be a section of keys (indented key: value lines); got 5",
    ]


def test_lists_and_types_in_plain_words(tmp_path: Path) -> None:
    text = "model:\n  providers: gpu\n  threads: 1.5\nlink:\n  publish: 5\nbelt:\n  belt_bgr: [1, 2]\n"
    path = write(tmp_path, "config.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).splitlines() == [
        f"{path}:2: model.providers: must be a list in brackets, e.g. [a, b]; got 'gpu'",
        f"{path}:3: model.threads: must be a whole number; got 1.5",
        f"{path}:5: link.publish: must be text (quote it); got 5",
        f"{path}:7: belt.belt_bgr: too few items: item 3 is missing",
    ]


def test_calibration_typo_suggests_the_key_and_a_missing_key_says_add_it(tmp_path: Path) -> None:
    text = CAL.replace("belt_speed_mm_s", "belt_sped_mm_s")
    with pytest.raises(ConfigError) as err:
        load_calibration(write(tmp_path, "cal.yaml", text))
    lines = str(err.value).splitlines()
    assert lines == [
        f"{tmp_path / 'cal.yaml'}:1: belt_speed_mm_s: required key missing; add it",
        f"{tmp_path / 'cal.yaml'}:3: belt_sped_mm_s: unknown key; did you mean belt_speed_mm_s?",
    ]


def test_a_section_with_every_key_commented_out_means_its_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "config.yaml", "decision:\n  # threshold: 0.7\nbelt:\n  mode: belt\n"))
    assert config.decision == Config().decision


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
