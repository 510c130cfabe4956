"""Sources on generated footage: video files (paced, looped, truncated, corrupt), image folders, camera uris."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.config import SourceConfig
from inspector.errors import SourceError
from inspector.sources import CameraSource, ImageFolderSource, VideoFileSource, camera_target, open_source, probe


def coded_frame(i: int, wh: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A flat frame whose grey level encodes i (survives MJPG)."""
    return np.full((wh[1], wh[0], 3), (i * 20) % 250, np.uint8)


def decode_index(img: np.ndarray) -> int:
    return round(float(img.mean()) / 20)


def write_video(path: Path, n: int, fps: float = 25.0, wh: tuple[int, int] = (64, 48)) -> Path:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, wh)
    assert out.isOpened()
    for i in range(n):
        out.write(coded_frame(i, wh))
    out.release()
    return path


def test_video_file_frames_seq_and_footage_time(tmp_path: Path) -> None:
    video = write_video(tmp_path / "a.avi", 10, fps=20.0)
    with VideoFileSource(video, clock=None) as src:
        frames = []
        while (f := src.read()) is not None:
            frames.append(f)
    assert [f.seq for f in frames] == list(range(10))
    assert [decode_index(f.image_bgr) for f in frames] == list(range(10))
    assert frames[3].t_capture_s == pytest.approx(3 / 20.0)
    assert frames[0].image_bgr.shape == (48, 64, 3) and frames[0].image_bgr.dtype == np.uint8


def test_video_file_loop_keeps_counting(tmp_path: Path) -> None:
    video = write_video(tmp_path / "a.avi", 4)
    with VideoFileSource(video, loop=True) as src:
        frames = [src.read() for _ in range(10)]
    assert [f.seq for f in frames if f] == list(range(10))
    assert [decode_index(f.image_bgr) for f in frames if f] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


def test_video_file_paced_is_not_faster_than_its_fps(tmp_path: Path) -> None:
    video = write_video(tmp_path / "a.avi", 6, fps=50.0)
    t0 = time.monotonic()
    with VideoFileSource(video, pace="realtime") as src:
        stamps = [f.t_capture_s for f in iter(src.read, None)]
    assert len(stamps) == 6
    assert time.monotonic() - t0 >= 5 / 50.0  # pacing waits; a lower bound cannot flake
    assert stamps == sorted(stamps)


def test_paced_frames_are_dated_by_their_slot_not_by_when_a_late_reader_took_them(tmp_path: Path) -> None:
    # a reader that falls behind (a busy machine) must not date frames late: fire times are computed from the date
    video = write_video(tmp_path / "v.avi", 40, fps=25.0)
    with VideoFileSource(video, pace="realtime") as src:
        first = src.read()
        time.sleep(0.5)  # 12 slots late: the source skips ahead to the frame due
        second = src.read()
    assert first is not None and second is not None
    assert second.t_capture_s - first.t_capture_s == pytest.approx((second.seq - first.seq) / 25.0, abs=1e-6)


@pytest.mark.parametrize("due", [20, 23], ids=["start-of-a-pass", "mid-pass"])
def test_a_looped_file_that_falls_behind_reads_the_frame_due(tmp_path: Path, due: int) -> None:
    # a busy machine: the reader stands at the file's last frame when the frame due is in a later pass
    video = write_video(tmp_path / "a.avi", 10)
    with VideoFileSource(video, loop=True, clock=None) as src:
        for _ in range(9):
            src.read()
        src.due_seq = lambda: due  # type: ignore[method-assign]
        first = src.read()
        del src.due_seq
        rest = [src.read() for _ in range(12)]  # on through the end of the pass and round again: no false "corrupt"
    frames = [first, *rest]
    assert all(f is not None for f in frames)
    assert [f.seq for f in frames if f] == list(range(due, due + 13))
    assert [decode_index(f.image_bgr) for f in frames if f] == [s % 10 for s in range(due, due + 13)]


