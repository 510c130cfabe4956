"""Measured speed against the limits, side by side with baselines, in one run on one machine.

    nice -n 10 inspector bench [--json bench.json] [--work DIR] [--quick] [--no-vgg16] [--model M.onnx]

Sections (every figure comes from this run; ratios are ours / baseline):

1. Inference: raw onnxruntime tiles/s (``session.run`` on preprocessed random tiles at the configured batch, asking
   for logits + fam1..fam5) vs the pipeline's tiles/s on the same model (``Pipeline.process`` on generated footage:
   tiles inferred / time spent in ``process`` on inspected frames, i.e. inference + crop/preprocess/FAM/stitch/
   belt overhead) -> efficiency.
2. FAM cost: the same graph with fam1..fam5 outputs vs a logits-only copy (dead branches cut with
   ``onnx.utils.Extractor``) -> extra %; plus ``tile_fam`` + ``stitch`` per frame on the host. The seed paper: 10-15 s
   per map against 0.25 s per classification.
3. Throughput: the seed paper's per-image baseline (``belt.mode: whole_frame``: every frame tiled whole at 25 %
   overlap, no produce mask) vs our pipeline (``belt.mode: belt``: tiles over the produce mask only,
   belt-synchronised frame selection). Model: an inspected frame costs ``t_frame = t_overhead + n_tiles * t_tile``
   (``t_overhead`` = measured time of a frame that is segmented and tracked but not inspected; ``t_tile`` = measured
   pipeline time per tile); in real time the belt advances ``v * (t_frame + 1/fps)`` between two inspected frames
   at most (the next frame read is the one due when the inspection ends), and zero ``uninspected`` bunches needs
   that to stay within ``view length - largest spider`` (every spider wholly inside some inspected frame), so
   ``v_max = (L_view - s_max) / (k * (t_frame + 1/fps))`` with k = 1 (zero uninspected) or k =
   ``belt.inspections_per_point`` (the configured margin). ``n_tiles`` is the 95th percentile over frames holding
   produce (counted on every frame of the footage). Belt area inspected per second = ``v_max(k=1) * belt width in
   view``. Full-width VGG16: same tile counts and per-tile host overhead, its own raw per-tile inference time.
4. Latency: capture -> reject sent, p50/p99, the pipeline in-process on a realtime-paced video source (capture time =
   the frame's scheduled arrival, so queueing behind a slow inspection counts), at the nominal frame rate and at
   twice it (footage generated at both rates, same belt speed).
5. Peak memory (``ru_maxrss``) after the pipeline sections (before full-width VGG16 is loaded) and at the end.
6. int8 static quantisation (inspector/quantize.py) vs fp32 on evaluation tiles cut from the footage.
7. Achieved GFLOP/s (conv + fully-connected FLOPs counted from the graph's weight shapes and input size) against a
   GEMM peak measured here (numpy float32 matmul, best of a few).

``--quick`` (CI smoke, seconds): tiny footage, no full-width VGG16, no whole-frame check, short latency runs.
Timings are best-of-N on a shared machine; the ratios are the figures to compare across machines.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inspector import quantize
from inspector.config import (
    BeltConfig,
    Calibration,
    Config,
    ModelConfig,
    load_calibration,
)
from inspector.errors import InspectorError
from inspector.fam import stitch, tile_fam
from inspector.model import Model, load_manifest
from inspector.pipeline import FAM_SIZE, HEAT_DOWNSCALE, Pipeline
from inspector.tiling import baseline_scales, plan_tiles, tile_scales
from inspector.types import FrameRef

PAPER_MAP_S = (10.0, 15.0)  # seed paper: seconds per feature activation map
PAPER_CLASSIFY_S = 0.25  # seed paper: seconds per classification


# ------------------------------------------------------------------------------------------------ machine
def machine_info() -> dict[str, Any]:
    import onnxruntime

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Smallest wall time of `repeats` calls (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cpu_s() -> float:
    """CPU seconds used by this process (all threads, user + system): barely moved by other processes' load."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call."""
    w0, c0 = time.perf_counter(), cpu_s()
    fn()
    return time.perf_counter() - w0, cpu_s() - c0


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, np.float64), q)) if values else None


