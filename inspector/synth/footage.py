"""Conveyor footage with labels: plan the bunches on the belt, pre-render each once as a sprite, paste per frame.

Work happens in a *canonical* frame where the belt moves +x (columns = along travel, rows = across), composed at
the scene scale (`inspector.synth.camera.scene_scale`: no finer than the photos, up to 2x finer than the camera);
every frame then goes through the camera model (`inspector.synth.camera.apply_camera`: resample to the camera's
mm/px, defocus, motion blur along travel, shot + read noise, gain; the MJPG writer is the JPEG step). The camera's
settings are drawn once per clip (one camera, one focus, one exposure), with a slow lighting drift in its gain and
fresh noise in every frame. The finished frame and its boxes are then mirrored/transposed into the calibration's
`belt_direction`.

Outputs (see `generate_footage`): ``footage.avi`` (MJPG), ``calibration.yaml``, ``labels.jsonl`` with one line per
bunch: ``{"bunch_id", "spider", "spider_span_mm", "track": [[frame, x1, y1, x2, y2], ...], "spider_track": [...]}``
(pixel boxes, x2/y2 exclusive, clipped to the frame, for every frame in which the bunch/spider is visible;
``spider_span_mm`` is null and ``spider_track`` empty for bunches without a spider).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from inspector.config import DEFAULT_CALIBRATION, Calibration
from inspector.errors import InspectorError
from inspector.progress import progress
from inspector.synth.camera import CameraSettings, apply_camera, honest_mm_per_px, random_settings, scene_scale
from inspector.synth.raster import Sprite, alpha_bbox_xyxy, belt_texture, resize_sprite
from inspector.synth.scene import (
    BELT_COLOURS_BGR,
    AssetSource,
    BoxXYXY,
    ProceduralSource,
    decorate_bunch,
    shadow_of,
)
from inspector.types import FloatArray, U8Array

log = logging.getLogger(__name__)

BUNCH_LENGTH_MM = (110.0, 220.0)
BERRY_RADIUS_MM = (7.0, 11.0)
GAP_MM = (40.0, 160.0)  # belt between consecutive bunches (they never touch)
LEAD_IN_S = 0.6  # empty belt at the start (lets a belt-colour model learn)


class SynthError(InspectorError):
    """Footage or tile synthesis cannot run with the given settings."""


@dataclass(frozen=True)
class Placement:
    """One pre-rendered bunch on the belt (canonical frame): x at t=0 and y across the belt."""

    bunch_id: int
    sprite: Sprite
    pre_bgr: FloatArray  # premultiplied colour (H, W, 3)
    inv_alpha: FloatArray  # 1 - alpha, (H, W, 3)
    shadow: FloatArray  # (H, W) darkening factor
    shadow_dxy: tuple[int, int]
    x0_px: float
    y_px: int
    box: BoxXYXY  # coverage box, sprite pixels
    spider_box: BoxXYXY | None
    spider_span_mm: float | None


def make_source(
    real_dir: Path | None, split: str, seed: int, background_patches: float = 0.0, patches_per_seed: bool = False
) -> AssetSource:
    """Procedural source, or real cut-outs from `real_dir` (imported lazily: only real mode reads photos);
    `background_patches`, `patches_per_seed`: see :class:`inspector.synth.real.RealSource`."""
    if real_dir is None:
        return ProceduralSource()
    from inspector.synth.real import RealSource

    return RealSource(
        Path(real_dir), split=split, seed=seed, background_patches=background_patches, patches_per_seed=patches_per_seed
    )


def honest_calibration(calibration: Calibration, source: AssetSource) -> tuple[Calibration, str | None]:
    """The calibration to render with: the one given, or, where its mm/px is finer than the source's photos can
    honestly give, the same at the photos' scale, with the one line saying so."""
    mm, note = honest_mm_per_px(calibration.mm_per_px, source.native_mm_per_px)
    return (calibration, None) if note is None else (calibration.model_copy(update={"mm_per_px": mm}), note)


def canonical_wh(width: int, height: int, calibration: Calibration) -> tuple[int, int]:
    """(length along travel, width across) of the canonical frame."""
    return (width, height) if calibration.travel_axis == 0 else (height, width)


def to_frame_box(box: BoxXYXY, length: int, direction: str) -> BoxXYXY:
    """Map a canonical box (x along travel, y across) into frame pixels for `direction`."""
    x1, y1, x2, y2 = box
    if direction == "+x":
        return box
    if direction == "-x":
        return (length - x2, y1, length - x1, y2)
    if direction == "+y":
        return (y1, x1, y2, x2)
    return (y1, length - x2, y2, length - x1)  # -y


