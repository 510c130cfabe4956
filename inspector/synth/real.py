"""Real cut-outs from a ``realdata`` folder (see ../shared/realdata/README.md for its layout).

- bunches: WGISD photos with bunch boxes (``grapes/wgisd_full/index.json``, the photos at their original ~0.25 mm/px;
  ``grapes/wgisd/`` at ~0.5 mm/px where the full-resolution folder is absent), segmented inside the box with
  GrabCut at a reduced size and cut out at the photo's own resolution, then shrunk to the scene's scale (never
  enlarged: berries keep the size the photo shows, see `GRAPE_FOLDERS`);
- spiders: spider photos with boxes (``spiders/photos/index.json``), segmented inside the box with GrabCut
  (Black_Widow, the redback's close relative, drawn most often); close-ups whose cut-out has no leg outline
  (solidity above ``MAX_SPIDER_SOLIDITY``) and cut-outs that fell apart into pieces (``MIN_MAIN_PIECE_SHARE``)
  are not used;
- non-spider patches: random bits of the grape photos (leaves, stems, berries, wood, ground) and ImageNet produce
  samples, segmented the same way, so pasting seams occur on spider and non-spider tiles alike; optionally
  (``background_patches``, for training sets) also bits of the spider photos away from the spider (leaves, bark,
  flowers, soil, web): the clutter spiders are photographed on, in the look of the photos spiders come from.

Photos are only *read* from the given folder; nothing is copied. Cut-outs are made lazily and cached in memory.
GrabCut is seeded before every call, so the same inputs give the same cut-outs.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import cv2
import numpy as np

from inspector.errors import InspectorError
from inspector.synth.camera import check_scale
from inspector.synth.procedural import rotate_square
from inspector.synth.raster import Sprite, crop_sprite, feather, resize_sprite
from inspector.synth.scene import BunchCut, SpiderCut, shrink_to_span
from inspector.types import FloatArray, U8Array

SPLITS = ("train", "holdout", "fit", "val")  # fit + val = train, photo-disjoint (see `photo_split`)
VAL_SHARE_MOD = 6  # "val" holds the train photos whose name hashes to 0 mod 6 (~17 %)
# Spiders end up <= a few dozen pixels: segment them at this size. Session 7 tried 192 px (`fit` photos: 416 of 600
# give a usable cut against 309, median mask extent over the box 0.89 against 0.78 -- thin legs kept -- but more
# cuts with a chunk of hand, leaf or wood attached); tiles from it moved no model (J: 93.8 % on `val` photos against
# 94.5 %; J fine-tuned 19 min on 15,000 such tiles: 93.9 %), so 96 px stays (4x faster, the benchmark unchanged).
SPIDER_CUT_PX = 96
PATCH_CUT_PX = 64
BUNCH_CUT_PX = 200
SPIDER_POOL = 400  # distinct spider photos used per source (cut once, reused with new poses)
PATCH_POOL = 160
# Background patches: a square of this share of the photo's shorter side, kept this share of it clear of the box.
BACKGROUND_SIDE_SHARE = (0.12, 0.3)
BACKGROUND_MARGIN_SHARE = 0.04
_IMAGENET_NON_SPIDER_EXCLUDE = ("spider", "widow", "tarantula", "harvestman", "tick", "scorpion")
_SPECIES_WEIGHT = {"Black_Widow": 6.0}
MIN_BUNCH_SIDE_PX = 60  # in the pixels of a 1024-px-wide photo (grapes/wgisd); scaled for the full-size folder
# Grape photo folders, finest first: (folder, its scale in mm/px, the Gaussian softness its photos carry in their own
# pixels). Scale from berry size (wine-grape berries 12-15 mm: ~25-30 px across at 1024 px wide, twice that at 2048).
# Softness from the edge width (`camera.edge_width_px`) of bunch crops at full size and shrunk 2x and 4x: 4.1, 3.5,
# 3.3 px, fitted by a photo blur of sigma ~1.25 px at full size (0.7 px once shrunk 2x). A cut-out pasted on a bunch
# gets the bunch's softness, so neither is sharper than the other.
GRAPE_FOLDERS: tuple[tuple[str, float, float], ...] = (("wgisd_full", 0.25, 1.25), ("wgisd", 0.5, 0.7))
BUNCH_SHRINK = (0.85, 1.0)  # a bunch's scale at most its photo's (berry sizes vary; never enlarged)
# A whole spider seen at 4-12 mm span shows legs: its outline has deep notches. A cut-out that fills its convex hull
# (solidity above this) is a macro close-up of a face or an abdomen (peacock, jumping, ladybird-mimic photos), which
# pasted at 16-48 px is a coloured blob no one could call a spider: label noise, dropped in every split alike.
MAX_SPIDER_SOLIDITY = 0.88
# A spider is one piece: its legs join its body. When GrabCut loses the joints (thin legs at 96 px, legs the colour of
# the background) the mask falls apart, and what gets pasted is a scatter of fragments -- a yellow abdomen, a pale
# head and loose leg bits -- labelled "spider". Session 8: in `v3_val`, positives made from such cut-outs (largest
# piece under 0.9 of the mask) were missed by J 8 times in 21, the others 17 in 379. On `fit` photos 7 of 309
# accepted cut-outs fall below 0.9 (the worst of them fragments no one would call a spider). Dropped in every split.
MIN_MAIN_PIECE_SHARE = 0.9


class RealDataError(InspectorError):
    """The realdata folder is missing or not laid out as expected."""


def _grabcut(img: U8Array, rect_xyxy: tuple[int, int, int, int], iterations: int = 4) -> FloatArray:
    """Foreground coverage (float32 0/1) of the object inside `rect_xyxy`, by GrabCut seeded from the rect.

    The outermost 2-pixel ring of the image is always background, so a box that fills the photo still leaves
    GrabCut some background to learn from.
    """
    h, w = img.shape[:2]
    x1, y1, x2, y2 = rect_xyxy
    mask = np.full((h, w), cv2.GC_BGD, np.uint8)
    mask[max(y1, 0) : min(y2, h), max(x1, 0) : min(x2, w)] = cv2.GC_PR_FGD
    ring = 2
    mask[:ring], mask[-ring:], mask[:, :ring], mask[:, -ring:] = (cv2.GC_BGD,) * 4
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(1234)
    try:
        cv2.grabCut(img, mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]
    except cv2.error:
        return np.zeros((h, w), np.float32)
    fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    return fg.astype(np.float32)


def _shrink(img: U8Array, max_side: int) -> tuple[U8Array, float]:
    """The image reduced (area interpolation) so its larger side is at most `max_side`; and the factor used."""
    h, w = img.shape[:2]
    f = min(1.0, max_side / max(h, w))
    if f >= 1.0:
        return img, 1.0
    small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return np.asarray(small, np.uint8), f


def _colour_blob(img: U8Array) -> FloatArray:
    """The object under the crop's centre: 2-colour k-means in Lab, the centre's cluster, its component there."""
    h, w = img.shape[:2]
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.float32)
    cv2.setRNGSeed(4321)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    labels0 = np.zeros((lab.shape[0], 1), np.int32)  # output buffer only: KMEANS_USE_INITIAL_LABELS is not set
    _, labels, _ = cv2.kmeans(lab, 2, labels0, criteria, 2, cv2.KMEANS_PP_CENTERS)
    same = (labels.reshape(h, w) == labels.reshape(h, w)[h // 2, w // 2]).astype(np.uint8)
    same = cv2.morphologyEx(same, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    _, comp = cv2.connectedComponents(same, connectivity=8)
    centre = comp[h // 2, w // 2]
    if centre == 0:
        return np.zeros((h, w), np.float32)
    return (comp == centre).astype(np.float32)


def _keep_main_components(fg: FloatArray, min_share: float) -> FloatArray:
    """Drop specks: keep components holding at least `min_share` of the largest one's area."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    if n <= 1:
        return fg
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.nonzero(areas >= min_share * areas.max())[0] + 1
    return np.isin(labels, keep).astype(np.float32)


