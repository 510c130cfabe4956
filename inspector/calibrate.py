"""Line calibration as pure functions over numpy arrays (OpenCV inside): lens, scale, belt motion, ejector distance.

Every step measures one group of keys of the calibration file (`inspector.config.Calibration`):

    intrinsics  camera_matrix, dist_coeffs   checkerboard views at several poses  (cv2.calibrateCamera)
    scale       mm_per_px                    a flat target of known size lying on the belt, undistorted first
    belt        belt_speed_mm_s, belt_direction
                                             phase correlation between consecutive frames of the running belt,
                                             robust median over pairs, px/frame -> mm/s with mm_per_px and fps
    ejector     camera_to_ejector_mm         speed x (t1 - t0): t0 = a marker crossing the image's centre line
                                             (found in a clip), t1 = the moment it reached the ejector (same clock)

`merge_calibration` updates only the keys a step measured and keeps the rest of an existing file.
`checkerboard_image` / `pdf_with_image` print a target at a known physical size (hand-written PDF, no matplotlib).
Bad input raises `CalibrationError` (an `InspectorError`) with one line that says what to do.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from pydantic import ValidationError

from inspector.config import DEFAULT_CALIBRATION, Calibration
from inspector.errors import InspectorError

MM_PER_INCH = 25.4
PT_PER_MM = 72.0 / MM_PER_INCH
MIN_BELT_FRAMES = 5
MIN_INTRINSICS_VIEWS = 3
MARKER_DICT = "DICT_4X4_50"


class CalibrationError(InspectorError):
    """A calibration input that cannot be used (missing file, target not found, clip too short, belt still)."""


# ----------------------------------------------------------------------------------------------- helpers
def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 gray (H, W) from gray, BGR or BGRA."""
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 3 and image.shape[2] == 4:
        gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    else:
        raise CalibrationError(f"image of shape {image.shape} is neither gray nor colour; give a normal photo")
    if gray.dtype != np.uint8:
        lo, hi = float(gray.min()), float(gray.max())
        gray = ((gray - lo) * (255.0 / max(hi - lo, 1e-12))).astype(np.uint8)
    return np.ascontiguousarray(gray)


def read_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise CalibrationError(f"{path}: image not found; give the path of an existing photo")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CalibrationError(f"{path}: not a readable image; give a PNG or JPEG photo")
    return image


