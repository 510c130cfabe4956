"""The cross-style compositor: measured scale and sharpness, a pasted spider as sharp as its grapes, whole sets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.errors import InspectorError
from inspector.training import crossstyle as cs


def _berries(rng: np.random.Generator, wh: tuple[int, int], radius_px: int, sigma_px: float) -> np.ndarray:
    """A vineyard-like picture: shaded green discs of `radius_px` packed on a brown ground, blurred by `sigma_px`."""
    w, h = wh
    img = np.full((h, w, 3), (40, 70, 110), np.uint8)
    for y in range(radius_px, h, 2 * radius_px - 2):
        for x in range(radius_px, w, 2 * radius_px - 2):
            g = int(rng.integers(120, 200))
            cx, cy = x + int(rng.integers(-2, 3)), y + int(rng.integers(-2, 3))
            cv2.circle(img, (cx, cy), radius_px - 2, (40, g, 60), -1, cv2.LINE_AA)
            cv2.circle(img, (cx - radius_px // 3, cy - radius_px // 3), radius_px // 4, (150, 230, 170), -1)
    return np.asarray(cv2.GaussianBlur(img, (0, 0), sigma_px), np.uint8) if sigma_px > 0 else img


def _spider(size: int = 120) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A sharp dark body with eight legs on a pale ground, and its box."""
    img = np.full((size, size, 3), 225, np.uint8)
    c = size // 2
    for k in range(8):
        a = np.pi * (k + 0.5) / 4
        cv2.line(img, (c, c), (int(c + 0.4 * size * np.cos(a)), int(c + 0.4 * size * np.sin(a))), (20, 20, 30), 3)
    cv2.ellipse(img, (c, c), (size // 8, size // 6), 0, 0, 360, (10, 10, 20), -1)
    return img, (int(0.08 * size), int(0.08 * size), int(0.92 * size), int(0.92 * size))


def test_blur_sigma_recovers_a_known_blur() -> None:
    img = np.zeros((200, 200, 3), np.uint8)
    cv2.circle(img, (100, 100), 60, (200, 200, 200), -1)
    for sigma in (1.0, 2.0):
        assert cs.blur_sigma_px(np.asarray(cv2.GaussianBlur(img, (0, 0), sigma))) == pytest.approx(sigma, rel=0.15)
    assert np.isnan(cs.blur_sigma_px(np.full((50, 50, 3), 90, np.uint8)))


def test_berry_size_gives_the_scale() -> None:
    img = _berries(np.random.default_rng(0), (400, 300), 20, 0.8)
    boxes = [(x, y, 200.0, 150.0) for x in (0.0, 200.0) for y in (0.0, 150.0)]
    d = cs.berry_diameter_px(img, boxes)
    assert d is not None and d == pytest.approx(2 * 20, rel=0.2)
    assert cs.berry_diameter_px(np.full((300, 400, 3), 90, np.uint8), boxes) is None


def test_a_pasted_spider_is_as_sharp_as_the_grapes_under_it() -> None:
    rng = np.random.default_rng(1)
    for grapes_sigma in (0.8, 1.5):
        ground = _berries(rng, (240, 240), 18, grapes_sigma)
        photo, box = _spider()
        cut = cs.cut_spider(photo, box, "s.jpg")
        assert cut is not None
        small = cs.shrink(cut, 40)
        target = cs.blur_sigma_px(ground)
        add = cs.added_blur_px(ground, small, (100, 100), target)
        pasted = ground.copy()
        x1, y1, x2, y2 = cs.paste(pasted, small, 100, 100, add)
        spider_sigma = cs.blur_sigma_px(pasted[y1 - 4 : y2 + 4, x1 - 4 : x2 + 4])
        assert spider_sigma == pytest.approx(target, abs=0.25), (grapes_sigma, add)
        sharp = ground.copy()
        x1, y1, x2, y2 = cs.paste(sharp, small, 100, 100, 0.0)
        assert cs.blur_sigma_px(sharp[y1 - 4 : y2 + 4, x1 - 4 : x2 + 4]) < target - 0.3  # without it: sharper


def test_paste_blends_and_refuses_the_outside() -> None:
    ground = np.full((60, 60, 3), 200, np.uint8)
    cut = cs.Cutout(np.zeros((10, 10, 3), np.uint8), np.ones((10, 10), np.float32), "x")
    box = cs.paste(ground, cut, 20, 20, 0.0)
    assert box == (20, 20, 30, 30) and ground[25, 25].tolist() == [0, 0, 0] and ground[5, 5].tolist() == [200] * 3
    with pytest.raises(ValueError, match="outside"):
        cs.paste(ground, cut, 55, 20, 0.0)


def test_camera_is_one_chain_and_repeatable() -> None:
    img = _berries(np.random.default_rng(0), (200, 100), 12, 0.0)
    a = cs.camera(img, 0.5, 1.0, 3.0, 85, np.random.default_rng(5))
    b = cs.camera(img, 0.5, 1.0, 3.0, 85, np.random.default_rng(5))
    assert a.shape == (50, 100, 3) and np.array_equal(a, b)


def _fake_realdata(root: Path) -> None:
    """Two vineyard photos (berries 40 px across: 0.3 mm/px) and four spider photos, split as holdout."""
    rng = np.random.default_rng(3)
    (root / "grapes" / "wgisd_full" / "holdout").mkdir(parents=True)
    (root / "spiders" / "photos" / "holdout").mkdir(parents=True)
    grapes = []
    for i in range(2):
        cv2.imwrite(str(root / "grapes" / "wgisd_full" / f"holdout/v{i}.png"), _berries(rng, (640, 480), 20, 0.7))
        grapes.append({"file": f"holdout/v{i}.png", "bunches_xywh": [[40, 40, 260, 380], [340, 40, 260, 380]]})
    spiders = []
    for i in range(4):
        img, box = _spider(100 + 10 * i)
        cv2.imwrite(str(root / "spiders" / "photos" / f"holdout/s{i}.png"), img)
        spiders.append({"file": f"holdout/s{i}.png", "species": "Black_Widow" if i % 2 else "Wolf_Spider",
                        "box_xyxy": list(box)})  # fmt: skip
    (root / "grapes" / "wgisd_full" / "index.json").write_text(json.dumps({"train": [], "holdout": grapes}))
    (root / "spiders" / "photos" / "index.json").write_text(json.dumps({"train": [], "holdout": spiders}))


def test_a_whole_set_from_photos(tmp_path: Path) -> None:
    _fake_realdata(tmp_path / "real")
    sets = cs.make_cross_style(tmp_path / "real", 0.5, 12, seed=4)
    t = sets.tiles
    assert t.images.shape[1:] == (224, 224, 3) and int(t.labels.sum()) >= 12
    assert int((t.labels == 0).sum()) == pytest.approx(int(t.labels.sum()), abs=3)  # about half spider
    pos = t.labels == 1
    assert (t.boxes_xyxy[pos] >= 0).all() and (t.boxes_xyxy[pos] <= 224).all()
    area = (t.boxes_xyxy[pos, 2] - t.boxes_xyxy[pos, 0]) * (t.boxes_xyxy[pos, 3] - t.boxes_xyxy[pos, 1])
    assert (area / 224**2 < 0.2).all()  # a small thing in its tile
    assert set(t.spider_origin[pos].tolist()) <= {f"holdout/s{i}.png" for i in range(4)}
    assert t.meta["split"] == "holdout" and t.meta["calibration"] == {"mm_per_px": 0.5, "spider_span_mm": [4.0, 12.0]}
    species = t.meta["spider_species"]
    assert isinstance(species, dict) and set(species.values()) <= {"Black_Widow", "Wolf_Spider"}
    assert len(sets.seam) >= 1 and (sets.seam.labels == 0).all() and set(sets.seam.kinds.tolist()) == {"seam"}
    again = cs.make_cross_style(tmp_path / "real", 0.5, 12, seed=4)
    assert np.array_equal(again.tiles.images, t.images) and np.array_equal(again.seam.images, sets.seam.images)
    # 0.3 mm/px photos cannot honestly reach 0.1 mm/px: said in one line
    with pytest.raises(InspectorError, match=r"coarsest honest scale here is 0\.3"):
        cs.make_cross_style(tmp_path / "real", 0.1, 4, seed=0)


def test_cross_style_cli_missing_photos_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "inspector", "tiles", "cross-style", "--out", str(tmp_path / "o"), "--mm-per-px",
         "0.5", "--real", str(tmp_path / "none")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "index.json" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