def solidity(fg: FloatArray) -> float:
    """Area of the mask `fg` (> 0.5) over the area of its convex hull: 1.0 for a blob, low for a legged outline."""
    m = (fg > 0.5).astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 0.0
    hull_area = float(cv2.contourArea(cv2.convexHull(np.concatenate(contours))))
    return min(1.0, float(m.sum()) / hull_area) if hull_area > 0 else 1.0


def main_piece_share(fg: FloatArray) -> float:
    """Share of the mask `fg` (> 0.5) held by its largest 8-connected piece: 1.0 for one piece, 0.0 if empty."""
    m = (fg > 0.5).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return 0.0
    areas = stats[1:, cv2.CC_STAT_AREA]
    return float(areas.max() / areas.sum())


def _cutout(img: U8Array, fg: FloatArray, feather_px: float) -> Sprite:
    return crop_sprite(Sprite(img.copy(), feather(fg, feather_px)))


def _read(path: Path) -> U8Array:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise RealDataError(f"{path}: cannot read this image; check the realdata folder is complete")
    return np.asarray(img, np.uint8)


def _hash_split(name: str) -> str:
    return "holdout" if zlib.crc32(name.encode()) % 3 == 0 else "train"


def photo_split(name: str) -> str:
    """``fit`` or ``val``: the part of the *train* split a train photo named `name` belongs to.

    Selection between training runs needs tiles from photos that no training tile used (tiles cut from other
    composites of the same photos reward fitting those photos); train on ``fit``, select on ``val``, keep
    ``holdout`` for the final figure. A hash of the file name, so the parts never change as photos are added.
    """
    return "val" if zlib.crc32(("val:" + name).encode()) % VAL_SHARE_MOD == 0 else "fit"