def to_frame_image(img: U8Array, direction: str) -> U8Array:
    if direction == "+x":
        return img
    if direction == "-x":
        return np.ascontiguousarray(img[:, ::-1])
    t = np.ascontiguousarray(img.transpose(1, 0, 2))
    return t if direction == "+y" else np.ascontiguousarray(t[::-1])


def plan_bunches(
    rng: np.random.Generator,
    source: AssetSource,
    calibration: Calibration,
    canon_wh: tuple[int, int],
    n_frames: int,
    fps: float,
    n_bunches: int | None,
    spider_fraction: float,
    seed: int,
    scene_mm_per_px: float,
) -> list[Placement]:
    """Render every bunch that will be seen, and place them along the belt with gaps between them; `canon_wh` and
    every pixel here are at the scene scale `scene_mm_per_px`."""
    length, across = canon_wh
    mm = scene_mm_per_px
    v_px_s = calibration.belt_speed_mm_s / mm
    t_end = (n_frames - 1) / fps
    fill = n_bunches is None
    if n_bunches is None:
        # enough bunches to keep the belt busy until the end of the footage (bounded by the smallest pitch)
        travel = v_px_s * t_end + length
        n_bunches = max(1, math.ceil(travel / ((BUNCH_LENGTH_MM[0] * 0.5 + GAP_MM[0]) / mm)) + 1)
    n_spiders = round(n_bunches * spider_fraction)
    with_spider = np.zeros(n_bunches, bool)
    with_spider[rng.permutation(n_bunches)[:n_spiders]] = True

    placements: list[Placement] = []
    # where the leading (right) edge of the next bunch sits at t=0: an empty lead-in of LEAD_IN_S, unless the clip is
    # too short to show a bunch after it; then the first bunch starts two thirds into the view
    x_lead = -v_px_s * LEAD_IN_S if t_end >= 2 * LEAD_IN_S else length * 2 / 3
    for i in range(n_bunches):
        if fill and x_lead + v_px_s * t_end <= 0:
            break  # this one would never be seen
        brng = np.random.default_rng([seed, 1, i])
        length_px = brng.uniform(*BUNCH_LENGTH_MM) / mm
        length_px = min(length_px, 0.85 * across)
        cut = source.bunch(brng, length_px, brng.uniform(*BERRY_RADIUS_MM) / mm, mm)
        span_px = brng.uniform(*calibration.spider_span_mm) / mm if with_spider[i] else None
        span_lo, span_hi = (s / mm for s in calibration.spider_span_mm)
        dec = decorate_bunch(brng, source, cut, span_px, mm, int(brng.poisson(1.2)), (0.8 * span_lo, 1.3 * span_hi))
        # any angle, either face up; the spider box is carried through the same transform
        sprite, spider_box = _pose_with_box(brng, dec.sprite, dec.spider_box)
        scale = min(1.0, 0.95 * across / sprite.wh[1])
        if scale < 1.0:
            sprite = resize_sprite(sprite, scale)
            if spider_box is not None:
                spider_box = _scale_box(spider_box, scale)
        box = alpha_bbox_xyxy(sprite.alpha, 0.25) or (0, 0, *sprite.wh)
        if spider_box is not None:
            spider_box = _intersect(spider_box, box)
        _w, h = sprite.wh
        x0 = x_lead - box[2]
        y = int(brng.uniform(0, max(1, across - h)))
        pre_bgr = sprite.bgr.astype(np.float32) * sprite.alpha[:, :, None]
        inv = np.repeat((1.0 - sprite.alpha)[:, :, None], 3, axis=2)
        shadow = shadow_of(sprite, brng.uniform(0.2, 0.35), brng.uniform(0.75, 2.0) / mm)
        placements.append(
            Placement(
                i,
                sprite,
                pre_bgr,
                inv,
                shadow,
                (round(brng.integers(2, 9) * 0.25 / mm), round(brng.integers(2, 9) * 0.25 / mm)),
                x0,
                y,
                box,
                spider_box,
                dec.spider_span_mm if spider_box is not None else None,
            )
        )
        gap_px = rng.uniform(*GAP_MM) / mm
        x_lead = x0 + box[0] - gap_px
    if not placements:
        raise SynthError(f"no bunch passes the camera in {t_end:.2f} s; give more seconds")
    last = placements[-1]
    if last.x0_px + last.box[2] + v_px_s * t_end <= 0:
        raise SynthError(
            f"{n_bunches} bunches do not pass the camera in {t_end:.1f} s at {calibration.belt_speed_mm_s} mm/s; "
            "give more seconds or fewer bunches"
        )
    return placements