def read_clip(path: Path, max_frames: int = 300) -> tuple[list[np.ndarray], float | None]:
    """Frames of a video file, or of a folder of images (sorted by name), and the file's fps (None if unknown)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif"))
        if not files:
            raise CalibrationError(f"{path}: folder holds no images; give a video file or a folder of PNG/JPEG frames")
        return [read_image(p) for p in files[:max_frames]], None
    if not path.is_file():
        raise CalibrationError(f"{path}: clip not found; give the path of an existing video file or frame folder")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise CalibrationError(f"{path}: cannot be opened as a video; record it as MP4/AVI or export frames")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        frames: list[np.ndarray] = []
        while len(frames) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise CalibrationError(f"{path}: no frames could be decoded; re-record the clip or export it as frames")
    return frames, (fps if 0 < fps < 10_000 else None)


# ----------------------------------------------------------------------------------------------- checkerboard
def board_object_points_mm(pattern_wh: tuple[int, int], square_mm: float) -> np.ndarray:
    """(N, 3) float32 inner-corner positions on the board plane, row by row, as findChessboardCorners orders them."""
    cols, rows = pattern_wh
    grid = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2).astype(np.float32) * np.float32(square_mm)
    return np.hstack([grid, np.zeros((grid.shape[0], 1), np.float32)])


def find_checkerboard(image: np.ndarray, pattern_wh: tuple[int, int], name: str = "image") -> np.ndarray:
    """(N, 2) float32 sub-pixel inner corners of a checkerboard with `pattern_wh` = (columns, rows) inner corners."""
    gray = to_gray(image)
    cols, rows = pattern_wh
    if cols < 2 or rows < 2:
        raise CalibrationError(f"pattern {cols}x{rows}: give the number of INNER corners, at least 2x2")
    found, corners = cv2.findChessboardCornersSB(gray, (cols, rows), flags=cv2.CALIB_CB_ACCURACY)
    if not found:
        flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
        found, corners = cv2.findChessboardCorners(gray, (cols, rows), flags=flags)
        if found:
            criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3)
            corners = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), criteria)
    if not found or corners is None:
        raise CalibrationError(
            f"{name}: no {cols}x{rows} checkerboard (inner corners) found; check --pattern, "
            "that the whole board with its white border is in view, sharp and evenly lit"
        )
    return np.asarray(corners, np.float32).reshape(-1, 2)


@dataclass(frozen=True)
class ScaleResult:
    mm_per_px: float
    scale_xy_mm_per_px: tuple[float, float]  # along the board's two principal axes; unequal: camera is tilted
    residual_px: float  # RMS of the similarity fit; large: perspective or a bent target
    n_points: int

    @property
    def anisotropy(self) -> float:
        a, b = self.scale_xy_mm_per_px
        return abs(a - b) / max(a, b)


def scale_from_points(object_mm: np.ndarray, image_px: np.ndarray) -> ScaleResult:
    """mm_per_px from matched points on the belt plane (mm) and in the image (px), by least squares.

    A similarity (rotation + uniform scale + shift) gives mm_per_px; an affine fit's singular values give the scale
    along two axes, whose disagreement says the camera does not look straight down at the belt.
    """
    obj = np.asarray(object_mm, np.float64)[:, :2]
    img = np.asarray(image_px, np.float64).reshape(-1, 2)
    if obj.shape[0] != img.shape[0] or obj.shape[0] < 3:
        raise CalibrationError("need at least 3 matched target points to measure the scale")
    obj_c = obj - obj.mean(axis=0)
    img_c = img - img.mean(axis=0)
    # Procrustes: image = s R obj; s = trace(Σ) / |obj|²
    u, sigma, vt = np.linalg.svd(img_c.T @ obj_c)
    d = np.sign(np.linalg.det(u @ vt))
    sigma = sigma * np.array([1.0, d])
    px_per_mm = float(sigma.sum() / (obj_c**2).sum())
    rot = u @ np.diag([1.0, d]) @ vt
    fitted = px_per_mm * obj_c @ rot.T
    residual = float(np.sqrt(((fitted - img_c) ** 2).sum(axis=1).mean()))
    affine, *_ = np.linalg.lstsq(obj_c, img_c, rcond=None)
    sv = np.linalg.svd(affine, compute_uv=False)
    return ScaleResult(
        mm_per_px=1.0 / px_per_mm,
        scale_xy_mm_per_px=(float(1.0 / sv[0]), float(1.0 / sv[1])),
        residual_px=residual,
        n_points=int(obj.shape[0]),
    )


def measure_scale_checkerboard(
    image: np.ndarray,
    pattern_wh: tuple[int, int],
    square_mm: float,
    camera_matrix: np.ndarray | None = None,
    dist_coeffs: np.ndarray | None = None,
    name: str = "image",
) -> ScaleResult:
    """mm_per_px at the belt plane from a photo of a flat checkerboard lying on the belt (undistorted first)."""
    if square_mm <= 0:
        raise CalibrationError(f"--square-mm {square_mm}: give the printed square size in millimetres (> 0)")
    if camera_matrix is not None:
        image = undistort(image, camera_matrix, dist_coeffs)
    corners = find_checkerboard(image, pattern_wh, name)
    return scale_from_points(board_object_points_mm(pattern_wh, square_mm), corners)


def undistort(image: np.ndarray, camera_matrix: np.ndarray, dist_coeffs: np.ndarray | None) -> np.ndarray:
    """The image as a distortion-free camera with the same matrix would see it (pixel scale kept at the centre)."""
    k = np.asarray(camera_matrix, np.float64)
    d = np.zeros(5) if dist_coeffs is None else np.asarray(dist_coeffs, np.float64)
    return cv2.undistort(image, k, d, None, k)


# ----------------------------------------------------------------------------------------------- intrinsics
@dataclass(frozen=True)
class Intrinsics:
    camera_matrix: np.ndarray  # (3, 3)
    dist_coeffs: np.ndarray  # (5,) k1 k2 p1 p2 k3
    rms_px: float  # reprojection error
    image_wh: tuple[int, int]
    n_views: int


def intrinsics_from_points(
    object_points: Sequence[np.ndarray], image_points: Sequence[np.ndarray], image_wh: tuple[int, int]
) -> Intrinsics:
    """cv2.calibrateCamera over matched board corners of several views (k1 k2 p1 p2 k3 model)."""
    if len(image_points) < MIN_INTRINSICS_VIEWS:
        raise CalibrationError(
            f"only {len(image_points)} usable checkerboard views; take at least {MIN_INTRINSICS_VIEWS} "
            "(10-20 is better) with the board tilted and moved across the whole image"
        )
    obj = [np.asarray(o, np.float32).reshape(-1, 1, 3) for o in object_points]
    img = [np.asarray(p, np.float32).reshape(-1, 1, 2) for p in image_points]
    try:
        rms, k, d, _, _ = cv2.calibrateCamera(obj, img, image_wh, None, None)
    except cv2.error as exc:
        raise CalibrationError(f"lens calibration failed ({exc.err}); take more views at varied tilts") from None
    k = np.asarray(k, np.float64)
    if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise CalibrationError("lens calibration gave no usable focal length; take more views at varied tilts")
    return Intrinsics(k, np.asarray(d, np.float64).reshape(-1)[:5], float(rms), image_wh, len(img))


def calibrate_intrinsics(
    images: Sequence[tuple[str, np.ndarray]], pattern_wh: tuple[int, int], square_mm: float
) -> tuple[Intrinsics, list[str]]:
    """Intrinsics from named checkerboard photos; returns the result and the names of the views that were skipped."""
    if not images:
        raise CalibrationError("no checkerboard images given; pass the photos of the board")
    sizes = {img.shape[:2] for _, img in images}
    if len(sizes) != 1:
        raise CalibrationError(f"images differ in size {sorted(sizes)}; take every view with the same camera mode")
    h, w = images[0][1].shape[:2]
    obj_mm = board_object_points_mm(pattern_wh, square_mm)
    objs: list[np.ndarray] = []
    pts: list[np.ndarray] = []
    skipped: list[str] = []
    for name, img in images:
        try:
            pts.append(find_checkerboard(img, pattern_wh, name))
            objs.append(obj_mm)
        except CalibrationError:
            skipped.append(name)
    return intrinsics_from_points(objs, pts, (w, h)), skipped


# ----------------------------------------------------------------------------------------------- belt motion
@dataclass(frozen=True)
class BeltMotion:
    shift_px_per_frame: tuple[float, float]  # robust median (dx, dy)
    direction: str  # +x, -x, +y, -y
    speed_px_s: float  # along the direction of travel
    across_px_per_frame: float  # the other axis; should be ~0 when the camera is square to the belt
    n_pairs: int
    inlier_fraction: float  # pairs that agree with the median within tolerance
    fps: float

    def speed_mm_s(self, mm_per_px: float) -> float:
        return self.speed_px_s * mm_per_px


def frame_shifts_px(frames: Sequence[np.ndarray], roi_xyxy: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """(N-1, 3) per consecutive pair: dx, dy (how far the content moved, px) and the correlation peak response."""
    win: np.ndarray | None = None
    out = []
    prev: np.ndarray | None = None
    for frame in frames:
        gray = to_gray(frame)
        if roi_xyxy is not None:
            x1, y1, x2, y2 = roi_xyxy
            gray = gray[y1:y2, x1:x2]
        cur = gray.astype(np.float32)
        cur -= float(cur.mean())
        if win is None:
            win = cv2.createHanningWindow((cur.shape[1], cur.shape[0]), cv2.CV_32F)
        if prev is not None:
            if prev.shape != cur.shape:
                raise CalibrationError("frames of the clip differ in size; record the clip in one camera mode")
            (dx, dy), response = cv2.phaseCorrelate(prev, cur, win)
            out.append((dx, dy, response))
        prev = cur
    return np.asarray(out, np.float64).reshape(-1, 3)


def belt_motion(
    frames: Sequence[np.ndarray],
    fps: float,
    roi_xyxy: tuple[int, int, int, int] | None = None,
    min_shift_px: float = 0.25,
    tolerance_px: float = 1.0,
) -> BeltMotion:
    """Belt direction and speed (px/s) from consecutive frames of the running belt."""
    if fps <= 0:
        raise CalibrationError(f"fps {fps}: give the clip's frame rate with --fps")
    if len(frames) < MIN_BELT_FRAMES:
        raise CalibrationError(
            f"clip too short: {len(frames)} frames; record at least {MIN_BELT_FRAMES} (a few seconds is better)"
        )
    shifts = frame_shifts_px(frames, roi_xyxy)
    median = np.median(shifts[:, :2], axis=0)
    dx, dy = float(median[0]), float(median[1])
    if math.hypot(dx, dy) < min_shift_px:
        raise CalibrationError(
            f"belt not moving: median shift {math.hypot(dx, dy):.2f} px/frame; run the belt (empty, or with a "
            "few bunches) while recording, and check the clip is not frozen"
        )
    dist = np.hypot(shifts[:, 0] - dx, shifts[:, 1] - dy)
    inliers = dist <= max(tolerance_px, 0.05 * math.hypot(dx, dy))
    inlier_fraction = float(inliers.mean())
    if inlier_fraction < 0.5:
        raise CalibrationError(
            f"belt motion inconsistent: only {inlier_fraction:.0%} of frame pairs agree; use a clip with a "
            "steady belt, a fixed camera, and texture on the belt (or pass --roi over the belt only)"
        )
    # refine on inliers with the mean (sub-pixel estimates are unbiased; the median quantises less well)
    dx, dy = (float(v) for v in shifts[inliers, :2].mean(axis=0))
    axis = 0 if abs(dx) >= abs(dy) else 1
    along = dx if axis == 0 else dy
    direction = ("+" if along > 0 else "-") + ("x" if axis == 0 else "y")
    return BeltMotion(
        shift_px_per_frame=(dx, dy),
        direction=direction,
        speed_px_s=abs(along) * fps,
        across_px_per_frame=dy if axis == 0 else dx,
        n_pairs=int(shifts.shape[0]),
        inlier_fraction=inlier_fraction,
        fps=fps,
    )


# ----------------------------------------------------------------------------------------------- ejector distance
def aruco_dictionary() -> Any:
    aruco = getattr(cv2, "aruco", None)
    if aruco is None:
        raise CalibrationError(
            "this OpenCV build has no aruco module; measure camera_to_ejector_mm with a tape and pass "
            "--camera-to-ejector-mm"
        )
    return aruco.getPredefinedDictionary(getattr(aruco, MARKER_DICT))


def marker_image(marker_id: int = 0, side_px: int = 400) -> np.ndarray:
    """The ArUco marker (DICT_4X4_50) that the ejector step looks for, as uint8 gray."""
    aruco = cv2.aruco
    return np.asarray(aruco.generateImageMarker(aruco_dictionary(), marker_id, side_px), np.uint8)


def marker_centres_px(frames: Sequence[np.ndarray], marker_id: int = 0) -> list[tuple[float, float] | None]:
    """Centre (x, y) of the marker in each frame, None where it is not seen."""
    detector = cv2.aruco.ArucoDetector(aruco_dictionary(), cv2.aruco.DetectorParameters())
    out: list[tuple[float, float] | None] = []
    for frame in frames:
        corners, ids, _ = detector.detectMarkers(to_gray(frame))
        centre = None
        if ids is not None:
            for c, i in zip(corners, np.asarray(ids).reshape(-1), strict=True):
                if int(i) == marker_id:
                    xy = np.asarray(c, np.float64).reshape(-1, 2).mean(axis=0)
                    centre = (float(xy[0]), float(xy[1]))
                    break
        out.append(centre)
    return out


def centre_line_crossing_s(
    centres: Sequence[tuple[float, float] | None], fps: float, image_wh: tuple[int, int], direction: str
) -> float:
    """Clip time (s) at which the marker's centre crosses the image's centre line (perpendicular to travel),
    interpolated linearly between the last frame before and the first frame after the line."""
    axis = 0 if direction[1] == "x" else 1
    sign = 1.0 if direction[0] == "+" else -1.0
    line = image_wh[axis] / 2.0
    seen = [(i, c[axis]) for i, c in enumerate(centres) if c is not None]
    if len(seen) < 2:
        raise CalibrationError(
            "marker seen in fewer than 2 frames; print it with `inspector calibrate target --marker`, lay it flat "
            "on the running belt and record while it passes the middle of the image"
        )
    for (i0, p0), (i1, p1) in itertools.pairwise(seen):
        before, after = sign * (p0 - line), sign * (p1 - line)
        if before <= 0 < after or (before < 0 <= after):
            frac = 0.0 if p1 == p0 else (line - p0) / (p1 - p0)
            return (i0 + frac * (i1 - i0)) / fps
    raise CalibrationError(
        "marker never crosses the image's centre line in the clip; start recording before it reaches the middle "
        "of the image and check belt_direction in the calibration file"
    )


def ejector_distance_mm(belt_speed_mm_s: float, crossing_s: float, ejector_at_s: float) -> float:
    """camera_to_ejector_mm = belt speed x (t1 - t0)."""
    if ejector_at_s <= crossing_s:
        raise CalibrationError(
            f"--ejector-at-s {ejector_at_s:.3f} is not after the centre-line crossing at {crossing_s:.3f} s; "
            "give the clip time (same clock) at which the marker reached the ejector"
        )
    return belt_speed_mm_s * (ejector_at_s - crossing_s)


# ----------------------------------------------------------------------------------------------- calibration file
def read_calibration_dict(path: Path) -> dict[str, Any]:
    """The keys of an existing calibration file (not validated: earlier steps may have written only some)."""
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CalibrationError(
            f"{path}: existing calibration file unreadable ({type(exc).__name__}); fix or remove it"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CalibrationError(f"{path}: existing calibration file is not a mapping of keys; fix or remove it")
    return data


def merge_calibration(existing: dict[str, Any], updates: dict[str, Any]) -> tuple[Calibration, list[str]]:
    """Existing keys overlaid with this step's; required keys that neither has come from DEFAULT_CALIBRATION.

    Returns the validated calibration and the names of the keys that are still defaults."""
    defaults = DEFAULT_CALIBRATION.model_dump(mode="json", exclude_none=True)
    merged = {**defaults, **existing, **{k: v for k, v in updates.items() if v is not None}}
    still_default = [k for k in defaults if k not in existing and updates.get(k) is None]
    try:
        calibration = Calibration.model_validate(merged)
    except ValidationError as exc:  # one line for all problems
        problems = ["{}: {}".format(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        lines = "; ".join(problems)
        raise CalibrationError(f"calibration values invalid: {lines or exc}") from None
    return calibration, still_default


def write_calibration(path: Path, calibration: Calibration, note: str) -> None:
    header = (
        f"# Line calibration, written by `inspector calibrate` ({note}).\n"
        "# Keys: see calibration/README.md. Validate after editing: inspector check-config --calibration FILE\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + calibration.to_yaml(), encoding="utf-8")
    tmp.replace(path)


# ----------------------------------------------------------------------------------------------- printable targets
def px_for_mm(mm: float, dpi: float) -> int:
    return round(mm * dpi / MM_PER_INCH)


def checkerboard_image(pattern_wh: tuple[int, int], square_mm: float, dpi: float = 300.0) -> np.ndarray:
    """uint8 gray checkerboard with (cols+1) x (rows+1) squares and a white quiet zone of one square, at `dpi`.

    The image is exactly (cols+3) * square_mm wide and (rows+3) * square_mm high when printed at `dpi`."""
    cols, rows = pattern_wh
    n_x, n_y = cols + 1, rows + 1
    total_w = px_for_mm((n_x + 2) * square_mm, dpi)
    total_h = px_for_mm((n_y + 2) * square_mm, dpi)
    image = np.full((total_h, total_w), 255, np.uint8)
    edges_x = [px_for_mm((1 + i) * square_mm, dpi) for i in range(n_x + 1)]
    edges_y = [px_for_mm((1 + j) * square_mm, dpi) for j in range(n_y + 1)]
    for j in range(n_y):
        for i in range(n_x):
            if (i + j) % 2 == 0:
                image[edges_y[j] : edges_y[j + 1], edges_x[i] : edges_x[i + 1]] = 0
    return image


def add_caption(image: np.ndarray, lines: Iterable[str], dpi: float, bar_mm: float = 100.0) -> np.ndarray:
    """Below the target: caption lines and a `bar_mm` scale bar to check the print came out at 100 %."""
    line_h = px_for_mm(6.0, dpi)
    lines = list(lines)
    pad = px_for_mm(4.0, dpi)
    extra = pad + line_h * (len(lines) + 2)
    out = np.full((image.shape[0] + extra, max(image.shape[1], px_for_mm(bar_mm + 10, dpi))), 255, np.uint8)
    out[: image.shape[0], : image.shape[1]] = image
    scale = line_h / 40.0
    thick = max(1, round(scale * 1.5))
    y = image.shape[0] + pad
    for text in lines:
        y += line_h
        cv2.putText(out, text, (px_for_mm(5, dpi), y), cv2.FONT_HERSHEY_SIMPLEX, scale, 0, thick, cv2.LINE_AA)
    y += line_h // 2
    x0 = px_for_mm(5, dpi)
    out[y : y + max(2, line_h // 4), x0 : x0 + px_for_mm(bar_mm, dpi)] = 0
    return out


def pdf_with_image(gray: np.ndarray, dpi: float, page_mm: tuple[float, float] | None = None) -> bytes:
    """A single-page PDF holding `gray` (uint8, H x W) at its physical size (W / dpi inches), centred on the page.

    The page is A4 (portrait or landscape) when the image fits, else exactly the image's size."""
    gray = np.ascontiguousarray(gray, np.uint8)
    h, w = gray.shape
    img_w_pt, img_h_pt = w * 72.0 / dpi, h * 72.0 / dpi
    if page_mm is None:
        for pw, ph in ((210.0, 297.0), (297.0, 210.0)):
            if img_w_pt <= pw * PT_PER_MM and img_h_pt <= ph * PT_PER_MM:
                page_mm = (pw, ph)
                break
        else:
            page_mm = (img_w_pt / PT_PER_MM, img_h_pt / PT_PER_MM)
    page_w_pt, page_h_pt = page_mm[0] * PT_PER_MM, page_mm[1] * PT_PER_MM
    x_pt, y_pt = (page_w_pt - img_w_pt) / 2.0, (page_h_pt - img_h_pt) / 2.0
    data = zlib.compress(gray.tobytes(), 9)
    content = f"q {img_w_pt:.4f} 0 0 {img_h_pt:.4f} {x_pt:.4f} {y_pt:.4f} cm /Im0 Do Q\n".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {page_w_pt:.4f} {page_h_pt:.4f}] "
            "/Resources << /XObject << /Im0 4 0 R >> >> /Contents 5 0 R >>"
        ).encode(),
        (
            f"<< /Type /XObject /Subtype /Image /Width {w} /Height {h} /ColorSpace /DeviceGray "
            f"/BitsPerComponent 8 /Filter /FlateDecode /Length {len(data)} >>\nstream\n"
        ).encode()
        + data
        + b"\nendstream",
        f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"endstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
