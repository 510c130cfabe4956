"""Real-composite tile sets from ../shared/realdata: real spiders pasted onto real grape photos.

A stop-gap generator of the agreed tile-set format (``tools/make_tiles.py`` is the project's generator; this one
exists so training is not blocked and for a second, independent view of the data). Pure numpy/OpenCV.

Tile-set format (a directory): ``tiles.npz`` with ``images`` (N, 224, 224, 3) uint8 BGR, ``labels`` (N,) int8
(1 = spider), ``boxes_xyxy`` (N, 4) float32 spider box in tile pixels (-1 where none), ``kinds`` (N,) str
("pos", "neg", "hard_neg"); and ``meta.json`` (source, seed, split, counts).

How a tile is made:
- background: a square crop of a real grape photo around a WGISD bunch box (or anywhere on a table-grape
  close-up, train split only: that set has no holdout), resized to 224;
- ``pos``: a real spider photo, segmented inside its box (GrabCut seeded by the box; an ellipse when GrabCut
  fails), randomly rotated/flipped, scaled so its box covers 1–5 % of the tile, brightness and blur matched to
  the background, feathered edges;
- ``neg``: the same kind of paste (same feathering, same silhouettes and sizes) with a *non-spider* texture:
  another grape crop or (train split) a produce photo — so paste seams and silhouettes carry no label
  signal (spider photos' surroundings are not used: legs often reach outside the box);
- ``hard_neg``: dark spider-sized distractors drawn on the bunch — stems (thick dark curves), dried berries
  (dark discs), shadows (soft dark blobs).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from inspector.errors import InspectorError

TILE = 224
U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
ARACHNID_WORDS = ("spider", "harvestman", "tick", "tarantula", "widow", "web")


@dataclass(frozen=True)
class Cutout:
    bgr: U8  # (h, w, 3)
    alpha: F32  # (h, w) in [0, 1]


@dataclass(frozen=True)
class Background:
    image: U8
    bunches_xywh: tuple[tuple[float, float, float, float], ...]  # empty: crop anywhere


@dataclass
class Sources:
    backgrounds: list[Background]
    spiders: list[Cutout]
    textures: list[U8]  # non-spider texture images


def _read(path: Path) -> U8:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InspectorError(f"{path}: cannot read image; check the --real directory")
    return np.asarray(img, dtype=np.uint8)


def segment_spider(img: U8, box_xyxy: tuple[int, int, int, int], iters: int = 3) -> F32:
    """Foreground alpha of the spider inside its box: GrabCut seeded by the box, ellipse fallback."""
    h, w = img.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in box_xyxy)
    x1, y1 = max(x1, 2), max(y1, 2)
    x2, y2 = min(x2, w - 2), min(y2, h - 2)
    ell = np.zeros((h, w), np.uint8)
    cv2.ellipse(
        ell,
        ((x1 + x2) // 2, (y1 + y2) // 2),
        (max(1, (x2 - x1) * 2 // 5), max(1, (y2 - y1) * 2 // 5)),
        0,
        0,
        360,
        1,
        -1,
    )
    # GrabCut at half resolution (4x faster; the mask is upsampled back)
    f = 0.5 if min(h, w) > 150 else 1.0
    small = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) if f < 1 else img
    rect = (int(x1 * f), int(y1 * f), max(2, int((x2 - x1) * f)), max(2, int((y2 - y1) * f)))
    mask = np.zeros(small.shape[:2], np.uint8)
    try:
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.grabCut(small, mask, rect, bgd, fgd, iters, cv2.GC_INIT_WITH_RECT)
        fg_small = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
        fg = np.asarray(cv2.resize(fg_small, (w, h), interpolation=cv2.INTER_NEAREST), np.uint8)
    except cv2.error:
        fg = ell
    box_area = max(1, (x2 - x1) * (y2 - y1))
    frac = float(fg.sum()) / box_area
    if not 0.08 <= frac <= 0.85:
        fg = ell
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n > 1:  # keep the largest component (the spider), drop specks
        biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        fg = (labels == biggest).astype(np.uint8)
    return fg.astype(np.float32)


def crop_to_alpha(bgr: U8, alpha: F32) -> Cutout:
    ys, xs = np.nonzero(alpha > 0.05)
    if len(xs) == 0:
        return Cutout(bgr, alpha)
    return Cutout(
        bgr[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].copy(),
        alpha[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].copy(),
    )


def load_sources(real_dir: Path, split: str, max_spiders: int | None = None, seed: int = 0) -> Sources:
    """Read backgrounds, spider cut-outs and non-spider textures of one split (``train`` or ``holdout``)."""
    if split not in ("train", "holdout"):
        raise InspectorError(f"split must be train or holdout, got {split!r}")
    wgisd = real_dir / "grapes" / "wgisd"
    spiders_dir = real_dir / "spiders" / "photos"
    for p in (wgisd / "index.json", spiders_dir / "index.json"):
        if not p.is_file():
            raise InspectorError(f"{p}: missing; pass --real pointing at the shared realdata directory")
    backgrounds: list[Background] = []
    for item in json.loads((wgisd / "index.json").read_text())[split]:
        boxes = tuple(tuple(float(v) for v in b) for b in item["bunches_xywh"])
        backgrounds.append(Background(_read(wgisd / item["file"]), boxes))  # type: ignore[arg-type]
    textures: list[U8] = []
    if split == "train":
        table = real_dir / "grapes" / "table" / "train"
        for p in sorted(table.glob("*.jpg")):
            backgrounds.append(Background(_read(p), ()))
        imagenet = real_dir / "imagenet_samples"
        for p in sorted(imagenet.glob("*.JPEG")):
            if not any(w in p.name.lower() for w in ARACHNID_WORDS):
                textures.append(_read(p))
    rng = np.random.default_rng(seed)
    items = json.loads((spiders_dir / "index.json").read_text())[split]
    order = rng.permutation(len(items))
    if max_spiders is not None:
        order = order[:max_spiders]
    spiders: list[Cutout] = []
    for i in order:
        item = items[int(i)]
        img = _read(spiders_dir / item["file"])
        x1, y1, x2, y2 = (int(v) for v in item["box_xyxy"])
        alpha = segment_spider(img, (x1, y1, x2, y2))
        spiders.append(crop_to_alpha(img, alpha))
    if not backgrounds or not spiders:
        raise InspectorError(f"{real_dir}: no {split} backgrounds or spiders found")
    return Sources(backgrounds, spiders, textures)


def background_tile(rng: np.random.Generator, bg: Background) -> U8:
    img = bg.image
    h, w = img.shape[:2]
    if bg.bunches_xywh:
        bx, by, bw, bh = bg.bunches_xywh[int(rng.integers(len(bg.bunches_xywh)))]
        side = float(np.clip(max(bw, bh) * rng.uniform(0.7, 1.3), 96, min(h, w)))
        cx, cy = bx + rng.uniform(0.25, 0.75) * bw, by + rng.uniform(0.25, 0.75) * bh
    else:
        side = float(rng.uniform(0.3, 0.7) * min(h, w))
        cx, cy = rng.uniform(side / 2, w - side / 2), rng.uniform(side / 2, h - side / 2)
    x0 = int(np.clip(cx - side / 2, 0, w - side))
    y0 = int(np.clip(cy - side / 2, 0, h - side))
    crop = img[y0 : y0 + int(side), x0 : x0 + int(side)]
    tile = cv2.resize(crop, (TILE, TILE), interpolation=cv2.INTER_AREA if side > TILE else cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        tile = tile[:, ::-1]
    return np.ascontiguousarray(tile)


def _transform(cut: Cutout, rng: np.random.Generator, area_frac: float) -> Cutout:
    """Rotate, flip, scale so that the bounding box covers ``area_frac`` of the tile."""
    bgr, alpha = cut.bgr, cut.alpha
    if rng.random() < 0.5:
        bgr, alpha = bgr[:, ::-1], alpha[:, ::-1]
    h, w = alpha.shape
    angle = float(rng.uniform(0, 360))
    diag = math.ceil(math.hypot(h, w)) + 2
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    m[0, 2] += (diag - w) / 2
    m[1, 2] += (diag - h) / 2
    rot_bgr = cv2.warpAffine(np.ascontiguousarray(bgr), m, (diag, diag), flags=cv2.INTER_LINEAR)
    rot_a = cv2.warpAffine(np.ascontiguousarray(alpha), m, (diag, diag), flags=cv2.INTER_LINEAR)
    rot = crop_to_alpha(np.asarray(rot_bgr, np.uint8), np.asarray(rot_a, np.float32))
    bh, bw = rot.alpha.shape
    scale = math.sqrt(area_frac * TILE * TILE / max(1, bh * bw))
    nw, nh = max(3, round(bw * scale)), max(3, round(bh * scale))
    out_bgr = cv2.resize(rot.bgr, (nw, nh), interpolation=cv2.INTER_AREA)
    out_a = cv2.resize(rot.alpha, (nw, nh), interpolation=cv2.INTER_AREA)
    return Cutout(np.asarray(out_bgr, np.uint8), np.asarray(out_a, np.float32))


def _paste(
    tile: U8, cut: Cutout, rng: np.random.Generator, match: bool = True
) -> tuple[U8, tuple[float, float, float, float]]:
    h, w = cut.alpha.shape
    m = 2
    x = int(rng.integers(m, TILE - w - m + 1)) if TILE - w - 2 * m > 0 else 0
    y = int(rng.integers(m, TILE - h - m + 1)) if TILE - h - 2 * m > 0 else 0
    region = tile[y : y + h, x : x + w].astype(np.float32)
    fg = cut.bgr.astype(np.float32)
    alpha = cv2.GaussianBlur(cut.alpha, (0, 0), float(rng.uniform(0.5, 1.2)))[..., None]
    if match:
        # pull the paste's brightness part of the way toward the surroundings, plus a random light gain
        a_sum = float(alpha.sum()) + 1e-6
        fg_mean = (fg * alpha).sum(axis=(0, 1)) / a_sum
        bg_mean = region.mean(axis=(0, 1))
        gain = (0.6 + 0.4 * (bg_mean.mean() + 1) / (fg_mean.mean() + 1)) * rng.uniform(0.8, 1.15)
        fg = np.clip(fg * gain, 0, 255)
        sigma = float(rng.uniform(0.0, 1.0))
        if sigma > 0.3:
            fg = cv2.GaussianBlur(fg, (0, 0), sigma)
    out = tile.copy()
    out[y : y + h, x : x + w] = np.clip(region * (1 - alpha) + fg * alpha, 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(cut.alpha > 0.25)
    box = (float(x + xs.min()), float(y + ys.min()), float(x + xs.max() + 1), float(y + ys.max() + 1))
    return out, box


def _texture_cutout(rng: np.random.Generator, src: Sources, shape_from: Cutout) -> Cutout:
    """A non-spider patch in a silhouette: a spider's mask (or an ellipse) filled with a non-spider texture."""
    h, w = shape_from.alpha.shape
    if rng.random() < 0.5:
        alpha = shape_from.alpha
    else:
        alpha = np.zeros((h, w), np.float32)
        cv2.ellipse(alpha, (w // 2, h // 2), (max(1, int(w * 0.45)), max(1, int(h * 0.3))), 0, 0, 360, 1.0, -1)
    pool_choice = rng.random()
    if pool_choice < 0.4 or not src.textures:
        tex = background_tile(rng, src.backgrounds[int(rng.integers(len(src.backgrounds)))])
    else:
        tex = src.textures[int(rng.integers(len(src.textures)))]
    th, tw = tex.shape[:2]
    if th < h or tw < w:
        tex = np.asarray(cv2.resize(tex, (max(w, tw), max(h, th))), np.uint8)
        th, tw = tex.shape[:2]
    y0, x0 = int(rng.integers(0, th - h + 1)), int(rng.integers(0, tw - w + 1))
    return Cutout(np.ascontiguousarray(tex[y0 : y0 + h, x0 : x0 + w]), alpha)


def _hard_negative(tile: U8, rng: np.random.Generator) -> U8:
    """Spider-sized dark distractors: a stem, a dried berry or a shadow."""
    out = tile.copy()
    layer = np.zeros((TILE, TILE), np.float32)
    size = float(np.sqrt(rng.uniform(0.01, 0.05)) * TILE)
    cx, cy = rng.uniform(size, TILE - size, 2)
    kind = rng.integers(3)
    if kind == 0:  # stem: a thick dark curve
        pts = np.array(
            [[cx + size * math.cos(t), cy + size * 0.6 * math.sin(2 * t)] for t in np.linspace(-1.2, 1.2, 8)],
            np.int32,
        )
        cv2.polylines(layer, [pts], False, 1.0, thickness=int(rng.integers(3, 7)))
        colour = np.array(rng.uniform([10, 30, 40], [50, 80, 90]), np.float32)
    elif kind == 1:  # dried berry: dark disc
        cv2.circle(layer, (int(cx), int(cy)), int(size * 0.45), 1.0, -1)
        colour = np.array(rng.uniform([5, 5, 15], [40, 40, 60]), np.float32)
    else:  # shadow: soft dark blob
        cv2.ellipse(
            layer, (int(cx), int(cy)), (int(size * 0.6), int(size * 0.35)), float(rng.uniform(0, 180)), 0, 360, 1.0, -1
        )
        layer = np.asarray(cv2.GaussianBlur(layer, (0, 0), 3.0), np.float32)
        colour = np.zeros(3, np.float32)
    layer = cv2.GaussianBlur(layer, (0, 0), 0.8)[..., None] * float(rng.uniform(0.6, 0.95))
    out = np.clip(out.astype(np.float32) * (1 - layer) + colour * layer, 0, 255).astype(np.uint8)
    return out


def generate(
    src: Sources, n: int, seed: int, pos_frac: float = 0.5, hard_frac: float = 0.25
) -> Iterator[tuple[U8, int, tuple[float, float, float, float], str]]:
    """Yield ``n`` (tile BGR, label, box_xyxy or -1s, kind) tuples; ``hard_frac`` is a share of the negatives."""
    rng = np.random.default_rng(seed)
    none = (-1.0, -1.0, -1.0, -1.0)
    for _ in range(n):
        tile = background_tile(rng, src.backgrounds[int(rng.integers(len(src.backgrounds)))])
        frac = float(rng.uniform(0.01, 0.05))
        spider = _transform(src.spiders[int(rng.integers(len(src.spiders)))], rng, frac)
        if rng.random() < pos_frac:
            out, box = _paste(tile, spider, rng)
            yield out, 1, box, "pos"
        elif rng.random() < hard_frac:
            out = _hard_negative(tile, rng)
            if rng.random() < 0.5:
                out, _ = _paste(out, _texture_cutout(rng, src, spider), rng)
            yield out, 0, none, "hard_neg"
        else:
            out, _ = _paste(tile, _texture_cutout(rng, src, spider), rng)
            yield out, 0, none, "neg"


def write_tileset(
    out_dir: Path,
    tiles: Iterator[tuple[U8, int, tuple[float, float, float, float], str]],
    meta: dict[str, object],
) -> dict[str, int]:
    """Write ``tiles.npz`` + ``meta.json``; returns the counts per kind."""
    images, labels, boxes, kinds = [], [], [], []
    for img, label, box, kind in tiles:
        images.append(img)
        labels.append(label)
        boxes.append(box)
        kinds.append(kind)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out_dir / "tiles.npz",
        images=np.stack(images).astype(np.uint8),
        labels=np.asarray(labels, np.int8),
        boxes_xyxy=np.asarray(boxes, np.float32),
        kinds=np.asarray(kinds, dtype=str),
    )
    counts = {k: kinds.count(k) for k in ("pos", "neg", "hard_neg")}
    (out_dir / "meta.json").write_text(json.dumps({**meta, "counts": counts}, indent=2))
    return counts


@dataclass(frozen=True)
class TileSet:
    images: U8  # (N, 224, 224, 3) BGR
    labels: npt.NDArray[np.int8]
    boxes_xyxy: F32
    kinds: npt.NDArray[np.str_]
    meta: dict[str, object]


def load_tileset(path: Path) -> TileSet:
    """Read a tile-set directory (or its ``tiles.npz``), checking shapes; errors name the file."""
    npz = path / "tiles.npz" if path.is_dir() else path
    if not npz.is_file():
        raise InspectorError(f"{npz}: no tile set here; make one with tools/make_tiles.py")
    try:
        with np.load(npz, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"].astype(np.int8)
            boxes, kinds = z["boxes_xyxy"].astype(np.float32), z["kinds"].astype(str)
    except (KeyError, ValueError, OSError) as exc:
        raise InspectorError(f"{npz}: not a tile set ({exc}); expected images, labels, boxes_xyxy, kinds") from None
    n = len(images)
    if images.ndim != 4 or images.shape[1:] != (TILE, TILE, 3) or images.dtype != np.uint8:
        raise InspectorError(f"{npz}: images must be (N, 224, 224, 3) uint8, got {images.shape} {images.dtype}")
    if labels.shape != (n,) or boxes.shape != (n, 4) or kinds.shape != (n,):
        raise InspectorError(f"{npz}: labels/boxes_xyxy/kinds do not match {n} images")
    meta_path = npz.parent / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return TileSet(images, labels, boxes, kinds, meta)


def main(argv: list[str] | None = None) -> int:
    """``python -m inspector.training.composite --real DIR --split train --n 4000 --seed 1 --out DIR``."""
    import argparse
    import sys

    p = argparse.ArgumentParser(description="Write a real-composite tile set (spiders pasted on grape photos).")
    p.add_argument("--real", type=Path, required=True, help="the shared realdata directory")
    p.add_argument("--split", choices=("train", "holdout"), default="train")
    p.add_argument("--n", type=int, default=4000, help="number of tiles")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-spiders", type=int, help="use at most this many spider photos")
    p.add_argument("--pos-frac", type=float, default=0.5)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        src = load_sources(args.real, args.split, args.max_spiders, args.seed)
        meta = {
            "source": f"realdata composite ({args.real})",
            "generator": "inspector.training.composite",
            "seed": args.seed,
            "split": args.split,
            "spiders": len(src.spiders),
            "backgrounds": len(src.backgrounds),
        }
        counts = write_tileset(args.out, generate(src, args.n, args.seed, args.pos_frac), meta)
    except InspectorError as exc:
        print(f"composite: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
