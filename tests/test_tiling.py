from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.config import Calibration
from inspector.tiling import (
    baseline_scales,
    grid_starts,
    plan_tiles,
    resolution_warnings,
    spider_area_fraction,
    tile_scales,
)
from inspector.types import Box


def cal(mm_per_px: float, span: tuple[float, float]) -> Calibration:
    return Calibration(
        mm_per_px=mm_per_px,
        belt_direction="+x",
        belt_speed_mm_s=300.0,
        camera_to_ejector_mm=800.0,
        spider_span_mm=span,
    )


def test_area_model_is_disc_of_half_span_radius() -> None:
    assert spider_area_fraction(20, 100) == pytest.approx(math.pi * 10**2 / 100**2)


def test_one_scale_when_range_is_narrow_and_two_for_4_to_12_mm() -> None:
    assert len(tile_scales(cal(0.5, (5, 8)))) == 1
    scales = tile_scales(cal(0.5, (4, 12)))
    assert len(scales) == 2
    assert scales[0].tile_px < scales[1].tile_px
    # every scale's overlap holds its largest spider
    for s in scales:
        assert s.overlap_px >= s.span_mm[1] / 0.5


@pytest.mark.parametrize("length, tile, stride", [(100, 30, 20), (30, 30, 10), (20, 30, 10), (101, 10, 10)])
def test_grid_starts_snap_last_tile_to_edge(length: int, tile: int, stride: int) -> None:
    starts = grid_starts(length, tile, stride)
    assert starts[0] == 0
    assert starts[-1] == max(0, length - tile)
    assert all(b - a <= stride for a, b in itertools.pairwise(starts))


def test_empty_mask_gives_no_tiles_and_full_mask_covers_frame() -> None:
    scales = tile_scales(cal(0.5, (4, 12)))
    empty = plan_tiles((320, 240), scales, np.zeros((240, 320), bool))
    assert len(empty) == 0 and empty.boxes_xyxy().shape == (0, 4)
    full = plan_tiles((320, 240), scales, np.ones((240, 320), bool))
    assert len(full) == len(plan_tiles((320, 240), scales))
    boxes = full.boxes_xyxy()
    assert boxes[:, 0].min() == 0 and boxes[:, 2].max() == 320 and boxes[:, 3].max() == 240


def test_roi_restricts_tiles() -> None:
    scales = tile_scales(cal(0.5, (4, 12)))
    plan = plan_tiles((640, 480), scales, roi=Box(100, 50, 500, 400))
    boxes = plan.boxes_xyxy()
    assert boxes[:, 0].min() >= 100 and boxes[:, 2].max() <= 500
    assert boxes[:, 1].min() >= 50 and boxes[:, 3].max() <= 400


def test_low_resolution_warns() -> None:
    assert resolution_warnings(cal(2.0, (4, 12)))
    assert not resolution_warnings(cal(0.25, (4, 12)))


def test_baseline_uses_fixed_overlap() -> None:
    scales = baseline_scales(tile_scales(cal(0.5, (4, 12))), 0.25)
    assert all(s.stride_px == round(0.75 * s.tile_px) for s in scales)


@settings(max_examples=150, deadline=None)
@given(
    mm_per_px=st.floats(0.08, 1.5),
    span_lo=st.floats(2.0, 15.0),
    span_ratio=st.floats(1.0, 6.0),
    t=st.floats(0.0, 1.0),
    cx_frac=st.floats(0.0, 1.0),
    cy_frac=st.floats(0.0, 1.0),
    mask_extra=st.integers(0, 40),
)
def test_every_spider_in_mask_lies_wholly_in_a_tile_at_1_to_5_percent(
    mm_per_px: float,
    span_lo: float,
    span_ratio: float,
    t: float,
    cx_frac: float,
    cy_frac: float,
    mask_extra: int,
) -> None:
    calibration = cal(mm_per_px, (span_lo, span_lo * span_ratio))
    scales = tile_scales(calibration)
    span_mm = span_lo * (span_ratio**t)  # anywhere in the range, ends included
    r_px = span_mm / mm_per_px / 2
    biggest = max(s.tile_px for s in scales)
    w, h = biggest * 2 + 37, biggest + 53  # frame bigger than any tile
    cx = r_px + cx_frac * (w - 2 * r_px)
    cy = r_px + cy_frac * (h - 2 * r_px)
    yy, xx = np.mgrid[0:h, 0:w]
    mask = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= (r_px + mask_extra) ** 2
    plan = plan_tiles((w, h), scales, mask)
    ok = False
    for tile in plan.tiles:
        b = tile.box
        eps = 1e-6  # float rounding of the generated centre, not of the plan
        inside = (
            b.x1 <= cx - r_px + eps and cx + r_px - eps <= b.x2 and b.y1 <= cy - r_px + eps and cy + r_px - eps <= b.y2
        )
        fraction = spider_area_fraction(2 * r_px, b.wh[0])
        if inside and 0.01 <= fraction <= 0.05 and b.wh[0] == b.wh[1]:
            ok = True
            break
    assert ok, f"no tile holds the disc (r={r_px:.1f} px at {cx:.1f},{cy:.1f}); scales {scales}"


def test_plan_command_prints_scales_and_tile_counts(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from inspector.cli import main

    cal = tmp_path / "cal.yaml"
    cal.write_text(
        cal_yaml
        := "mm_per_px: 0.5\nbelt_direction: '+x'\nbelt_speed_mm_s: 300\ncamera_to_ejector_mm: 800\nspider_span_mm: [4, 12]\n"
    )
    assert cal_yaml
    assert main(["plan", "--calibration", str(cal), "--frame", "1280x720", "--mask-fraction", "0.4"]) == 0
    out = capsys.readouterr().out
    assert "scale 0: tile 70 px" in out and "scale 1:" in out
    assert "tiles per frame: 410 without a mask, 205 with a 40 % produce mask" in out
    assert main(["plan", "--frame", "wide"]) == 1
