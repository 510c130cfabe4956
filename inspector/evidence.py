"""Evidence pictures: what the inspector saw when it judged a bunch, drawn so an operator can check the verdict.

Every reject gets one picture (`DecisionLog` writes it):

- a bunch that was inspected (`Snapshot`): the crop as the camera saw it | the same crop with the heat map, the tile
  grid, the tiles that scored highest with their spider probability, and a yellow cross where the evidence is
  strongest *in this crop* (the crop's own heat map, smoothed at spider size, inside the bunch's box). For a
  `spider` reject the crop comes from the inspected frame that scored highest; otherwise from the most central one.
- an unseen stretch of belt (`GapSnapshot`, after a gap in the frames): a schematic of the belt along the direction
  of travel — the frame after the gap, the stretch no frame showed (hatched red, its length in mm) and the last
  frame before the gap.
- anything else (no frame was kept): a card with the verdict and the reason.

Each picture carries a banner (bunch, verdict, reason, score against the threshold), the reason in words
(`Decision.detail`: for `uninspected`, which part of the bunch was not seen and why), the frames the bunch was judged
on, and a legend of what the colours and marks mean. `overlay_frame` draws a whole frame for the annotated video.

Why the cross is computed here and smoothed: the bunch heat map is the probability-weighted average of overlapping
tile FAMs; where tiles meet, a single cell can spike above the spider's own blob (measured on the demo footage: one
spider bunch in seven had its raw peak 39 mm from the spider, while smoothing at spider size put it 3.7 mm away; the
belt-travel mapping was right to within 2 mm on every bunch).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import cv2
import numpy as np

from inspector.fam import smooth_peak_map
from inspector.types import Box, Decision, HeatMap, TilePlan, U8Array

MARGIN_PX = 24
MIN_PAIR_WIDTH_PX = 720  # small crops are enlarged (nearest neighbour) until the pair is at least this wide
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_RED, _WHITE, _YELLOW, _GREY = (0, 0, 255), (255, 255, 255), (0, 255, 255), (200, 200, 200)


@dataclass(frozen=True)
class Snapshot:
    crop_bgr: U8Array  # the bunch box plus a margin, from the inspected frame
    crop_box: Box  # where the crop sits in the frame
    heat: np.ndarray  # frame heat map cut to crop_box, resized to the crop's size
    tiles_xyxy: np.ndarray  # (N, 4) tile boxes relative to the crop
    tile_probs: np.ndarray  # (N,)
    frame: int
    travel_xy: tuple[float, float] = (0.0, 0.0)  # belt travel when this frame was taken
    peak_xy: tuple[float, float] | None = None  # unused by `render`; kept for callers that set it
    bunch_box: Box | None = None  # the bunch's box in this frame (frame pixels)
    spider_px: float = 0.0  # the largest spider's span in px: the scale the heat map is smoothed at for the cross
    frame_score: float = 0.0  # the highest tile probability over the bunch in this frame
    inspected: bool = True  # False: the frame was only seen (the bunch was never in an inspected frame)
    unseen_along: tuple[tuple[float, float], ...] = ()  # stretches of the bunch no inspected frame showed (belt coords)
    travel_axis: int = 0  # the axis `unseen_along` runs along (0: x, 1: y)


@dataclass(frozen=True)
class GapSnapshot:
    """What is known of a stretch of belt no frame showed: the frames on either side, reduced, and the geometry."""

    after_small: U8Array  # the first frame after the gap, at 1/`downscale`
    before_small: U8Array | None  # the last frame before it (None: none was kept)
    frame: int
    frame_before: int | None
    moved_px: float  # belt travel between the two frames, along the direction of travel
    view_px: int  # the view's length along the direction of travel
    mm_per_px: float
    travel_axis: int  # 0: the belt moves along x, 1: along y
    travel_sign: int  # +1 or -1


EvidenceItem = Snapshot | GapSnapshot


def _crop_around(frame_bgr: U8Array, box: Box) -> tuple[Box, U8Array]:
    """The bunch's box grown by MARGIN_PX, clipped to the frame, and a copy of the frame inside it."""
    h, w = frame_bgr.shape[:2]
    crop_box = Box(
        max(0, box.x1 - MARGIN_PX), max(0, box.y1 - MARGIN_PX), min(w, box.x2 + MARGIN_PX), min(h, box.y2 + MARGIN_PX)
    )
    x1, y1, x2, y2 = crop_box.xyxy
    return crop_box, frame_bgr[y1:y2, x1:x2].copy()


