"""`inspector calibrate STEP`: measure a line and write its calibration file (calibration/README.md is the procedure).

Steps, in the order a technician runs them; each updates only its own keys of FILE (default calibration.yaml):

    target      print a checkerboard (or the ejector marker) to PNG + PDF at a known physical size
    grab        save frames from the line camera (photos for intrinsics/scale, a clip for belt/ejector)
    intrinsics  camera_matrix, dist_coeffs   from 10-20 photos of the checkerboard at varied tilts
    scale       mm_per_px                    from one photo of the checkerboard lying flat on the belt
    belt        belt_speed_mm_s, belt_direction  from a few seconds of video of the running belt
    ejector     camera_to_ejector_mm         typed in (--camera-to-ejector-mm) or from a marker clip + its time
    set         any key typed in by hand     spider_span_mm, roi_xyxy, ...
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspector import calibrate as cal
from inspector.errors import InspectorError

log = logging.getLogger(__name__)

DEFAULT_FILE = Path("calibration.yaml")


def _pattern(text: str) -> tuple[int, int]:
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write inner corners as COLSxROWS, e.g. 9x6") from None
    if cols < 2 or rows < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 2x2 inner corners")
    return cols, rows


def _xyxy(text: str) -> tuple[int, int, int, int]:
    try:
        x1, y1, x2, y2 = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write the box as x1,y1,x2,y2 in pixels") from None
    return x1, y1, x2, y2


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be > 0")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="measure lens, scale, belt speed and ejector distance; write the calibration file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = p.add_subparsers(dest="step", required=True, metavar="STEP")

    board = argparse.ArgumentParser(add_help=False)
    board.add_argument("--pattern", type=_pattern, default=(9, 6), help="inner corners COLSxROWS (default 9x6)")
    board.add_argument("--square-mm", type=_positive, default=20.0, help="printed square size, mm (default 20)")

    def step(name: str, help_text: str, with_board: bool = False) -> argparse.ArgumentParser:
        parents = [board] if with_board else []
        s = steps.add_parser(name, help=help_text, description=help_text, parents=parents)
        if name not in ("target", "grab"):
            s.add_argument(
                "-f", "--file", type=Path, default=DEFAULT_FILE, help="calibration file to update (created if absent)"
            )
        return s

    s = step("intrinsics", "lens intrinsics and distortion from checkerboard photos at varied tilts", with_board=True)
    s.add_argument("images", type=Path, nargs="+", help="photos of the board (10-20, tilted, all over the image)")
    s.set_defaults(func=run_intrinsics)

    s = step(
        "scale", "mm_per_px at the belt plane from a photo of the checkerboard lying flat on the belt", with_board=True
    )
    s.add_argument("image", type=Path, help="photo of the board on the belt, taken by the line camera")
    s.add_argument("--no-undistort", action="store_true", help="ignore camera_matrix/dist_coeffs in FILE")
    s.set_defaults(func=run_scale)

    s = step("belt", "belt speed and direction from a short clip of the running belt")
    s.add_argument("clip", type=Path, help="video file, or a folder of frames (then --fps is required)")
    s.add_argument("--fps", type=_positive, help="frame rate (default: from the video file)")
    s.add_argument("--roi", type=_xyxy, help="x1,y1,x2,y2: measure only inside this box (the belt)")
    s.add_argument("--save-roi", action="store_true", help="also store --roi as roi_xyxy in FILE")
    s.add_argument("--max-frames", type=int, default=150, help="frames to use (default 150)")
    s.set_defaults(func=run_belt)

    s = step("ejector", "camera_to_ejector_mm: typed in, or from a marker clip and the time it reached the ejector")
    s.add_argument("--camera-to-ejector-mm", type=float, help="measured with a tape from the image centre line")
    s.add_argument("--clip", type=Path, help="clip of the marker passing the image centre line")
    s.add_argument("--ejector-at-s", type=float, help="clip time (s) at which the marker reached the ejector")
    s.add_argument("--fps", type=_positive, help="frame rate (default: from the video file)")
    s.add_argument("--marker-id", type=int, default=0, help="ArUco DICT_4X4_50 id (default 0)")
    s.set_defaults(func=run_ejector)

    s = step("set", "type in values by hand (spider span, ROI, or a correction to any key)")
    s.add_argument("--spider-span-mm", type=float, nargs=2, metavar=("MIN", "MAX"), help="default 4 12")
    s.add_argument("--camera-to-ejector-mm", type=float)
    s.add_argument("--mm-per-px", type=float)
    s.add_argument("--belt-speed-mm-s", type=float)
    s.add_argument("--belt-direction", choices=["+x", "-x", "+y", "-y"])
    s.add_argument("--roi-xyxy", type=_xyxy, help="x1,y1,x2,y2: the belt in the image")
    s.set_defaults(func=run_set)

    s = step("grab", "save frames from the line camera: photos (--frames 1) or a clip for belt/ejector")
    s.add_argument("camera", help="camera index (0), device (/dev/video0), URL, or a video file")
    s.add_argument("-o", "--out", type=Path, required=True, help="folder to write NNNN.png into")
    s.add_argument("--frames", type=int, default=1, help="frames to save (default 1; a belt clip: 90-150)")
    s.add_argument("--width", type=int, help="request this capture width (use the daemon's camera mode)")
    s.add_argument("--height", type=int, help="request this capture height")
    s.set_defaults(func=run_grab)

    s = step(
        "target", "print a calibration target to PNG and PDF (print at actual size, no 'fit to page')", with_board=True
    )
    s.add_argument("--marker", action="store_true", help="the ejector-step marker instead of a checkerboard")
    s.add_argument("--marker-mm", type=_positive, default=80.0, help="marker side, mm (default 80)")
    s.add_argument("--dpi", type=_positive, default=300.0, help="image resolution (default 300)")
    s.add_argument("-o", "--out", type=Path, default=Path("target"), help="output stem: writes STEM.png, STEM.pdf")
    s.set_defaults(func=run_target)


# ------------------------------------------------------------------------------------------------ helpers
def _update(path: Path, updates: dict[str, Any], note: str) -> None:
    existing = cal.read_calibration_dict(path)
    calibration, still_default = cal.merge_calibration(existing, updates)
    cal.write_calibration(path, calibration, f"{note}, {dt.datetime.now().isoformat(timespec='seconds')}")
    keys = ", ".join(k for k, v in updates.items() if v is not None)
    print(f"{path}: updated {keys}")
    if still_default:
        print(f"{path}: still at defaults, measure or set them: {', '.join(still_default)}")


def _intrinsics_of(path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    data = cal.read_calibration_dict(path)
    k = data.get("camera_matrix")
    d = data.get("dist_coeffs")
    return (None, None) if k is None else (np.asarray(k, np.float64), None if d is None else np.asarray(d))


def _fps(given: float | None, from_file: float | None, clip: Path) -> float:
    fps = given or from_file
    if fps is None:
        raise InspectorError(f"{clip}: frame rate unknown (a frame folder or a file without it); pass --fps")
    return fps


# ------------------------------------------------------------------------------------------------ steps
def run_intrinsics(args: argparse.Namespace) -> int:
    images = [(str(p), cal.read_image(p)) for p in args.images]
    result, skipped = cal.calibrate_intrinsics(images, args.pattern, args.square_mm)
    for name in skipped:
        print(f"{name}: no checkerboard found, skipped")
    k = result.camera_matrix
    print(
        f"intrinsics from {result.n_views} views ({result.image_wh[0]}x{result.image_wh[1]}): "
        f"fx={k[0, 0]:.1f} fy={k[1, 1]:.1f} cx={k[0, 2]:.1f} cy={k[1, 2]:.1f} px, "
        f"k1={result.dist_coeffs[0]:+.4f}, reprojection RMS {result.rms_px:.3f} px"
    )
    if result.rms_px > 1.0:
        print("warning: reprojection RMS above 1 px: blurred or bent board? retake the photos")
    updates = {
        "camera_matrix": [[round(float(v), 4) for v in row] for row in k],
        "dist_coeffs": [round(float(v), 6) for v in result.dist_coeffs],
    }
    _update(args.file, updates, "intrinsics")
    print("next: re-run `inspector calibrate scale` (the scale is measured on undistorted images)")
    return 0


def run_scale(args: argparse.Namespace) -> int:
    image = cal.read_image(args.image)
    k, d = (None, None) if args.no_undistort else _intrinsics_of(args.file)
    result = cal.measure_scale_checkerboard(image, args.pattern, args.square_mm, k, d, name=str(args.image))
    undist = "undistorted" if k is not None else "no lens model"
    print(
        f"mm_per_px {result.mm_per_px:.5f} ({undist}; {result.n_points} corners, fit residual "
        f"{result.residual_px:.2f} px, axes differ by {result.anisotropy:.1%})"
    )
    if result.anisotropy > 0.02:
        print("warning: scale differs by more than 2 % between the board's axes: the camera is not square to the belt")
    if result.residual_px > 1.0:
        print("warning: fit residual above 1 px: the board is not flat, or the lens is uncalibrated")
    _update(args.file, {"mm_per_px": round(result.mm_per_px, 6)}, "scale")
    return 0


def run_belt(args: argparse.Namespace) -> int:
    frames, file_fps = cal.read_clip(args.clip, max_frames=args.max_frames)
    fps = _fps(args.fps, file_fps, args.clip)
    existing = cal.read_calibration_dict(args.file)
    if "mm_per_px" not in existing:
        raise InspectorError(f"{args.file}: no mm_per_px yet; run `inspector calibrate scale` before `belt`")
    k, d = _intrinsics_of(args.file)
    if k is not None:
        frames = _undistort_all(frames, k, d)
    motion = cal.belt_motion(frames, fps, roi_xyxy=args.roi)
    speed = motion.speed_mm_s(float(existing["mm_per_px"]))
    dx, dy = motion.shift_px_per_frame
    print(
        f"belt moves {motion.direction} at {speed:.1f} mm/s ({dx:+.2f}, {dy:+.2f} px/frame at {fps:g} fps; "
        f"{motion.n_pairs} frame pairs, {motion.inlier_fraction:.0%} agree)"
    )
    if abs(motion.across_px_per_frame) > 0.05 * motion.speed_px_s / fps:
        print("warning: the belt drifts across the image by more than 5 %: rotate the camera to align it")
    updates: dict[str, Any] = {"belt_speed_mm_s": round(speed, 3), "belt_direction": motion.direction}
    if args.save_roi and args.roi is not None:
        updates["roi_xyxy"] = list(args.roi)
    _update(args.file, updates, "belt")
    return 0


def _undistort_all(frames: list[np.ndarray], k: np.ndarray, d: np.ndarray | None) -> list[np.ndarray]:
    h, w = frames[0].shape[:2]
    dist = np.zeros(5) if d is None else d
    map1, map2 = cv2.initUndistortRectifyMap(k, dist, None, k, (w, h), cv2.CV_16SC2)
    return [np.asarray(cv2.remap(f, map1, map2, cv2.INTER_LINEAR)) for f in frames]


def run_ejector(args: argparse.Namespace) -> int:
    if (args.camera_to_ejector_mm is None) == (args.clip is None):
        raise InspectorError("give either --camera-to-ejector-mm MM (tape) or --clip CLIP --ejector-at-s T")
    if args.camera_to_ejector_mm is not None:
        distance = float(args.camera_to_ejector_mm)
    else:
        if args.ejector_at_s is None:
            raise InspectorError("--clip needs --ejector-at-s T: the clip time at which the marker reached the ejector")
        existing = cal.read_calibration_dict(args.file)
        if "belt_speed_mm_s" not in existing or "belt_direction" not in existing:
            raise InspectorError(f"{args.file}: no belt speed yet; run `inspector calibrate belt` before `ejector`")
        frames, file_fps = cal.read_clip(args.clip, max_frames=100_000)
        fps = _fps(args.fps, file_fps, args.clip)
        centres = cal.marker_centres_px(frames, args.marker_id)
        h, w = frames[0].shape[:2]
        t0 = cal.centre_line_crossing_s(centres, fps, (w, h), str(existing["belt_direction"]))
        distance = cal.ejector_distance_mm(float(existing["belt_speed_mm_s"]), t0, args.ejector_at_s)
        print(f"marker crossed the centre line at {t0:.3f} s, reached the ejector at {args.ejector_at_s:.3f} s")
    print(f"camera_to_ejector_mm {distance:.1f}")
    _update(args.file, {"camera_to_ejector_mm": round(distance, 2)}, "ejector")
    return 0


def run_set(args: argparse.Namespace) -> int:
    updates: dict[str, Any] = {
        "spider_span_mm": args.spider_span_mm,
        "camera_to_ejector_mm": args.camera_to_ejector_mm,
        "mm_per_px": args.mm_per_px,
        "belt_speed_mm_s": args.belt_speed_mm_s,
        "belt_direction": args.belt_direction,
        "roi_xyxy": None if args.roi_xyxy is None else list(args.roi_xyxy),
    }
    if all(v is None for v in updates.values()):
        raise InspectorError("nothing to set; give at least one option, e.g. --spider-span-mm 4 12")
    _update(args.file, updates, "set by hand")
    return 0


def run_target(args: argparse.Namespace) -> int:
    dpi = float(args.dpi)
    if args.marker:
        side_px = cal.px_for_mm(args.marker_mm, dpi)
        quiet_px = cal.px_for_mm(args.marker_mm / 4.0, dpi)
        marker = cal.marker_image(0, side_px)
        image = np.pad(marker, quiet_px, constant_values=255)
        caption = [f"ArUco {cal.MARKER_DICT} id 0, {args.marker_mm:g} mm - for `inspector calibrate ejector`"]
    else:
        cols, rows = args.pattern
        image = cal.checkerboard_image(args.pattern, args.square_mm, dpi)
        caption = [f"checkerboard {cols}x{rows} inner corners, {args.square_mm:g} mm squares: --pattern {cols}x{rows}"]
    caption.append("print at 100 % (no fit-to-page); the bar below must measure 100 mm")
    page = cal.add_caption(np.asarray(image, np.uint8), caption, dpi)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = out.with_suffix(".png"), out.with_suffix(".pdf")
    if not cv2.imwrite(str(png), page):
        raise InspectorError(f"{png}: cannot be written; check the folder exists and is writable")
    pdf.write_bytes(cal.pdf_with_image(page, dpi))
    w_mm, h_mm = page.shape[1] * cal.MM_PER_INCH / dpi, page.shape[0] * cal.MM_PER_INCH / dpi
    print(f"wrote {png} and {pdf} ({w_mm:.0f} x {h_mm:.0f} mm at 100 %)")
    return 0


def run_grab(args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise InspectorError(f"--frames {args.frames}: give at least 1")
    source: int | str = int(args.camera) if args.camera.isdigit() else args.camera
    cap = cv2.VideoCapture(source)
    try:
        if not cap.isOpened():
            raise InspectorError(f"{args.camera}: camera or file cannot be opened; check the device, URL or path")
        if args.width and args.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, args.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, args.height)
        reported_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        args.out.mkdir(parents=True, exist_ok=True)
        stamps_ms: list[float] = []
        for i in range(args.frames):
            ok, frame = cap.read()
            if not ok:
                raise InspectorError(f"{args.camera}: no frame {i} (camera lost or file ended); check the source")
            stamps_ms.append(float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0))
            cv2.imwrite(str(args.out / f"{i:04d}.png"), frame)
    finally:
        cap.release()
    span_s = (stamps_ms[-1] - stamps_ms[0]) / 1000.0 if len(stamps_ms) > 1 else 0.0
    fps = (len(stamps_ms) - 1) / span_s if span_s > 0 else reported_fps
    h, w = frame.shape[:2]
    print(f"wrote {args.frames} frame(s) {w}x{h} to {args.out}/ (frame rate {fps:.2f} fps: pass --fps {fps:.2f})")
    return 0