# ------------------------------------------------------------------------------------------------ FLOPs and GEMM
def gemm_peak(n: int = 2048, repeats: int = 3) -> tuple[float, float]:
    """float32 n x n matrix multiply with numpy's BLAS (2 n^3 FLOP), best of `repeats`.

    Returns (GFLOP/s of wall time, GFLOP per CPU-second): the second is barely moved by other processes' load.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up (thread pool start)
    wall = cpu = float("inf")
    for _ in range(max(1, repeats)):
        w, c = timed(lambda: a @ b)
        wall, cpu = min(wall, w), min(cpu, c)
    flop = 2.0 * n**3
    return flop / wall / 1e9, flop / max(cpu, 1e-9) / 1e9


def gemm_peak_gflops(n: int = 2048, repeats: int = 3) -> float:
    """GFLOP/s (wall) of `gemm_peak`."""
    return gemm_peak(n, repeats)[0]


def conv_fc_flops(model: Any) -> float:
    """FLOPs of one input tile (batch 1) in Conv, Gemm and MatMul nodes: 2 multiply-adds per weight use.

    Conv: ``2 * Cout * Hout * Wout * (Cin/groups) * kh * kw`` with the output size from ONNX shape inference;
    Gemm/MatMul with a weight initializer ``(K, M)``: ``2 * K * M``.
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    shapes: dict[str, list[int | None]] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    weights = {init.name: tuple(int(d) for d in init.dims) for init in graph.initializer}
    total = 0.0
    for node in graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in weights:
            w = weights[node.input[1]]
            out = shapes.get(node.output[0])
            if out is None or len(out) < 3 or any(d is None for d in out[2:]):
                raise ValueError(f"cannot infer the output size of Conv {node.name or node.output[0]}")
            spatial = int(np.prod([int(d) for d in out[2:] if d is not None]))
            total += 2.0 * w[0] * spatial * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in weights:
            w = weights[node.input[1]]
            total += 2.0 * float(np.prod(w))
    return total


def logits_only(model: Any, input_name: str, logits_name: str) -> Any:
    """A copy of `model` that computes only `logits` (fam/pool branches removed)."""
    import onnx.utils

    return onnx.utils.Extractor(model).extract_model([input_name], [logits_name])


# ------------------------------------------------------------------------------------------------ raw onnxruntime
def ort_session(model_bytes: bytes, threads: int = 0) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


@dataclass
class RawResult:
    batch: int
    tiles_s_contract: float  # logits + fam1..fam5, best wall time
    tiles_s_logits_only: float
    fam_extra_pct: float  # from the best CPU time of each (robust on a shared machine)
    fam_extra_pct_wall: float  # from the best wall time of each
    cpu_s_per_tile: float  # best CPU seconds per tile, contract outputs


def raw_inference(
    model_bytes: bytes, logits_bytes: bytes, input_name: str, outputs: list[str], size: int, batch: int, repeats: int
) -> RawResult:
    """Raw session.run on preprocessed random tiles: contract outputs vs logits only, interleaved, best of each.

    Rates come from the best wall time; the FAM overhead from the best CPU time of each variant (other processes
    on a shared machine stretch wall time far more than the CPU time of the work itself).
    """
    full, lean = ort_session(model_bytes), ort_session(logits_bytes)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
    feed = {input_name: x}
    full.run(outputs, feed)
    lean.run([outputs[0]], feed)
    wall_full = wall_lean = cpu_full = cpu_lean = float("inf")
    for _ in range(max(1, repeats)):
        w, c = timed(lambda: full.run(outputs, feed))
        wall_full, cpu_full = min(wall_full, w), min(cpu_full, c)
        w, c = timed(lambda: lean.run([outputs[0]], feed))
        wall_lean, cpu_lean = min(wall_lean, w), min(cpu_lean, c)
    return RawResult(
        batch,
        batch / wall_full,
        batch / wall_lean,
        100.0 * (cpu_full / cpu_lean - 1.0),
        100.0 * (wall_full / wall_lean - 1.0),
        cpu_full / batch,
    )


def fam_post_s(model: Model, boxes_xyxy: np.ndarray, frame_wh: tuple[int, int], mode: str, repeats: int) -> float:
    """Host time of tile_fam (Eq. 1 on the 56x56 grid) + stitch for one frame's tiles (random layer maps)."""
    n = int(boxes_xyxy.shape[0])
    s = model.manifest.input.size
    rng = np.random.default_rng(2)
    fams = tuple(rng.random((n, s >> layer, s >> layer), dtype=np.float32) for layer in range(1, 6))
    probs = rng.random(n, dtype=np.float32)
    scale = model.manifest.fam_layer_scale

    def once() -> None:
        maps = tile_fam(fams, FAM_SIZE, mode, scale)  # type: ignore[arg-type]
        stitch(frame_wh, boxes_xyxy, maps, probs, HEAT_DOWNSCALE)

    return best_of(once, repeats)


# ------------------------------------------------------------------------------------------------ footage
@dataclass
class Footage:
    video: Path
    calibration: Calibration
    fps: float
    frame_wh: tuple[int, int]