def _table_photo(name: str) -> str:
    """The source photo of a Roboflow export file (`IMG_x_jpg.rf.<hash>.jpg`): its augmented copies stay together."""
    return name.split(".rf.")[0]


def _in_split(name: str, split: str) -> bool:
    """Whether a photo of the folder's own train/holdout split `name` is in `split` (fit/val: parts of train)."""
    return split in ("train", "holdout") or photo_split(name) == split


def cut_spider(photo: U8Array, box_xyxy: tuple[int, int, int, int]) -> Sprite | None:
    """The spider inside `box_xyxy` of `photo`, segmented (GrabCut) at up to ``SPIDER_CUT_PX``; None if unusable.

    Unusable: a mask that covers too little or too much of its box (GrabCut lost the spider or took the ground),
    one in pieces (GrabCut lost the joints, see ``MIN_MAIN_PIECE_SHARE``) or one that fills its convex hull (a
    close-up without leg outline, see ``MAX_SPIDER_SOLIDITY``).
    """
    img, f = _shrink(photo, SPIDER_CUT_PX)
    box = (int(box_xyxy[0] * f), int(box_xyxy[1] * f), int(np.ceil(box_xyxy[2] * f)), int(np.ceil(box_xyxy[3] * f)))
    fg = _grabcut(img, box, iterations=3)
    share = fg.sum() / max(1.0, (box[2] - box[0]) * (box[3] - box[1]))
    if not 0.06 <= share <= 0.7:
        return None
    fg = _keep_main_components(fg, 0.05)
    if main_piece_share(fg) < MIN_MAIN_PIECE_SHARE or solidity(fg) > MAX_SPIDER_SOLIDITY:
        return None
    return _cutout(img, fg, 0.6)


