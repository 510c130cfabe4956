"""Typed configuration: the daemon config and the calibration file (an interface: keep its key names).

Every model forbids unknown keys. `load_config(path)` / `load_calibration(path)` raise `ConfigError` whose
message has one line per problem: ``FILE:LINE: key.path: what is wrong; got VALUE; allowed: WHAT``.
Relative paths inside a file are resolved against that file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from inspector.yamlload import validate

PACKAGE_DIR = Path(__file__).resolve().parent
DEMO_MODEL = PACKAGE_DIR / "models" / "demo.onnx"

BeltDirection = Literal["+x", "-x", "+y", "-y"]
PositiveFloat = Annotated[float, Field(gt=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sectioned(Strict):
    """The top level of a config file, made of sections."""

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: object) -> object:
        """A section whose keys are all commented out (`decision:` alone) means its defaults."""
        if isinstance(data, dict):
            sections = {k for k, f in cls.model_fields.items() if isinstance(f.default, BaseModel)}
            return {k: ({} if v is None and k in sections else v) for k, v in data.items()}
        return data


def resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """A path from a config file, relative to that file's folder."""
    if value is None:
        return None
    base = (info.context or {}).get("base_dir")
    path = Path(value).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return path


# --------------------------------------------------------------------------------------------- calibration
class Calibration(Strict):
    """One camera on one line. Written by `inspector calibrate`, edited by operators, read by run and replay."""

    mm_per_px: float = Field(gt=0, le=100, description="millimetres per pixel at the belt plane")
    belt_direction: BeltDirection = Field(description="direction of travel in the image")
    belt_speed_mm_s: float = Field(gt=0, le=10_000, description="nominal belt speed")
    camera_to_ejector_mm: float = Field(ge=0, le=100_000, description="image centre line to ejector")
    spider_span_mm: tuple[PositiveFloat, PositiveFloat] = Field(description="smallest, largest leg span")
    camera_matrix: list[list[float]] | None = None
    dist_coeffs: list[float] | None = None
    roi_xyxy: tuple[int, int, int, int] | None = None

    @field_validator("spider_span_mm")
    @classmethod
    def _span_ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise ValueError("smallest span must not exceed the largest: write [smallest, largest]")
        return v

    @field_validator("camera_matrix")
    @classmethod
    def _matrix_3x3(cls, v: list[list[float]] | None) -> list[list[float]] | None:
        if v is not None and (len(v) != 3 or any(len(row) != 3 for row in v)):
            raise ValueError("camera_matrix must be 3x3 (three rows of three numbers)")
        return v

    @field_validator("roi_xyxy")
    @classmethod
    def _roi_ordered(cls, v: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if v is not None and (v[2] <= v[0] or v[3] <= v[1] or min(v) < 0):
            raise ValueError("roi_xyxy must be [x1, y1, x2, y2] with x2 > x1 >= 0 and y2 > y1 >= 0")
        return v

    @property
    def px_per_s(self) -> float:
        """Nominal belt speed in image pixels per second."""
        return self.px(self.belt_speed_mm_s)

    def px(self, mm: float) -> float:
        """A length on the belt plane in image pixels (the one mm → px conversion)."""
        return mm / self.mm_per_px

    def area_px(self, mm2: float) -> float:
        """An area on the belt plane in square pixels."""
        return self.px(self.px(mm2))

    def mm(self, px: float) -> float:
        """A length in image pixels on the belt plane in millimetres (the one px → mm conversion)."""
        return px * self.mm_per_px

    @property
    def travel_axis(self) -> int:
        """0 when the belt moves along x, 1 along y."""
        return 0 if self.belt_direction[1] == "x" else 1

    @property
    def travel_sign(self) -> int:
        return 1 if self.belt_direction[0] == "+" else -1

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False)