def take_snapshot(
    frame_bgr: U8Array,
    heat: HeatMap,
    plan: TilePlan,
    probs: np.ndarray,
    box: Box,
    frame: int,
    travel_xy: tuple[float, float] = (0.0, 0.0),
    spider_px: float = 0.0,
    frame_score: float = 0.0,
) -> Snapshot:
    crop_box, crop = _crop_around(frame_bgr, box)
    x1, y1, x2, y2 = crop_box.xyxy
    gh, gw = heat.values.shape
    sx, sy = gw / heat.box.wh[0], gh / heat.box.wh[1]
    gx1, gy1 = int(x1 * sx), int(y1 * sy)
    gx2, gy2 = max(gx1 + 1, int(np.ceil(x2 * sx))), max(gy1 + 1, int(np.ceil(y2 * sy)))
    # the heat cells of [gx1, gx2) span frame pixels [gx1 / sx, gx2 / sx): resize that, then cut the crop out of it
    span = cv2.resize(
        heat.values[gy1:gy2, gx1:gx2],
        (round((gx2 - gx1) / sx), round((gy2 - gy1) / sy)),
        interpolation=cv2.INTER_LINEAR,
    )
    ox, oy = x1 - round(gx1 / sx), y1 - round(gy1 / sy)
    patch = np.zeros((y2 - y1, x2 - x1), np.float32)
    cut = span[oy : oy + (y2 - y1), ox : ox + (x2 - x1)]
    patch[: cut.shape[0], : cut.shape[1]] = cut
    boxes = plan.boxes_xyxy()
    overlap = (boxes[:, 2] > x1) & (boxes[:, 0] < x2) & (boxes[:, 3] > y1) & (boxes[:, 1] < y2)
    rel = boxes[overlap] - np.array([x1, y1, x1, y1], np.int32)
    return Snapshot(
        crop, crop_box, patch, rel, np.asarray(probs)[overlap], frame, travel_xy, None, box, spider_px, frame_score
    )


def take_seen_snapshot(
    frame_bgr: U8Array, box: Box, frame: int, travel_xy: tuple[float, float], spider_px: float = 0.0
) -> Snapshot:
    """The bunch as a frame that was not inspected showed it: no heat, no tiles."""
    crop_box, crop = _crop_around(frame_bgr, box)
    x1, y1, x2, y2 = crop_box.xyxy
    heat = np.zeros((y2 - y1, x2 - x1), np.float32)
    none = np.zeros((0, 4), np.int32)
    return Snapshot(crop, crop_box, heat, none, np.zeros(0), frame, travel_xy, None, box, spider_px, 0.0, False)


