"""Evidence pictures: what the inspector saw when it judged a bunch — crop, heat-map overlay, tile grid, score.

`Snapshot` is taken by the pipeline from the most central *inspected* frame of each bunch (cheap: a crop and a heat
patch); `render` draws it once the bunch is decided. `overlay_frame` draws a whole frame for the annotated video.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from inspector.types import Box, Decision, HeatMap, TilePlan, U8Array

MARGIN_PX = 24


@dataclass(frozen=True)
class Snapshot:
    crop_bgr: U8Array  # the bunch box plus a margin, from the inspected frame
    crop_box: Box  # where the crop sits in the frame
    heat: np.ndarray  # frame heat map cut to crop_box, resized to the crop's size
    tiles_xyxy: np.ndarray  # (N, 4) tile boxes relative to the crop
    tile_probs: np.ndarray  # (N,)
    frame: int
    travel_xy: tuple[float, float] = (0.0, 0.0)  # belt travel when this frame was taken
    peak_xy: tuple[float, float] | None = None  # the bunch heat map's peak in this frame's pixels (set at the verdict)


def take_snapshot(
    frame_bgr: U8Array,
    heat: HeatMap,
    plan: TilePlan,
    probs: np.ndarray,
    box: Box,
    frame: int,
    travel_xy: tuple[float, float] = (0.0, 0.0),
) -> Snapshot:
    h, w = frame_bgr.shape[:2]
    crop_box = Box(
        max(0, box.x1 - MARGIN_PX), max(0, box.y1 - MARGIN_PX), min(w, box.x2 + MARGIN_PX), min(h, box.y2 + MARGIN_PX)
    )
    x1, y1, x2, y2 = crop_box.xyxy
    crop = frame_bgr[y1:y2, x1:x2].copy()
    gh, gw = heat.values.shape
    sx, sy = gw / heat.box.wh[0], gh / heat.box.wh[1]
    gx1, gy1 = int(x1 * sx), int(y1 * sy)
    gx2, gy2 = max(gx1 + 1, int(np.ceil(x2 * sx))), max(gy1 + 1, int(np.ceil(y2 * sy)))
    patch = cv2.resize(heat.values[gy1:gy2, gx1:gx2], (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    boxes = plan.boxes_xyxy()
    overlap = (boxes[:, 2] > x1) & (boxes[:, 0] < x2) & (boxes[:, 3] > y1) & (boxes[:, 1] < y2)
    rel = boxes[overlap] - np.array([x1, y1, x1, y1], np.int32)
    return Snapshot(crop, crop_box, patch, rel, np.asarray(probs)[overlap], frame, travel_xy)


def heat_overlay(image_bgr: U8Array, heat: np.ndarray, vmax: float | None = None, alpha: float = 0.45) -> U8Array:
    """Blend a JET colour map of `heat` (same H, W as the image) over it; `vmax` fixes the colour scale."""
    top = float(vmax if vmax is not None else max(float(heat.max()), 1e-9))
    norm = np.clip(heat / top * 255.0, 0, 255).astype(np.uint8)
    colour = cv2.applyColorMap(norm, cv2.COLORMAP_JET)
    weight = (alpha * (norm.astype(np.float32) / 255.0))[..., None]
    out = image_bgr.astype(np.float32) * (1 - weight) + colour.astype(np.float32) * weight
    return np.asarray(out.clip(0, 255), np.uint8)


def render(snapshot: Snapshot, decision: Decision, scale: int = 2, label_top: int = 3) -> U8Array:
    """Bunch crop | the crop with its heat map, tile grid and peak; the most suspicious tiles carry their probability.

    Grid lines are faint (tiles overlap, several scales); tiles at p >= 0.5 are outlined red; the `label_top` most
    probable tiles are labelled so the picture stays readable."""
    crop = snapshot.crop_bgr
    over = heat_overlay(crop, snapshot.heat)
    grid = over.copy()
    boxes, probs = snapshot.tiles_xyxy.tolist(), snapshot.tile_probs.tolist()
    for x1, y1, x2, y2 in boxes:
        cv2.rectangle(grid, (x1, y1), (x2 - 1, y2 - 1), (255, 255, 255), 1)
    over = np.asarray(cv2.addWeighted(grid, 0.35, over, 0.65, 0), np.uint8)
    top = sorted(range(len(probs)), key=lambda i: -probs[i])[:label_top]
    for i in top:
        x1, y1, x2, y2 = boxes[i]
        colour = (0, 0, 255) if probs[i] >= 0.5 else (255, 255, 255)
        cv2.rectangle(over, (x1, y1), (x2 - 1, y2 - 1), colour, 1)
        org = (max(0, x1) + 2, max(11, y1 + 11))
        cv2.putText(over, f"{probs[i]:.2f}", org, cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(over, f"{probs[i]:.2f}", org, cv2.FONT_HERSHEY_PLAIN, 0.8, colour, 1, cv2.LINE_AA)
    if snapshot.peak_xy is not None:  # decision.spider_xy is in the pixels of another frame (the most central one)
        px = round(snapshot.peak_xy[0] - snapshot.crop_box.x1)
        py = round(snapshot.peak_xy[1] - snapshot.crop_box.y1)
        cv2.drawMarker(over, (px, py), (0, 255, 255), cv2.MARKER_CROSS, 14, 2)
    pair = np.hstack([crop, over])
    pair = cv2.resize(pair, (pair.shape[1] * scale, pair.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    banner = np.zeros((36, pair.shape[1], 3), np.uint8)
    eta_s = decision.fire_at_s - decision.t_capture_s
    text = (
        f"bunch {decision.bunch_id}  {decision.decision.upper()} ({decision.reason})  score {decision.score:.3f}  "
        f"seen in frame {snapshot.frame}; at the ejector {eta_s:.2f} s after frame {decision.frame}"
    )
    colour = (0, 0, 255) if decision.decision == "reject" else (0, 200, 0)
    cv2.putText(banner, text, (6, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.55, colour, 1, cv2.LINE_AA)
    return np.vstack([banner, pair])


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
