"""int8 static quantisation of a contract model (ONNX Runtime), calibrated on spider-free and spider tiles.

    inspector model quantize MODEL.onnx [--out MODEL.int8.onnx] [--tiles DIR] [--footage DIR] [--calib-n 64]
                             [--eval-n 96] [--seed 0]

Calibration and evaluation tiles come from a tile set made by ``inspector tiles make`` (``--tiles DIR``: its
``tiles.npz``), else they are cut from generated footage (``inspector.synth.generate_footage``, or ``--footage DIR``
holding ``footage.avi`` + ``labels.jsonl`` + ``calibration.yaml``): spider tiles at the planned tile scale around each
labelled spider, spider-free tiles over bunches without a spider. Calibration and evaluation tiles never overlap.

Conv, Gemm, MatMul, MaxPool and Relu are quantised (QDQ, int8 weights per channel, uint8 activations with reduced
range so AVX2 machines without VNNI do not saturate); the in-graph channel sums (ReduceSum) run in float on the
dequantised pool outputs, so ``fam1..fam5`` and ``logits`` remain float32 outputs. Writes ``MODEL.int8.onnx`` and its manifest ``MODEL.int8.yaml`` (the original
manifest with ``name`` + ``-int8``): the daemon loads it like any other model (``model.path``). Prints fp32 vs int8
speed, accuracy and agreement on the evaluation tiles.
"""

from __future__ import annotations

import json
import logging
import resource
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from inspector.config import load_calibration
from inspector.errors import InspectorError, ModelError
from inspector.model import Model, load_manifest, manifest_path
from inspector.synth.tiles import scale_for_span
from inspector.tiling import tile_scales

log = logging.getLogger(__name__)

QUANTIZED_OPS = ["Conv", "Gemm", "MatMul", "MaxPool", "Relu"]