def make_footage(work: Path, wh: tuple[int, int], fps: float, seconds: float, seed: int) -> Footage:
    """Generated footage (cached in `work` by its parameters)."""
    from inspector.synth import generate_footage

    out = work / f"footage_{wh[0]}x{wh[1]}_{fps:g}fps_{seconds:g}s_s{seed}"
    video = out / "footage.avi"
    if not (out / "labels.jsonl").is_file():
        generate_footage(out, width=wh[0], height=wh[1], fps=fps, seconds=seconds, seed=seed, spider_fraction=0.5)
    return Footage(video, load_calibration(out / "calibration.yaml"), fps, wh)


def iter_frames(video: Path) -> Iterator[np.ndarray]:
    """Decoded frames one at a time (the bench never holds the footage in memory, so ru_maxrss stays honest)."""
    from inspector.sources import VideoFileSource

    with VideoFileSource(video, "max", clock=None) as src:
        while (frame := src.read()) is not None:
            yield frame.image_bgr


# ------------------------------------------------------------------------------------------------ pipeline
def bench_config(model_path: Path, mode: str = "belt", batch: int | None = None) -> Config:
    base = Config()
    model = ModelConfig.model_validate(
        {**base.model.model_dump(), "path": model_path, "batch_size": batch or base.model.batch_size}
    )
    return base.model_copy(update={"model": model, "belt": BeltConfig(mode=mode)})


@dataclass
class PipelineRun:
    frames: int = 0
    inspected: int = 0
    tiles: int = 0
    infer_s: float = 0.0
    inspected_s: float = 0.0  # time in process() on inspected frames
    inspected_cpu_s: float = 0.0  # CPU time of this process in process() on inspected frames
    overhead_frame_s: list[float] = field(default_factory=list)  # process() of frames not inspected
    inspected_frame_s: list[float] = field(default_factory=list)
    inspected_tiles: list[int] = field(default_factory=list)
    decisions: int = 0
    uninspected: int = 0
    raw_tiles: int = 0  # raw onnxruntime batches run between inspected frames (same period, same load)
    raw_wall_s: float = 0.0
    raw_cpu_s: float = 0.0

    @property
    def raw_tiles_s(self) -> float:
        return self.raw_tiles / self.raw_wall_s if self.raw_wall_s > 0 else 0.0

    @property
    def tiles_s(self) -> float:
        return self.tiles / self.inspected_s if self.inspected_s > 0 else 0.0

    @property
    def t_overhead_s(self) -> float:
        return float(np.median(self.overhead_frame_s)) if self.overhead_frame_s else 0.0

    @property
    def t_tile_s(self) -> float:
        """Pipeline time per tile on inspected frames, the per-frame overhead taken out."""
        if not self.tiles:
            return 0.0
        return max(0.0, self.inspected_s - self.t_overhead_s * self.inspected) / self.tiles


def run_pipeline(
    frames: Iterable[np.ndarray],
    footage: Footage,
    config: Config,
    model: Model,
    max_inspected: int | None = None,
    raw_probe: Callable[[], int] | None = None,
) -> PipelineRun:
    """Pipeline.process on every frame at maximum pace (footage time), timing each call.

    `raw_probe` (runs one raw onnxruntime batch, returns its tile count) is called after every inspected frame, so
    the raw baseline is measured over the same period, under the same machine load, as the pipeline.
    """
    run = PipelineRun()
    pipe = Pipeline(config, footage.calibration, model, footage.fps)
    for seq, image in enumerate(frames):
        t0, c0 = time.perf_counter(), cpu_s()
        step = pipe.process(image, FrameRef(0, seq, seq / footage.fps))
        dt, dc = time.perf_counter() - t0, cpu_s() - c0
        run.frames += 1
        run.decisions += len(step.final)
        run.uninspected += sum(d.reason == "uninspected" for d in step.final)
        if step.inspected and step.plan is not None:
            run.inspected += 1
            run.tiles += len(step.plan)
            run.infer_s += step.infer_s
            run.inspected_s += dt
            run.inspected_cpu_s += dc
            run.inspected_frame_s.append(dt)
            run.inspected_tiles.append(len(step.plan))
            if raw_probe is not None:
                t0, c0 = time.perf_counter(), cpu_s()
                run.raw_tiles += raw_probe()
                run.raw_wall_s += time.perf_counter() - t0
                run.raw_cpu_s += cpu_s() - c0
            if max_inspected is not None and run.inspected >= max_inspected:
                break
        else:
            run.overhead_frame_s.append(dt)
    end = pipe.finish()
    run.decisions += len(end.final)
    run.uninspected += sum(d.reason == "uninspected" for d in end.final)
    return run