# --------------------------------------------------------------------------------------------- daemon config
class TritonConfig(Strict):
    """Where `model.backend: triton` sends its tiles (a Triton Inference Server serving the contract model)."""

    url: str = Field(min_length=1, description="host:port of the server (HTTP port 8000 or gRPC port 8001 by default)")
    model_name: str = Field(min_length=1, description="the model's name in the server's repository")
    model_version: str = Field("", description="a version number; empty: the server's choice (its version policy)")
    protocol: Literal["http", "grpc"] = "grpc"
    timeout_s: float = Field(2.0, gt=0, le=60, description="one request; past it the frame's bunches are rejected")
    start_wait_s: float = Field(
        60.0, ge=0, le=600, description="at start, how long to wait for the server and the model to be ready"
    )

    @field_validator("url")
    @classmethod
    def _host_port(cls, v: str) -> str:
        scheme, sep, rest = v.strip().partition("://")
        if sep and scheme not in ("http", "grpc"):
            raise ValueError(f"url {v!r}: give host:port (TLS to the server is not supported)")
        host, colon, port = (rest if sep else scheme).rstrip("/").rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"url {v!r}: give host:port, e.g. 10.0.0.5:8001")
        return f"{host}:{port}"

    @field_validator("model_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v and not v.isdigit():
            raise ValueError(f"model_version {v!r}: a whole number like 1, or empty for the server's choice")
        return v


class ModelConfig(Strict):
    path: Path = Field(
        DEMO_MODEL, description="contract model; with backend triton only its manifest is read (the .yaml will do)"
    )
    backend: Literal["local", "triton"] = Field("local", description="local: onnxruntime here; triton: a server")
    triton: TritonConfig | None = None
    providers: list[Literal["auto", "tensorrt", "cuda", "cpu"]] = ["auto"]
    batch_size: int = Field(16, ge=1, le=1024)
    threads: int = Field(0, ge=0, le=256, description="0: onnxruntime's default")
    fam_mode: Literal["paper", "normalized"] = "normalized"
    fp16: bool = False

    @field_validator("path")
    @classmethod
    def _exists(cls, v: Path, info: ValidationInfo) -> Path:
        path = resolve_path(v, info)
        assert path is not None
        if not path.is_file():
            raise ValueError(f"model file {path} not found; give the path of an existing .onnx file")
        return path

    @model_validator(mode="after")
    def _triton_section(self) -> ModelConfig:
        if self.backend == "triton" and self.triton is None:
            raise ValueError("backend triton needs a triton section (url, model_name)")
        return self


class SourceConfig(Strict):
    kind: Literal["synthetic", "file", "folder", "camera"] = "synthetic"
    uri: str | None = Field(None, description="file/folder path, camera index, RTSP/HTTP URL or GStreamer string")
    pace: Literal["realtime", "max"] = "realtime"
    fps: float | None = Field(None, gt=0, le=1000, description="override the footage's frame rate")
    loop: bool = False
    reconnect_initial_s: float = Field(0.5, gt=0, le=60)
    reconnect_max_s: float = Field(10.0, gt=0, le=600)

    @model_validator(mode="after")
    def _uri_needed(self) -> SourceConfig:
        if self.kind != "synthetic" and not self.uri:
            raise ValueError(f"source kind '{self.kind}' needs a uri")
        return self


class BeltConfig(Strict):
    mode: Literal["belt", "whole_frame"] = "belt"
    belt_bgr: tuple[int, int, int] | None = Field(None, description="belt colour; learned when absent")
    learn_frames: int = Field(5, ge=1, le=1000)
    color_threshold: float = Field(28.0, gt=0, le=255, description="Lab distance from the belt colour")
    min_bunch_area_mm2: float = Field(400.0, ge=0)
    inspections_per_point: int = Field(2, ge=1, le=20)
    refine_with_phase_correlation: bool = True


class TilingConfig(Strict):
    min_fraction: float = Field(0.01, gt=0, lt=1)
    max_fraction: float = Field(0.05, gt=0, lt=1)
    baseline_overlap: float = Field(0.25, ge=0, lt=1, description="whole-frame baseline mode only")

    @model_validator(mode="after")
    def _ordered(self) -> TilingConfig:
        if self.min_fraction >= self.max_fraction:
            raise ValueError("min_fraction must be below max_fraction")
        return self


class DecisionConfig(Strict):
    threshold: float = Field(0.5, ge=0, le=1)
    aggregate: Literal["max", "noisy_or"] = "max"
    agree_frames: int = Field(
        1, ge=1, le=20, description="inspected frames that must each score a bunch >= threshold to reject it"
    )
    reject_uninspected: Literal[True] = True
    deadline_margin_s: float = Field(
        0.05, ge=0, le=10, description="a reject must be decided this long before its fire time, else the frame is late"
    )
    latency_budget_s: float = Field(
        0.5, gt=0, le=60, description="capture to decision, declared (or measured with inspector bench)"
    )


class LinkConfig(Strict):
    enabled: bool = True
    controller: str = "tcp://127.0.0.1:5560"
    publish: str | None = "tcp://127.0.0.1:5561"
    heartbeat_interval_s: float = Field(0.5, gt=0, le=60)
    controller_timeout_s: float = Field(2.0, gt=0, le=600)
    retransmit_interval_s: float = Field(0.1, gt=0, le=10)
    fire_tolerance_s: float = Field(
        0.03, gt=0, le=1, description="a reject may start this late and no later (keep it within one frame interval)"
    )
    curve_server_public_key: str | None = None
    curve_client_secret_key_file: Path | None = None


class MetricsConfig(Strict):
    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)
    max_requests_per_s: float = Field(
        10.0, gt=0, le=1000, description="more are answered 429 (inspector_metrics_requests_limited_total)"
    )
    refresh_interval_s: float = Field(1.0, ge=0, le=60, description="the exposition is rebuilt at most this often")