# ------------------------------------------------------------------------------------------------ tiles
@dataclass
class TileData:
    """uint8 BGR tiles (N, S, S, 3) and labels (N,) with 1 = spider."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: np.ndarray) -> TileData:
        return TileData(self.images[idx], self.labels[idx])


def _place(lo: int, hi: int, tile: int, length: int, rng: np.random.Generator) -> int | None:
    """Start of a tile of side `tile` holding [lo, hi) inside [0, length); None when impossible."""
    first, last = max(0, hi - tile), min(lo, length - tile)
    if last < first:
        return None
    return int(rng.integers(first, last + 1))


def _overlaps(a: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]]) -> bool:
    return any(min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1]) for b in boxes)


def tiles_from_footage(footage_dir: Path, n_pos: int, n_neg: int, seed: int = 0, size: int = 224) -> TileData:
    """Cut spider and spider-free tiles from ``footage.avi`` using ``labels.jsonl`` and ``calibration.yaml``.

    Spider tiles: the tile scale planned for the labelled span, placed at random so the spider box lies wholly
    inside. Spider-free tiles: a random tile of a random scale centred inside a spider-free bunch, touching no spider.
    """
    video, labels_path = footage_dir / "footage.avi", footage_dir / "labels.jsonl"
    if not video.is_file() or not labels_path.is_file():
        raise InspectorError(f"{footage_dir}: needs footage.avi and labels.jsonl (inspector.synth.generate_footage)")
    cal = load_calibration(footage_dir / "calibration.yaml")
    scales = tile_scales(cal)
    labels = [json.loads(line) for line in labels_path.read_text().splitlines() if line.strip()]
    rng = np.random.default_rng(seed)
    spiders: dict[int, list[tuple[int, int, int, int]]] = {}
    for lab in labels:
        for f, *box in lab["spider_track"]:
            spiders.setdefault(int(f), []).append(tuple(box))
    cap = cv2.VideoCapture(str(video))
    frames: list[np.ndarray] = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    if not frames:
        raise InspectorError(f"{video}: no frame could be read")
    h, w = frames[0].shape[:2]
    want: list[tuple[int, tuple[int, int, int, int], int]] = []  # frame, tile xyxy, label
    pos_cands = [(lab, e) for lab in labels if lab["spider"] for e in lab["spider_track"]]
    neg_cands = [(lab, e) for lab in labels if not lab["spider"] for e in lab["track"]]
    for kind, cands, n in ((1, pos_cands, n_pos), (0, neg_cands, n_neg)):
        order = rng.permutation(len(cands))
        for k in order:
            if sum(1 for x in want if x[2] == kind) >= n:
                break
            lab, (f, x1, y1, x2, y2) = cands[int(k)]
            if f >= len(frames):
                continue
            if kind == 1:
                scale = scale_for_span(scales, float(lab["spider_span_mm"] or cal.spider_span_mm[0]))
                t = scale.tile_px
                if x1 <= 0 or y1 <= 0 or x2 >= w or y2 >= h:  # spider cut by the frame edge
                    continue
                sx, sy = _place(x1, x2, t, w, rng), _place(y1, y2, t, h, rng)
            else:
                t = scales[int(rng.integers(len(scales)))].tile_px
                cx, cy = int(rng.integers(x1, max(x1 + 1, x2))), int(rng.integers(y1, max(y1 + 1, y2)))
                sx = min(max(0, cx - t // 2), w - t)
                sy = min(max(0, cy - t // 2), h - t)
            if sx is None or sy is None or t > min(w, h):
                continue
            box = (sx, sy, sx + t, sy + t)
            if kind == 0 and _overlaps(box, spiders.get(int(f), [])):
                continue
            want.append((int(f), box, kind))
    if not want:
        raise InspectorError(f"{footage_dir}: no tile could be cut (footage too short or without bunches)")
    images = np.empty((len(want), size, size, 3), np.uint8)
    for i, (f, (a, b, c, d), _) in enumerate(want):
        crop = frames[f][b:d, a:c]
        interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
        images[i] = cv2.resize(crop, (size, size), interpolation=interp)
    return TileData(images, np.array([k for _, _, k in want], np.int8))


def tiles_from_set(tiles_dir: Path, size: int = 224) -> TileData:
    """A tile set written by ``inspector tiles make`` (tiles.npz: images, labels), resized to `size` when needed."""
    path = tiles_dir / "tiles.npz"
    if not path.is_file():
        raise InspectorError(f"{tiles_dir}: no tiles.npz; make one with inspector tiles make --out {tiles_dir}")
    with np.load(path) as z:
        images, labels = np.asarray(z["images"]), np.asarray(z["labels"]).astype(np.int8)
    if images.shape[1:3] != (size, size):
        images = np.stack([cv2.resize(t, (size, size), interpolation=cv2.INTER_AREA) for t in images])
    return TileData(images, labels)


def generated_tiles(work: Path, n_pos: int, n_neg: int, seed: int, seconds: float = 20.0, size: int = 224) -> TileData:
    """Tiles cut from footage generated into `work` (generated once, reused when already there)."""
    from inspector.synth import generate_footage

    out = work / f"tiles_footage_s{seed}"
    if not (out / "labels.jsonl").is_file():
        generate_footage(out, width=960, height=540, fps=10.0, seconds=seconds, seed=seed, spider_fraction=0.5)
    return tiles_from_footage(out, n_pos, n_neg, seed, size)


def split_tiles(tiles: TileData, n_calib: int, seed: int) -> tuple[TileData, TileData]:
    """(calibration, evaluation): stratified, disjoint; calibration gets `n_calib` tiles, half of each label."""
    rng = np.random.default_rng(seed)
    calib: list[int] = []
    rest: list[int] = []
    for label in (0, 1):
        idx = rng.permutation(np.nonzero(tiles.labels == label)[0])
        k = min(len(idx) // 2, n_calib // 2)
        calib += idx[:k].tolist()
        rest += idx[k:].tolist()
    return tiles.take(np.array(sorted(calib), np.int64)), tiles.take(np.array(sorted(rest), np.int64))


# ------------------------------------------------------------------------------------------------ quantise
def _reader(batches: list[dict[str, np.ndarray]]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class TileReader(CalibrationDataReader):
        """Preprocessed calibration batches, fed once each."""

        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(batches)

    return TileReader()


def require_onnx() -> None:
    """onnxruntime's quantiser needs the onnx package, which is not a runtime dependency."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ModelError(
            "int8 quantisation needs the onnx package: pip install 'grape-spider-inspector[train]' (or pip install onnx)"
        ) from None


