"""Raster primitives shared by footage and tile synthesis: sprites, alpha pasting, belt texture, camera effects.

Pure functions over numpy arrays. Images are uint8 BGR (H, W, 3); alpha is float32 (H, W) in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from inspector.types import FloatArray, U8Array

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Sprite:
    """A cut-out: colour and coverage of the same size."""

    bgr: U8Array  # (H, W, 3)
    alpha: FloatArray  # (H, W) float32 in [0, 1]

    def __post_init__(self) -> None:
        if self.bgr.ndim != 3 or self.bgr.shape[2] != 3 or self.alpha.shape != self.bgr.shape[:2]:
            raise ValueError(f"sprite needs bgr (H, W, 3) and alpha (H, W), got {self.bgr.shape}, {self.alpha.shape}")

    @property
    def wh(self) -> tuple[int, int]:
        return (self.bgr.shape[1], self.bgr.shape[0])


def alpha_bbox_xyxy(alpha: FloatArray, threshold: float = 0.25) -> tuple[int, int, int, int] | None:
    """Tight box (x2/y2 exclusive) around the pixels whose alpha exceeds `threshold`; None when there are none."""
    ys, xs = np.nonzero(alpha > threshold)
    if len(xs) == 0:
        return None
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def crop_sprite(sprite: Sprite, threshold: float = 0.02) -> Sprite:
    """The sprite trimmed to where it has any coverage."""
    box = alpha_bbox_xyxy(sprite.alpha, threshold)
    if box is None:
        return sprite
    x1, y1, x2, y2 = box
    return Sprite(sprite.bgr[y1:y2, x1:x2].copy(), sprite.alpha[y1:y2, x1:x2].copy())


def pad_sprite(sprite: Sprite, pad_px: int) -> Sprite:
    """The sprite with a transparent margin of `pad_px` on every side."""
    bgr = cv2.copyMakeBorder(sprite.bgr, pad_px, pad_px, pad_px, pad_px, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    alpha = cv2.copyMakeBorder(sprite.alpha, pad_px, pad_px, pad_px, pad_px, cv2.BORDER_CONSTANT, value=0.0)
    return Sprite(np.asarray(bgr, np.uint8), np.asarray(alpha, np.float32))


def resize_sprite(sprite: Sprite, scale: float) -> Sprite:
    """Scaled sprite (area interpolation when shrinking, cubic when enlarging)."""
    w, h = sprite.wh
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    bgr = cv2.resize(sprite.bgr, (new_w, new_h), interpolation=interp)
    alpha = np.clip(cv2.resize(sprite.alpha, (new_w, new_h), interpolation=interp), 0.0, 1.0)
    return Sprite(np.asarray(bgr, np.uint8), alpha.astype(np.float32))


def rotate_sprite(sprite: Sprite, angle_deg: float) -> Sprite:
    """Sprite rotated about its centre onto a canvas large enough to hold it."""
    w, h = sprite.wh
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle_deg, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    new_w, new_h = int(np.ceil(h * sin + w * cos)), int(np.ceil(h * cos + w * sin))
    m[0, 2] += new_w / 2.0 - w / 2.0
    m[1, 2] += new_h / 2.0 - h / 2.0
    bgr = cv2.warpAffine(sprite.bgr, m, (new_w, new_h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    alpha = cv2.warpAffine(sprite.alpha, m, (new_w, new_h), flags=cv2.INTER_LINEAR, borderValue=0.0)
    return crop_sprite(Sprite(np.asarray(bgr, np.uint8), np.clip(alpha, 0.0, 1.0).astype(np.float32)))


def paste(dst: U8Array, sprite: Sprite, x: int, y: int, opacity: float = 1.0) -> tuple[int, int, int, int] | None:
    """Alpha-blend `sprite` into `dst` in place with its top-left at (x, y); returns the touched box or None."""
    h, w = dst.shape[:2]
    sw, sh = sprite.wh
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + sw, w), min(y + sh, h)
    if x2 <= x1 or y2 <= y1:
        return None
    a = sprite.alpha[y1 - y : y2 - y, x1 - x : x2 - x]
    if opacity != 1.0:
        a = a * opacity
    a3 = a[:, :, None]
    region = dst[y1:y2, x1:x2].astype(np.float32)
    fg = sprite.bgr[y1 - y : y2 - y, x1 - x : x2 - x].astype(np.float32)
    dst[y1:y2, x1:x2] = np.clip(region + (fg - region) * a3 + 0.5, 0, 255).astype(np.uint8)
    return (x1, y1, x2, y2)


def paste_alpha(dst: FloatArray, alpha: FloatArray, x: int, y: int) -> None:
    """Union (max) a coverage map into `dst` in place, top-left at (x, y)."""
    h, w = dst.shape[:2]
    ah, aw = alpha.shape
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + aw, w), min(y + ah, h)
    if x2 <= x1 or y2 <= y1:
        return
    region = dst[y1:y2, x1:x2]
    np.maximum(region, alpha[y1 - y : y2 - y, x1 - x : x2 - x], out=region)


def feather(alpha: FloatArray, sigma_px: float) -> FloatArray:
    """Soften a coverage map's edge with a Gaussian (no-op for sigma <= 0)."""
    if sigma_px <= 0:
        return alpha
    return np.clip(cv2.GaussianBlur(alpha, (0, 0), sigma_px), 0.0, 1.0).astype(np.float32)


