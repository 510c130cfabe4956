"""Procedural renderers: grape bunches, spiders and spider-like distractors, as sprites at frame scale.

Every function takes a numpy Generator and returns a `Sprite`; nothing here touches files or global state.
Sizes are in frame pixels (the caller converts millimetres with the calibration's mm_per_px).
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np

from inspector.synth.raster import Sprite, crop_sprite, resize_sprite
from inspector.types import FloatArray

GrapeVariety = Literal["green", "red", "black"]
SpiderKind = Literal["redback", "brown", "pale", "jumping", "orb"]
DistractorKind = Literal["stem", "dried_leaf", "shadow", "gap", "dark_berry", "debris"]

SPIDER_KINDS: tuple[SpiderKind, ...] = ("redback", "brown", "pale", "jumping", "orb")
DISTRACTOR_KINDS: tuple[DistractorKind, ...] = ("stem", "dried_leaf", "shadow", "gap", "dark_berry", "debris")
MAX_DEBRIS_BRISTLES = 3  # a debris clump's thin bristles, at most: ...
DEBRIS_BRISTLE_SPREAD_RAD = 0.6  # ... all within ±this of one direction, so they never ring the clump like legs

_VARIETY_BGR: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    # (low, high) base colour range, BGR
    "green": ((70, 160, 140), (120, 215, 200)),
    "red": ((50, 40, 120), (110, 90, 190)),
    "black": ((45, 25, 35), (85, 50, 70)),
}


def _jitter_bgr(rng: np.random.Generator, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> np.ndarray:
    t = rng.uniform(0.0, 1.0)
    base = np.array(lo, np.float32) * (1 - t) + np.array(hi, np.float32) * t
    return base + rng.normal(0.0, 6.0, 3).astype(np.float32)


# --------------------------------------------------------------------------------------------- berries
def _draw_berry(
    bgr: np.ndarray,
    alpha: FloatArray,
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    angle: float,
    colour: np.ndarray,
    light_xy: tuple[float, float],
    gloss: float,
) -> None:
    """Shaded ellipsoid berry with a specular highlight and bloom, drawn in place (float canvases)."""
    r = math.ceil(max(rx, ry)) + 1
    x0, y0 = int(cx) - r, int(cy) - r
    h, w = alpha.shape
    if x0 < 0 or y0 < 0 or x0 + 2 * r + 1 > w or y0 + 2 * r + 1 > h:
        return
    yy, xx = np.mgrid[0 : 2 * r + 1, 0 : 2 * r + 1].astype(np.float32)
    dx, dy = xx + x0 - cx, yy + y0 - cy
    c, s = math.cos(angle), math.sin(angle)
    u, v = (dx * c + dy * s) / rx, (-dx * s + dy * c) / ry
    d2 = u * u + v * v
    cover = np.clip((1.0 - np.sqrt(d2)) * min(rx, ry) + 0.5, 0.0, 1.0)
    nz = np.sqrt(np.clip(1.0 - d2, 0.0, 1.0))
    lx, ly = light_xy
    lam = np.clip(0.35 + 0.65 * (nz * 0.8 - (u * lx + v * ly) * 0.45), 0.15, 1.2)
    hx, hy = -lx * 0.45, -ly * 0.45
    spec = gloss * np.exp(-((u - hx) ** 2 + (v - hy) ** 2) / 0.03)
    rim = np.clip(np.sqrt(d2) - 0.8, 0.0, 0.2) * 2.0  # darker rim: berries separate visually
    col = colour[None, None, :] * (lam - rim)[:, :, None] + 255.0 * spec[:, :, None]
    sl = (slice(y0, y0 + 2 * r + 1), slice(x0, x0 + 2 * r + 1))
    a = cover[:, :, None]
    bgr[sl] = bgr[sl] * (1 - a) + col * a
    alpha[sl] = np.maximum(alpha[sl], cover)


def _bunch_outline(rng: np.random.Generator, length_px: float) -> np.ndarray:
    """Polygon (N, 2) of a bunch seen from above: broad shoulders tapering to a tip, pointing +y."""
    width = length_px * rng.uniform(0.5, 0.75)
    n = 24
    t = np.linspace(0.0, 1.0, n)
    half = width / 2 * (np.sin(np.pi * np.clip(t * 1.15 + 0.05, 0, 1)) ** 0.7) * (1 - 0.55 * t)
    half *= 1 + rng.normal(0.0, 0.06, n)
    ys = t * length_px
    left = np.stack([-half, ys], 1)
    right = np.stack([half[::-1], ys[::-1]], 1)
    return np.concatenate([left, right], 0)


def render_bunch(
    rng: np.random.Generator,
    length_px: float,
    berry_radius_px: float,
    variety: GrapeVariety | None = None,
    with_leaf: bool | None = None,
) -> Sprite:
    """A grape bunch seen from above: shaded berries over a dark interior, rachis and stems, maybe a leaf.

    Returned upright (stem at the top); the caller rotates it. Gaps between berries are dark (a natural
    spider-like distractor), berries carry highlights and a bloom.
    """
    variety = variety or rng.choice(np.array(["green", "red", "black"]), p=[0.45, 0.35, 0.2]).item()
    lo, hi = _VARIETY_BGR[variety]
    outline = _bunch_outline(rng, length_px)
    pad = int(berry_radius_px * 3) + 4
    x_min, y_min = outline.min(0)
    x_max, y_max = outline.max(0)
    w, h = int(x_max - x_min) + 2 * pad, int(y_max - y_min) + 2 * pad + int(berry_radius_px * 2)
    offset = np.array([pad - x_min, pad + berry_radius_px * 2])
    poly = (outline + offset).astype(np.int32)

    bgr = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    # dark interior (shadowed rachis and berries behind) shows through the gaps
    inner = np.zeros((h, w), np.uint8)
    cv2.fillPoly(inner, [poly], 255)
    inner = np.asarray(
        cv2.erode(inner, np.ones((3, 3), np.uint8), iterations=max(1, int(berry_radius_px * 0.4))), np.uint8
    )
    base = _jitter_bgr(rng, lo, hi)
    dark = base * rng.uniform(0.18, 0.3) + np.array([5, 12, 8], np.float32)
    inner_f = inner.astype(np.float32) / 255.0
    bgr += dark[None, None, :] * inner_f[:, :, None]
    alpha = np.maximum(alpha, inner_f)

    # rachis: main stalk down the middle with side branches
    stem_col = np.array([40, 95, 110], np.float32) + rng.normal(0, 8, 3).astype(np.float32)
    top = np.array([w / 2 + rng.normal(0, 3), 2.0])
    stalk_end = np.array([w / 2 + rng.normal(0, berry_radius_px), h * 0.55])
    stem_img = np.zeros((h, w, 3), np.float32)
    stem_a = np.zeros((h, w), np.float32)
    thick = max(2, int(berry_radius_px * 0.35))
    cv2.line(stem_img, tuple(map(int, top)), tuple(map(int, stalk_end)), stem_col.tolist(), thick, cv2.LINE_AA)
    cv2.line(stem_a, tuple(map(int, top)), tuple(map(int, stalk_end)), 1.0, thick, cv2.LINE_AA)
    sa = stem_a[:, :, None]
    bgr = bgr * (1 - sa) + stem_img * sa
    alpha = np.maximum(alpha, stem_a)

    # berries: rejection-sampled centres inside the outline, drawn back (dark) to front (lit)
    area = float(inner.sum() / 255.0)
    n_target = int(area / (math.pi * berry_radius_px**2) * rng.uniform(2.0, 2.8))
    inside = np.argwhere(cv2.dilate(inner, np.ones((3, 3), np.uint8), iterations=2) > 0)
    if len(inside) == 0:
        inside = np.array([[h // 2, w // 2]])
    picks = inside[rng.integers(0, len(inside), max(n_target, 1))]
    light = (rng.uniform(-0.6, 0.6), rng.uniform(-0.8, -0.2))
    depth = rng.uniform(0.0, 1.0, len(picks))
    order = np.argsort(depth)
    for i in order:
        cy, cx = picks[i]
        r = berry_radius_px * rng.uniform(0.8, 1.15)
        elong = rng.uniform(1.0, 1.25 if variety != "black" else 1.1)
        shade = 0.7 + 0.3 * depth[i]
        col = (base + rng.normal(0, 7, 3).astype(np.float32)) * shade
        _draw_berry(
            bgr,
            alpha,
            cx + 0.5,
            cy + 0.5,
            r * elong,
            r,
            rng.uniform(0, math.pi),
            col,
            light,
            gloss=rng.uniform(0.25, 0.6),
        )
    if with_leaf if with_leaf is not None else rng.random() < 0.35:
        leaf = render_leaf(rng, length_px * rng.uniform(0.35, 0.6), dried=rng.random() < 0.3)
        lx, ly = int(rng.uniform(0, max(1, w - leaf.wh[0]))), 0
        sl = (slice(ly, ly + leaf.wh[1]), slice(lx, lx + leaf.wh[0]))
        hh, ww = bgr[sl].shape[:2]
        la = leaf.alpha[:hh, :ww, None]
        # the leaf tucks *under* the berries: only where the bunch is not opaque
        under = la * (1 - alpha[sl][:, :, None])
        bgr[sl] = bgr[sl] + (leaf.bgr[:hh, :ww].astype(np.float32) - bgr[sl]) * under
        alpha[sl] = np.maximum(alpha[sl], under[:, :, 0])
    out = Sprite(np.clip(bgr, 0, 255).astype(np.uint8), alpha)
    return crop_sprite(out)


def render_leaf(rng: np.random.Generator, length_px: float, dried: bool = False) -> Sprite:
    """A vine leaf (lobed, veined) or a dried, curled brown leaf fragment."""
    size = int(length_px) + 4
    n = 40
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    lobes = 1 + 0.25 * np.cos(5 * t + rng.uniform(0, 1)) + rng.normal(0, 0.05 if not dried else 0.15, n)
    r = length_px / 2 * 0.9 * lobes / lobes.max()
    pts = np.stack([size / 2 + r * np.cos(t), size / 2 + r * np.sin(t) * rng.uniform(0.6, 1.0)], 1)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [pts.astype(np.int32)], 255)
    if dried:
        col = np.array([30, 60, 95], np.float32) + rng.normal(0, 12, 3).astype(np.float32)
    else:
        col = np.array([40, 120, 70], np.float32) + rng.normal(0, 12, 3).astype(np.float32)
    img = np.empty((size, size, 3), np.float32)
    img[:] = col
    shade = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), max(1.0, size / 10))
    img *= (1 + 0.8 * shade / (np.abs(shade).max() + 1e-6) * 0.25)[:, :, None]
    vein = (col * (1.25 if not dried else 0.6)).tolist()
    c = (size // 2, size // 2)
    for k in range(5):
        ang = t[0] + k * 2 * np.pi / 5 + rng.normal(0, 0.1)
        end = (int(c[0] + np.cos(ang) * length_px * 0.42), int(c[1] + np.sin(ang) * length_px * 0.42))
        cv2.line(img, c, end, vein, max(1, int(length_px / 60)), cv2.LINE_AA)
    a = mask.astype(np.float32) / 255.0
    a = np.asarray(cv2.GaussianBlur(a, (0, 0), 0.7), np.float32)
    return crop_sprite(Sprite(np.clip(img, 0, 255).astype(np.uint8), a.astype(np.float32)))


# --------------------------------------------------------------------------------------------- spiders
_SPIDER_STYLE: dict[str, dict[str, object]] = {
    # body colour, abdomen (length, width) relative to span, leg thickness, leg reach, marking
    "redback": {
        "body": (20, 18, 22),
        "legs": (18, 16, 20),
        "abd": (0.30, 0.26),
        "ceph": 0.12,
        "leg_w": 0.035,
        "reach": 0.5,
        "mark": "stripe",
    },
    "brown": {
        "body": (45, 75, 110),
        "legs": (50, 80, 115),
        "abd": (0.22, 0.14),
        "ceph": 0.14,
        "leg_w": 0.03,
        "reach": 0.5,
        "mark": "chevron",
    },
    "pale": {
        "body": (120, 170, 195),
        "legs": (110, 160, 185),
        "abd": (0.24, 0.17),
        "ceph": 0.12,
        "leg_w": 0.028,
        "reach": 0.5,
        "mark": "none",
    },
    "jumping": {
        "body": (35, 35, 40),
        "legs": (40, 40, 45),
        "abd": (0.30, 0.24),
        "ceph": 0.24,
        "leg_w": 0.06,
        "reach": 0.38,
        "mark": "spots",
    },
    "orb": {
        "body": (40, 150, 190),
        "legs": (30, 60, 80),
        "abd": (0.36, 0.30),
        "ceph": 0.13,
        "leg_w": 0.035,
        "reach": 0.48,
        "mark": "bands",
    },
}


def render_spider(rng: np.random.Generator, span_px: float, kind: SpiderKind = "redback") -> Sprite:
    """A spider seen from above, leg tip to leg tip `span_px` across its largest box side, random heading.

    Drawn at least 6x oversampled and reduced with area averaging so thin legs stay as faint, anti-aliased lines.
    Redback: glossy black round abdomen with a red dorsal stripe, small cephalothorax, eight long thin legs.
    """
    style = _SPIDER_STYLE[kind]
    s = float(np.clip(span_px * 6.0, 120.0, 480.0))  # drawing span (>= 6x oversampled), rescaled at the end
    size = int(s * 1.4)
    img = np.zeros((size, size, 3), np.float32)
    alpha = np.zeros((size, size), np.float32)
    c = np.array([size / 2, size / 2])
    jit = rng.normal(0, 6, 3)
    body_col = np.clip(np.array(style["body"], np.float32) + jit, 0, 255)
    leg_col = np.clip(np.array(style["legs"], np.float32) + jit, 0, 255)
    abd_l, abd_w = (float(v) * rng.uniform(0.85, 1.15) for v in style["abd"])  # type: ignore[attr-defined]
    ceph_r = float(style["ceph"]) * rng.uniform(0.9, 1.1)  # type: ignore[arg-type]
    leg_w = max(1, int(float(style["leg_w"]) * s))  # type: ignore[arg-type]
    reach = float(style["reach"]) * s  # type: ignore[arg-type]

    def draw_line(p: np.ndarray, q: np.ndarray, col: np.ndarray, width: int) -> None:
        cv2.line(img, tuple(map(int, p)), tuple(map(int, q)), col.tolist(), width, cv2.LINE_AA)
        cv2.line(alpha, tuple(map(int, p)), tuple(map(int, q)), 1.0, width, cv2.LINE_AA)

    ceph_c = c + np.array([0.0, -ceph_r * s * 0.6])
    abd_c = c + np.array([0.0, abd_l * s * 0.55])
    # eight legs: four per side, two segments each with a knee pointing outward
    base_angles = np.radians([-60, -25, 15, 55])
    for side in (-1, 1):
        for k, ang in enumerate(base_angles):
            a = ang + rng.normal(0, 0.12)
            length = reach * (1.0 if k in (0, 3) else 0.85) * rng.uniform(0.8, 1.05)
            hip = ceph_c + np.array([side * ceph_r * s * 0.5, (k - 1.5) * ceph_r * s * 0.25])
            direction = np.array([side * math.cos(a), math.sin(a)])
            knee = hip + direction * length * 0.45 + np.array([0.0, -length * 0.12])
            tip_dir = np.array([side * math.cos(a + side * 0.2 * rng.normal()), math.sin(a) * 1.2])
            tip = knee + tip_dir / (np.linalg.norm(tip_dir) + 1e-6) * length * 0.6
            draw_line(hip, knee, leg_col, leg_w)
            draw_line(knee, tip, leg_col * 0.9, max(1, int(leg_w * 0.8)))
    # pedipalps
    for side in (-1, 1):
        draw_line(ceph_c, ceph_c + np.array([side * ceph_r * s * 0.5, -ceph_r * s * 1.2]), leg_col, leg_w)
    # cephalothorax and abdomen with a glossy highlight
    axes_abd = (int(abd_w * s / 2), int(abd_l * s / 2))
    cv2.ellipse(img, tuple(map(int, abd_c)), axes_abd, 0, 0, 360, body_col.tolist(), -1, cv2.LINE_AA)
    cv2.ellipse(alpha, tuple(map(int, abd_c)), axes_abd, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    ceph_axes = (int(ceph_r * s / 2), int(ceph_r * s * 0.6))
    cv2.ellipse(img, tuple(map(int, ceph_c)), ceph_axes, 0, 0, 360, (body_col * 0.9).tolist(), -1, cv2.LINE_AA)
    cv2.ellipse(alpha, tuple(map(int, ceph_c)), ceph_axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    mark = style["mark"]
    if mark == "stripe":
        red = np.array([20, 30, 200], np.float32) + rng.normal(0, 10, 3).astype(np.float32)
        stripe = (max(1, int(axes_abd[0] * 0.28)), int(axes_abd[1] * rng.uniform(0.6, 0.85)))
        cv2.ellipse(img, tuple(map(int, abd_c)), stripe, 0, 0, 360, red.tolist(), -1, cv2.LINE_AA)
    elif mark == "chevron":
        for j in range(3):
            y = abd_c[1] + (j - 1) * axes_abd[1] * 0.45
            p = np.array([abd_c[0], y])
            draw_line(p + np.array([-axes_abd[0] * 0.5, -axes_abd[1] * 0.2]), p, body_col * 0.6, leg_w)
            draw_line(p + np.array([axes_abd[0] * 0.5, -axes_abd[1] * 0.2]), p, body_col * 0.6, leg_w)
    elif mark == "spots":
        for sx in (-1, 1):
            cv2.circle(
                img,
                (int(abd_c[0] + sx * axes_abd[0] * 0.4), int(abd_c[1])),
                int(axes_abd[0] * 0.18),
                (200, 200, 210),
                -1,
                cv2.LINE_AA,
            )
    elif mark == "bands":
        for j in range(3):
            y = int(abd_c[1] + (j - 1) * axes_abd[1] * 0.5)
            cv2.line(
                img,
                (int(abd_c[0] - axes_abd[0] * 0.8), y),
                (int(abd_c[0] + axes_abd[0] * 0.8), y),
                (20, 20, 25),
                max(1, leg_w),
                cv2.LINE_AA,
            )
    # gloss
    g = np.zeros((size, size), np.float32)
    cv2.circle(
        g,
        (int(abd_c[0] - axes_abd[0] * 0.35), int(abd_c[1] - axes_abd[1] * 0.4)),
        max(1, int(axes_abd[0] * 0.25)),
        1.0,
        -1,
        cv2.LINE_AA,
    )
    g = np.asarray(cv2.GaussianBlur(g, (0, 0), max(1.0, axes_abd[0] * 0.15)), np.float32)
    gloss = 0.55 if kind in ("redback", "jumping") else 0.25
    img = img + 255.0 * gloss * g[:, :, None]
    sprite = crop_sprite(Sprite(np.clip(img, 0, 255).astype(np.uint8), alpha))
    sprite = rotate_square(sprite, rng.uniform(0, 360))
    return fit_span(sprite, span_px)


def rotate_square(sprite: Sprite, angle_deg: float) -> Sprite:
    w, h = sprite.wh
    side = math.ceil(math.hypot(w, h)) + 2
    px, py = (side - w) // 2, (side - h) // 2
    bgr = cv2.copyMakeBorder(sprite.bgr, py, side - h - py, px, side - w - px, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    a = cv2.copyMakeBorder(sprite.alpha, py, side - h - py, px, side - w - px, cv2.BORDER_CONSTANT, value=0.0)
    m = cv2.getRotationMatrix2D((side / 2, side / 2), angle_deg, 1.0)
    bgr_r = np.asarray(cv2.warpAffine(bgr, m, (side, side), flags=cv2.INTER_LINEAR), np.uint8)
    a_r = np.asarray(cv2.warpAffine(a, m, (side, side), flags=cv2.INTER_LINEAR), np.float32)
    return crop_sprite(Sprite(bgr_r, np.clip(a_r, 0, 1).astype(np.float32)))


def fit_span(sprite: Sprite, span_px: float) -> Sprite:
    """Scale a cut-out so the larger side of its coverage box is `span_px` (the leg span)."""
    sprite = crop_sprite(sprite, 0.1)
    w, h = sprite.wh
    return crop_sprite(resize_sprite(sprite, span_px / max(w, h, 1)))


# --------------------------------------------------------------------------------------------- distractors
def render_distractor(rng: np.random.Generator, size_px: float, kind: DistractorKind) -> Sprite:
    """Spider-like things that are not spiders, about `size_px` across (largest box side)."""
    ss = 4
    s = int(np.clip(max(8, size_px) * ss, 48, 320))
    size = int(s * 1.3)
    img = np.zeros((size, size, 3), np.float32)
    alpha = np.zeros((size, size), np.float32)
    c = np.array([size / 2, size / 2])
    if kind == "stem":
        # a dark, forked, dried stem: a few thin branches from one point (leg-like)
        col = np.array([25, 45, 60], np.float32) + rng.normal(0, 8, 3).astype(np.float32)
        n_branch = int(rng.integers(2, 6))
        for _ in range(n_branch):
            ang = rng.uniform(0, 2 * np.pi)
            ln = s * rng.uniform(0.25, 0.5)
            mid = c + np.array([math.cos(ang), math.sin(ang)]) * ln * 0.5
            end = mid + np.array([math.cos(ang + rng.normal(0, 0.4)), math.sin(ang + rng.normal(0, 0.4))]) * ln * 0.5
            w = max(1, int(s * rng.uniform(0.02, 0.06)))
            for p, q in ((c, mid), (mid, end)):
                cv2.line(img, tuple(map(int, p)), tuple(map(int, q)), col.tolist(), w, cv2.LINE_AA)
                cv2.line(alpha, tuple(map(int, p)), tuple(map(int, q)), 1.0, w, cv2.LINE_AA)
        cv2.circle(img, tuple(map(int, c)), max(1, int(s * 0.05)), col.tolist(), -1, cv2.LINE_AA)
        cv2.circle(alpha, tuple(map(int, c)), max(1, int(s * 0.05)), 1.0, -1, cv2.LINE_AA)
    elif kind == "dried_leaf":
        leaf = render_leaf(rng, size_px * ss, dried=True)
        return fit_span(leaf, size_px)
    elif kind in ("shadow", "gap"):
        # soft dark blob (shadow) or a dark crevice with ragged edges (gap between berries)
        blob = np.zeros((size, size), np.float32)
        for _ in range(int(rng.integers(2, 5))):
            off = rng.normal(0, s * 0.12, 2)
            axes = (int(s * rng.uniform(0.1, 0.3)), int(s * rng.uniform(0.05, 0.2)))
            cv2.ellipse(blob, tuple(map(int, c + off)), axes, rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA)
        blob = np.asarray(cv2.GaussianBlur(blob, (0, 0), s * (0.08 if kind == "shadow" else 0.02)), np.float32)
        strength = rng.uniform(0.35, 0.6) if kind == "shadow" else rng.uniform(0.7, 0.95)
        alpha = np.clip(blob, 0, 1) * strength
        col = np.array([10, 15, 15], np.float32) + rng.normal(0, 4, 3).astype(np.float32)
        img[:] = col
    elif kind == "dark_berry":
        col = np.array([35, 20, 30], np.float32) + rng.normal(0, 6, 3).astype(np.float32)
        r = s * rng.uniform(0.25, 0.4)
        _draw_berry(
            img,
            alpha,
            c[0],
            c[1],
            r * rng.uniform(1.0, 1.2),
            r,
            rng.uniform(0, np.pi),
            col,
            (rng.uniform(-0.5, 0.5), -0.5),
            gloss=rng.uniform(0.3, 0.6),
        )
    else:  # debris: a small dark clump with one to three bristles, all to one side (a calyx, a seed with fibres)
        col = np.array([30, 35, 45], np.float32) + rng.normal(0, 8, 3).astype(np.float32)
        cv2.ellipse(
            img,
            tuple(map(int, c)),
            (int(s * 0.15), int(s * 0.1)),
            rng.uniform(0, 180),
            0,
            360,
            col.tolist(),
            -1,
            cv2.LINE_AA,
        )
        cv2.ellipse(
            alpha, tuple(map(int, c)), (int(s * 0.15), int(s * 0.1)), rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA
        )
        # never legs all round: a dark body ringed by thin lines *is* a spider drawing, and labelling it "no
        # spider" taught the model to miss spiders (label noise in the hard negatives)
        side = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(1, MAX_DEBRIS_BRISTLES + 1))):
            ang = side + rng.uniform(-DEBRIS_BRISTLE_SPREAD_RAD, DEBRIS_BRISTLE_SPREAD_RAD)
            end = c + np.array([math.cos(ang), math.sin(ang)]) * s * rng.uniform(0.2, 0.45)
            cv2.line(img, tuple(map(int, c)), tuple(map(int, end)), col.tolist(), max(1, int(s * 0.02)), cv2.LINE_AA)
            cv2.line(alpha, tuple(map(int, c)), tuple(map(int, end)), 1.0, max(1, int(s * 0.02)), cv2.LINE_AA)
    sprite = Sprite(np.clip(img, 0, 255).astype(np.uint8), np.clip(alpha, 0, 1).astype(np.float32))
    return fit_span(sprite, size_px)
