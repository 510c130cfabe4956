"""Tile sets: format, shapes, kinds/labels/boxes agree, spider scale within 1-5 %, determinism, CLI, real mode."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from inspector.cli import main as inspector_main
from inspector.config import Calibration
from inspector.synth.raster import Sprite
from inspector.synth.scene import ProceduralSource
from inspector.synth.tiles import (
    VISIBLE_TRIES,
    load_tile_set,
    make_tile_set,
    save_tile_set,
    scale_for_span,
    visible_px,
)
from inspector.tiling import spider_area_fraction, tile_scales

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"
CAL = Calibration(
    mm_per_px=1.0, belt_direction="+x", belt_speed_mm_s=200.0, camera_to_ejector_mm=500.0, spider_span_mm=(5.0, 12.0)
)


def make_tiles(argv: list[str]) -> int:
    """`inspector tiles make ARGV`'s exit status."""
    return inspector_main(["tiles", "make", *argv])


@pytest.fixture(scope="module")
def tiles():  # type: ignore[no-untyped-def]
    return make_tile_set(20, ProceduralSource(), CAL, seed=3, bunch_pool=3)


def test_format_and_agreement(tiles) -> None:  # type: ignore[no-untyped-def]
    n = 20
    assert tiles.images.shape == (n, 224, 224, 3) and tiles.images.dtype == np.uint8
    assert tiles.labels.shape == (n,) and tiles.labels.dtype == np.int8
    assert tiles.boxes_xyxy.shape == (n, 4) and tiles.boxes_xyxy.dtype == np.float32
    assert set(tiles.kinds) <= {"pos", "neg", "hard_neg"}
    assert tiles.meta["counts"] == {k: int((tiles.kinds == k).sum()) for k in ("pos", "neg", "hard_neg")}
    pos = tiles.kinds == "pos"
    assert np.array_equal(tiles.labels == 1, pos) and pos.sum() >= 8
    assert np.all(tiles.boxes_xyxy[~pos] == -1)
    b = tiles.boxes_xyxy[pos]
    assert np.all(b[:, :2] >= 0) and np.all(b[:, 2:] <= 224) and np.all(b[:, 2:] > b[:, :2])
    assert tiles.images.std() > 10  # not blank


def test_spider_scale(tiles) -> None:  # type: ignore[no-untyped-def]
    # the tile scale for every span keeps the disc model in [1 %, 5 %]
    scales = tile_scales(CAL)
    for span in np.linspace(5.0, 12.0, 15):
        s = scale_for_span(scales, float(span))
        assert 0.01 <= spider_area_fraction(span / CAL.mm_per_px, s.tile_px) <= 0.05
    # the visible spider (legs can hide) is never larger than the largest planned spider
    b = tiles.boxes_xyxy[tiles.labels == 1]
    side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    assert np.all(math.pi * side**2 / 4 / 224**2 <= 0.05 * 1.15)
    assert np.all(side >= 4)