def blur_sprite(sprite: Sprite, sigma_px: float) -> Sprite:
    """Gaussian defocus of colour and coverage (colour blurred premultiplied so edges do not darken)."""
    if sigma_px <= 0.05:
        return sprite
    a = sprite.alpha
    pre = sprite.bgr.astype(np.float32) * a[:, :, None]
    pre_b = cv2.GaussianBlur(pre, (0, 0), sigma_px)
    a_b = cv2.GaussianBlur(a, (0, 0), sigma_px)
    bgr = np.where(a_b[:, :, None] > 1e-3, pre_b / np.maximum(a_b[:, :, None], 1e-3), 0.0)
    return Sprite(np.clip(bgr, 0, 255).astype(np.uint8), np.clip(a_b, 0.0, 1.0).astype(np.float32))


# --------------------------------------------------------------------------------------------- belt
def belt_texture(rng: np.random.Generator, wh: tuple[int, int], base_bgr: tuple[int, int, int]) -> U8Array:
    """Uniform-ish conveyor belt: base colour, low-frequency mottling, fine grain, faint lengthwise weave.

    The texture is periodic along x (its width is the period) so it can scroll with the belt.
    """
    w, h = wh
    base = np.array(base_bgr, np.float32)
    low = _periodic_noise(rng, (h, w), 24.0)
    grain = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
    weave = np.sin(np.arange(h, dtype=np.float32) * (2 * np.pi / rng.uniform(3.0, 6.0)))[:, None]
    lum = 3.0 * low + 2.5 * grain + 1.5 * weave
    img = base[None, None, :] + lum[:, :, None]
    return np.clip(img, 0, 255).astype(np.uint8)


def _periodic_noise(rng: np.random.Generator, hw: tuple[int, int], sigma_px: float) -> FloatArray:
    """Unit-variance smooth noise that wraps around in both axes (low-pass filtered in the Fourier domain)."""
    h, w = hw
    spec = np.fft.rfft2(rng.normal(0.0, 1.0, (h, w)))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    spec *= np.exp(-2 * (np.pi * sigma_px) ** 2 * (fx * fx + fy * fy))
    field = np.fft.irfft2(spec, s=(h, w))
    return (field / (field.std() + 1e-9)).astype(np.float32)


# --------------------------------------------------------------------------------------------- camera
def motion_blur(img: npt.NDArray[Any], length_px: float, axis: int = 0) -> npt.NDArray[Any]:
    """Linear motion blur of `length_px` along image axis 0 (x) or 1 (y); works on colour and coverage."""
    n = round(length_px)
    if n < 2:
        return img
    kernel = np.ones((1, n) if axis == 0 else (n, 1), np.float32) / n
    return np.asarray(cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT), img.dtype)


def lighting(img: U8Array, gain_bgr: tuple[float, float, float]) -> U8Array:
    """Per-channel gain (illumination level and colour temperature)."""
    return np.asarray(cv2.multiply(img, np.array([*gain_bgr, 0.0]), dtype=cv2.CV_8U), np.uint8)


def sensor_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> npt.NDArray[np.int16]:
    """Gaussian read noise plus a touch of per-row banding, as int16."""
    n = rng.normal(0.0, sigma, shape).astype(np.float32)
    n += rng.normal(0.0, sigma * 0.25, (shape[0],) + (1,) * (len(shape) - 1)).astype(np.float32)
    return np.round(n).astype(np.int16)


def jpeg_roundtrip(img: U8Array, quality: int) -> U8Array:
    """Encode and decode as JPEG (the artefacts an MJPG video carries)."""
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        return img
    return np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), np.uint8)


def soft_disc(radius_px: float, edge_px: float = 1.0) -> FloatArray:
    """Anti-aliased disc coverage of the given radius, in a square of side 2·ceil(radius)+1."""
    r = int(np.ceil(radius_px))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    d = np.sqrt(xx * xx + yy * yy)
    return np.clip((radius_px - d) / max(edge_px, 1e-3) + 0.5, 0.0, 1.0).astype(np.float32)