class ReviewConfig(Strict):
    """The reject review page (`inspector/review.py`): read-only, loopback unless set otherwise."""

    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = Field(9109, ge=0, le=65535)


class RingConfig(Strict):
    slots: int = Field(16, ge=2, le=1024)


class RecordingConfig(Strict):
    dir: Path | None = None
    seconds: float = Field(10.0, gt=0, le=600)

    @field_validator("dir")
    @classmethod
    def _resolve_dir(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(v, info)


class SupervisorConfig(Strict):
    max_restarts: int = Field(5, ge=0, le=1000)
    restart_window_s: float = Field(300.0, gt=0)
    stall_timeout_s: float = Field(5.0, gt=0, le=600)
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(10.0, gt=0)


class OutputConfig(Strict):
    decisions_jsonl: Path | None = None
    evidence_dir: Path | None = None

    @field_validator("decisions_jsonl", "evidence_dir")
    @classmethod
    def _resolve_paths(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(v, info)


class Config(Sectioned):
    """The daemon config (deploy/config.example.yaml documents every key)."""

    calibration: Path | None = Field(None, description="calibration file; the embedded default when absent")
    model: ModelConfig = ModelConfig()
    source: SourceConfig = SourceConfig()
    belt: BeltConfig = BeltConfig()
    tiling: TilingConfig = TilingConfig()
    decision: DecisionConfig = DecisionConfig()
    link: LinkConfig = LinkConfig()
    metrics: MetricsConfig = MetricsConfig()
    review: ReviewConfig = ReviewConfig()
    ring: RingConfig = RingConfig()
    recording: RecordingConfig = RecordingConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    output: OutputConfig = OutputConfig()

    @field_validator("decision")
    @classmethod
    def _agreement_possible(cls, v: DecisionConfig, info: ValidationInfo) -> DecisionConfig:
        belt = info.data.get("belt")  # validated before `decision` (field order); absent when belt itself failed
        if belt is not None and v.agree_frames > belt.inspections_per_point:
            raise ValueError(
                f"agree_frames {v.agree_frames} is above belt.inspections_per_point {belt.inspections_per_point}, "
                "the inspections each stretch of belt is sure to get; lower it or raise inspections_per_point"
            )
        return v

    @field_validator("calibration")
    @classmethod
    def _calibration_exists(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        path = resolve_path(v, info)
        if path is not None and not path.is_file():
            raise ValueError(f"calibration file {path} not found; run `inspector calibrate` or fix the path")
        return path


# The embedded default (demo footage, tile sets, `inspector plan`): a 1280x720 camera seeing 320 x 180 mm of belt.
# 0.25 mm/px puts the smallest spider (4 mm) at 16 px; the seed paper's condition (a spider at 1–5 % of a 224 px
# tile) asks for about 0.18 mm/px, so coarser cameras only blur the spider in up-sampled tiles.
DEFAULT_CALIBRATION = Calibration(
    mm_per_px=0.25,
    belt_direction="+x",
    belt_speed_mm_s=150.0,
    camera_to_ejector_mm=800.0,
    spider_span_mm=(4.0, 12.0),
)


def load_config(path: Path | str) -> Config:
    return validate(Config, Path(path))


def load_calibration(path: Path | str) -> Calibration:
    return validate(Calibration, Path(path))


def calibration_for(config: Config) -> Calibration:
    return DEFAULT_CALIBRATION if config.calibration is None else load_calibration(config.calibration)
