"""The camera model every generated image goes through: one optical chain applied to the whole composed scene.

Scenes are composed in millimetres at a *scene* scale (mm/px) no finer than the coarsest photo in them (no element
is enlarged while another is shrunk), then `apply_camera` runs, in this order:

1. resample to the camera's mm/px (area interpolation: the sensor integrates over its pixels),
2. defocus (Gaussian point-spread function, sigma in camera pixels),
3. motion blur along the belt's travel (belt speed x exposure),
4. sensor noise: shot noise (variance proportional to the signal) plus read noise,
5. gain (exposure level and white balance, per channel),
6. JPEG (the compression a MJPG camera applies; footage leaves this to the video writer).

Spider, bunch, belt and non-spider patches pass through it together, so no step can tell them apart.
`CameraSettings` is drawn per tile (and per clip for footage) over the range a line camera shows, from sharp and
clean to soft and noisy (`random_settings`). Pure numpy/OpenCV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from inspector.errors import InspectorError
from inspector.types import U8Array

DEFOCUS_SIGMA_PX = (0.0, 1.2)  # Gaussian PSF sigma, camera pixels: in focus .. a few mm out of the focal plane
EXPOSURE_S = (1 / 4000, 1 / 400)  # line cameras expose short (or strobe)
SHOT_NOISE_DN = (0.0, 0.35)  # shot-noise variance per grey level (sigma^2 = k * signal): 0 .. ~7 DN at mid-grey
READ_NOISE_DN = (0.5, 3.5)  # read-noise sigma, grey levels
GAIN = (0.85, 1.15)  # exposure level
WHITE_BALANCE = 0.03  # per-channel gain spread (sigma)
JPEG_QUALITY = (70, 96)
SUPERSAMPLE = 2.0  # compose at up to this many scene pixels per camera pixel (never finer than the photos allow)


class ScaleError(InspectorError):
    """The requested camera scale is finer than the photos in the scene can honestly give."""


@dataclass(frozen=True)
class CameraSettings:
    """One camera state; `apply_camera` turns a scene into what this camera would record."""

    mm_per_px: float  # camera scale at the belt plane
    defocus_sigma_px: float  # Gaussian PSF sigma, camera pixels (0: in focus)
    motion_px: float  # blur length along travel, camera pixels (belt speed x exposure)
    travel_axis: int  # 0: travel along image x, 1: along y
    shot_noise: float  # shot-noise variance per grey level
    read_noise_dn: float  # read-noise sigma, grey levels
    gain_bgr: tuple[float, float, float]
    jpeg_quality: int  # 0: no JPEG step

    def __post_init__(self) -> None:
        if self.mm_per_px <= 0 or self.defocus_sigma_px < 0 or self.motion_px < 0:
            raise ValueError(f"camera settings out of range: {self}")
        if self.shot_noise < 0 or self.read_noise_dn < 0 or not 0 <= self.jpeg_quality <= 100:
            raise ValueError(f"camera settings out of range: {self}")


def random_settings(
    rng: np.random.Generator,
    mm_per_px: float,
    belt_speed_mm_s: float,
    travel_axis: int = 0,
    jpeg: bool = True,
) -> CameraSettings:
    """Camera settings drawn uniformly over the line-camera ranges above (sharp..soft, clean..noisy)."""
    exposure_s = math.exp(rng.uniform(math.log(EXPOSURE_S[0]), math.log(EXPOSURE_S[1])))
    wb = 1.0 + rng.normal(0.0, WHITE_BALANCE, 3)
    level = rng.uniform(*GAIN)
    return CameraSettings(
        mm_per_px=mm_per_px,
        defocus_sigma_px=float(rng.uniform(*DEFOCUS_SIGMA_PX)),
        motion_px=float(belt_speed_mm_s / mm_per_px * exposure_s),
        travel_axis=travel_axis,
        shot_noise=float(rng.uniform(*SHOT_NOISE_DN)),
        read_noise_dn=float(rng.uniform(*READ_NOISE_DN)),
        gain_bgr=(float(level * wb[0]), float(level * wb[1]), float(level * wb[2])),
        jpeg_quality=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)) if jpeg else 0,
    )


def scene_scale(camera_mm_per_px: float, native_mm_per_px: float) -> float:
    """The mm/px to compose a scene at: up to `SUPERSAMPLE` times finer than the camera, never finer than the
    coarsest photo in it (`native_mm_per_px`; 0 for drawn scenes, which any scale can render: the camera's own).
    A camera finer than the photos is a `ScaleError` (see `honest_mm_per_px`)."""
    check_scale(camera_mm_per_px, native_mm_per_px)
    if native_mm_per_px <= 0:
        return camera_mm_per_px
    return max(native_mm_per_px, camera_mm_per_px / SUPERSAMPLE)


def check_scale(camera_mm_per_px: float, native_mm_per_px: float) -> None:
    """One-line `ScaleError` when the camera asks for finer pixels than the photos have."""
    if native_mm_per_px > 0 and camera_mm_per_px < native_mm_per_px * (1 - 1e-6):
        raise ScaleError(
            f"{camera_mm_per_px:g} mm/px is finer than the photos allow ({native_mm_per_px:g} mm/px): "
            f"their grapes would be enlarged and come out softer than everything else; use {native_mm_per_px:g} "
            "mm/px or coarser"
        )


def honest_mm_per_px(camera_mm_per_px: float, native_mm_per_px: float) -> tuple[float, str | None]:
    """The camera scale to render at and, when it differs from the one asked for, the one line that says so."""
    try:
        check_scale(camera_mm_per_px, native_mm_per_px)
    except ScaleError as exc:
        return native_mm_per_px, f"rendering at {native_mm_per_px:g} mm/px instead: {exc}"
    return camera_mm_per_px, None


def resample(img: U8Array, scene_mm_per_px: float, camera_mm_per_px: float) -> U8Array:
    """The scene at the camera's scale (area interpolation). The camera may not be finer than the scene."""
    if camera_mm_per_px < scene_mm_per_px * (1 - 1e-6):
        raise ScaleError(
            f"camera {camera_mm_per_px:g} mm/px is finer than the scene ({scene_mm_per_px:g} mm/px): "
            "compose the scene at the camera's scale or finer"
        )
    f = scene_mm_per_px / camera_mm_per_px
    if abs(f - 1.0) < 1e-6:
        return img
    h, w = img.shape[:2]
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA), np.uint8)