def test_deterministic_and_round_trip(tiles, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    again = make_tile_set(20, ProceduralSource(), CAL, seed=3, bunch_pool=3)
    assert np.array_equal(tiles.images, again.images) and np.array_equal(tiles.boxes_xyxy, again.boxes_xyxy)
    other = make_tile_set(4, ProceduralSource(), CAL, seed=4, bunch_pool=2)
    assert not np.array_equal(tiles.images[:4], other.images)
    save_tile_set(tiles, tmp_path / "set", {"mode": "procedural"})
    with np.load(tmp_path / "set" / "tiles.npz") as z:
        assert set(z.files) == {"images", "labels", "boxes_xyxy", "kinds", "spider_origin", "tile_scale_px"}
        assert z["kinds"].dtype.kind == "U"
    back = load_tile_set(tmp_path / "set")
    assert np.array_equal(back.images, tiles.images) and list(back.kinds) == list(tiles.kinds)
    assert list(back.spider_origin) == list(tiles.spider_origin)
    assert np.array_equal(back.tile_scale_px, tiles.tile_scale_px) and back.tile_scale_px.dtype == np.int32
    assert back.meta["mode"] == "procedural" and back.meta["seed"] == 3


def test_every_tile_records_the_scale_it_was_cut_at(tiles) -> None:  # type: ignore[no-untyped-def]
    planned = {s["tile_px"] for s in tiles.meta["scales"]}
    assert set(tiles.tile_scale_px.tolist()) <= planned and len(planned) >= 2
    # a spider tile's box, taken back to frame pixels at its recorded scale, fits that scale's span band
    band_px = {s["tile_px"]: s["span_mm"][1] / CAL.mm_per_px for s in tiles.meta["scales"]}
    pos = tiles.labels == 1
    side_224 = np.max(tiles.boxes_xyxy[pos, 2:] - tiles.boxes_xyxy[pos, :2], axis=1)
    for side, px in zip(side_224, tiles.tile_scale_px[pos], strict=True):
        assert side * px / 224 <= band_px[int(px)] * 1.15
    assert len(set(tiles.tile_scale_px.tolist())) == 2  # this seed draws both scales


def test_spider_origin_is_recorded_on_spider_tiles_only(tiles) -> None:  # type: ignore[no-untyped-def]
    from inspector.synth.procedural import SPIDER_KINDS

    pos = tiles.labels == 1
    assert all(o.removeprefix("procedural:") in SPIDER_KINDS for o in tiles.spider_origin[pos])
    assert all(o == "" for o in tiles.spider_origin[~pos])


def test_sets_without_spider_origin_still_load_and_concatenate(tiles, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from inspector.synth.tiles import TileSet, concat_tile_sets

    d = tmp_path / "old"
    d.mkdir()
    np.savez_compressed(  # an older set, without spider_origin
        d / "tiles.npz", images=tiles.images, labels=tiles.labels, boxes_xyxy=tiles.boxes_xyxy, kinds=tiles.kinds
    )
    old = load_tile_set(d)
    assert old.spider_origin.shape == (20,) and set(old.spider_origin) == {""}
    assert old.tile_scale_px.shape == (20,) and set(old.tile_scale_px.tolist()) == {0}  # 0 = not recorded
    both = concat_tile_sets([old, tiles])
    assert list(both.spider_origin) == [""] * 20 + list(tiles.spider_origin)
    assert list(both.tile_scale_px) == [0] * 20 + list(tiles.tile_scale_px)
    empty = TileSet(
        np.zeros((0, 224, 224, 3), np.uint8), np.zeros(0, np.int8), np.zeros((0, 4), np.float32), np.array([])
    )
    assert empty.spider_origin.shape == (0,)
    with pytest.raises(ValueError, match="spider_origin"):
        TileSet(tiles.images, tiles.labels, tiles.boxes_xyxy, tiles.kinds, {}, np.array(["x"]))
    with pytest.raises(ValueError, match="tile_scale_px"):
        TileSet(
            tiles.images, tiles.labels, tiles.boxes_xyxy, tiles.kinds, {}, tiles.spider_origin, np.ones(3, np.int32)
        )


@pytest.mark.parametrize(
    ("spot_px", "dn", "expect"),
    [(0, 200, 0), (4, 200, 16), (4, 20, 0), (6, 30, 36)],
    ids=["none", "dark-4x4", "faint-4x4", "6x6-at-30"],
)
def test_visible_px_counts_what_the_spider_changes(spot_px: int, dn: int, expect: int) -> None:
    without = np.full((32, 32, 3), 120, np.uint8)
    with_spider = without.copy()
    with_spider[8 : 8 + spot_px, 8 : 8 + spot_px, 1] -= dn if dn <= 120 else 120  # one channel is enough
    assert visible_px(with_spider, without) == expect
    with pytest.raises(ValueError, match="differ in shape"):
        visible_px(with_spider, without[:16])


def test_the_visibility_rule_only_redraws_spiders_the_pixels_do_not_show(tiles) -> None:  # type: ignore[no-untyped-def]
    ruled = make_tile_set(20, ProceduralSource(), CAL, seed=3, bunch_pool=3, min_visible_px=1)
    vis = ruled.meta["visibility"]
    seen = np.array(vis["spider_visible_px"])
    assert np.all((seen >= 0) == (ruled.labels == 1))  # measured on every spider tile, on no other
    assert vis["kept_below"] == int(np.count_nonzero((seen >= 0) & (seen < 1)))
    if vis["redrawn"] == 0:  # nothing to redraw: the very tiles a set without the rule has
        assert np.array_equal(ruled.images, tiles.images) and "visibility" not in tiles.meta
    # a rule no spider can meet: every spider tile tried VISIBLE_TRIES times, kept, and counted
    strict = make_tile_set(6, ProceduralSource(), CAL, seed=5, bunch_pool=2, shares=(1.0, 0.0, 0.0), min_visible_px=10**9)
    n_pos = int(strict.labels.sum())
    assert n_pos > 0
    assert strict.meta["visibility"]["kept_below"] == n_pos
    assert strict.meta["visibility"]["redrawn"] == n_pos * VISIBLE_TRIES


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    assert make_tiles(["--out", str(out), "--n", "6", "--seed", "1", "--preview", str(tmp_path / "prev")]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n"] == 6 and meta["mode"] == "procedural" and sum(meta["counts"].values()) == 6
    assert sorted(p.name for p in (tmp_path / "prev").iterdir())
    assert make_tiles(["--out", str(out), "--n", "0"]) == 1
    assert make_tiles(["--out", str(out), "--n", "2", "--min-visible-px", "-1"]) == 1
    assert make_tiles(["--out", str(tmp_path / "vis"), "--n", "4", "--seed", "2", "--min-visible-px", "5"]) == 0
    assert json.loads((tmp_path / "vis" / "meta.json").read_text())["visibility"]["min_visible_px"] == 5
    assert make_tiles(["--out", str(out), "--n", "2", "--mode", "real", "--real", str(tmp_path / "nowhere")]) == 1


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--real", "{nowhere}"], "nowhere"),  # --real alone means real mode: the missing folder is reported
        (["--split", "holdout", "--real", "{nowhere}"], "nowhere"),
        (["--mode", "procedural", "--real", "{nowhere}"], "--real only apply to --mode real"),
        (["--mode", "procedural", "--split", "holdout"], "--split only apply to --mode real"),
        (["--mode", "procedural", "--background-patches", "0.3"], "--background-patches only apply to --mode real"),
        (["--real", "{nowhere}", "--background-patches", "1.5"], "--background-patches must be a share in [0, 1]"),
        (["--mode", "procedural", "--patches-per-seed"], "--patches-per-seed only apply to --mode real"),
    ],
    ids=[
        "real-alone",
        "split-and-real",
        "procedural-with-real",
        "procedural-with-split",
        "procedural-with-background",
        "background-share-out-of-range",
        "procedural-with-patches-per-seed",
    ],
)
def test_cli_photo_options_never_fall_back_to_procedural(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    # `--real DIR` without `--mode real` used to make procedural tiles silently (a training run was lost to it)
    argv = [a.format(nowhere=tmp_path / "nowhere") for a in argv]
    assert make_tiles(["--out", str(tmp_path / "t"), "--n", "2", *argv]) == 1
    assert error in capsys.readouterr().err and not (tmp_path / "t").exists()


@pytest.mark.realdata
@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")
def test_real_mode(tmp_path: Path) -> None:
    from inspector.synth.real import RealSource

    source = RealSource(REALDATA, "holdout")
    t = make_tile_set(6, source, CAL, seed=0, bunch_pool=2)
    assert t.images.shape == (6, 224, 224, 3) and int(t.labels.sum()) == int((t.kinds == "pos").sum()) >= 2
    photos = {path.name for path, _ in source._spiders}
    assert all(o in photos for o in t.spider_origin[t.labels == 1])  # each spider tile names its photo


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "no tile set here"),
        (b"not a zip at all", "not a tile set"),
        (((2, 32, 32, 3), 2), "must be (N, 224, 224, 3)"),  # (images shape, number of labels)
        (((2, 224, 224, 3), 3), "do not match"),
    ],
)
def test_load_tile_set_refuses_bad_files_in_one_line(tmp_path: Path, content: object, needle: str) -> None:
    from inspector.errors import InspectorError

    d = tmp_path / "set"
    d.mkdir()
    npz = d / "tiles.npz"
    if isinstance(content, bytes):
        npz.write_bytes(content)
    elif isinstance(content, tuple):
        images_shape, n_labels = content
        np.savez(
            npz,
            images=np.zeros(images_shape, np.uint8),
            labels=np.zeros(n_labels, np.int8),
            boxes_xyxy=np.zeros((2, 4), np.float32),
            kinds=np.array(["neg", "neg"]),
        )
    with pytest.raises(InspectorError) as err:
        load_tile_set(d)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_photo_split_parts_train_in_two_stable_disjoint_parts() -> None:
    from inspector.synth.real import _table_photo, photo_split

    names = [f"train/Black_Widow/{i:05d}.jpg" for i in range(3000)]
    parts = [photo_split(n) for n in names]
    assert set(parts) == {"fit", "val"}
    assert 0.13 < parts.count("val") / len(parts) < 0.21  # ~1/6
    assert [photo_split(n) for n in names] == parts  # a hash of the name: stable
    # a Roboflow photo's augmented copies share their part
    a, b = "IMG_1_jpg.rf.aaaa.jpg", "IMG_1_jpg.rf.bbbb.jpg"
    assert photo_split(_table_photo(a)) == photo_split(_table_photo(b))