def tile_plans(frames: Iterable[np.ndarray], calibration: Calibration, config: Config) -> tuple[list[np.ndarray], int]:
    """Belt-mode tile boxes (N, 4) of every frame holding produce, and the tile count of a whole-frame plan."""
    from inspector.belt import BeltSegmenter
    from inspector.types import Box

    scales = tile_scales(calibration, config.tiling.min_fraction, config.tiling.max_fraction)
    seg = BeltSegmenter(config.belt)
    roi = None if calibration.roi_xyxy is None else Box(*calibration.roi_xyxy)
    plans: list[np.ndarray] = []
    wh = (0, 0)
    for f in frames:
        wh = (f.shape[1], f.shape[0])
        boxes = plan_tiles(wh, scales, seg.mask(f), roi).boxes_xyxy()
        if len(boxes):
            plans.append(boxes)
    whole = len(plan_tiles(wh, baseline_scales(scales, config.tiling.baseline_overlap), None, roi))
    return plans, whole


def typical_boxes(plans: list[np.ndarray]) -> np.ndarray:
    """The plan whose tile count is nearest the mean (for timing a typical frame's FAM post-processing)."""
    if not plans:
        return np.zeros((0, 4), np.int32)
    mean = float(np.mean([len(p) for p in plans]))
    return min(plans, key=lambda p: abs(len(p) - mean))


def sustained_speed_mm_s(
    t_frame_s: float, fps: float, view_mm: float, spider_mm: float, inspections_per_point: int = 1
) -> float:
    """Highest belt speed at which every stretch of belt lies in >= k inspected frames (see module doc)."""
    usable = view_mm - spider_mm
    if usable <= 0:
        return 0.0
    return usable / (inspections_per_point * (t_frame_s + 1.0 / fps))


@dataclass
class ThroughputRow:
    model: str
    mode: str
    tiles_per_frame: float
    t_tile_s: float
    t_frame_s: float
    v_max_mm_s: float  # zero uninspected (k = 1)
    v_max_k_mm_s: float  # k = inspections_per_point
    area_mm2_s: float


def throughput_rows(
    model_name: str,
    t_tile_s: float,
    t_overhead_s: float,
    ours_tiles: float,
    whole_tiles: float,
    footage: Footage,
    k: int,
) -> list[ThroughputRow]:
    cal = footage.calibration
    axis = cal.travel_axis
    view_mm = footage.frame_wh[axis] * cal.mm_per_px
    width_mm = footage.frame_wh[1 - axis] * cal.mm_per_px
    spider_mm = cal.spider_span_mm[1]
    rows = []
    for mode, n in (("whole_frame (paper)", whole_tiles), ("belt (ours)", ours_tiles)):
        t_frame = t_overhead_s + n * t_tile_s
        v1 = sustained_speed_mm_s(t_frame, footage.fps, view_mm, spider_mm, 1)
        vk = sustained_speed_mm_s(t_frame, footage.fps, view_mm, spider_mm, k)
        rows.append(ThroughputRow(model_name, mode, n, t_tile_s, t_frame, v1, vk, v1 * width_mm))
    return rows


# ------------------------------------------------------------------------------------------------ latency
@dataclass
class LatencyRun:
    fps: float
    frames_read: int = 0
    frames_dropped: int = 0
    inspected: int = 0
    rejects: int = 0
    decisions: int = 0
    uninspected: int = 0
    reject_latency_s: list[float] = field(default_factory=list)
    inspect_latency_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "fps": self.fps,
            "frames_read": self.frames_read,
            "frames_dropped": self.frames_dropped,
            "frames_inspected": self.inspected,
            "bunches": self.decisions,
            "rejects": self.rejects,
            "uninspected": self.uninspected,
            "reject_p50_s": percentile(self.reject_latency_s, 50),
            "reject_p99_s": percentile(self.reject_latency_s, 99),
            "inspect_p50_s": percentile(self.inspect_latency_s, 50),
            "inspect_p99_s": percentile(self.inspect_latency_s, 99),
        }