def hatch_unseen(image: U8Array, snapshot: Snapshot, scale: int) -> bool:
    """Hatch (orange) the stretches of the bunch that no inspected frame showed; True when any lies in the crop."""
    axis = snapshot.travel_axis
    offset = snapshot.travel_xy[axis] - (snapshot.crop_box.x1 if axis == 0 else snapshot.crop_box.y1)
    b, c = snapshot.bunch_box or snapshot.crop_box, snapshot.crop_box
    across = (b.y1 - c.y1, b.y2 - c.y1) if axis == 0 else (b.x1 - c.x1, b.x2 - c.x1)
    length = image.shape[1 - axis]
    drawn = False
    for lo_belt, hi_belt in snapshot.unseen_along:
        lo = max(0, round((lo_belt + offset) * scale))
        hi = min(length, round((hi_belt + offset) * scale))
        if hi <= lo:
            continue
        a1, a2 = across[0] * scale, across[1] * scale
        x1, y1, x2, y2 = (lo, a1, hi, a2) if axis == 0 else (a1, lo, a2, hi)
        region = image[y1:y2, x1:x2]
        shade = region.copy()
        shade[:] = (0, 140, 255)
        region[:] = cv2.addWeighted(region, 0.6, shade, 0.4, 0)
        for k in range(-(y2 - y1), x2 - x1, 12):
            cv2.line(region, (k, y2 - y1), (k + (y2 - y1), 0), (0, 140, 255), 2, cv2.LINE_AA)
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), (0, 140, 255), 2)
        drawn = True
    return drawn


def marker_xy(snapshot: Snapshot) -> tuple[float, float] | None:
    """Where the evidence is strongest in the crop (crop pixels): the peak of the crop's heat map, smoothed at half
    the largest spider's span, inside the bunch's box. None when the crop holds no heat."""
    heat = np.asarray(snapshot.heat, np.float32)
    if heat.size == 0 or float(heat.max()) <= 0.0:
        return None
    smooth = smooth_peak_map(heat, snapshot.spider_px / 2.0)
    if snapshot.bunch_box is not None:
        c = snapshot.crop_box
        b = snapshot.bunch_box
        inside = np.zeros(smooth.shape, bool)
        inside[max(0, b.y1 - c.y1) : max(0, b.y2 - c.y1), max(0, b.x1 - c.x1) : max(0, b.x2 - c.x1)] = True
        if inside.any():
            smooth = np.where(inside, smooth, -np.inf)
    iy, ix = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    return (float(ix), float(iy))


def heat_overlay(image_bgr: U8Array, heat: np.ndarray, vmax: float | None = None, alpha: float = 0.45) -> U8Array:
    """Blend a JET colour map of `heat` (same H, W as the image) over it; `vmax` fixes the colour scale."""
    top = float(vmax if vmax is not None else max(float(heat.max()), 1e-9))
    norm = np.clip(heat / top * 255.0, 0, 255).astype(np.uint8)
    colour = cv2.applyColorMap(norm, cv2.COLORMAP_JET)
    weight = (alpha * (norm.astype(np.float32) / 255.0))[..., None]
    out = image_bgr.astype(np.float32) * (1 - weight) + colour.astype(np.float32) * weight
    return np.asarray(out.clip(0, 255), np.uint8)


# ------------------------------------------------------------------------------------------------ text panels
def _ascii(text: str) -> str:
    """OpenCV's fonts draw ASCII only."""
    table = {"–": "-", "—": "-", "≥": ">=", "≤": "<=", "×": "x", "·": "*", "→": "->", "±": "+-"}
    return "".join(table.get(ch, ch) for ch in text).encode("ascii", "replace").decode()