def _pose_with_box(rng: np.random.Generator, sprite: Sprite, box: BoxXYXY | None) -> tuple[Sprite, BoxXYXY | None]:
    """Random pose of a sprite carrying a marked box: rotate a box mask alongside and re-measure it."""
    mark = np.zeros(sprite.alpha.shape, np.float32)
    if box is not None:
        x1, y1, x2, y2 = box
        mark[y1:y2, x1:x2] = 1.0
    flip = rng.random() < 0.5
    angle = rng.uniform(0, 360)
    bgr, alpha = sprite.bgr, sprite.alpha
    if flip:
        bgr, alpha, mark = bgr[:, ::-1], alpha[:, ::-1], mark[:, ::-1]
    h, w = alpha.shape
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(np.ceil(h * sin + w * cos)), int(np.ceil(h * cos + w * sin))
    m[0, 2] += nw / 2.0 - w / 2.0
    m[1, 2] += nh / 2.0 - h / 2.0
    bgr_r = np.asarray(cv2.warpAffine(np.ascontiguousarray(bgr), m, (nw, nh), flags=cv2.INTER_LINEAR), np.uint8)
    a_r = np.clip(cv2.warpAffine(np.ascontiguousarray(alpha), m, (nw, nh), flags=cv2.INTER_LINEAR), 0, 1)
    # the spider box in the rotated frame: the rotated corners' extent is too loose; use the mark's coverage
    # restricted to the spider itself (alpha) and fall back to the mark when that is empty
    mark_r = np.asarray(cv2.warpAffine(np.ascontiguousarray(mark), m, (nw, nh), flags=cv2.INTER_NEAREST), np.float32)
    new_box = None
    if box is not None:
        new_box = alpha_bbox_xyxy(mark_r * a_r, 0.25) or alpha_bbox_xyxy(mark_r, 0.5)
    return Sprite(bgr_r, a_r.astype(np.float32)), new_box


def _scale_box(box: BoxXYXY, s: float) -> BoxXYXY:
    return (int(box[0] * s), int(box[1] * s), math.ceil(box[2] * s), math.ceil(box[3] * s))


def _intersect(a: BoxXYXY, b: BoxXYXY) -> BoxXYXY | None:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def _clip_shift(box: BoxXYXY, dx: int, dy: int, length: int, across: int) -> BoxXYXY | None:
    return _intersect((box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy), (0, 0, length, across))


# --------------------------------------------------------------------------------------------- frames
@dataclass(frozen=True)
class Belt:
    """The moving belt: a periodic texture pre-tiled so any scroll offset is one slice."""

    strip: U8Array  # (across, length + period, 3)
    period: int


def make_belt(rng: np.random.Generator, canon_wh: tuple[int, int], colour_bgr: tuple[int, int, int]) -> Belt:
    length, across = canon_wh
    period = 512
    tex = belt_texture(rng, (period, across), colour_bgr)
    reps = length // period + 2
    return Belt(np.ascontiguousarray(np.concatenate([tex] * reps, axis=1)), period)


def compose_frame(belt: Belt, placements: list[Placement], t_s: float, v_px_s: float, length: int) -> U8Array:
    """Canonical frame at time `t_s`: scrolled belt, bunch shadows, bunches (no camera effects)."""
    shift = round(v_px_s * t_s)
    start = (-shift) % belt.period
    frame = belt.strip[:, start : start + length].copy()
    across = frame.shape[0]
    for p in placements:
        x = round(p.x0_px + v_px_s * t_s)
        w, h = p.sprite.wh
        if x >= length or x + w <= 0:
            continue
        sx, sy = p.shadow_dxy
        _darken(frame, p.shadow, x + sx, p.y_px + sy)
        x1, x2 = max(x, 0), min(x + w, length)
        y1, y2 = max(p.y_px, 0), min(p.y_px + h, across)
        region = frame[y1:y2, x1:x2].astype(np.float32)
        sl = (slice(y1 - p.y_px, y2 - p.y_px), slice(x1 - x, x2 - x))
        region *= p.inv_alpha[sl]
        region += p.pre_bgr[sl]
        frame[y1:y2, x1:x2] = np.clip(region, 0, 255).astype(np.uint8)
    return frame