def run_latency(footage: Footage, config: Config, model: Model) -> LatencyRun:
    """The pipeline on a realtime-paced video source; latency = verdict ready (reject sent) - scheduled arrival.

    A reject goes out when `process` returns for the inspected frame in which the bunch crossed the threshold (or,
    fail-safe, for the frame in which it left the view), so the latency of every inspected frame is the latency a
    reject decided in it would have, at any threshold; actual rejects are sampled as well.
    """
    from inspector.sources import VideoFileSource

    run = LatencyRun(footage.fps)
    pipe = Pipeline(config, footage.calibration, model, footage.fps)
    last: int | None = None
    with VideoFileSource(footage.video, "realtime", fps=footage.fps, clock=time.monotonic) as src:
        while (frame := src.read()) is not None:
            anchor = src.anchor_s if src.anchor_s is not None else frame.t_capture_s
            arrival = anchor + frame.seq / footage.fps
            run.frames_dropped += frame.seq - (0 if last is None else last + 1)
            last = frame.seq
            run.frames_read += 1
            step = pipe.process(frame.image_bgr, FrameRef(0, frame.seq, arrival))
            now = time.monotonic()
            run.inspected += int(step.inspected)
            if step.inspected:
                run.inspect_latency_s.append(now - arrival)
            run.rejects += len(step.rejects)
            run.reject_latency_s += [now - arrival] * len(step.rejects)
            run.decisions += len(step.final)
            run.uninspected += sum(d.reason == "uninspected" for d in step.final)
    end = pipe.finish()
    run.decisions += len(end.final)
    run.uninspected += sum(d.reason == "uninspected" for d in end.final)
    return run