def int8_path(onnx_path: Path) -> Path:
    """``NAME.onnx`` -> ``NAME.int8.onnx``."""
    return onnx_path.with_name(onnx_path.stem + ".int8.onnx")


def quantize_model(onnx_path: Path, out_path: Path, calib_tiles_bgr: np.ndarray, batch: int = 8) -> Path:
    """Static int8 quantisation calibrated on `calib_tiles_bgr`; writes `out_path` and its manifest beside it."""
    require_onnx()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    manifest = load_manifest(onnx_path)
    if len(calib_tiles_bgr) == 0:
        raise InspectorError("no calibration tiles: give --tiles DIR or let the command generate footage")
    with Model(onnx_path, ("cpu",), batch_size=batch) as model:
        x = model.preprocess(calib_tiles_bgr)
    feeds = [{manifest.input.name: x[i : i + batch]} for i in range(0, len(x), batch)]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        except Exception as exc:  # onnx/ORT raise their own types; quantising without the pre-pass still works
            log.warning("pre-processing skipped (%s)", str(exc).splitlines()[0] if str(exc) else exc)
            pre = onnx_path
        quantize_static(
            str(pre),
            str(out_path),
            _reader(feeds),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    write_int8_manifest(onnx_path, out_path)
    return out_path


def write_int8_manifest(fp32_onnx: Path, int8_onnx: Path) -> Path:
    """Copy the fp32 model's manifest beside the int8 model with ``name`` + ``-int8``."""
    src = manifest_path(fp32_onnx)
    if src is None:
        raise ModelError(f"{fp32_onnx}: no manifest beside it; nothing to copy for the int8 model")
    data = yaml.safe_load(src.read_text()) if src.suffix != ".json" else json.loads(src.read_text())
    data["name"] = f"{data['name']}-int8"
    desc = data.get("description")
    note = f"int8 static quantisation (inspector model quantize) of {fp32_onnx.name}"
    data["description"] = f"{desc}; {note}" if desc else note
    card = data.get("model_card")
    if card and not Path(card).is_absolute() and int8_onnx.parent.resolve() != fp32_onnx.parent.resolve():
        data["model_card"] = str((fp32_onnx.parent / card).resolve())
    dst = int8_onnx.with_suffix(".yaml")
    dst.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110))
    load_manifest(int8_onnx)  # the copy validates like any manifest
    return dst


# ------------------------------------------------------------------------------------------------ compare
@dataclass
class Comparison:
    n_tiles: int
    n_spider: int
    fp32_tiles_s: float
    int8_tiles_s: float
    speedup: float  # best wall time fp32 / int8
    speedup_cpu: float  # best CPU time fp32 / int8 (robust on a shared machine)
    fp32_accuracy: float
    int8_accuracy: float
    agreement: float  # same decision at threshold
    max_abs_dprob: float
    mean_abs_dprob: float
    fam_correlation: float  # Pearson r of the Eq. 1 maps, fp32 vs int8
    fp32_mb: float
    int8_mb: float


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed_infer(model: Model, tiles: np.ndarray) -> tuple[Any, float, float]:
    """(inference, wall s, CPU s) of one pass over `tiles`."""
    w0, c0 = time.perf_counter(), _cpu_s()
    result = model.infer(tiles)
    return result, time.perf_counter() - w0, _cpu_s() - c0