def motion_kernel(length_px: float) -> np.ndarray:
    """A 1-D box kernel of fractional length (its end taps weighted by the part they cover), summing to 1."""
    if length_px <= 1.0:
        return np.ones(1, np.float32)
    n_full = math.floor(length_px)
    frac = length_px - n_full
    taps = np.ones(n_full + (2 if frac > 1e-6 else 0), np.float32)
    if frac > 1e-6:
        taps[0] = taps[-1] = frac / 2
    return taps / taps.sum()


def apply_camera(
    scene: U8Array,
    scene_mm_per_px: float,
    settings: CameraSettings,
    rng: np.random.Generator,
) -> U8Array:
    """The chain of this module's docstring, in its order, over the whole scene (BGR uint8)."""
    img = resample(scene, scene_mm_per_px, settings.mm_per_px).astype(np.float32)
    if settings.defocus_sigma_px > 0.05:
        img = np.asarray(
            cv2.GaussianBlur(img, (0, 0), settings.defocus_sigma_px, borderType=cv2.BORDER_REFLECT), np.float32
        )
    kernel = motion_kernel(settings.motion_px)
    if len(kernel) > 1:
        k2 = kernel[None, :] if settings.travel_axis == 0 else kernel[:, None]
        img = np.asarray(cv2.filter2D(img, -1, k2, borderType=cv2.BORDER_REFLECT), np.float32)
    sigma = np.sqrt(settings.shot_noise * np.clip(img, 0, 255) + settings.read_noise_dn**2)
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * sigma
    img = img * np.asarray(settings.gain_bgr, np.float32)[None, None, :]
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if settings.jpeg_quality > 0:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality])
        if ok:
            out = np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), np.uint8)
    return out


def depth_of_field(
    img: U8Array, max_sigma_px: float, rng: np.random.Generator, cells: int = 4, levels: int = 4
) -> U8Array:
    """The image seen with a depth of field shallower than the subject: a Gaussian defocus whose sigma varies
    smoothly over the frame (0 .. `max_sigma_px`, drawn on a `cells` x `cells` grid and interpolated bicubically),
    as when some berries of a bunch lie in the focal plane and others in front of or behind it.

    Sharpness then changes from place to place independently of what is there, so a model trained on it cannot
    take a sharp spot for a spider. Blends `levels` evenly spaced blur levels; pure OpenCV on BGR uint8.
    """
    if max_sigma_px <= 0 or img.size == 0:
        return img
    h, w = img.shape[:2]
    f = img.astype(np.float32)
    sigmas = np.linspace(0.0, max_sigma_px, levels)
    stack = np.stack([f] + [cv2.GaussianBlur(f, (0, 0), float(s), borderType=cv2.BORDER_REFLECT) for s in sigmas[1:]])
    grid = rng.uniform(0.0, 1.0, (cells, cells)).astype(np.float32)
    field = np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0) * (levels - 1)
    lo = np.minimum(field.astype(np.int32), levels - 2)
    frac = (field - lo)[..., None] if img.ndim == 3 else field - lo
    yy, xx = np.mgrid[:h, :w]
    out = stack[lo, yy, xx] * (1.0 - frac) + stack[lo + 1, yy, xx] * frac
    return np.asarray(np.clip(out + 0.5, 0, 255), np.uint8)


def edge_width_px(
    img: U8Array, mask: np.ndarray | None = None, top_share: float = 0.1, min_contrast: float = 20.0
) -> float:
    """How soft an image region is: median over its strongest edges of local contrast / gradient (pixels).

    For a step edge blurred by a Gaussian of sigma s this grows with s (about 2.0 px at 0.3, 3.1 at 1.0, 4.6 at 2.0)
    and does not depend on the edge's contrast, so it compares the sharpness of different objects. `mask` (bool,
    same size) restricts it to a region; NaN when the region has fewer than 10 strong edge pixels.
    """
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32) if img.ndim == 3 else img.astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8
    mag = np.hypot(gx, gy)
    square = np.ones((7, 7), np.uint8)
    contrast = cv2.dilate(g, square) - cv2.erode(g, square)
    region = mag > 0 if mask is None else mask & (mag > 0)
    if region.sum() < 10:
        return float("nan")
    threshold = np.quantile(mag[region], 1 - top_share)
    sel = region & (mag >= threshold) & (contrast > min_contrast)
    if sel.sum() < 10:
        return float("nan")
    return float(np.median(contrast[sel] / mag[sel]))


__all__ = [
    "CameraSettings",
    "ScaleError",
    "apply_camera",
    "check_scale",
    "depth_of_field",
    "edge_width_px",
    "honest_mm_per_px",
    "random_settings",
    "resample",
    "scene_scale",
]