# ------------------------------------------------------------------------------------------------ full-width VGG16
def export_vgg16(work: Path, width: int = 1) -> Path:
    """VGG16 with random weights at `width` via `inspector model export` (a subprocess: torch stays out of here)."""
    out = work / f"vgg16_w{width}.onnx"
    if out.is_file() and out.with_suffix(".yaml").is_file():
        return out
    cmd = [sys.executable, "-m", "inspector", "model", "export", "--out", str(out), "--width", str(width)]
    cmd += ["--parity-samples", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InspectorError(f"export of VGG16 width {width} failed: {done.stderr.strip().splitlines()[-1:]}")
    return out


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class Settings:
    quick: bool
    work: Path
    model: Path
    vgg16: bool
    int8: bool
    seed: int = 0

    @property
    def wh(self) -> tuple[int, int]:
        return (320, 240) if self.quick else (1280, 720)

    @property
    def fps(self) -> float:
        return 10.0 if self.quick else 15.0

    @property
    def seconds(self) -> float:
        return 2.5 if self.quick else 14.0

    @property
    def repeats(self) -> int:
        return 2 if self.quick else 15


def _log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def model_section(path: Path, batch: int, repeats: int) -> tuple[dict[str, Any], RawResult]:
    import onnx

    manifest = load_manifest(path)
    proto = onnx.load(str(path))
    flops = conv_fc_flops(proto)
    lean = logits_only(proto, manifest.input.name, manifest.outputs.logits)
    outputs = [manifest.outputs.logits, *manifest.outputs.fam]
    raw = raw_inference(
        proto.SerializeToString(),
        lean.SerializeToString(),
        manifest.input.name,
        outputs,
        manifest.input.size,
        batch,
        repeats,
    )
    del proto, lean
    info = {"name": manifest.name, "width": manifest.width, "gflop_per_tile": flops / 1e9, **asdict(raw)}
    info["gflop_s"] = flops / 1e9 * raw.tiles_s_contract
    info["gflop_per_cpu_s"] = flops / 1e9 / max(raw.cpu_s_per_tile, 1e-12)
    return info, raw


def run_bench(s: Settings) -> dict[str, Any]:
    s.work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"machine": machine_info(), "quick": s.quick}
    batch = Config().model.batch_size
    started = time.perf_counter()

    _log("GEMM peak")
    result["gemm_peak_gflop_s"], result["gemm_peak_gflop_per_cpu_s"] = gemm_peak(
        512 if s.quick else 2048, 2 if s.quick else 3
    )

    _log(f"footage {s.wh[0]}x{s.wh[1]} at {s.fps:g} and {2 * s.fps:g} fps")
    nominal = make_footage(s.work, s.wh, s.fps, s.seconds, s.seed)
    double = make_footage(s.work, s.wh, 2 * s.fps, s.seconds, s.seed)
    config = bench_config(s.model, "belt", batch)

    _log(f"raw onnxruntime and FAM outputs: {s.model.name}")
    demo_info, demo_raw = model_section(s.model, batch, s.repeats)
    result["models"] = {"demo": demo_info}

    with Model(s.model, ("cpu",), 0, batch) as model:
        model.warmup()
        _log("pipeline on the footage (max pace)")
        pipe = run_pipeline(iter_frames(nominal.video), nominal, config, model, raw_probe=_raw_probe(s.model, batch))
        plans, whole = tile_plans(iter_frames(nominal.video), nominal.calibration, config)
        counts = [len(p) for p in plans]
        ours_tiles = float(np.percentile(counts, 95)) if counts else 0.0
        mean_boxes = typical_boxes(plans)
        fam_s = fam_post_s(model, mean_boxes, nominal.frame_wh, config.model.fam_mode, s.repeats)
        whole_check: dict[str, Any] | None = None
        if not s.quick:
            _log("one whole-frame (paper baseline) inspection, to check the cost model")
            wf = run_pipeline(
                iter_frames(nominal.video), nominal, bench_config(s.model, "whole_frame", batch), model, max_inspected=1
            )
            predicted = pipe.t_overhead_s + whole * pipe.t_tile_s
            whole_check = {
                "tiles": wf.tiles,
                "measured_s": wf.inspected_s,
                "predicted_s": predicted,
                "ratio": wf.inspected_s / predicted if predicted else None,
            }
        _log("latency, realtime pace, nominal and double frame rate")
        lat_nominal = run_latency(nominal, config, model)
        lat_double = run_latency(double, config, model)
    result["peak_rss_mb_pipeline"] = peak_rss_mb()

    pipeline_info = {
        "frames": pipe.frames,
        "inspected": pipe.inspected,
        "tiles": pipe.tiles,
        "infer_s": pipe.infer_s,
        "inspected_s": pipe.inspected_s,
        "tiles_s": pipe.tiles_s,
        "raw_tiles_s_interleaved": pipe.raw_tiles_s,
        "efficiency": pipe.tiles_s / max(pipe.raw_tiles_s, 1e-12),
        "cpu_s_per_tile": pipe.inspected_cpu_s / max(1, pipe.tiles),
        "efficiency_cpu": (pipe.raw_cpu_s / max(1, pipe.raw_tiles))
        / max(pipe.inspected_cpu_s / max(1, pipe.tiles), 1e-12),
        "t_overhead_s": pipe.t_overhead_s,
        "t_tile_s": pipe.t_tile_s,
        "decisions": pipe.decisions,
        "uninspected": pipe.uninspected,
        "tiles_per_inspected_frame_mean": float(np.mean(counts)) if counts else 0.0,
        "tiles_per_frame_p95": ours_tiles,
        "tiles_whole_frame": whole,
    }
    result["pipeline"] = pipeline_info
    per_tile_s = 1.0 / demo_raw.tiles_s_contract
    map_s = max(0.0, demo_raw.fam_extra_pct / 100.0) * per_tile_s + fam_s / max(1, int(mean_boxes.shape[0]))
    result["fam"] = {
        "extra_pct": demo_raw.fam_extra_pct,
        "map_s_per_tile": map_s,
        "map_vs_classification_pct": 100.0 * map_s / per_tile_s,
        "paper_map_vs_classification_pct": [100.0 * v / PAPER_CLASSIFY_S for v in PAPER_MAP_S],
        "post_s_per_frame": fam_s,
        "post_tiles": int(mean_boxes.shape[0]),
        "paper_map_s": list(PAPER_MAP_S),
        "paper_classify_s": PAPER_CLASSIFY_S,
    }
    result["whole_frame_check"] = whole_check
    k = config.belt.inspections_per_point
    raw_rate = pipe.raw_tiles_s or demo_raw.tiles_s_contract
    host_tile_s = max(0.0, pipe.t_tile_s - 1.0 / raw_rate)  # crop/preprocess/FAM/stitch per tile, measured interleaved
    rows = throughput_rows(demo_info["name"], pipe.t_tile_s, pipe.t_overhead_s, ours_tiles, whole, nominal, k)
    result["latency"] = {"nominal": lat_nominal.summary(), "double": lat_double.summary()}

    if s.int8:
        _log("int8 static quantisation")
        result["int8"] = int8_section(s, nominal)

    if s.vgg16 and not s.quick:
        _log("full-width VGG16 (random weights): export (cached), raw inference")
        vgg_path = export_vgg16(s.work, 1)
        vgg_info, vgg_raw = model_section(vgg_path, 2, 2)
        result["models"]["vgg16"] = vgg_info
        vgg_tile_s = 1.0 / vgg_raw.tiles_s_contract + host_tile_s
        rows += throughput_rows(vgg_info["name"], vgg_tile_s, pipe.t_overhead_s, ours_tiles, whole, nominal, k)
    result["throughput"] = [asdict(r) for r in rows]
    result["calibration"] = {
        "belt_speed_mm_s": nominal.calibration.belt_speed_mm_s,
        "mm_per_px": nominal.calibration.mm_per_px,
        "frame_wh": list(nominal.frame_wh),
        "fps": nominal.fps,
        "inspections_per_point": k,
        "spider_span_mm": list(nominal.calibration.spider_span_mm),
    }
    result["peak_rss_mb_end"] = peak_rss_mb()
    result["bench_s"] = time.perf_counter() - started
    return result


