"""Video writing and reading, frame sampling, and the errors a bad video file gives."""

from pathlib import Path

import numpy as np
import pytest
import torch

from vtok_lit.data.video_io import (
    VideoDecodeError,
    VideoTooShortError,
    read_clip,
    read_frames,
    sample_frame_indices,
    video_info,
    write_video,
)


def smooth_frames(num_frames: int, height: int = 32, width: int = 48) -> np.ndarray:
    """Gradients that drift over time: easy for H.264, so decoded values stay close."""
    t, y, x = np.meshgrid(np.arange(num_frames), np.arange(height), np.arange(width), indexing="ij")
    red = 40 + 150 * x / width + 3 * t
    green = 60 + 120 * y / height
    blue = np.full_like(red, 128.0) - 4 * t
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


# decord reads 64 px wide frames itself; 48 px ones it cannot copy out and PyAV reads them.
@pytest.mark.parametrize("width", [64, 48])
def test_write_read_round_trip(tmp_path: Path, width: int) -> None:
    frames = smooth_frames(10, width=width)
    path = tmp_path / "clip.mp4"
    write_video(path, torch.from_numpy(frames), fps=12)
    assert video_info(path) == (10, 12.0)
    decoded = read_frames(path, range(10))
    assert decoded.dtype == torch.uint8 and decoded.shape == (10, 32, width, 3)
    error = (decoded.float() - torch.from_numpy(frames).float()).abs()
    assert error.mean() < 2 and error.max() < 24
    assert torch.equal(read_frames(path, [9, 0, 9]), decoded[[9, 0, 9]])


def test_write_video_rejects_odd_sizes_and_wrong_dtypes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 32, 3), np.uint8), fps=8)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "float.mp4", np.zeros((2, 32, 32, 3), np.float32), fps=8)


def test_uniform_sampling_spans_the_whole_clip() -> None:
    assert sample_frame_indices(10, 4, "uniform").tolist() == [0, 3, 6, 9]
    assert sample_frame_indices(16, 16, "uniform").tolist() == list(range(16))
    assert sample_frame_indices(100, 1, "uniform").tolist() == [0]
    indices = sample_frame_indices(17, 16, "uniform")
    assert indices[0] == 0 and indices[-1] == 16 and len(set(indices.tolist())) == 16


def test_stride_sampling_steps_from_the_start() -> None:
    assert sample_frame_indices(100, 4, "stride", stride=3).tolist() == [0, 3, 6, 9]
    assert sample_frame_indices(10, 4, "stride", stride=3).tolist() == [0, 3, 6, 9]


def test_fps_sampling_resamples_from_the_start() -> None:
    down = sample_frame_indices(100, 5, "fps", source_fps=30, target_fps=10)
    assert down.tolist() == [0, 3, 6, 9, 12]
    up = sample_frame_indices(100, 6, "fps", source_fps=8, target_fps=16)
    assert up.tolist() == [0, 0, 1, 1, 2, 2]
    assert sample_frame_indices(100, 3, "fps", source_fps=25, target_fps=10).tolist() == [0, 2, 5]


@pytest.mark.parametrize(
    ("available", "num_frames", "kwargs", "needed"),
    [
        (3, 4, {"mode": "uniform"}, 4),
        (9, 4, {"mode": "stride", "stride": 3}, 10),
        (12, 5, {"mode": "fps", "source_fps": 30, "target_fps": 10}, 13),
    ],
)
def test_too_short_clip_names_the_path_and_the_counts(
    available: int, num_frames: int, kwargs: dict, needed: int
) -> None:
    with pytest.raises(VideoTooShortError, match=rf"clip\.mp4: {available} frames .* needs {needed}"):
        sample_frame_indices(available, num_frames, path="clip.mp4", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_frames": 0}, "num_frames"),
        ({"mode": "random"}, "one of"),
        ({"mode": "stride", "stride": 0}, "stride"),
        ({"mode": "fps", "source_fps": 30}, "target_fps"),
    ],
)
def test_impossible_sampling_arguments_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample_frame_indices(**{"num_available": 10, "num_frames": 4, **kwargs})


def test_read_clip_samples_at_the_video_frame_rate(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, smooth_frames(12), fps=8)
    frames, indices = read_clip(path, 4, "fps", target_fps=4)
    assert indices.tolist() == [0, 2, 4, 6]
    assert torch.equal(frames, read_frames(path, [0, 2, 4, 6]))


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.mp4"
    with pytest.raises(FileNotFoundError, match="absent.mp4"):
        read_frames(path, [0])
    with pytest.raises(FileNotFoundError, match="absent.mp4"):
        video_info(path)


def test_corrupt_file_names_the_path_and_the_decoder_reason(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mp4"
    path.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoDecodeError, match=r"garbage\.mp4: Invalid data"):
        read_clip(path, 4)


def test_too_short_video_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "short.mp4"
    write_video(path, smooth_frames(4), fps=8)
    with pytest.raises(VideoTooShortError, match=r"short\.mp4: 4 frames available, uniform .* needs 8"):
        read_clip(path, 8)


def test_out_of_range_index_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, smooth_frames(4), fps=8)
    with pytest.raises(IndexError, match=r"clip\.mp4: frame indices \[4\]"):
        read_frames(path, [0, 4])


@pytest.mark.parametrize(
    ("mode", "options"), [("uniform", {}), ("stride", {"stride": 3}), ("fps", {"target_fps": 4})]
)
def test_pyav_backend_reads_the_frames_decord_reads(tmp_path: Path, mode: str, options: dict) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, smooth_frames(12, width=64), fps=8)
    frames, indices = read_clip(path, 4, mode, **options)
    pyav_frames, pyav_indices = read_clip(path, 4, mode, **options, backend="pyav")
    assert torch.equal(pyav_indices, indices)
    assert torch.equal(pyav_frames, frames)


def test_pyav_backend_names_the_file_at_fault(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.mp4"):
        read_clip(tmp_path / "absent.mp4", 4, backend="pyav")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoDecodeError, match=r"garbage\.mp4: .*Invalid data"):
        read_clip(garbage, 4, backend="pyav")
    short = tmp_path / "short.mp4"
    write_video(short, smooth_frames(4), fps=8)
    with pytest.raises(VideoTooShortError, match=r"short\.mp4: 4 frames available"):
        read_clip(short, 8, backend="pyav")
    with pytest.raises(ValueError, match="'opencv'"):
        read_clip(short, 2, backend="opencv")