class RealSource:
    """Asset source cutting bunches, spiders and non-spider patches out of real photos of one split."""

    name = "real"

    def __init__(
        self,
        root: Path,
        split: str = "train",
        seed: int = 0,
        background_patches: float = 0.0,
        patches_per_seed: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise RealDataError(f"split '{split}' is not one of {', '.join(SPLITS)}")
        if not 0.0 <= background_patches <= 1.0:
            raise RealDataError(f"background patch share must lie in [0, 1], got {background_patches:g}")
        self.background_patches = background_patches  # share of the patch pool cut from spider-photo backgrounds
        # The non-spider patch pool (PATCH_POOL cut-outs) is by default the split's own, the same for every seed, so
        # benchmark sets stay bit for bit; with patches_per_seed each seed draws its own pool, so training sets made
        # with several seeds show PATCH_POOL new non-spider objects each instead of the same 160 again.
        self._pool_key: tuple[int, ...] = (zlib.crc32(split.encode()),) + ((seed,) if patches_per_seed else ())
        self.root = root
        self.split = split
        base = "holdout" if split == "holdout" else "train"  # the folder's own split; fit/val are parts of train
        folder, self.native_mm_per_px, self.native_softness_px = next(
            (g for g in GRAPE_FOLDERS if (root / "grapes" / g[0] / "index.json").is_file()), GRAPE_FOLDERS[-1]
        )
        self.grape_folder = folder
        wgisd_index = root / "grapes" / folder / "index.json"
        spider_index = root / "spiders" / "photos" / "index.json"
        for p in (wgisd_index, spider_index):
            if not p.is_file():
                raise RealDataError(f"{p} not found; give --real the realdata folder (e.g. ../shared/realdata)")
        wgisd = [e for e in json.loads(wgisd_index.read_text())[base] if _in_split(e["file"], split)]
        min_side = MIN_BUNCH_SIDE_PX * 0.5 / self.native_mm_per_px
        self._bunch_boxes: list[tuple[Path, tuple[float, float, float, float]]] = [
            (root / "grapes" / folder / e["file"], tuple(b))
            for e in wgisd
            for b in e["bunches_xywh"]
            if min(b[2], b[3]) >= min_side
        ]
        self._grape_images = [root / "grapes" / folder / e["file"] for e in wgisd]
        table = root / "grapes" / "table" / base
        if table.is_dir():
            self._grape_images += [q for q in sorted(table.glob("*.jpg")) if _in_split(_table_photo(q.name), split)]
        imagenet = root / "imagenet_samples"
        if imagenet.is_dir():
            self._grape_images += [
                p
                for p in sorted(imagenet.glob("*.JPEG"))
                if not any(k in p.name.lower() for k in _IMAGENET_NON_SPIDER_EXCLUDE)
                and _hash_split(p.name) == base
                and _in_split(p.name, split)
            ]
        spiders = [e for e in json.loads(spider_index.read_text())[base] if _in_split(e["file"], split)]
        self._spiders: list[tuple[Path, tuple[int, int, int, int]]] = [
            (root / "spiders" / "photos" / e["file"], tuple(e["box_xyxy"])) for e in spiders
        ]
        w = np.array([_SPECIES_WEIGHT.get(e["species"], 1.0) for e in spiders], np.float64)
        self._spider_p = w / w.sum()
        if not self._bunch_boxes or not self._spiders:
            raise RealDataError(f"{root}: no usable bunch boxes or spider photos in split '{split}'")
        pool_rng = np.random.default_rng([seed, 11])
        k = min(SPIDER_POOL, len(self._spiders))
        self._spider_pool = pool_rng.choice(len(self._spiders), size=k, replace=False, p=self._spider_p)
        self._patch_cache: dict[int, Sprite] = {}
        self._images: dict[Path, U8Array] = {}
        self._bunch_cache: dict[int, Sprite | None] = {}
        self._spider_cache: dict[int, Sprite | None] = {}

    # ----------------------------------------------------------------------------------------- helpers
    def _image(self, path: Path) -> U8Array:
        img = self._images.get(path)
        if img is None:
            img = _read(path)
            if len(self._images) > 64:
                self._images.pop(next(iter(self._images)))
            self._images[path] = img
        return img

    def _bunch_cut(self, index: int) -> Sprite | None:
        if index in self._bunch_cache:
            return self._bunch_cache[index]
        path, (x, y, w, h) = self._bunch_boxes[index]
        img = self._image(path)
        ih, iw = img.shape[:2]
        m = 0.15
        cx1, cy1 = int(max(0, x - m * w)), int(max(0, y - m * h))
        cx2, cy2 = int(min(iw, x + w * (1 + m))), int(min(ih, y + h * (1 + m)))
        full = img[cy1:cy2, cx1:cx2]
        crop, f = _shrink(full, BUNCH_CUT_PX)
        rect = (int((x - cx1) * f) + 1, int((y - cy1) * f) + 1, int((x - cx1 + w) * f) - 1, int((y - cy1 + h) * f) - 1)
        w, h = w * f, h * f
        fg = _grabcut(crop, rect, iterations=3)
        share = fg.sum() / max(1.0, w * h)
        sprite: Sprite | None = None
        if 0.3 <= share <= 0.97:
            # segmented small (GrabCut is slow), cut out at the photo's own resolution
            mask = _keep_main_components(fg, 0.25)
            full_h, full_w = full.shape[:2]
            mask_full = np.asarray(cv2.resize(mask, (full_w, full_h), interpolation=cv2.INTER_LINEAR), np.float32)
            sprite = _cutout(full, (mask_full > 0.5).astype(np.float32), 1.0 / f)
        self._bunch_cache[index] = sprite
        return sprite

    def _spider_cut(self, index: int) -> Sprite | None:
        if index not in self._spider_cache:
            path, box = self._spiders[index]
            self._spider_cache[index] = cut_spider(self._image(path), box)
        return self._spider_cache[index]

    # ----------------------------------------------------------------------------------------- AssetSource
    def bunch(self, rng: np.random.Generator, length_px: float, berry_radius_px: float, mm_per_px: float) -> BunchCut:
        """A real bunch at the scene scale `mm_per_px`: the size its photo shows (shrunk by up to 15 %, berries
        vary), and never longer than `length_px`; never enlarged (a scene finer than the photos is a ScaleError).
        `berry_radius_px` is not used: the photo has its own berries."""
        check_scale(mm_per_px, self.native_mm_per_px)
        for _ in range(50):
            cut = self._bunch_cut(int(rng.integers(len(self._bunch_boxes))))
            if cut is not None:
                break
        else:
            raise RealDataError(f"{self.root}: could not segment any bunch photo; check grapes/{self.grape_folder}")
        scale = self.native_mm_per_px / mm_per_px * rng.uniform(*BUNCH_SHRINK)
        scale = min(scale, length_px / max(cut.wh))
        sprite = resize_sprite(cut, scale) if scale < 1.0 else cut
        # a touch of colour variation between bunches
        gain = (rng.uniform(0.9, 1.1) * (1 + rng.normal(0, 0.03, 3))).astype(np.float32)
        bgr = np.clip(sprite.bgr.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        return BunchCut(Sprite(bgr, sprite.alpha), softness_px=self.native_softness_px * min(scale, 1.0))

    def spider(self, rng: np.random.Generator, span_px: float) -> SpiderCut:
        """A real spider cut out of its photo, rotated at random, its larger side shrunk to `span_px` (a cut-out
        smaller than that is passed over: spiders are never enlarged); its origin is the photo's file name."""
        for _ in range(200):
            index = int(self._spider_pool[int(rng.integers(len(self._spider_pool)))])
            sprite = self._spider_cut(index)
            if sprite is None:
                continue
            if rng.random() < 0.5:
                sprite = Sprite(sprite.bgr[:, ::-1].copy(), sprite.alpha[:, ::-1].copy())
            turned = crop_sprite(rotate_square(sprite, rng.uniform(0, 360)), 0.1)
            if max(turned.wh) >= span_px:
                break
        else:
            raise RealDataError(
                f"{self.root}: no spider cut-out of {span_px:.0f} px or more in spiders/photos; use a coarser scale"
            )
        return SpiderCut(shrink_to_span(turned, span_px), self._spiders[index][0].name)

    def patch(self, rng: np.random.Generator, size_px: float) -> Sprite:
        """A non-spider bit of a grape/produce photo (leaf, stem, berry, wood), rotated, scaled to `size_px`."""
        sprite = self._patch_cut(int(rng.integers(PATCH_POOL)))
        if rng.random() < 0.5:
            sprite = Sprite(sprite.bgr[:, ::-1].copy(), sprite.alpha[:, ::-1].copy())
        return shrink_to_span(rotate_square(sprite, rng.uniform(0, 360)), size_px)

    def _patch_cut(self, slot: int) -> Sprite:
        """Pool slot `slot` (seeded by the slot): a spider-photo background bit for a ``background_patches`` share of
        the slots, else a bit of a grape/produce photo (those slots come out as without the option)."""
        cached = self._patch_cache.get(slot)
        if cached is not None:
            return cached
        sprite: Sprite | None = None
        if self.background_patches > 0:
            bg_rng = np.random.default_rng([*self._pool_key, 13, slot])
            if bg_rng.random() < self.background_patches:
                sprite = self._background_patch(bg_rng)
        if sprite is None:
            sprite = self._grape_patch(np.random.default_rng([*self._pool_key, 12, slot]))
        self._patch_cache[slot] = sprite
        return sprite

    def _grape_patch(self, rng: np.random.Generator) -> Sprite:
        """GrabCut (or colour blob) of a random crop of a grape/produce photo."""
        for _ in range(20):
            img = self._image(self._grape_images[int(rng.integers(len(self._grape_images)))])
            ih, iw = img.shape[:2]
            side = int(rng.uniform(0.06, 0.25) * min(ih, iw))
            x, y = int(rng.integers(0, iw - side)), int(rng.integers(0, ih - side))
            crop, _ = _shrink(img[y : y + side, x : x + side], PATCH_CUT_PX)
            sprite = _segment_patch(rng, crop)
            if sprite is not None:
                return sprite
        # no clean segment found: a feathered ellipse of the last crop
        cs = crop.shape[0]
        blob = np.zeros((cs, cs), np.float32)
        cv2.ellipse(blob, (cs // 2, cs // 2), (cs // 3, cs // 5), rng.uniform(0, 180), 0, 360, 1.0, -1)
        return _cutout(crop, blob, 1.0)

    def _background_patch(self, rng: np.random.Generator) -> Sprite | None:
        """A bit of a spider photo of this split clear of its spider box; None if 40 tries find none."""
        for _ in range(40):
            path, box = self._spiders[int(rng.integers(len(self._spiders)))]
            crop = background_crop(rng, self._image(path), box)
            if crop is None:
                continue
            sprite = _segment_patch(rng, _shrink(crop, PATCH_CUT_PX)[0])
            if sprite is not None:
                return sprite
        return None


def _segment_patch(rng: np.random.Generator, crop: U8Array) -> Sprite | None:
    """The object in a square crop (colour blob under the centre, else GrabCut inside an inset), its run into the
    crop's edge rounded off; None when neither covers a plausible share of the crop."""
    cs = crop.shape[0]
    inset = int(cs * rng.uniform(0.1, 0.25))
    for fg in (_colour_blob(crop), _grabcut(crop, (inset, inset, cs - inset, cs - inset), iterations=2)):
        share = fg.sum() / float(cs * cs)
        if 0.06 <= share <= 0.7:
            break
    else:
        return None
    # round off where the object runs into the crop's edge (straight seams would mark patches)
    window = np.zeros((cs, cs), np.float32)
    axes = (int(cs * rng.uniform(0.38, 0.48)), int(cs * rng.uniform(0.3, 0.48)))
    cv2.ellipse(window, (cs // 2, cs // 2), axes, rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA)
    return _cutout(crop, _keep_main_components(fg * window, 0.05), 0.6)


def background_crop(
    rng: np.random.Generator, photo: U8Array, box_xyxy: tuple[int, int, int, int], tries: int = 12
) -> U8Array | None:
    """A square crop of `photo` (side ``BACKGROUND_SIDE_SHARE`` of its shorter side) that keeps clear of the spider
    box `box_xyxy` by ``BACKGROUND_MARGIN_SHARE``; None when `tries` random placements all touch it (most spider
    photos are filled by their spider)."""
    ih, iw = photo.shape[:2]
    short = min(ih, iw)
    side = max(8, int(rng.uniform(*BACKGROUND_SIDE_SHARE) * short))
    if side >= short:
        return None
    m = BACKGROUND_MARGIN_SHARE * short
    bx1, by1, bx2, by2 = box_xyxy[0] - m, box_xyxy[1] - m, box_xyxy[2] + m, box_xyxy[3] + m
    for _ in range(tries):
        x, y = int(rng.integers(0, iw - side + 1)), int(rng.integers(0, ih - side + 1))
        if x + side <= bx1 or x >= bx2 or y + side <= by1 or y >= by2:
            return photo[y : y + side, x : x + side].copy()
    return None