@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")
def test_fit_and_val_photos_are_disjoint_and_make_up_train() -> None:
    from inspector.synth.real import RealSource

    sources = {s: RealSource(REALDATA, s) for s in ("train", "fit", "val")}

    def photos(src: RealSource) -> tuple[set[Path], set[Path], set[Path]]:
        return {p for p, _ in src._spiders}, {p for p, _ in src._bunch_boxes}, set(src._grape_images)

    train, fit, val = (photos(sources[s]) for s in ("train", "fit", "val"))
    for t, f, v in zip(train, fit, val, strict=True):
        assert f and v and not f & v and f | v == t
    assert len(val[0]) < len(fit[0])


def test_unknown_split_is_one_line(tmp_path: Path) -> None:
    from inspector.synth.real import RealDataError, RealSource

    with pytest.raises(RealDataError, match="split 'test' is not one of train, holdout, fit, val"):
        RealSource(tmp_path, "test")


def _legged(leg_px: int) -> np.ndarray:
    """A 64x64 mask: a body disc with eight legs `leg_px` long (0: the bare disc)."""
    import cv2

    m = np.zeros((64, 64), np.uint8)
    cv2.circle(m, (32, 32), 8, 1, -1)
    for k in range(8):
        a = math.pi * (k + 0.5) / 4
        cv2.line(m, (32, 32), (round(32 + leg_px * math.cos(a)), round(32 + leg_px * math.sin(a))), 1, 2)
    return m.astype(np.float32)