def test_video_file_resume_at_seq(tmp_path: Path) -> None:
    video = write_video(tmp_path / "a.avi", 10)
    with VideoFileSource(video, seq_start=6) as src:
        f = src.read()
    assert f is not None and f.seq == 6 and decode_index(f.image_bgr) == 6


def test_missing_empty_corrupt_and_truncated_video(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        VideoFileSource(tmp_path / "nope.avi").open()
    (tmp_path / "empty.avi").write_bytes(b"")
    with pytest.raises(SourceError, match="empty"):
        VideoFileSource(tmp_path / "empty.avi").open()
    (tmp_path / "junk.avi").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    with pytest.raises(SourceError, match="cannot decode"):
        VideoFileSource(tmp_path / "junk.avi").open()
    full = write_video(tmp_path / "full.avi", 30).read_bytes()
    (tmp_path / "cut.avi").write_bytes(full[: len(full) // 2])
    half = len(full) // 2
    (tmp_path / "mid.avi").write_bytes(full[:half] + bytes(4000) + full[half + 4000 :])  # corrupt in the middle
    for name in ("cut.avi", "mid.avi"):
        for loop in (False, True):  # looping never plays a broken file round again
            frames = []
            with VideoFileSource(tmp_path / name, loop=loop) as src, pytest.raises(SourceError) as err:
                for _ in range(100):
                    frames.append(src.read())
            assert 0 < len(frames) < 30 and all(f is not None for f in frames)
            assert str(err.value).startswith(str(tmp_path / name)) and "truncated or corrupt" in str(err.value)
            assert "\n" not in str(err.value)


def test_image_folder_sorted_skips_unreadable(tmp_path: Path) -> None:
    for i in (2, 0, 1):
        cv2.imwrite(str(tmp_path / f"f{i:03d}.png"), coded_frame(i))
    (tmp_path / "f001b.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored")
    gray = np.full((48, 64), 60, np.uint8)
    cv2.imwrite(str(tmp_path / "f005.png"), gray)
    with ImageFolderSource(tmp_path, fps=5.0, clock=None) as src:
        frames = list(iter(src.read, None))
    assert [decode_index(f.image_bgr) for f in frames] == [0, 1, 2, 3]
    assert [f.seq for f in frames] == [0, 1, 3, 4]  # the unreadable file leaves a gap
    assert frames[-1].image_bgr.shape == (48, 64, 3)
    assert frames[1].t_capture_s == pytest.approx(0.2)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        ImageFolderSource(tmp_path / "nope").open()
    with pytest.raises(SourceError, match="no image files"):
        ImageFolderSource(tmp_path).open()


def test_camera_uri_kinds() -> None:
    assert camera_target("0")[0] == 0
    assert camera_target("/dev/video2")[1] == cv2.CAP_V4L2
    assert camera_target("rtsp://user:pw@10.0.0.9/stream")[1] == cv2.CAP_FFMPEG
    assert "pw" not in camera_target("rtsp://user:pw@10.0.0.9/stream")[2]
    assert camera_target("v4l2src ! videoconvert ! appsink")[1] == cv2.CAP_GSTREAMER


def test_camera_over_a_stream_file_and_its_failure(tmp_path: Path) -> None:
    video = write_video(tmp_path / "cam.avi", 3)
    cam = CameraSource(str(video))
    with cam:
        got = [cam.read() for _ in range(3)]
        assert [f.seq for f in got if f] == [0, 1, 2]
        with pytest.raises(SourceError, match="stopped delivering"):
            cam.read()
    with pytest.raises(SourceError, match="cannot open"):
        CameraSource(str(tmp_path / "absent.avi")).open()


def test_open_source_and_probe(tmp_path: Path) -> None:
    video = write_video(tmp_path / "a.avi", 3, fps=12.0, wh=(80, 40))
    cfg = SourceConfig(kind="file", uri=str(video))
    assert isinstance(open_source(cfg), VideoFileSource)
    assert probe(cfg) == ((80, 40), 12.0)
    with pytest.raises(SourceError, match="synthetic"):
        open_source(SourceConfig())
