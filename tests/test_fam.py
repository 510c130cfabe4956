from __future__ import annotations

import numpy as np
import pytest

from inspector.fam import BunchHeat, layer_scales, stitch, tile_fam, upsample_bilinear
from inspector.types import Box, HeatMap


def ref_bilinear(m: np.ndarray, size: int, cell: float | None = None) -> np.ndarray:
    """Direct loop: output pixel centre (i + 0.5) maps to input coordinate (i + 0.5) / cell - 0.5, clamped; the map
    spans the output (cell = size / h) unless `cell` (output pixels per map cell) says otherwise."""
    h, w = m.shape
    out = np.zeros((size, size), np.float64)
    for oy in range(size):
        sy = min(max((oy + 0.5) * (h / size if cell is None else 1 / cell) - 0.5, 0.0), h - 1)
        y0 = int(np.floor(sy))
        y1 = min(y0 + 1, h - 1)
        fy = sy - y0
        for ox in range(size):
            sx = min(max((ox + 0.5) * (w / size if cell is None else 1 / cell) - 0.5, 0.0), w - 1)
            x0 = int(np.floor(sx))
            x1 = min(x0 + 1, w - 1)
            fx = sx - x0
            top = m[y0, x0] * (1 - fx) + m[y0, x1] * fx
            bot = m[y1, x0] * (1 - fx) + m[y1, x1] * fx
            out[oy, ox] = top * (1 - fy) + bot * fy
    return out


def ref_eq1(pools: list[np.ndarray], size: int, scales: list[float] | None = None) -> np.ndarray:
    """Paper Eq. 1 from raw pool activations (N, C, H, W): channel sums, upsampled, summed over layers."""
    n = pools[0].shape[0]
    out = np.zeros((n, size, size))
    for layer, pool in enumerate(pools):
        for i in range(n):
            channel_sum = np.zeros(pool.shape[2:])
            for k in range(pool.shape[1]):
                channel_sum += pool[i, k]
            scale = 1.0 if scales is None else scales[layer]
            out[i] += ref_bilinear(channel_sum, size) / scale
    return out


def random_pools(rng: np.random.Generator, n: int, size: int = 32) -> list[np.ndarray]:
    return [
        np.maximum(rng.normal(size=(n, 3 + layer, size >> (layer + 1), size >> (layer + 1))), 0).astype(np.float32)
        for layer in range(5)
    ]


@pytest.mark.parametrize("n", [0, 1, 3])
def test_paper_mode_matches_loop_reference(n: int) -> None:
    rng = np.random.default_rng(0)
    pools = random_pools(rng, n)
    fams = [p.sum(axis=1) for p in pools]
    got = tile_fam(fams, 32, "paper")
    assert got.shape == (n, 32, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref_eq1(pools, 32), rtol=1e-4, atol=1e-4)


def test_normalized_mode_divides_each_layer_by_its_scale() -> None:
    rng = np.random.default_rng(1)
    pools = random_pools(rng, 2)
    fams = [p.sum(axis=1) for p in pools]
    scales = [1.0, 2.0, 4.0, 8.0, 16.0]
    np.testing.assert_allclose(
        tile_fam(fams, 32, "normalized", scales), ref_eq1(pools, 32, scales), rtol=1e-4, atol=1e-4
    )


def test_normalized_mode_keeps_clean_tiles_cool() -> None:
    """No per-image min-max: a uniformly weak tile stays weaker than a tile with a strong spot."""
    clean = [np.full((1, 32 >> (i + 1), 32 >> (i + 1)), 0.1, np.float32) for i in range(5)]
    hot = [c.copy() for c in clean]
    hot[3][0, 1, 1] = 10.0
    scales = layer_scales(clean)
    assert tile_fam(hot, 32, "normalized", scales).max() > 5 * tile_fam(clean, 32, "normalized", scales).max()


def test_bad_inputs_are_refused() -> None:
    fams = [np.zeros((1, 32 >> layer, 32 >> layer), np.float32) for layer in range(1, 6)]
    with pytest.raises(ValueError, match="5 layer maps"):
        tile_fam(fams[:4], 32)
    with pytest.raises(ValueError, match="positive"):
        tile_fam(fams, 32, "normalized", [1, 1, 0, 1, 1])
    with pytest.raises(ValueError, match="do not come from a 64 px input"):
        tile_fam(fams, 32, input_size=64)
    assert tile_fam(fams, 32).shape == (1, 32, 32)  # the control


