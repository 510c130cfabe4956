"""Calibration on rendered targets and clips with known truth: scale within 1 %, belt speed within 2 %, direction."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from inspector import calibrate as cal
from inspector.config import load_calibration
from inspector.errors import InspectorError

PATTERN = (9, 6)
SQUARE_MM = 20.0


# ------------------------------------------------------------------------------------------------ renderers
def render_board_topdown(
    mm_per_px: float,
    angle_deg: float,
    image_wh: tuple[int, int] = (1280, 720),
    pattern_wh: tuple[int, int] = PATTERN,
    square_mm: float = SQUARE_MM,
    blur_sigma: float = 0.8,
    noise_std: float = 4.0,
    seed: int = 0,
) -> np.ndarray:
    """A checkerboard lying flat on a grey belt, seen straight down (no perspective), rotated by angle_deg,
    anti-aliased by 3x3 supersampling, then blurred and noisy. Truth: `mm_per_px`."""
    ss = 3
    w, h = image_wh
    u = (np.arange(w * ss) + 0.5) / ss - w / 2.0
    v = (np.arange(h * ss) + 0.5) / ss - h / 2.0
    uu, vv = np.meshgrid(u, v)
    a = math.radians(angle_deg)
    x_mm = (math.cos(a) * uu + math.sin(a) * vv) * mm_per_px
    y_mm = (-math.sin(a) * uu + math.cos(a) * vv) * mm_per_px
    n_x, n_y = pattern_wh[0] + 1, pattern_wh[1] + 1
    bx = x_mm + n_x * square_mm / 2.0
    by = y_mm + n_y * square_mm / 2.0
    on_board = (bx >= 0) & (bx < n_x * square_mm) & (by >= 0) & (by < n_y * square_mm)
    quiet = (bx >= -square_mm) & (bx < (n_x + 1) * square_mm) & (by >= -square_mm) & (by < (n_y + 1) * square_mm)
    dark = ((np.floor(bx / square_mm) + np.floor(by / square_mm)) % 2 == 0) & on_board
    img = np.where(quiet, 235.0, 110.0)
    img = np.where(dark, 25.0, img)
    img = img.reshape(h, ss, w, ss).mean(axis=(1, 3))
    img = cv2.GaussianBlur(img, (0, 0), blur_sigma)
    rng = np.random.default_rng(seed)
    img = img + rng.normal(0, noise_std, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_board_projected(
    k: np.ndarray,
    dist: np.ndarray,
    rvec: np.ndarray,
    tvec: np.ndarray,
    image_wh: tuple[int, int] = (640, 480),
    pattern_wh: tuple[int, int] = PATTERN,
    square_mm: float = SQUARE_MM,
) -> np.ndarray:
    """A checkerboard seen by a camera with matrix k and distortion dist at pose (rvec, tvec): every pixel's ray is
    undistorted and intersected with the board plane (2x2 supersampled)."""
    ss = 2
    w, h = image_wh
    u = (np.arange(w * ss) + 0.5) / ss - 0.5
    v = (np.arange(h * ss) + 0.5) / ss - 0.5
    uu, vv = np.meshgrid(u, v)
    pts = np.stack([uu.ravel(), vv.ravel()], axis=1).reshape(-1, 1, 2).astype(np.float64)
    norm = cv2.undistortPoints(pts, k, dist).reshape(-1, 2)
    rot, _ = cv2.Rodrigues(rvec)
    plane_h = np.column_stack([rot[:, 0], rot[:, 1], np.asarray(tvec, np.float64).reshape(3)])
    board = np.linalg.solve(plane_h, np.vstack([norm.T, np.ones(norm.shape[0])]))
    bx = (board[0] / board[2]).reshape(h * ss, w * ss) + square_mm
    by = (board[1] / board[2]).reshape(h * ss, w * ss) + square_mm
    n_x, n_y = pattern_wh[0] + 1, pattern_wh[1] + 1
    on_board = (bx >= 0) & (bx < n_x * square_mm) & (by >= 0) & (by < n_y * square_mm)
    quiet = (bx >= -square_mm) & (bx < (n_x + 1) * square_mm) & (by >= -square_mm) & (by < (n_y + 1) * square_mm)
    dark = ((np.floor(bx / square_mm) + np.floor(by / square_mm)) % 2 == 0) & on_board
    img = np.where(quiet, 235.0, 90.0)
    img = np.where(dark, 20.0, img)
    img = img.reshape(h, ss, w, ss).mean(axis=(1, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def belt_texture(size_wh: tuple[int, int], seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (size_wh[1], size_wh[0])).astype(np.float32)
    tex = np.asarray(cv2.GaussianBlur(noise, (0, 0), 2.0), np.float32)
    tex = (tex - tex.min()) / (tex.max() - tex.min()) * 160 + 50
    return tex.astype(np.float32)


def render_belt_clip(
    shift_px_per_frame: float,
    direction: str,
    n_frames: int = 12,
    frame_wh: tuple[int, int] = (320, 240),
    noise_std: float = 2.0,
    seed: int = 1,
) -> list[np.ndarray]:
    """Frames of a textured belt whose content moves `shift_px_per_frame` per frame in `direction` (sub-pixel)."""
    w, h = frame_wh
    travel = shift_px_per_frame * n_frames + 20
    tex = belt_texture((int(w + travel + 40), int(h + travel + 40)), seed)
    axis = 0 if direction[1] == "x" else 1
    sign = 1.0 if direction[0] == "+" else -1.0
    rng = np.random.default_rng(seed + 100)
    frames = []
    base = travel / 2 + 20
    for f in range(n_frames):
        off = np.array([base, base])
        off[axis] -= sign * shift_px_per_frame * f  # content moves +sign: sample further back in the texture
        m = np.array([[1.0, 0.0, off[0]], [0.0, 1.0, off[1]]])
        frame = cv2.warpAffine(tex, m, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
        frame = frame + rng.normal(0, noise_std, frame.shape)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


# ------------------------------------------------------------------------------------------------ scale
@pytest.mark.parametrize(("mm_per_px", "angle_deg"), [(0.5, 0.0), (0.5, 7.0), (0.31, -12.0), (0.8, 3.0), (0.42, 25.0)])
def test_scale_from_rendered_checkerboard_within_1_percent(mm_per_px: float, angle_deg: float) -> None:
    img = render_board_topdown(mm_per_px, angle_deg, seed=int(mm_per_px * 100))
    result = cal.measure_scale_checkerboard(img, PATTERN, SQUARE_MM)
    error = abs(result.mm_per_px - mm_per_px) / mm_per_px
    assert error < 0.01, (result, error)
    assert result.n_points == PATTERN[0] * PATTERN[1]
    assert result.anisotropy < 0.01
    assert result.residual_px < 0.5


def test_scale_reports_tilted_camera_as_anisotropy() -> None:
    img = render_board_topdown(0.5, 0.0)
    squashed = cv2.resize(img, (1280, int(720 * 0.9)), interpolation=cv2.INTER_AREA)
    result = cal.measure_scale_checkerboard(squashed, PATTERN, SQUARE_MM)
    assert result.anisotropy == pytest.approx(0.1, abs=0.01)


def test_scale_undistorts_first_when_intrinsics_given() -> None:
    k = np.array([[900.0, 0, 640], [0, 900.0, 360], [0, 0, 1]])
    dist = np.array([-0.25, 0.08, 0, 0, 0])
    # a straight-down camera 300 mm above the belt: mm_per_px at the centre = 300 / 900; the board fills the view
    rvec, tvec = np.zeros(3), np.array([-100.0, -70.0, 300.0])
    img = render_board_projected(k, dist, rvec, tvec, image_wh=(1280, 720))
    truth = 300.0 / 900.0
    plain = cal.measure_scale_checkerboard(img, PATTERN, SQUARE_MM)
    fixed = cal.measure_scale_checkerboard(img, PATTERN, SQUARE_MM, k, dist)
    assert abs(fixed.mm_per_px - truth) / truth < 0.01
    assert abs(plain.mm_per_px - truth) / truth > 0.01  # barrel distortion shrinks the edges
    assert fixed.residual_px < plain.residual_px


def test_scale_errors_are_one_line() -> None:
    blank = np.full((480, 640), 128, np.uint8)
    with pytest.raises(InspectorError, match="no 9x6 checkerboard") as info:
        cal.measure_scale_checkerboard(blank, PATTERN, SQUARE_MM, name="belt.png")
    assert "\n" not in str(info.value) and "belt.png" in str(info.value)
    with pytest.raises(InspectorError, match="square"):
        cal.measure_scale_checkerboard(blank, PATTERN, 0.0)
    with pytest.raises(InspectorError, match="not found"):
        cal.read_image(Path("/nonexistent/board.png"))


# ------------------------------------------------------------------------------------------------ intrinsics
def _poses() -> list[tuple[np.ndarray, np.ndarray]]:
    poses = []
    for i, (rx, ry) in enumerate(
        [(0.0, 0.0), (0.35, 0.0), (-0.35, 0.1), (0.0, 0.4), (0.1, -0.4), (0.3, 0.3), (-0.3, -0.25), (0.2, -0.1)]
    ):
        shift = np.array([-100.0 + 15 * (i % 3 - 1) * 4, -70.0 + 20 * (i % 2), 600.0 + 40 * (i % 3)])
        poses.append((np.array([rx, ry, 0.05 * i]), shift))
    return poses


def test_intrinsics_from_projected_points_recovers_k() -> None:
    k = np.array([[820.0, 0, 330], [0, 815.0, 245], [0, 0, 1]])
    dist = np.array([-0.2, 0.05, 0.001, -0.001, 0.0])
    obj = cal.board_object_points_mm(PATTERN, SQUARE_MM)
    rng = np.random.default_rng(3)
    pts = []
    for rvec, tvec in _poses():
        proj, _ = cv2.projectPoints(obj, rvec, tvec, k, dist)
        pts.append(proj.reshape(-1, 2) + rng.normal(0, 0.1, (obj.shape[0], 2)))
    result = cal.intrinsics_from_points([obj] * len(pts), pts, (640, 480))
    assert abs(result.camera_matrix[0, 0] - 820) / 820 < 0.02
    assert abs(result.camera_matrix[1, 1] - 815) / 815 < 0.02
    assert abs(result.dist_coeffs[0] - dist[0]) < 0.05
    assert result.rms_px < 0.5


def test_intrinsics_from_rendered_images_recovers_fx() -> None:
    k = np.array([[700.0, 0, 320], [0, 700.0, 240], [0, 0, 1]])
    dist = np.array([-0.18, 0.04, 0, 0, 0])
    images = [(f"view{i}.png", render_board_projected(k, dist, r, t)) for i, (r, t) in enumerate(_poses())]
    images.append(("blank.png", np.full((480, 640), 128, np.uint8)))
    result, skipped = cal.calibrate_intrinsics(images, PATTERN, SQUARE_MM)
    assert skipped == ["blank.png"]
    assert abs(result.camera_matrix[0, 0] - 700) / 700 < 0.03
    assert abs(result.dist_coeffs[0] - dist[0]) < 0.06
    assert result.rms_px < 1.0


def test_intrinsics_needs_views() -> None:
    blank = np.full((480, 640), 128, np.uint8)
    with pytest.raises(InspectorError, match="usable checkerboard views"):
        cal.calibrate_intrinsics([("a.png", blank), ("b.png", blank)], PATTERN, SQUARE_MM)
    with pytest.raises(InspectorError, match="no checkerboard images"):
        cal.calibrate_intrinsics([], PATTERN, SQUARE_MM)


# ------------------------------------------------------------------------------------------------ belt
@pytest.mark.parametrize("direction", ["+x", "-x", "+y", "-y"])
@pytest.mark.parametrize("shift", [3.3, 11.75])
def test_belt_speed_and_direction_from_rendered_clip(direction: str, shift: float) -> None:
    frames = render_belt_clip(shift, direction, seed=len(direction) + int(shift))
    fps = 30.0
    motion = cal.belt_motion(frames, fps)
    assert motion.direction == direction
    truth_mm_s = shift * fps * 0.5
    error = abs(motion.speed_mm_s(0.5) - truth_mm_s) / truth_mm_s
    assert error < 0.02, (motion, error)
    assert abs(motion.across_px_per_frame) < 0.2
    assert motion.n_pairs == len(frames) - 1


def test_belt_median_survives_a_few_bad_frames() -> None:
    frames = render_belt_clip(6.0, "+x", n_frames=15)
    rng = np.random.default_rng(9)
    frames[5] = rng.integers(0, 255, frames[5].shape, dtype=np.uint8)  # a glitch frame: two bad pairs
    motion = cal.belt_motion(frames, 25.0)
    assert motion.direction == "+x"
    assert abs(motion.speed_px_s - 150.0) / 150.0 < 0.02


def test_belt_errors() -> None:
    frames = render_belt_clip(5.0, "+x", n_frames=12)
    with pytest.raises(InspectorError, match="clip too short"):
        cal.belt_motion(frames[:3], 30.0)
    with pytest.raises(InspectorError, match="belt not moving"):
        cal.belt_motion([frames[0]] * 8, 30.0)
    with pytest.raises(InspectorError, match="fps"):
        cal.belt_motion(frames, 0.0)
    rng = np.random.default_rng(4)
    noise = [rng.integers(0, 255, (240, 320), dtype=np.uint8) for _ in range(10)]
    with pytest.raises(InspectorError, match=r"inconsistent|not moving"):
        cal.belt_motion(noise, 30.0)


# ------------------------------------------------------------------------------------------------ ejector
def render_marker_clip(
    direction: str, px_per_frame: float, n_frames: int, wh: tuple[int, int] = (480, 360)
) -> list[np.ndarray]:
    marker = cal.marker_image(0, 60)
    marker = cv2.copyMakeBorder(marker, 15, 15, 15, 15, cv2.BORDER_CONSTANT, value=255)
    w, h = wh
    axis = 0 if direction[1] == "x" else 1
    sign = 1.0 if direction[0] == "+" else -1.0
    frames = []
    for f in range(n_frames):
        frame = np.full((h, w), 90, np.uint8)
        centre = [w / 2.0, h / 2.0]
        centre[axis] = wh[axis] / 2.0 + sign * (f * px_per_frame - 100.0)  # crosses the centre at f = 100/px
        m = np.array([[1.0, 0, centre[0] - marker.shape[1] / 2], [0, 1.0, centre[1] - marker.shape[0] / 2]])
        frames.append(np.asarray(cv2.warpAffine(marker, m, (w, h), dst=frame, borderMode=cv2.BORDER_TRANSPARENT)))
    return frames


@pytest.mark.parametrize("direction", ["+x", "-y"])
def test_ejector_distance_from_marker_clip(direction: str) -> None:
    fps = 20.0
    frames = render_marker_clip(direction, px_per_frame=8.0, n_frames=25)
    centres = cal.marker_centres_px(frames)
    t0 = cal.centre_line_crossing_s(centres, fps, (480, 360), direction)
    assert t0 == pytest.approx(12.5 / fps, abs=0.2 / fps)
    assert cal.ejector_distance_mm(300.0, t0, t0 + 2.5) == pytest.approx(750.0)
    with pytest.raises(InspectorError, match="not after"):
        cal.ejector_distance_mm(300.0, t0, t0 - 1)
    with pytest.raises(InspectorError, match="never crosses"):
        cal.centre_line_crossing_s(centres[:5], fps, (480, 360), direction)
    with pytest.raises(InspectorError, match="fewer than 2"):
        cal.centre_line_crossing_s([None] * 10, fps, (480, 360), direction)


# ------------------------------------------------------------------------------------------------ file + targets
def test_merge_keeps_other_steps_keys(tmp_path: Path) -> None:
    path = tmp_path / "calibration.yaml"
    first, defaults = cal.merge_calibration(cal.read_calibration_dict(path), {"mm_per_px": 0.42})
    assert "mm_per_px" not in defaults and "belt_speed_mm_s" in defaults
    cal.write_calibration(path, first, "scale")
    second, defaults = cal.merge_calibration(
        cal.read_calibration_dict(path), {"belt_speed_mm_s": 275.0, "belt_direction": "-y"}
    )
    cal.write_calibration(path, second, "belt")
    loaded = load_calibration(path)
    assert loaded.mm_per_px == 0.42 and loaded.belt_speed_mm_s == 275.0 and loaded.belt_direction == "-y"
    assert defaults == []  # the first write stored every required key
    with pytest.raises(InspectorError, match="mm_per_px"):
        cal.merge_calibration({}, {"mm_per_px": -1.0})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(InspectorError, match="not a mapping"):
        cal.read_calibration_dict(bad)


def test_checkerboard_target_has_physical_size_and_is_detectable() -> None:
    dpi = 150.0
    img = cal.checkerboard_image(PATTERN, SQUARE_MM, dpi)
    assert img.shape == (round(9 * 20 * dpi / 25.4), round(12 * 20 * dpi / 25.4))
    small = cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    result = cal.measure_scale_checkerboard(small, PATTERN, SQUARE_MM)
    assert result.mm_per_px == pytest.approx(25.4 / dpi * 2, rel=0.01)


def test_pdf_embeds_image_at_physical_size() -> None:
    img = cal.checkerboard_image(PATTERN, SQUARE_MM, 100.0)
    pdf = cal.pdf_with_image(img, 100.0)
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    assert b"/MediaBox [0 0 841.8898 595.2756]" in pdf  # A4 landscape: 240 x 180 mm target fits
    w_pt = img.shape[1] * 72 / 100.0
    assert f"q {w_pt:.4f} 0 0".encode() in pdf
    start = pdf.index(b"stream\n") + len(b"stream\n")
    length = int(pdf.split(b"/Length ")[1].split(b" ")[0])
    assert zlib.decompress(pdf[start : start + length]) == img.tobytes()
    # xref offsets point at the objects
    xref_at = int(pdf.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    table = pdf[xref_at:].split(b"\n")[3:8]
    for i, row in enumerate(table, start=1):
        assert pdf[int(row[:10]) :].startswith(f"{i} 0 obj".encode())


def test_example_calibration_files_validate() -> None:
    folder = Path(__file__).resolve().parents[1] / "calibration"
    files = sorted(folder.glob("*.yaml"))
    assert files, "calibration/ must ship example calibration files"
    for path in files:
        load_calibration(path)
        assert yaml.safe_load(path.read_text())


# ------------------------------------------------------------------------------------------------ command line
def _cli(argv: list[str]) -> int:
    from inspector.cli import main

    return main(argv)


def test_cli_full_procedure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calib = tmp_path / "line.yaml"
    # target
    assert _cli(["calibrate", "target", "--dpi", "100", "-o", str(tmp_path / "board")]) == 0
    assert (tmp_path / "board.png").is_file() and (tmp_path / "board.pdf").read_bytes().startswith(b"%PDF")
    assert _cli(["calibrate", "target", "--marker", "--dpi", "100", "-o", str(tmp_path / "marker")]) == 0
    # scale
    board = tmp_path / "belt_board.png"
    cv2.imwrite(str(board), render_board_topdown(0.37, 4.0))
    assert _cli(["calibrate", "scale", str(board), "--pattern", "9x6", "--square-mm", "20", "-f", str(calib)]) == 0
    assert abs(load_calibration(calib).mm_per_px - 0.37) / 0.37 < 0.01
    # belt, from a folder of frames
    clip = tmp_path / "clip"
    clip.mkdir()
    for i, frame in enumerate(render_belt_clip(7.5, "-y", n_frames=10)):
        cv2.imwrite(str(clip / f"{i:04d}.png"), frame)
    assert _cli(["calibrate", "belt", str(clip), "--fps", "40", "-f", str(calib)]) == 0
    loaded = load_calibration(calib)
    assert loaded.belt_direction == "-y"
    assert abs(loaded.belt_speed_mm_s - 7.5 * 40 * loaded.mm_per_px) / loaded.belt_speed_mm_s < 0.02
    # ejector, by hand, and the spider span
    assert _cli(["calibrate", "ejector", "--camera-to-ejector-mm", "812.5", "-f", str(calib)]) == 0
    assert _cli(["calibrate", "set", "--spider-span-mm", "3", "10", "-f", str(calib)]) == 0
    loaded = load_calibration(calib)
    assert loaded.camera_to_ejector_mm == 812.5 and loaded.spider_span_mm == (3.0, 10.0)
    assert abs(loaded.mm_per_px - 0.37) / 0.37 < 0.01  # earlier steps' keys kept
    out = capsys.readouterr().out
    assert "still at defaults" in out  # after the first step


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calib = tmp_path / "c.yaml"
    cases = [
        (["calibrate", "scale", str(tmp_path / "missing.png"), "-f", str(calib)], "image not found"),
        (["calibrate", "belt", str(tmp_path / "missing.mp4"), "-f", str(calib)], "clip not found"),
        (["calibrate", "ejector", "-f", str(calib)], "give either"),
        (["calibrate", "set", "-f", str(calib)], "nothing to set"),
        (["calibrate", "set", "--spider-span-mm", "12", "4", "-f", str(calib)], "spider_span_mm"),
    ]
    for argv, words in cases:
        capsys.readouterr()
        assert _cli(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err and "Traceback" not in err, err
    # belt before scale; a frame folder without --fps
    clip = tmp_path / "clip"
    clip.mkdir()
    for i, frame in enumerate(render_belt_clip(4.0, "+x", n_frames=6)):
        cv2.imwrite(str(clip / f"{i}.png"), frame)
    assert _cli(["calibrate", "belt", str(clip), "--fps", "30", "-f", str(calib)]) == 1
    assert "run `inspector calibrate scale`" in capsys.readouterr().err
    assert _cli(["calibrate", "set", "--mm-per-px", "0.5", "-f", str(calib)]) == 0
    assert _cli(["calibrate", "belt", str(clip), "-f", str(calib)]) == 1
    assert "pass --fps" in capsys.readouterr().err
    assert not (tmp_path / "c.yaml.tmp").exists()


def test_cli_ejector_from_marker_clip(tmp_path: Path) -> None:
    calib = tmp_path / "c.yaml"
    assert _cli(["calibrate", "set", "--belt-speed-mm-s", "200", "--belt-direction", "+x", "-f", str(calib)]) == 0
    clip = tmp_path / "marker"
    clip.mkdir()
    for i, frame in enumerate(render_marker_clip("+x", 8.0, 25)):
        cv2.imwrite(str(clip / f"{i:03d}.png"), frame)
    argv = ["calibrate", "ejector", "--clip", str(clip), "--fps", "20", "--ejector-at-s", "4.625", "-f", str(calib)]
    assert _cli(argv) == 0
    # crossing at frame 12.5 = 0.625 s; 4 s later at 200 mm/s -> 800 mm
    assert load_calibration(calib).camera_to_ejector_mm == pytest.approx(800.0, abs=3.0)


@pytest.mark.parametrize("step", ["", "grab", "target", "intrinsics", "scale", "belt", "ejector", "set"])
def test_cli_help(step: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["calibrate", *([step] if step else []), "--help"]
    with pytest.raises(SystemExit) as info:
        _cli(argv)
    assert info.value.code == 0
    assert "usage: inspector calibrate" in capsys.readouterr().out


def test_cli_grab_from_video_then_belt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = tmp_path / "belt.avi"
    frames = render_belt_clip(6.0, "+x", n_frames=12)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, (320, 240))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    assert _cli(["calibrate", "grab", str(video), "--frames", "10", "-o", str(tmp_path / "clip")]) == 0
    assert len(list((tmp_path / "clip").glob("*.png"))) == 10
    assert "pass --fps 25.00" in capsys.readouterr().out
    calib = tmp_path / "c.yaml"
    assert _cli(["calibrate", "set", "--mm-per-px", "0.5", "-f", str(calib)]) == 0
    assert _cli(["calibrate", "belt", str(video), "-f", str(calib)]) == 0  # fps from the video file
    loaded = load_calibration(calib)
    assert loaded.belt_direction == "+x" and abs(loaded.belt_speed_mm_s - 75.0) / 75.0 < 0.02
    assert _cli(["calibrate", "grab", str(tmp_path / "none.avi"), "-o", str(tmp_path / "x")]) == 1
    assert _cli(["calibrate", "grab", str(video), "--frames", "50", "-o", str(tmp_path / "y")]) == 1
    assert "file ended" in capsys.readouterr().err


@pytest.mark.parametrize("square_mm, dpi, page_mm", [(20.0, 300.0, (297.0, 210.0)), (30.0, 200.0, None)])
def test_printed_target_read_back_with_a_pdf_reader_has_its_page_squares_and_scale_bar_in_mm(
    tmp_path: Path, square_mm: float, dpi: float, page_mm: tuple[float, float] | None
) -> None:
    """`inspector calibrate target` read by pypdf, which places the image by the page's own content stream: the page
    size, the printed square size and the 100 mm bar, each in mm within 0.1 %. 9x6 boards of 20 mm squares fit
    A4 landscape; 30 mm squares do not, and the page is then the target's own size."""
    from pypdf import PdfReader

    assert (
        _cli(["calibrate", "target", "--square-mm", str(square_mm), "--dpi", str(dpi), "-o", str(tmp_path / "t")]) == 0
    )
    reader = PdfReader(tmp_path / "t.pdf")
    assert len(reader.pages) == 1
    page = reader.pages[0]
    assert page.rotation == 0 and float(page.user_unit) == 1.0

    def mm(pt: float) -> float:
        return pt * 25.4 / 72.0

    page_w, page_h = mm(float(page.mediabox.width)), mm(float(page.mediabox.height))
    placed: list[list[float]] = []
    page.extract_text(visitor_operand_before=lambda op, args, cm, tm: placed.append(list(cm)) if op == b"Do" else None)
    assert len(placed) == 1 and len(page.images) == 1
    a, b, c, d, e, f = placed[0]  # the image's unit square mapped onto the page (points)
    assert b == 0 and c == 0 and a > 0 and d > 0  # upright, not mirrored
    assert (
        e >= 0 and e + a <= float(page.mediabox.width) + 1e-6 and f >= 0 and f + d <= float(page.mediabox.height) + 1e-6
    )
    gray = np.asarray(page.images[0].image.convert("L"))
    h_px, w_px = gray.shape
    mm_per_px_x, mm_per_px_y = mm(a) / w_px, mm(d) / h_px
    assert mm_per_px_x == pytest.approx(mm_per_px_y, rel=1e-3)
    if page_mm is None:  # the page is the target itself
        assert (page_w, page_h) == (pytest.approx(mm(a), rel=1e-3), pytest.approx(mm(d), rel=1e-3))
    else:
        assert (page_w, page_h) == (pytest.approx(page_mm[0], rel=1e-3), pytest.approx(page_mm[1], rel=1e-3))

    def edges(line: np.ndarray) -> np.ndarray:
        dark = line < 128
        return np.nonzero(dark[1:] != dark[:-1])[0] + 1

    black_rows = np.nonzero((gray < 128).any(axis=1))[0]
    top = int(black_rows[0])
    across = edges(gray[top + 5])  # the first row of a 9x6 board: 10 squares, the last white: 10 edges
    first_col = int(across[0])
    down = edges(gray[: top + 8 * int(across[1] - across[0]), first_col + 5])  # the first column: 7 squares, the last black: 8 edges
    assert len(across) == 10 and len(down) == 8, (across, down)
    square_x_mm = (across[-1] - across[0]) / 9 * mm_per_px_x
    square_y_mm = (down[-1] - down[0]) / 7 * mm_per_px_y
    assert square_x_mm == pytest.approx(square_mm, rel=1e-3)
    assert square_y_mm == pytest.approx(square_mm, rel=1e-3)
    bar_row = gray[int(black_rows[-1])]  # the scale bar is the lowest dark thing on the page
    bar = edges(bar_row)
    assert len(bar) == 2, bar
    assert (bar[1] - bar[0]) * mm_per_px_x == pytest.approx(100.0, rel=1e-3)