def _darken(dst: U8Array, shadow: FloatArray, x: int, y: int) -> None:
    h, w = dst.shape[:2]
    sh, sw = shadow.shape
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + sw, w), min(y + sh, h)
    if x2 > x1 and y2 > y1:
        s = 1.0 - shadow[y1 - y : y2 - y, x1 - x : x2 - x, None]
        dst[y1:y2, x1:x2] = (dst[y1:y2, x1:x2] * s).astype(np.uint8)


@dataclass(frozen=True)
class Camera:
    """The clip's camera: settings drawn once (`inspector.synth.camera.random_settings`, no JPEG step: the MJPG
    writer is one), a slow per-channel lighting drift on its gain, and fresh noise per frame (seeded by the frame)."""

    settings: CameraSettings
    scene_mm_per_px: float
    drift_period_s: tuple[float, float, float]
    drift_phase: tuple[float, float, float]
    drift_amp: float
    seed: int

    def apply(self, scene: U8Array, t_s: float, index: int) -> U8Array:
        b, g, r = (
            gain * (1.0 + self.drift_amp * math.sin(2 * math.pi * t_s / period + phase))
            for gain, period, phase in zip(self.settings.gain_bgr, self.drift_period_s, self.drift_phase, strict=True)
        )
        settings = replace(self.settings, gain_bgr=(b, g, r))
        return apply_camera(scene, self.scene_mm_per_px, settings, np.random.default_rng([self.seed, 4, index]))


def make_camera(rng: np.random.Generator, calibration: Calibration, scene_mm_per_px: float, seed: int) -> Camera:
    settings = random_settings(
        rng, calibration.mm_per_px, calibration.belt_speed_mm_s, travel_axis=0, jpeg=False
    )  # canonical frame: travel along x
    base_period = rng.uniform(6.0, 15.0)
    periods = tuple(float(base_period * rng.uniform(0.9, 1.1)) for _ in range(3))
    phases = tuple(float(rng.uniform(0, 2 * math.pi)) for _ in range(3))
    amp = float(rng.uniform(0.03, 0.08))
    return Camera(settings, scene_mm_per_px, periods, phases, amp, seed)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Footage:
    """A planned clip: iterate `frames()` for (index, BGR frame); `labels()` gives the label lines."""

    width: int
    height: int
    fps: float
    n_frames: int
    calibration: Calibration
    placements: list[Placement]  # scene pixels
    belt: Belt  # scene pixels
    camera: Camera

    @property
    def scene_wh(self) -> tuple[int, int]:
        """(length, across) of the canonical frame at the scene scale."""
        length, across = canonical_wh(self.width, self.height, self.calibration)
        f = self.calibration.mm_per_px / self.camera.scene_mm_per_px
        return round(length * f), round(across * f)

    def frames(self) -> Iterator[tuple[int, U8Array]]:
        length, across = canonical_wh(self.width, self.height, self.calibration)
        scene_length, _ = self.scene_wh
        v = self.calibration.belt_speed_mm_s / self.camera.scene_mm_per_px  # canonical: +x; direction at the end
        for f in range(self.n_frames):
            t = f / self.fps
            scene = compose_frame(self.belt, self.placements, t, v, scene_length)
            canon = self.camera.apply(scene, t, f)
            if canon.shape[:2] != (across, length):  # rounding of the scene size
                canon = np.asarray(cv2.resize(canon, (length, across), interpolation=cv2.INTER_AREA), np.uint8)
            yield f, to_frame_image(canon, self.calibration.belt_direction)

    def labels(self) -> list[dict[str, Any]]:
        length, across = canonical_wh(self.width, self.height, self.calibration)
        scene_length, scene_across = self.scene_wh
        k = length / scene_length  # camera pixels per scene pixel
        v = self.calibration.belt_speed_mm_s / self.camera.scene_mm_per_px
        direction = self.calibration.belt_direction
        lines: list[dict[str, Any]] = []
        for p in self.placements:
            track: list[list[int]] = []
            spider_track: list[list[int]] = []
            for f in range(self.n_frames):
                x = round(p.x0_px + v * f / self.fps)
                b = _clip_shift(p.box, x, p.y_px, scene_length, scene_across)
                if b is None:
                    continue
                b = _clip_shift(_scale_box(b, k), 0, 0, length, across)
                if b is None:
                    continue
                track.append([f, *to_frame_box(b, length, direction)])
                if p.spider_box is not None:
                    s = _clip_shift(p.spider_box, x, p.y_px, scene_length, scene_across)
                    s = None if s is None else _clip_shift(_scale_box(s, k), 0, 0, length, across)
                    if s is not None:
                        spider_track.append([f, *to_frame_box(s, length, direction)])
            if not track:
                continue
            lines.append(
                {
                    "bunch_id": p.bunch_id,
                    "spider": p.spider_box is not None,
                    "spider_span_mm": None if p.spider_span_mm is None else round(p.spider_span_mm, 2),
                    "track": track,
                    "spider_track": spider_track,
                }
            )
        return lines


