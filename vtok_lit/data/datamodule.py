"""The one LightningDataModule of the kit: clips of a JSONL manifest, or the built-in MotionShapes."""

from __future__ import annotations

import signal
import warnings
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from vtok_lit.data.dataset import BAD_VIDEO_ERRORS, BadVideoPolicy, VideoTextDataset, collate_video_text
from vtok_lit.data.manifest import ManifestRecord, read_manifest
from vtok_lit.data.motionshapes import MotionShapesConfig, ensure_motionshapes
from vtok_lit.data.resumable import EpochSeededSampler, ResumableDataLoader, SkippingBatchSampler
from vtok_lit.data.video_io import FrameSampling, VideoBackend

# How many missing or unreadable files a warning or an error lists by name.
_MISSING_SHOWN = 5
# How many clips of a split are tried to name the unreadable ones in an error.
_PROBED = 50
# A frozen dataclass, so one shared default instance is safe.
_DEFAULT_CORPUS = MotionShapesConfig()


def _first(records: list[ManifestRecord]) -> str:
    shown = ", ".join(str(record.video) for record in records[:_MISSING_SHOWN])
    return shown + (", ..." if len(records) > _MISSING_SHOWN else "")


def _leave_signals_to_the_main_process(worker_id: int) -> None:
    """Ctrl+C and SIGTERM reach a loader's workers too: ignored there, they let the main process finish
    its step and checkpoint (InterruptCheckpoint) instead of finding its workers gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class VideoTextDataModule(L.LightningDataModule):
    """Video clips with captions and questions, from a manifest or the built-in MotionShapes corpus.

    Batches are dicts from :func:`vtok_lit.data.dataset.collate_video_text`: ``"video"``
    ``(B, T, 3, H, W)`` float32 in ``[0, 1]``, ``"frame_indices"`` ``(B, T)``, lists ``"caption"``,
    ``"questions"``, ``"path"``, ``"meta"``, and ``"num_skipped"``. A batch whose every clip was
    skipped is None.
    """

    def __init__(
        self,
        manifest: str | None = None,
        data_dir: str = "data/motionshapes",
        corpus: MotionShapesConfig = _DEFAULT_CORPUS,
        num_frames: int = 16,
        frame_sampling: FrameSampling = "uniform",
        frame_stride: int = 1,
        target_fps: float | None = None,
        image_size: int = 64,
        batch_size: int = 16,
        num_workers: int = 0,
        bad_video_policy: BadVideoPolicy = "raise",
        video_backend: VideoBackend = "pyav",
        cache_decoded_clips: bool = False,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        max_train_clips: int | None = None,
        max_val_clips: int | None = None,
        seed: int = 0,
    ) -> None:
        """Configure the data.

        Args:
            manifest: JSONL manifest of the clips (see :mod:`vtok_lit.data.manifest`); None uses
                the built-in MotionShapes corpus, generated into ``data_dir`` when missing.
            data_dir: Folder of the MotionShapes corpus (used when ``manifest`` is None).
            corpus: Parameters of the MotionShapes corpus (used when ``manifest`` is None).
            num_frames: Frames sampled from each clip.
            frame_sampling: ``"uniform"``: evenly from the first to the last frame; ``"stride"``:
                every ``frame_stride``-th frame from the start; ``"fps"``: resampled to
                ``target_fps`` from the start.
            frame_stride: Step between frames for ``"stride"`` sampling.
            target_fps: Frame rate for ``"fps"`` sampling.
            image_size: Side of the square frames (shorter side resized, longer side centre-cropped).
            batch_size: Clips per batch.
            num_workers: DataLoader worker processes; 0 reads in the main process.
            bad_video_policy: ``"raise"``: a missing, undecodable, damaged (truncated, corrupt) or
                too short video is an error naming its manifest line; ``"skip"``: it is dropped from
                its batch with a warning (missing files are listed at setup too) and counted in
                ``"num_skipped"``, logged as ``data/skipped_videos``. A split whose every file is
                missing is an error.
            video_backend: The decoder: ``"pyav"`` seeks to the keyframe before each sampled frame;
                ``"decord"`` decodes from the first frame, since its seeking returns wrong frames on
                B-frame content. Both give the frames a sequential decode gives
                (``benchmarks/results/data_loading.md`` compares their speed).
            cache_decoded_clips: Keep every clip's decoded frames in memory after its first read,
                so only the first epoch decodes (uint8 at the video's own size: about 0.4 GB for
                MotionShapes's 2200 clips of 16 x 64 x 64). Each DataLoader worker keeps its own.
            train_split: Manifest split used for training.
            val_split: Manifest split used for validation and prediction.
            test_split: Manifest split used for testing; the validation split when the manifest
                has no line of this split.
            max_train_clips: Use only the first this many training clips (for debug runs).
            max_val_clips: Use only the first this many validation, test and prediction clips.
            seed: Seed of the training loader's shuffling.
        """
        super().__init__()
        self._clip_args = {
            "num_frames": num_frames,
            "frame_sampling": frame_sampling,
            "frame_stride": frame_stride,
            "target_fps": target_fps,
            "image_size": image_size,
            "bad_video_policy": bad_video_policy,
            "video_backend": video_backend,
            "cache_decoded_clips": cache_decoded_clips,
        }
        # An empty dataset checks the clip arguments now rather than after the corpus is generated.
        VideoTextDataset([], **self._clip_args)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must not be negative, got {num_workers}")
        for name, value in (("max_train_clips", max_train_clips), ("max_val_clips", max_val_clips)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 or None, got {value}")
        self.save_hyperparameters()
        # Under LightningCLI, hparams hold the parsed config (a dict here), so keep the object too.
        self.corpus = corpus
        self.manifest_path = Path(manifest) if manifest is not None else Path(data_dir) / "manifest.jsonl"
        self.num_skipped_missing = 0
        self._missing: set[Path] = set()
        self._splits: dict[str, list[ManifestRecord]] | None = None
        self.datasets: dict[str, VideoTextDataset] = {}
        # The manifest split each role ("train", "val", "test", "predict") reads, once set up.
        self.splits: dict[str, str] = {}

    def prepare_data(self) -> None:
        if self.hparams.manifest is None:
            ensure_motionshapes(self.hparams.data_dir, self.corpus)

    def setup(self, stage: str) -> None:
        splits = self._read_splits()
        test_split = self.hparams.test_split if self.hparams.test_split in splits else self.hparams.val_split
        names = {
            "fit": {"train": self.hparams.train_split, "val": self.hparams.val_split},
            "validate": {"val": self.hparams.val_split},
            "test": {"test": test_split},
            "predict": {"predict": self.hparams.val_split},
        }[stage]
        for role, split in names.items():
            limit = self.hparams.max_train_clips if role == "train" else self.hparams.max_val_clips
            records = splits.get(split, [])[:limit]
            if not records:
                raise ValueError(
                    f"split {split!r} (for {role}) has no usable clips in {self.manifest_path}; "
                    f"splits found: {sorted(splits)}"
                )
            missing = [record for record in records if record.video in self._missing]
            if len(missing) == len(records):
                raise FileNotFoundError(
                    f"split {split!r} (for {role}) of {self.manifest_path}: every one of its {len(records)} "
                    f"video files is missing: {_first(missing)}"
                )
            self.splits[role] = split
            # Missing files stay: read, they are skipped like undecodable ones and counted with them.
            self.datasets[role] = VideoTextDataset(records, **self._clip_args)

    def unreadable_clips(self, role: str) -> list[str]:
        """The errors of the first few clips of a role's dataset that cannot be read, for messages."""
        dataset = self.datasets[role]
        strict = VideoTextDataset(
            dataset.records[:_PROBED], **{**self._clip_args, "bad_video_policy": "raise"}
        )
        errors = []
        for index in range(len(strict)):
            try:
                strict[index]
            except BAD_VIDEO_ERRORS as error:
                errors.append(str(error))
                if len(errors) == _MISSING_SHOWN:
                    break
        return errors

    def _read_splits(self) -> dict[str, list[ManifestRecord]]:
        """Read the manifest once, check which referenced files exist, and group records by split."""
        if self._splits is not None:
            return self._splits
        records = read_manifest(self.manifest_path)
        missing = [record for record in records if not record.video.is_file()]
        if missing and self.hparams.bad_video_policy == "raise":
            first = missing[0]
            raise FileNotFoundError(
                f"{first.location}: video file not found: {first.video}"
                f" ({len(missing)} of {len(records)} videos in the manifest are missing)"
            )
        if missing:
            warnings.warn(
                f"{self.manifest_path}: skipping {len(missing)} of {len(records)} clips whose video file "
                f"is missing: {_first(missing)}",
                stacklevel=2,
            )
        self.num_skipped_missing = len(missing)
        self._missing = {record.video for record in missing}
        self._splits = {}
        for record in records:
            self._splits.setdefault(record.split, []).append(record)
        return self._splits

    def question_categories(self) -> list[str]:
        """The question categories of the manifest (every split), sorted; call after :meth:`setup`.

        Any category names are fine: metrics report accuracy for each, and questions without one
        count in the overall figure only.
        """
        records = [record for split in self._read_splits().values() for record in split]
        return sorted({qa.category for record in records for qa in record.qa if qa.category is not None})

    def _loader(self, role: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[role]
        workers = self.hparams.num_workers
        options = {
            "num_workers": workers,
            "collate_fn": collate_video_text,
            "persistent_workers": workers > 0,
            "worker_init_fn": _leave_signals_to_the_main_process if workers > 0 else None,
        }
        if not shuffle:
            return DataLoader(dataset, batch_size=self.hparams.batch_size, **options)
        # The order depends only on (seed, epoch) and checkpoints record the place in it, so a resumed
        # run trains on the same batches as one that never stopped.
        sampler = EpochSeededSampler(dataset, seed=self.hparams.seed)
        return ResumableDataLoader(
            dataset,
            batch_sampler=SkippingBatchSampler(sampler, self.hparams.batch_size, drop_last=False),
            # Worker seeds come from here rather than from the global RNG the model's draws use.
            generator=torch.Generator().manual_seed(self.hparams.seed),
            **options,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)