@pytest.mark.parametrize(
    ("mask", "blob"),
    [(np.zeros((16, 16), np.float32), False), (_legged(0), True), (_legged(12), False), (_legged(28), False)],
    ids=["empty", "disc", "short-legs", "long-legs"],
)
def test_solidity_tells_a_legged_outline_from_a_blob(mask: np.ndarray, blob: bool) -> None:
    from inspector.synth.real import MAX_SPIDER_SOLIDITY, solidity

    s = solidity(mask)
    assert 0.0 <= s <= 1.0
    assert (s > MAX_SPIDER_SOLIDITY) is blob


def _val_spider_cuts(n: int) -> list[Sprite]:
    """The accepted cut-outs of the first `n` spider photos of a fresh val source (the rules as patched now)."""
    from inspector.synth.real import RealSource

    src = RealSource(REALDATA, "val")
    cuts = [src._spider_cut(int(i)) for i in src._spider_pool[:n]]
    return [c for c in cuts if c is not None]


@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")
def test_real_spiders_are_whole_spiders_not_close_ups(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspector.synth.real as real

    kept = [real.solidity(c.alpha) for c in _val_spider_cuts(80)]
    assert kept and max(kept) <= real.MAX_SPIDER_SOLIDITY + 0.02  # feathering the edge moves it a hair
    monkeypatch.setattr(real, "MAX_SPIDER_SOLIDITY", 1.0)  # without the rule, close-ups come back
    unfiltered = [real.solidity(c.alpha) for c in _val_spider_cuts(80)]
    assert len(unfiltered) > len(kept) and max(unfiltered) > 0.9


def _discs(*radii_px: int) -> np.ndarray:
    """A 64x96 mask of separate discs (centres 30 px apart) with the given radii."""
    import cv2

    m = np.zeros((64, 96), np.uint8)
    for k, r in enumerate(radii_px):
        cv2.circle(m, (18 + 30 * k, 32), r, 1, -1)
    return m.astype(np.float32)


@pytest.mark.parametrize(
    ("mask", "share"),
    [
        (np.zeros((16, 16), np.float32), 0.0),
        (_legged(28), 1.0),
        (_discs(10, 10), 0.5),
        (_discs(12, 2), 0.97),
        (_discs(8, 8, 8), 1 / 3),
    ],
    ids=["empty", "one-piece-spider", "two-halves", "body-and-speck", "three-fragments"],
)
def test_main_piece_share(mask: np.ndarray, share: float) -> None:
    from inspector.synth.real import main_piece_share

    assert main_piece_share(mask) == pytest.approx(share, abs=0.02)


@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")
def test_real_spiders_are_one_piece_not_fragments(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspector.synth.real as real

    kept = [real.main_piece_share(c.alpha) for c in _val_spider_cuts(120)]
    assert kept and min(kept) >= real.MIN_MAIN_PIECE_SHARE - 0.05  # feathering joins or splits a hair
    monkeypatch.setattr(real, "MIN_MAIN_PIECE_SHARE", 0.0)  # without the rule, the fragments come back
    unfiltered = [real.main_piece_share(c.alpha) for c in _val_spider_cuts(120)]
    assert len(unfiltered) > len(kept) and min(unfiltered) < 0.8


def _spider_photo(leg_px: int = 2) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A 224x224 'photo': a dark spider (body, eight bent legs `leg_px` thick) on textured sand; its box."""
    import cv2

    rng = np.random.default_rng(5)
    img = np.clip(rng.normal((150, 185, 205), 12, (224, 224, 3)), 0, 255).astype(np.uint8)
    img = cv2.GaussianBlur(img, (3, 3), 0)
    c = (112, 112)
    cv2.ellipse(img, c, (16, 11), 20, 0, 360, (25, 20, 20), -1, cv2.LINE_AA)
    pts = []
    for k in range(8):
        a = math.pi * (k + 0.5) / 4
        knee = (round(c[0] + 45 * math.cos(a)), round(c[1] + 45 * math.sin(a)))
        tip = (round(knee[0] + 35 * math.cos(a + 0.6)), round(knee[1] + 35 * math.sin(a + 0.6)))
        cv2.line(img, c, knee, (25, 20, 20), leg_px, cv2.LINE_AA)
        cv2.line(img, knee, tip, (25, 20, 20), leg_px, cv2.LINE_AA)
        pts += [knee, tip]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return img, (max(0, min(xs) - 4), max(0, min(ys) - 4), min(224, max(xs) + 4), min(224, max(ys) + 4))


def _extent(sprite: object, box: tuple[int, int, int, int], photo_px: int = 224) -> float:
    """The cut-out's smaller side over its box's, both at the photo's scale."""
    from inspector.synth.raster import Sprite
    from inspector.synth.real import SPIDER_CUT_PX

    assert isinstance(sprite, Sprite)
    f = min(1.0, SPIDER_CUT_PX / photo_px)
    w, h = sprite.wh
    return min(w / (f * (box[2] - box[0])), h / (f * (box[3] - box[1])))


@pytest.mark.parametrize("leg_px", [1, 2])
def test_spider_cut_keeps_thin_legs(leg_px: int) -> None:
    from inspector.synth.real import cut_spider, solidity

    img, box = _spider_photo(leg_px)
    sprite = cut_spider(img, box)
    assert sprite is not None and _extent(sprite, box) >= 0.85  # the legs reach the box's edges
    assert solidity(sprite.alpha) < 0.5  # a legged outline, not a blob


def test_spider_cut_rejects_an_empty_box() -> None:
    from inspector.synth.real import cut_spider

    img, box = _spider_photo()
    assert cut_spider(np.full_like(img, 160), box) is None


def test_spider_cut_rejects_a_spider_in_pieces() -> None:
    import cv2

    from inspector.synth.real import cut_spider

    img, box = _spider_photo(leg_px=3)
    assert cut_spider(img, box) is not None
    sand = img[0:40, 0:40].mean(axis=(0, 1))
    cv2.circle(img, (112, 112), 30, tuple(float(v) for v in sand), 10)  # a ring of sand cuts the legs off the body
    assert cut_spider(img, box) is None


def _photo_with_box(
    box_xyxy: tuple[int, int, int, int], wh: tuple[int, int] = (224, 224), margin_px: int = 0
) -> np.ndarray:
    """Green photo, its spider box red, a band `margin_px` wide around the box blue."""
    img = np.zeros((wh[1], wh[0], 3), np.uint8)
    img[:] = (40, 160, 40)
    x1, y1, x2, y2 = box_xyxy
    m = margin_px
    img[max(0, y1 - m) : y2 + m, max(0, x1 - m) : x2 + m] = (255, 0, 0)
    img[y1:y2, x1:x2] = (0, 0, 255)
    return img


@pytest.mark.parametrize(
    ("box", "wh"),
    [((10, 10, 110, 214), (224, 224)), ((60, 0, 224, 90), (224, 224)), ((0, 0, 150, 60), (320, 180))],
    ids=["spider-left", "spider-top-right", "wide-photo"],
)
def test_background_crop_keeps_clear_of_the_spider(box: tuple[int, int, int, int], wh: tuple[int, int]) -> None:
    from inspector.synth.real import BACKGROUND_MARGIN_SHARE, BACKGROUND_SIDE_SHARE, background_crop

    margin_px = int(BACKGROUND_MARGIN_SHARE * min(wh))
    assert margin_px >= 4  # the blue band is there to be touched
    photo = _photo_with_box(box, wh, margin_px)
    found = 0
    for seed in range(40):
        crop = background_crop(np.random.default_rng(seed), photo, box)
        if crop is None:
            continue
        found += 1
        assert crop.shape[0] == crop.shape[1] >= BACKGROUND_SIDE_SHARE[0] * min(wh) - 1
        assert not (crop[..., 2] > 128).any()  # no spider pixel (red)
        assert not (crop[..., 0] > 128).any()  # and the margin held: nothing of the blue band round the box
    assert found >= 20


@pytest.mark.parametrize("box", [(0, 0, 224, 224), (8, 8, 216, 216)], ids=["box-is-photo", "box-fills-photo"])
def test_background_crop_of_a_photo_filled_by_its_spider_is_none(box: tuple[int, int, int, int]) -> None:
    from inspector.synth.real import background_crop

    photo = _photo_with_box(box)
    assert all(background_crop(np.random.default_rng(s), photo, box) is None for s in range(20))


@pytest.mark.realdata
@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")
def test_background_patches_replace_only_their_share_of_the_pool() -> None:
    import zlib

    from inspector.synth.real import RealDataError, RealSource

    plain = RealSource(REALDATA, "val")
    mixed = RealSource(REALDATA, "val", background_patches=0.5)
    chosen = []
    for slot in range(24):
        drawn = np.random.default_rng([zlib.crc32(b"val"), 13, slot]).random() < 0.5
        a, b = plain._patch_cut(slot), mixed._patch_cut(slot)
        same = a.bgr.shape == b.bgr.shape and np.array_equal(a.bgr, b.bgr) and np.array_equal(a.alpha, b.alpha)
        if not drawn:
            assert same  # slots the option leaves alone come out bit for bit as without it
        chosen.append(drawn and not same)
    assert sum(chosen) >= 6  # and the chosen ones are spider-photo backgrounds
    with pytest.raises(RealDataError, match="background patch share"):
        RealSource(REALDATA, "val", background_patches=-0.1)


@pytest.mark.realdata
@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")
def test_patch_pool_is_the_splits_unless_drawn_per_seed() -> None:
    from inspector.synth.real import RealSource

    def same(a: RealSource, b: RealSource, slot: int) -> bool:
        pa, pb = a._patch_cut(slot), b._patch_cut(slot)
        return pa.bgr.shape == pb.bgr.shape and np.array_equal(pa.bgr, pb.bgr) and np.array_equal(pa.alpha, pb.alpha)

    split_pool = [RealSource(REALDATA, "val", seed=s) for s in (1, 2)]
    seed_pool = [RealSource(REALDATA, "val", seed=s, patches_per_seed=True) for s in (1, 2, 1)]
    slots = range(6)
    assert all(same(*split_pool, k) for k in slots)  # default: one pool per split, whatever the seed (benchmarks)
    assert not any(same(seed_pool[0], seed_pool[1], k) for k in slots)  # per seed: other seeds, other patches
    assert all(same(seed_pool[0], seed_pool[2], k) for k in slots)  # and the same seed, the same patches