def _raw_probe(path: Path, batch: int) -> Callable[[], int]:
    """One raw session.run of `batch` preprocessed random tiles asking for the contract outputs; returns `batch`."""
    manifest = load_manifest(path)
    session = ort_session(path.read_bytes())
    size = manifest.input.size
    feed = {manifest.input.name: np.random.default_rng(3).standard_normal((batch, 3, size, size), dtype=np.float32)}
    outputs = [manifest.outputs.logits, *manifest.outputs.fam]
    session.run(outputs, feed)

    def probe() -> int:
        session.run(outputs, feed)
        return batch

    return probe


def int8_section(s: Settings, footage: Footage) -> dict[str, Any]:
    n = 24 if s.quick else 160
    tiles = quantize.tiles_from_footage(footage.video.parent, n // 2, n - n // 2, s.seed)
    calib, evaluation = quantize.split_tiles(tiles, 8 if s.quick else 64, s.seed)
    out = s.work / quantize.int8_path(s.model).name
    quantize.quantize_model(s.model, out, calib.images)
    return asdict(quantize.compare(s.model, out, evaluation, repeats=1 if s.quick else 2))


# ------------------------------------------------------------------------------------------------ table
def _f(v: float | None, fmt: str = ".1f") -> str:
    return "n/a" if v is None else format(v, fmt)


def format_table(r: dict[str, Any]) -> str:
    m = r["machine"]
    demo = r["models"]["demo"]
    p = r["pipeline"]
    fam = r["fam"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, onnxruntime {m['onnxruntime']}, numpy {m['numpy']}, "
        f"load average {m['load_avg_1m']} at start",
        "",
        "| Measure | Ours | Baseline | Ratio |",
        "|---|---|---|---|",
        f"| Inference, {demo['name']} (tiles/s, batch {demo['batch']}, measured interleaved) | pipeline {p['tiles_s']:.1f} | "
        f"raw onnxruntime {p['raw_tiles_s_interleaved']:.1f} | efficiency {p['efficiency']:.2f} wall, "
        f"{p['efficiency_cpu']:.2f} CPU time |",
        f"| FAM outputs in the graph ({demo['name']}, tiles/s) | with fam1..5 {demo['tiles_s_contract']:.1f} | "
        f"logits only {demo['tiles_s_logits_only']:.1f} | {demo['fam_extra_pct']:+.1f} % CPU time, "
        f"{demo['fam_extra_pct_wall']:+.1f} % wall (target < 5 %) |",
        f"| FAM on the host (tile_fam + stitch, {fam['post_tiles']} tiles) | {1e3 * fam['post_s_per_frame']:.1f} ms/frame "
        f"= {1e3 * fam['post_s_per_frame'] / max(1, fam['post_tiles']):.2f} ms/tile | | |",
        f"| Cost of one map relative to one classification | {fam['map_vs_classification_pct']:.1f} % "
        f"({1e3 * fam['map_s_per_tile']:.2f} ms/map) | paper: {fam['paper_map_s'][0]:g}-{fam['paper_map_s'][1]:g} s/map vs "
        f"{fam['paper_classify_s']} s/classification = {fam['paper_map_vs_classification_pct'][0]:.0f}-"
        f"{fam['paper_map_vs_classification_pct'][1]:.0f} % | |",
        f"| Per-frame overhead (segment + track, not inspected) | {1e3 * p['t_overhead_s']:.1f} ms | | |",
        f"| Tiles per inspected frame | {p['tiles_per_frame_p95']:.0f} (p95; mean "
        f"{p['tiles_per_inspected_frame_mean']:.0f}) | {p['tiles_whole_frame']} (whole frame, 25 % overlap) | "
        f"{p['tiles_per_frame_p95'] / max(1, p['tiles_whole_frame']):.2f} |",
    ]
    wf = r.get("whole_frame_check")
    if wf:
        lines.append(
            f"| Cost model check: one whole-frame inspection ({wf['tiles']} tiles) | measured {wf['measured_s']:.2f} s | "
            f"predicted {wf['predicted_s']:.2f} s | {_f(wf['ratio'], '.2f')} |"
        )
    rows = r["throughput"]
    for model in dict.fromkeys(row["model"] for row in rows):
        base = next(x for x in rows if x["model"] == model and x["mode"].startswith("whole"))
        ours = next(x for x in rows if x["model"] == model and x["mode"].startswith("belt"))
        lines += [
            f"| {model}: time per inspected frame | {ours['t_frame_s']:.2f} s | {base['t_frame_s']:.2f} s | "
            f"{ours['t_frame_s'] / base['t_frame_s']:.2f} |",
            f"| {model}: max belt speed, zero uninspected | {ours['v_max_mm_s']:.0f} mm/s | {base['v_max_mm_s']:.0f} mm/s "
            f"| {ours['v_max_mm_s'] / base['v_max_mm_s']:.1f}x |",
            f"| {model}: max belt speed, each point inspected {r['calibration']['inspections_per_point']}x | "
            f"{ours['v_max_k_mm_s']:.0f} mm/s | {base['v_max_k_mm_s']:.0f} mm/s | "
            f"{ours['v_max_k_mm_s'] / base['v_max_k_mm_s']:.1f}x |",
            f"| {model}: belt area inspected | {ours['area_mm2_s'] / 1e3:.1f}e3 mm²/s | {base['area_mm2_s'] / 1e3:.1f}e3 mm²/s "
            f"| {ours['area_mm2_s'] / base['area_mm2_s']:.1f}x |",
        ]
    cal = r["calibration"]
    for key, label in (("nominal", "nominal"), ("double", "2x nominal")):
        lat = r["latency"][key]
        lines.append(
            f"| Decision latency, capture -> verdict/reject sent, {label} ({lat['fps']:g} fps, belt "
            f"{cal['belt_speed_mm_s']:g} mm/s) | p50 {_f(lat['inspect_p50_s'], '.2f')} s, p99 "
            f"{_f(lat['inspect_p99_s'], '.2f')} s over {lat['frames_inspected']} inspected frames; actual rejects: "
            f"{lat['rejects']} (p50 {_f(lat['reject_p50_s'], '.2f')} s, p99 {_f(lat['reject_p99_s'], '.2f')} s) | "
            f"{lat['frames_dropped']} of "
            f"{lat['frames_dropped'] + lat['frames_read']} frames dropped, {lat['uninspected']} of {lat['bunches']} "
            f"bunches uninspected (every frame, max pace: {p['uninspected']} of {p['decisions']}: bunches cut by the "
            "clip's ends) | |"
        )
    lines.append(
        f"| Peak memory (ru_maxrss of the bench process) | after the demo pipeline sections {r['peak_rss_mb_pipeline']:.0f} MB "
        f"| whole bench (full-width VGG16 loaded twice) {r['peak_rss_mb_end']:.0f} MB | |"
    )
    q = r.get("int8")
    if q:
        lines += [
            f"| int8 vs fp32 speed ({demo['name']}, {q['n_tiles']} eval tiles) | int8 {q['int8_tiles_s']:.1f} tiles/s | "
            f"fp32 {q['fp32_tiles_s']:.1f} tiles/s | {q['speedup']:.2f}x wall, {q['speedup_cpu']:.2f}x CPU time |",
            f"| int8 vs fp32 accuracy / agreement | int8 {100 * q['int8_accuracy']:.1f} % | fp32 {100 * q['fp32_accuracy']:.1f} % "
            f"| same decision {100 * q['agreement']:.1f} %, max |dp| {q['max_abs_dprob']:.3f}, FAM r {q['fam_correlation']:.3f} |",
            f"| int8 vs fp32 model size | {q['int8_mb']:.1f} MB | {q['fp32_mb']:.1f} MB | {q['int8_mb'] / q['fp32_mb']:.2f} |",
        ]
    gemm, gemm_cpu = r["gemm_peak_gflop_s"], r["gemm_peak_gflop_per_cpu_s"]
    for info in r["models"].values():
        lines.append(
            f"| Achieved inference GFLOP/s, {info['name']} ({info['gflop_per_tile']:.2f} GFLOP/tile, raw, batch "
            f"{info['batch']}) | {info['gflop_per_cpu_s']:.1f} GFLOP per CPU-second ({info['gflop_s']:.1f} GFLOP/s wall) | "
            f"GEMM {gemm_cpu:.1f} GFLOP per CPU-second ({gemm:.1f} GFLOP/s wall; x{m['cores']} cores = "
            f"{gemm_cpu * m['cores']:.0f} GFLOP/s machine peak) | {info['gflop_per_cpu_s'] / gemm_cpu:.2f} |"
        )
    if "vgg16" in r["models"]:
        v = r["models"]["vgg16"]
        lines.append(
            f"| FAM outputs in the graph ({v['name']}) | {v['tiles_s_contract']:.2f} tiles/s | logits only "
            f"{v['tiles_s_logits_only']:.2f} tiles/s | {v['fam_extra_pct']:+.1f} % CPU time, {v['fam_extra_pct_wall']:+.1f} % wall |"
        )
    lines.append("")
    lines.append(f"bench took {r['bench_s']:.0f} s")
    return "\n".join(lines)