@pytest.mark.parametrize(("input_size", "size"), [(224, 56), (240, 240), (240, 56), (250, 250), (250, 56), (33, 33)])
def test_any_input_size_places_each_layer_where_its_cells_lie(input_size: int, size: int) -> None:
    """Floor pooling (240: 120, 60, 30, 15, 7): cell i of layer l covers input pixels [i, i + 1) * 2^l."""
    rng = np.random.default_rng(3)
    fams = []
    for layer in range(1, 6):  # ramps: the value read at a pixel tells which map coordinate it was placed at
        h = input_size >> layer
        yy, xx = np.mgrid[0:h, 0:h]
        slopes = rng.uniform(0.2, 1.0, (2, 2, 1, 1)) / h
        fams.append((1 + slopes[0] * yy + slopes[1] * xx).astype(np.float32))
    got = tile_fam(fams, size, "paper", input_size=input_size)
    want = np.zeros((2, size, size))
    for layer, f in enumerate(fams, start=1):
        for i in range(2):
            want[i] += ref_bilinear(f[i], size, cell=size * 2**layer / input_size)
    np.testing.assert_allclose(got, want, rtol=0, atol=4e-3)  # OpenCV places to 1/32 of a cell
    stretched = sum(upsample_bilinear(f, size) for f in fams)  # every map spread over the whole tile
    if input_size % 32 == 0:  # a multiple of 32: the maps do span the tile, and plain resizing is exact
        np.testing.assert_allclose(got, stretched, rtol=1e-4, atol=1e-4)
    else:  # the check can tell: stretching misplaces the cells by far more than the tolerance
        assert np.abs(stretched - want).max() > 0.02


def test_a_hot_cell_of_an_uneven_map_lands_over_the_pixels_it_saw() -> None:
    """240 px input: fam5 is 7x7, its cell (row 1, col 3) saw input pixels 96..127 across, 32..63 down; stretching
    the 7 cells over all 240 pixels would put it near 120, 51 instead."""
    fams = [np.zeros((1, 240 >> layer, 240 >> layer), np.float32) for layer in range(1, 6)]
    fams[4][0, 1, 3] = 1.0
    heat = tile_fam(fams, 240, "paper", input_size=240)[0]
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    assert 96 <= x < 128 and 32 <= y < 64, (x, y)
    assert abs(x - 111.5) <= 1 and abs(y - 47.5) <= 1
    # without the size, the maps tell it: fam1 of 120 cells comes from 240 px
    np.testing.assert_array_equal(tile_fam(fams, 240, "paper"), heat[None])


def test_upsample_many_tiles_in_chunks() -> None:
    maps = np.random.default_rng(2).random((600, 2, 2)).astype(np.float32)
    up = upsample_bilinear(maps, 4)
    np.testing.assert_allclose(up[599], ref_bilinear(maps[599], 4), rtol=1e-5, atol=1e-5)


def test_stitch_averages_overlaps_and_places_peak() -> None:
    maps = np.zeros((2, 8, 8), np.float32)
    maps[0, 6, 6] = 8.0  # tile 0 at (0,0)-(16,16): peak near (13, 13)
    boxes = np.array([[0, 0, 16, 16], [8, 0, 24, 16]], np.int32)
    heat = stitch((32, 16), boxes, maps, weights=np.array([1.0, 1.0], np.float32), downscale=2)
    assert heat.values.shape == (8, 16)
    px, py = heat.peak_xy()
    assert abs(px - 13) <= 2 and abs(py - 13) <= 2
    # overlap region averaged: tile 1 contributes zeros there, halving tile 0's value
    assert heat.values[6, 6] == pytest.approx(maps[0, 6, 6] / 2 * 1.0, rel=0.5)
    assert heat.values[:, 12:].max() == 0.0


def test_stitch_weights_scale_tiles_and_empty_plan_is_zero() -> None:
    empty = stitch((64, 32), np.zeros((0, 4), np.int32), np.zeros((0, 8, 8), np.float32))
    assert empty.values.shape == (8, 16) and not empty.values.any()
    maps = np.ones((1, 8, 8), np.float32)
    heat = stitch((16, 16), np.array([[0, 0, 16, 16]], np.int32), maps, np.array([0.25], np.float32), 4)
    assert heat.values.max() == pytest.approx(0.25)


def test_bunch_heat_follows_the_belt() -> None:
    """The same spot seen in two frames, moved by the belt, lands in one cell; the peak maps back to frame pixels."""
    acc = BunchHeat(downscale=2)
    for travel in (0.0, 10.0):
        values = np.zeros((16, 32), np.float32)
        values[5, 5 + int(travel) // 2] = 1.0  # spot at x = 10 + travel in frame pixels
        acc.add(HeatMap(values, Box(0, 0, 64, 32)), Box(0, 0, 40 + int(travel), 32), (travel, 0.0))
    mean = acc.mean_map()
    assert mean.max() == pytest.approx(1.0)  # both frames agree on the same cell
    x, y = acc.peak_frame_xy((20.0, 0.0))  # type: ignore[misc]
    assert abs(x - (11 + 20)) <= 2 and abs(y - 11) <= 2
    assert BunchHeat(2).peak_frame_xy((0.0, 0.0)) is None
