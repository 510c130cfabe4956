"""The camera model: one chain over the whole scene, settings over a line camera's range, honest scales, and a
spider exactly as sharp as the grapes it sits on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.config import DEFAULT_CALIBRATION
from inspector.synth import camera as cam
from inspector.synth.camera import (
    CameraSettings,
    ScaleError,
    apply_camera,
    depth_of_field,
    edge_width_px,
    honest_mm_per_px,
    random_settings,
    resample,
    scene_scale,
)
from inspector.synth.scene import AssetSource, ProceduralSource, decorate_bunch
from inspector.synth.tiles import make_tile_set

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"

CLEAN = CameraSettings(
    mm_per_px=0.5,
    defocus_sigma_px=0.0,
    motion_px=0.0,
    travel_axis=0,
    shot_noise=0.0,
    read_noise_dn=0.0,
    gain_bgr=(1.0, 1.0, 1.0),
    jpeg_quality=0,
)


def step_scene(size: int = 128) -> np.ndarray:
    img = np.full((size, size, 3), 40, np.uint8)
    img[:, size // 2 :] = 200
    return img


def test_same_seed_same_image_and_settings() -> None:
    scene = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    s1 = random_settings(np.random.default_rng(5), 0.5, 150.0)
    s2 = random_settings(np.random.default_rng(5), 0.5, 150.0)
    assert s1 == s2
    a = apply_camera(scene, 0.25, s1, np.random.default_rng(9))
    b = apply_camera(scene, 0.25, s2, np.random.default_rng(9))
    c = apply_camera(scene, 0.25, s1, np.random.default_rng(10))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)  # fresh noise


def test_settings_cover_a_line_cameras_range() -> None:
    rng = np.random.default_rng(1)
    draws = [random_settings(rng, 0.5, 150.0) for _ in range(2000)]
    defocus = np.array([d.defocus_sigma_px for d in draws])
    shot = np.array([d.shot_noise for d in draws])
    read = np.array([d.read_noise_dn for d in draws])
    motion = np.array([d.motion_px for d in draws])
    jpeg = np.array([d.jpeg_quality for d in draws])
    gain = np.array([d.gain_bgr for d in draws])
    lo, hi = cam.DEFOCUS_SIGMA_PX
    assert defocus.min() < lo + 0.05 * (hi - lo) and defocus.max() > hi - 0.05 * (hi - lo)  # sharp .. soft
    assert shot.min() < 0.02 and shot.max() > cam.SHOT_NOISE_DN[1] * 0.95  # clean .. noisy
    assert read.min() < cam.READ_NOISE_DN[0] + 0.2 and read.max() > cam.READ_NOISE_DN[1] - 0.2
    px_per_s = 150.0 / 0.5
    assert motion.min() < px_per_s * cam.EXPOSURE_S[0] * 1.2 and motion.max() > px_per_s * cam.EXPOSURE_S[1] * 0.8
    assert jpeg.min() == cam.JPEG_QUALITY[0] and jpeg.max() == cam.JPEG_QUALITY[1]
    assert gain.min() < 0.85 and gain.max() > 1.15
    # footage leaves JPEG to its video writer
    assert random_settings(rng, 0.5, 150.0, jpeg=False).jpeg_quality == 0


def test_chain_steps_do_what_they_say() -> None:
    scene = step_scene()
    clean = apply_camera(scene, 0.25, CLEAN, np.random.default_rng(0))
    assert clean.shape == (64, 64, 3)  # resampled 0.25 -> 0.5 mm/px
    soft = apply_camera(scene, 0.25, replace(CLEAN, defocus_sigma_px=1.5), np.random.default_rng(0))
    assert edge_width_px(soft) > edge_width_px(clean) + 0.8
    # motion blur runs along travel only: a vertical edge (travel along x) softens, a horizontal one does not
    moving = apply_camera(scene, 0.25, replace(CLEAN, motion_px=4.0), np.random.default_rng(0))
    assert edge_width_px(moving) > edge_width_px(clean) + 0.8
    across = apply_camera(scene, 0.25, replace(CLEAN, motion_px=4.0, travel_axis=1), np.random.default_rng(0))
    assert edge_width_px(across) == pytest.approx(edge_width_px(clean), abs=0.05)
    flat = np.full((64, 64, 3), 128, np.uint8)
    quiet = apply_camera(flat, 0.5, replace(CLEAN, read_noise_dn=1.0), np.random.default_rng(0))
    noisy = apply_camera(flat, 0.5, replace(CLEAN, read_noise_dn=1.0, shot_noise=0.3), np.random.default_rng(0))
    assert quiet.std() == pytest.approx(1.0, abs=0.2)
    assert noisy.std() == pytest.approx(np.sqrt(0.3 * 128 + 1.0), rel=0.15)  # shot noise grows with the signal
    bright = apply_camera(flat, 0.5, replace(CLEAN, gain_bgr=(1.1, 1.0, 0.9)), np.random.default_rng(0))
    assert bright[..., 0].mean() == pytest.approx(141, abs=1) and bright[..., 2].mean() == pytest.approx(115, abs=1)
    jpeg = apply_camera(
        np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8),
        0.5,
        replace(CLEAN, jpeg_quality=70),
        np.random.default_rng(0),
    )
    assert jpeg.shape == (64, 64, 3)


def test_resample_is_area_and_never_enlarges() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    img[::2, ::2] = 200  # one lit pixel in every 2x2 block
    assert np.all(resample(img, 0.25, 0.5) == 50)
    with pytest.raises(ScaleError) as err:
        resample(img, 0.5, 0.25)
    assert "\n" not in str(err.value)


def test_scene_scale_is_never_finer_than_the_photos() -> None:
    assert scene_scale(0.5, 0.25) == 0.25  # composed at the photos' scale, resampled by the camera
    assert scene_scale(1.0, 0.25) == 0.5  # at most 2x finer than the camera
    assert scene_scale(0.25, 0.25) == 0.25
    assert scene_scale(0.3, 0.0) == 0.3  # drawn scenes: the camera's own scale
    with pytest.raises(ScaleError) as err:
        scene_scale(0.2, 0.25)
    msg = str(err.value)
    assert "\n" not in msg and "0.2 mm/px" in msg and "0.25" in msg
    mm, note = honest_mm_per_px(0.2, 0.25)
    assert mm == 0.25 and note is not None and "\n" not in note and "rendering at 0.25 mm/px" in note
    assert honest_mm_per_px(0.5, 0.25) == (0.5, None)


def _spider_and_grapes_width(source: AssetSource, mm_per_px: float, n: int) -> float:
    """Median over `n` decorated bunches of (spider edge width / edge width of the grapes around it)."""
    ratios = []
    for i in range(n):
        rng = np.random.default_rng([5, i])
        cut = source.bunch(rng, 180 / mm_per_px, 9 / mm_per_px, mm_per_px)
        dec = decorate_bunch(rng, source, cut, 10 / mm_per_px, mm_per_px, 0, (10, 20))
        if dec.spider_box is None:
            continue
        x1, y1, x2, y2 = dec.spider_box
        opaque = dec.sprite.alpha > 0.9
        spider = np.zeros(opaque.shape, bool)
        spider[y1:y2, x1:x2] = True
        spider &= opaque
        near = np.zeros(opaque.shape, bool)
        m = int(10 / mm_per_px)
        near[max(0, y1 - m) : y2 + m, max(0, x1 - m) : x2 + m] = True
        grapes = near & ~cv2.dilate(spider.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        grapes &= cv2.erode(opaque.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        w_spider, w_grapes = edge_width_px(dec.sprite.bgr, spider), edge_width_px(dec.sprite.bgr, grapes)
        if np.isfinite(w_spider) and np.isfinite(w_grapes):
            ratios.append(w_spider / w_grapes)
    assert len(ratios) >= n // 2
    return float(np.median(ratios))


def _sources() -> list[tuple[str, AssetSource, float]]:
    out: list[tuple[str, AssetSource, float]] = [("procedural", ProceduralSource(), 0.25)]
    if (REALDATA / "spiders" / "photos" / "index.json").is_file():
        from inspector.synth.real import RealSource

        real = RealSource(REALDATA, "val")
        out += [("real", real, real.native_mm_per_px), ("real", real, 2 * real.native_mm_per_px)]
    return out


@pytest.mark.parametrize(
    "name,source,mm_per_px", _sources(), ids=lambda v: str(v) if isinstance(v, (str, float)) else ""
)
def test_a_spider_is_as_sharp_as_the_grapes_under_it(name: str, source: AssetSource, mm_per_px: float) -> None:
    # a spider shrunk from its photo is sharp, a bunch carries its photo's blur: without matching them, real spiders
    # read 0.75 of the grapes' edge width (sharper: the shortcut the old generator taught)
    ratio = _spider_and_grapes_width(source, mm_per_px, 30)
    assert 0.85 <= ratio <= 1.2, f"{name} at {mm_per_px} mm/px: spider/grapes edge width {ratio:.2f}"


def test_tiles_at_a_scale_finer_than_the_photos_are_refused() -> None:
    if not (REALDATA / "spiders" / "photos" / "index.json").is_file():
        pytest.skip("no realdata folder")
    from inspector.synth.real import RealSource

    source = RealSource(REALDATA, "val")
    fine = DEFAULT_CALIBRATION.model_copy(update={"mm_per_px": source.native_mm_per_px * 0.8})
    with pytest.raises(ScaleError):
        make_tile_set(2, source, fine, seed=0, bunch_pool=1)


def _edges(size: int = 224, step_px: int = 16) -> np.ndarray:
    """A checkerboard: strong edges everywhere, so local sharpness can be read anywhere."""
    yy, xx = np.mgrid[:size, :size]
    board = ((yy // step_px + xx // step_px) % 2 * 160 + 40).astype(np.uint8)
    return np.repeat(board[..., None], 3, axis=2)


@pytest.mark.parametrize("max_sigma_px", [0.0, -1.0])
def test_depth_of_field_without_blur_is_the_image(max_sigma_px: float) -> None:
    img = _edges()
    assert depth_of_field(img, max_sigma_px, np.random.default_rng(0)) is img
    empty = np.zeros((0, 0, 3), np.uint8)
    assert depth_of_field(empty, 2.0, np.random.default_rng(0)).size == 0


def test_depth_of_field_varies_sharpness_over_the_tile_and_repeats_by_seed() -> None:
    img = _edges()
    out = depth_of_field(img, 3.0, np.random.default_rng(5))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out, depth_of_field(img, 3.0, np.random.default_rng(5)))
    assert not np.array_equal(out, depth_of_field(img, 3.0, np.random.default_rng(6)))
    widths = []
    for y in range(0, 224, 56):
        for x in range(0, 224, 56):
            mask = np.zeros(img.shape[:2], bool)
            mask[y : y + 56, x : x + 56] = True
            widths.append(edge_width_px(out, mask))
    w = np.array(widths)
    assert np.all(np.isfinite(w))
    assert w.max() > 1.4 * w.min(), f"edge widths {np.round(w, 2)}: sharpness does not vary over the tile"
    assert w.min() >= edge_width_px(img) - 0.05  # nothing comes out sharper than it went in