def _text_panel(
    lines: list[tuple[str, tuple[int, int, int]]], width_px: int, scale: float = 0.5, swatches: bool = False
) -> U8Array:
    """Black panel with wrapped lines of text; with `swatches`, a line starting with '[#]' gets a coloured square."""
    char_px = max(6, int(19 * scale))
    wrapped: list[tuple[str, tuple[int, int, int], bool]] = []
    for text, colour in lines:
        swatch = swatches and text.startswith("[#]")
        body = text[3:].strip() if swatch else text
        indent = 22 if swatch else 0
        chunks = textwrap.wrap(_ascii(body), max(20, (width_px - 12 - indent) // char_px)) or [""]
        for i, chunk in enumerate(chunks):
            wrapped.append((chunk, colour, swatch and i == 0))
    line_px = int(42 * scale)
    panel = np.zeros((len(wrapped) * line_px + 10, width_px, 3), np.uint8)
    for i, (chunk, colour, swatch) in enumerate(wrapped):
        y = 6 + (i + 1) * line_px - int(10 * scale)
        x = 6
        if swatches:
            if swatch:
                cv2.rectangle(panel, (x, y - 11), (x + 12, y + 1), colour, -1 if colour != _GREY else 1)
            x += 22
            colour = _WHITE
        cv2.putText(panel, chunk, (x, y), _FONT, scale, colour, 1, cv2.LINE_AA)
    return panel


def _verdict_colour(decision: Decision) -> tuple[int, int, int]:
    return _RED if decision.decision == "reject" else (0, 200, 0)


def _header(decision: Decision, width_px: int) -> U8Array:
    threshold = "" if decision.threshold is None else f" (threshold {decision.threshold:.2f})"
    title = (
        f"bunch {decision.bunch_id}   {decision.decision.upper()}: {decision.reason}   "
        f"score {decision.score:.3f}{threshold}"
    )
    lines = [(title, _verdict_colour(decision))]
    if decision.detail:
        lines.append((f"why: {decision.detail}", _WHITE))
    return _text_panel(lines, width_px, 0.6)


def _frames_line(decision: Decision, picture_frame: int | None) -> str:
    judged = ", ".join(str(f) for f in decision.judged_frames if f >= 0) or "none"
    eta_s = decision.fire_at_s - decision.t_capture_s
    picture = "" if picture_frame is None else f"; picture from frame {picture_frame}"
    return f"judged on frame(s) {judged}{picture}; at the ejector {eta_s:.2f} s after frame {decision.frame}"


def _legend(
    decision: Decision, width_px: int, picture_frame: int, inspected: bool = True, hatched: bool = False
) -> U8Array:
    threshold = 0.5 if decision.threshold is None else decision.threshold
    lines = []
    if not inspected:
        lines.append(("no inspected frame showed this bunch: the picture is a frame that was not inspected", _YELLOW))
    if hatched:
        lines.append(("[#] hatched orange: the part of the bunch no inspected frame showed", (0, 140, 255)))
    lines += [
        (_frames_line(decision, picture_frame), _GREY),
        (f"[#] left: the bunch as the camera saw it in frame {picture_frame}; right: the same with the heat map", _GREY),
        ("[#] heat map: blue = little, red = strong evidence of a spider (tile FAMs weighted by probability)", (255, 0, 0)),
        ("[#] thin grey lines: the tiles the model inspected (they overlap; several sizes)", _GREY),
        (f"[#] red box: a tile at or above the threshold {threshold:.2f}, with its spider probability", _RED),
        ("[#] white box: the most suspicious tiles below the threshold, with their probability", _WHITE),
        ("[#] yellow cross: where the evidence is strongest in this picture", _YELLOW),
    ]
    return _text_panel(lines, width_px, 0.5, swatches=True)


# ------------------------------------------------------------------------------------------------ pictures
def render(snapshot: Snapshot, decision: Decision, label_top: int = 3) -> U8Array:
    """Header (verdict, score, threshold, why) | crop and heat-map crop side by side | legend and judged frames."""
    scale = max(1, int(np.ceil(MIN_PAIR_WIDTH_PX / max(1, 2 * snapshot.crop_bgr.shape[1]))))
    h, w = snapshot.crop_bgr.shape[:2]
    crop = snapshot.crop_bgr
    heat = np.asarray(snapshot.heat, np.float32)
    if scale > 1:  # enlarge first, then draw: lines and labels stay thin and sharp
        crop = np.asarray(cv2.resize(crop, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST), np.uint8)
        heat = np.asarray(cv2.resize(heat, (w * scale, h * scale), interpolation=cv2.INTER_LINEAR), np.float32)
    threshold = 0.5 if decision.threshold is None else decision.threshold
    over = heat_overlay(crop, heat)
    grid = over.copy()
    boxes = (np.asarray(snapshot.tiles_xyxy, np.int64).reshape(-1, 4) * scale).tolist()
    probs = snapshot.tile_probs.tolist()
    for x1, y1, x2, y2 in boxes:
        cv2.rectangle(grid, (x1, y1), (x2 - 1, y2 - 1), _WHITE, 1)
    over = np.asarray(cv2.addWeighted(grid, 0.35, over, 0.65, 0), np.uint8)
    top = sorted(range(len(probs)), key=lambda i: -probs[i])[:label_top]
    for i in top:
        x1, y1, x2, y2 = boxes[i]
        colour = _RED if probs[i] >= threshold else _WHITE
        cv2.rectangle(over, (x1, y1), (x2 - 1, y2 - 1), colour, 2)
        org = (max(0, x1) + 4, max(16, y1 + 18))
        cv2.putText(over, f"{probs[i]:.2f}", org, _FONT, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(over, f"{probs[i]:.2f}", org, _FONT, 0.55, colour, 1, cv2.LINE_AA)
    mark = marker_xy(snapshot)
    if mark is not None:
        centre = (round((mark[0] + 0.5) * scale), round((mark[1] + 0.5) * scale))
        cv2.drawMarker(over, centre, (0, 0, 0), cv2.MARKER_CROSS, 24, 5)
        cv2.drawMarker(over, centre, _YELLOW, cv2.MARKER_CROSS, 22, 2)
    hatched = hatch_unseen(over, snapshot, scale)
    pair = np.hstack([crop, over])
    width = pair.shape[1]
    legend = _legend(decision, width, snapshot.frame, snapshot.inspected, hatched)
    return np.vstack([_header(decision, width), pair, legend])


def _to_travel_right(image: U8Array, axis: int, sign: int) -> U8Array:
    """Turn a frame so the belt travels left to right in the picture."""
    out = np.ascontiguousarray(image.transpose(1, 0, 2)) if axis == 1 else image
    return np.ascontiguousarray(out[:, ::-1]) if sign < 0 else out


def render_gap(gap: GapSnapshot, decision: Decision, width_px: int = 960) -> U8Array:
    """The unseen stretch of belt as a schematic along the direction of travel (left to right): the frame after the
    gap | the stretch no frame showed (hatched red) | the last frame before the gap, each as long as it is on the
    belt (a very long stretch is drawn shortened, its length written on it)."""
    after = _to_travel_right(gap.after_small, gap.travel_axis, gap.travel_sign)
    before = None if gap.before_small is None else _to_travel_right(gap.before_small, gap.travel_axis, gap.travel_sign)
    unseen_px = max(0.0, gap.moved_px - gap.view_px)
    drawn_unseen = min(unseen_px, 3.0 * gap.view_px)  # shortened beyond three views
    total = gap.view_px * 2 + drawn_unseen
    strip_w = width_px - 20
    unseen_w = max(40, round(strip_w * drawn_unseen / total))  # a short stretch still shows
    view_w = (strip_w - unseen_w) // 2
    view_h = max(20, round(view_w * after.shape[0] / max(1, after.shape[1])))
    strip = np.zeros((view_h + 84, width_px, 3), np.uint8)
    y0 = 40
    x = 10
    strip[y0 : y0 + view_h, x : x + view_w] = cv2.resize(after, (view_w, view_h), interpolation=cv2.INTER_AREA)
    cv2.putText(strip, f"frame {gap.frame} (after)", (x, y0 - 8), _FONT, 0.5, _WHITE, 1, cv2.LINE_AA)
    x += view_w
    hatch = strip[y0 : y0 + view_h, x : x + unseen_w]
    hatch[:] = (30, 30, 90)
    for k in range(-view_h, unseen_w, 14):
        cv2.line(hatch, (k, view_h), (k + view_h, 0), _RED, 1, cv2.LINE_AA)
    cv2.rectangle(strip, (x, y0), (x + unseen_w - 1, y0 + view_h - 1), _RED, 2)
    label = f"{unseen_px * gap.mm_per_px:.0f} mm never seen" + (" (drawn shortened)" if drawn_unseen < unseen_px else "")
    cv2.putText(strip, label, (x + 6, y0 + view_h // 2), _FONT, 0.55, _WHITE, 2, cv2.LINE_AA)
    cv2.putText(strip, label, (x + 6, y0 + view_h // 2), _FONT, 0.55, _RED, 1, cv2.LINE_AA)
    x += unseen_w
    if before is not None:
        strip[y0 : y0 + view_h, x : x + view_w] = cv2.resize(before, (view_w, view_h), interpolation=cv2.INTER_AREA)
    else:
        cv2.putText(strip, "not kept", (x + 6, y0 + view_h // 2), _FONT, 0.5, _GREY, 1, cv2.LINE_AA)
    before_name = "before" if gap.frame_before is None else f"frame {gap.frame_before} (before)"
    cv2.putText(strip, before_name, (x, y0 - 8), _FONT, 0.5, _WHITE, 1, cv2.LINE_AA)
    cv2.arrowedLine(strip, (10, view_h + y0 + 18), (width_px - 10, view_h + y0 + 18), _GREY, 1, tipLength=0.01)
    cv2.putText(strip, "belt travel", (width_px // 2 - 40, view_h + y0 + 38), _FONT, 0.5, _WHITE, 1, cv2.LINE_AA)
    legend = _text_panel(
        [
            (_frames_line(decision, None), _GREY),
            ("[#] hatched red: belt that passed the camera between two frames; no frame showed it, so it is "
             "rejected across the whole belt width", _RED),
            ("[#] pictures: the frames on either side of the gap, placed where their belt was when the gap ended",
             _GREY),
        ],
        width_px,
        0.5,
        swatches=True,
    )
    return np.vstack([_header(decision, width_px), strip, legend])


def render_card(decision: Decision, width_px: int = 960) -> U8Array:
    """A reject no frame was kept for (a model error, evidence off at the time): the verdict and the reason."""
    note = _text_panel(
        [
            (_frames_line(decision, None), _GREY),
            ("no picture: no inspected frame of this bunch was kept; the reason above is all that is known", _GREY),
        ],
        width_px,
        0.5,
    )
    return np.vstack([_header(decision, width_px), note])


def render_any(item: EvidenceItem | None, decision: Decision) -> U8Array:
    """The evidence picture of a decision, whatever is known of it."""
    if isinstance(item, Snapshot):
        return render(item, decision)
    if isinstance(item, GapSnapshot):
        return render_gap(item, decision)
    return render_card(decision)


def overlay_frame(
    frame_bgr: U8Array,
    heat: HeatMap | None,
    plan: TilePlan | None,
    boxes: list[tuple[int, Box, str]],
    vmax: float,
) -> U8Array:
    """A frame for the annotated video: heat overlay, tile grid, bunch boxes labelled with id and state."""
    out = frame_bgr.copy()
    if heat is not None:
        h, w = out.shape[:2]
        full = cv2.resize(heat.values, (heat.box.wh[0], heat.box.wh[1]), interpolation=cv2.INTER_LINEAR)[:h, :w]
        out = heat_overlay(out, full, vmax)
    if plan is not None:
        for x1, y1, x2, y2 in plan.boxes_xyxy().tolist():
            cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), (200, 200, 200), 1)
    for bunch_id, box, label in boxes:
        colour = (0, 0, 255) if "reject" in label else (0, 220, 0)
        cv2.rectangle(out, (box.x1, box.y1), (box.x2 - 1, box.y2 - 1), colour, 2)
        cv2.putText(
            out, f"#{bunch_id} {label}", (box.x1, max(12, box.y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1
        )
    return out