def compare(
    fp32: Path, int8: Path, tiles: TileData, threshold: float = 0.5, batch: int = 16, repeats: int = 2
) -> Comparison:
    """Speed (best of `repeats`, alternating), accuracy and agreement of the two models on the same tiles."""
    from inspector.fam import tile_fam

    wall = {"fp32": float("inf"), "int8": float("inf")}
    cpu = dict(wall)
    with Model(fp32, ("cpu",), batch_size=batch) as m32, Model(int8, ("cpu",), batch_size=batch) as m8:
        m32.warmup()
        m8.warmup()
        for _ in range(max(1, repeats)):  # alternate, keep the best of each
            for key, model in (("fp32", m32), ("int8", m8)):
                out, w, c = _timed_infer(model, tiles.images)
                wall[key], cpu[key] = min(wall[key], w), min(cpu[key], c)
                if key == "fp32":
                    a = out
                else:
                    b = out
        scale = m32.manifest.fam_layer_scale
    pa, pb = a.spider_prob, b.spider_prob
    fa = tile_fam(a.fams, 56, "normalized", scale).reshape(len(tiles), -1)
    fb = tile_fam(b.fams, 56, "normalized", scale).reshape(len(tiles), -1)
    fa_c, fb_c = fa - fa.mean(axis=1, keepdims=True), fb - fb.mean(axis=1, keepdims=True)
    den = np.sqrt((fa_c**2).sum(axis=1) * (fb_c**2).sum(axis=1))
    corr = float(np.mean(np.where(den > 0, (fa_c * fb_c).sum(axis=1) / np.maximum(den, 1e-30), 1.0)))
    y = tiles.labels.astype(bool)
    return Comparison(
        n_tiles=len(tiles),
        n_spider=int(y.sum()),
        fp32_tiles_s=len(tiles) / wall["fp32"],
        int8_tiles_s=len(tiles) / wall["int8"],
        speedup=wall["fp32"] / wall["int8"],
        speedup_cpu=cpu["fp32"] / cpu["int8"],
        fp32_accuracy=float(np.mean((pa >= threshold) == y)),
        int8_accuracy=float(np.mean((pb >= threshold) == y)),
        agreement=float(np.mean((pa >= threshold) == (pb >= threshold))),
        max_abs_dprob=float(np.max(np.abs(pa - pb))),
        mean_abs_dprob=float(np.mean(np.abs(pa - pb))),
        fam_correlation=corr,
        fp32_mb=fp32.stat().st_size / 1e6,
        int8_mb=int8.stat().st_size / 1e6,
    )


def format_comparison(c: Comparison) -> str:
    return (
        f"{c.n_tiles} evaluation tiles ({c.n_spider} spider): fp32 {c.fp32_tiles_s:.1f} tiles/s, "
        f"int8 {c.int8_tiles_s:.1f} tiles/s (x{c.speedup:.2f} wall, x{c.speedup_cpu:.2f} CPU time); accuracy fp32 {100 * c.fp32_accuracy:.1f} % -> "
        f"int8 {100 * c.int8_accuracy:.1f} %; same decision on {100 * c.agreement:.1f} % of tiles; "
        f"|dp| mean {c.mean_abs_dprob:.4f} max {c.max_abs_dprob:.4f}; FAM r {c.fam_correlation:.4f}; "
        f"size {c.fp32_mb:.1f} MB -> {c.int8_mb:.1f} MB"
    )


# ------------------------------------------------------------------------------------------------ the command
def load_tiles(
    work: Path,
    size: int,
    n: int,
    seed: int,
    tiles_dir: Path | None = None,
    footage_dir: Path | None = None,
) -> TileData:
    """A tile set (`tiles_dir`), else `n` tiles cut from `footage_dir`, else from footage generated into `work`."""
    if tiles_dir is not None:
        return tiles_from_set(tiles_dir, size)
    if footage_dir is not None:
        return tiles_from_footage(footage_dir, n // 2, n - n // 2, seed, size)
    return generated_tiles(work, n // 2, n - n // 2, seed, size=size)