def plan_footage(
    *,
    width: int,
    height: int,
    fps: float,
    seconds: float,
    calibration: Calibration,
    n_bunches: int | None,
    spider_fraction: float,
    seed: int,
    source: AssetSource,
) -> Footage:
    """Everything but the per-frame work: bunch sprites, belt, camera."""
    if width < 32 or height < 32:
        raise SynthError(f"frame {width}x{height} is too small; give --width/--height of at least 32 px")
    if not 0.0 <= spider_fraction <= 1.0:
        raise SynthError(f"spider fraction {spider_fraction} is outside [0, 1]; give a value like 0.5")
    if fps <= 0 or seconds <= 0:
        raise SynthError(f"fps {fps} and seconds {seconds} must be positive")
    n_frames = max(1, round(seconds * fps))
    scene_mm = scene_scale(calibration.mm_per_px, source.native_mm_per_px)
    f = calibration.mm_per_px / scene_mm
    length, across = canonical_wh(width, height, calibration)
    canon = (round(length * f), round(across * f))
    rng = np.random.default_rng([seed, 0])
    placements = plan_bunches(
        rng, source, calibration, canon, n_frames, fps, n_bunches, spider_fraction, seed, scene_mm
    )
    belt_rng = np.random.default_rng([seed, 2])
    colour = BELT_COLOURS_BGR[int(belt_rng.integers(len(BELT_COLOURS_BGR)))]
    belt = make_belt(belt_rng, canon, colour)
    camera = make_camera(np.random.default_rng([seed, 3]), calibration, scene_mm, seed)
    return Footage(width, height, fps, n_frames, calibration, placements, belt, camera)


class VideoOut:
    """cv2.VideoWriter as a context manager (MJPG in .avi: written and read back by every OpenCV build)."""

    def __init__(self, path: Path, fps: float, wh: tuple[int, int]) -> None:
        self.path = path
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, wh)
        if not self._writer.isOpened():
            raise SynthError(f"{path}: OpenCV cannot write MJPG video here; check the folder is writable")

    def write(self, frame: U8Array) -> None:
        self._writer.write(frame)

    def __enter__(self) -> VideoOut:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._writer.release()


def generate_footage(
    out_dir: Path | str,
    *,
    width: int = 1280,
    height: int = 720,
    fps: float = 15.0,
    seconds: float = 60.0,
    calibration: Calibration = DEFAULT_CALIBRATION,
    n_bunches: int | None = None,
    spider_fraction: float = 0.5,
    seed: int = 0,
    real_dir: Path | str | None = None,
    split: str = "train",
) -> Path:
    """Write ``footage.avi``, ``calibration.yaml`` and ``labels.jsonl`` into `out_dir`; return the video's path.

    Same arguments → identical frames and byte-identical labels. `real_dir` switches to real cut-outs
    (``../shared/realdata`` layout, `split` one of `inspector.synth.real.SPLITS`). A calibration finer than the
    photos allow is rendered at the photos' scale (logged in one line; calibration.yaml says which).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = make_source(Path(real_dir) if real_dir is not None else None, split, seed)
    calibration, note = honest_calibration(calibration, source)
    if note is not None:
        log.warning("%s", note)
    footage = plan_footage(
        width=width,
        height=height,
        fps=fps,
        seconds=seconds,
        calibration=calibration,
        n_bunches=n_bunches,
        spider_fraction=spider_fraction,
        seed=seed,
        source=source,
    )
    video = out / "footage.avi"
    with VideoOut(video, fps, (width, height)) as writer:
        for _, frame in progress(footage.frames(), total=footage.n_frames, desc="footage", unit="frame"):
            writer.write(frame)
    (out / "calibration.yaml").write_text(calibration.to_yaml())
    with (out / "labels.jsonl").open("w") as fh:
        for line in footage.labels():
            fh.write(json.dumps(line) + "\n")
    return video
