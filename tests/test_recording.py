"""Recorder: clips around rejects and on demand, readable as video files by the sources replay uses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from inspector.config import RecordingConfig
from inspector.metrics import Metrics
from inspector.recording import CLIP_FORMAT, Recorder, RecordingError, read_sidecar
from inspector.sources import VideoFileSource


def coded(i: int) -> np.ndarray:
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :] = (i * 10) % 250
    return img


def index_of(img: np.ndarray) -> int:
    return round(float(img.mean()) / 10)


def frames_of(video: Path) -> list[int]:
    with VideoFileSource(video, clock=None) as src:
        return [index_of(f.image_bgr) for f in iter(src.read, None)]


def test_clip_around_a_reject(tmp_path: Path) -> None:
    m = Metrics(CollectorRegistry())
    rec = Recorder(RecordingConfig(dir=tmp_path, seconds=1.0), fps=10.0, post_s=0.3, metrics=m)
    with rec:
        for seq in range(20):
            rec.add(coded(seq), seq, seq / 10.0)
            if seq == 12:
                rec.trigger(seq, bunch_id=7)
                rec.trigger(seq + 1, bunch_id=8)  # close to the first: the same clip
        rec.add(coded(20), 20, 2.0)
    assert len(rec.saved) == 1
    video = rec.saved[0]
    assert video.suffix == ".avi" and "seq000000012-reject" in video.name
    assert frames_of(video) == list(range(7, 17))  # 1 s buffer, ending 0.3 s after the second reject
    meta = read_sidecar(video)
    assert meta is not None and meta["format"] == CLIP_FORMAT
    assert meta["fps"] == 10.0 and meta["first_seq"] == 7 and meta["bunch_ids"] == [7, 8]
    assert meta["seqs"] == list(range(7, 17)) and meta["frame_wh"] == [64, 48]
    assert m.value("inspector_recordings_saved_total") == 1


def test_snapshot_and_pending_clip_on_close(tmp_path: Path) -> None:
    rec = Recorder(
        RecordingConfig(dir=tmp_path / "rec", seconds=0.5), fps=10.0, post_s=5.0, metrics=Metrics(CollectorRegistry())
    )
    with rec:
        for seq in range(8):
            rec.add(coded(seq), seq, seq / 10.0)
        rec.snapshot()
        rec.trigger(7)  # its 5 s never come: saved at close with what there is
    assert len(rec.saved) == 2
    snap = next(p for p in rec.saved if p.name.endswith("-snapshot.avi"))
    assert frames_of(snap) == [3, 4, 5, 6, 7]
    assert json.loads(snap.with_suffix(".json").read_text())["reason"] == "snapshot"
    assert not list((tmp_path / "rec").glob(".*part.avi"))


def test_disabled_without_dir_and_bad_dir(tmp_path: Path) -> None:
    rec = Recorder(RecordingConfig(), fps=10.0)
    rec.add(coded(1), 1, 0.1)
    rec.trigger(1)
    rec.snapshot()
    rec.close()
    assert not rec.enabled and rec.saved == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RecordingError, match=r"recording\.dir"):
        Recorder(RecordingConfig(dir=blocker / "sub"), fps=10.0)


def test_old_clips_are_pruned(tmp_path: Path) -> None:
    rec = Recorder(
        RecordingConfig(dir=tmp_path, seconds=0.2), fps=10.0, max_clips=2, metrics=Metrics(CollectorRegistry())
    )
    with rec:
        for seq in range(6):
            rec.add(coded(seq), seq, seq / 10.0)
            rec.snapshot(reason=f"s{seq}")
    assert len(list(tmp_path.glob("clip-*.avi"))) == 2
    assert len(list(tmp_path.glob("clip-*.json"))) == 2


def test_sidecar_of_plain_footage_is_none(tmp_path: Path) -> None:
    assert read_sidecar(tmp_path / "x.avi") is None
