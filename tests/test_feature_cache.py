"""The frozen-encoder feature cache: hits skip the encoder, every input of the features is in the key."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import LambdaCallback

from vtok_lit.cli import main
from vtok_lit.core import (
    ConvFrameEncoder,
    FrameFeatureCache,
    OpenCLIPFrameEncoder,
    TransformerLM,
    VTokTokenizer,
    encode_frames_cached,
)
from vtok_lit.data import VideoTextDataModule
from vtok_lit.modules import VideoLLM
from vtok_lit.modules.video_llm import question_rows

CONF = Path(__file__).parent / "conf"
NUM_FRAMES = 4
SIZE = 16


def frozen_tokenizer(seed: int = 0) -> VTokTokenizer:
    torch.manual_seed(seed)
    tokenizer = VTokTokenizer(ConvFrameEncoder(channels=8, patch_size=4), token_dim=16, grid_size=2)
    return tokenizer.requires_grad_(False)


def count_encoded_frames(tokenizer: VTokTokenizer) -> list[int]:
    """A list that collects the number of frames of every frame-encoder call from now on."""
    calls: list[int] = []
    tokenizer.frame_encoder.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    return calls


@pytest.fixture
def clips(tmp_path: Path) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Two clips: ``(2, T, 3, H, W)`` frames, their (stand-in) video files and ``(2, T)`` frame indices."""
    paths = []
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(name.encode())
        paths.append(str(tmp_path / name))
    torch.manual_seed(1)
    video = torch.rand(2, NUM_FRAMES, 3, SIZE, SIZE)
    return video, paths, torch.arange(NUM_FRAMES).repeat(2, 1)


def test_a_hit_returns_the_stored_features_without_running_the_encoder(tmp_path, clips) -> None:
    video, paths, indices = clips
    tokenizer = frozen_tokenizer()
    cache = FrameFeatureCache(tmp_path / "cache")
    calls = count_encoded_frames(tokenizer)

    first = encode_frames_cached(tokenizer, video, paths, indices, cache)
    assert calls == [2 * NUM_FRAMES]
    torch.testing.assert_close(first, tokenizer.encode_frames(video), rtol=0, atol=0)
    calls.clear()
    second = encode_frames_cached(tokenizer, video, paths, indices, cache)
    assert calls == []
    torch.testing.assert_close(second, first, rtol=0, atol=0)

    # A batch mixing a cached clip and a new one encodes the new one alone, and keeps the batch order.
    new_path = tmp_path / "c.mp4"
    new_path.write_bytes(b"c")
    new_clip = torch.rand(1, NUM_FRAMES, 3, SIZE, SIZE)
    mixed = encode_frames_cached(
        tokenizer, torch.cat([new_clip, video[1:]]), [str(new_path), paths[1]], indices, cache
    )
    assert calls == [NUM_FRAMES]
    torch.testing.assert_close(mixed[0], tokenizer.encode_frames(new_clip)[0])
    torch.testing.assert_close(mixed[1], first[1], rtol=0, atol=0)


def change_frame_indices(tokenizer, video, paths, indices):
    return tokenizer, video, paths, indices + 1


def rewrite_file(tokenizer, video, paths, indices):
    Path(paths[0]).write_bytes(b"a longer file")
    return tokenizer, video, paths, indices


def touch_file(tokenizer, video, paths, indices):
    stat = os.stat(paths[0])
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    return tokenizer, video, paths, indices


def other_encoder_weights(tokenizer, video, paths, indices):
    other = frozen_tokenizer(seed=1)
    assert other.frame_encoder.config_identity == tokenizer.frame_encoder.config_identity
    return other, video, paths, indices


def other_frame_size(tokenizer, video, paths, indices):
    resized = F.interpolate(video.flatten(0, 1), size=(SIZE + 8, SIZE + 8), mode="bilinear")
    return tokenizer, resized.unflatten(0, video.shape[:2]), paths, indices


@pytest.mark.parametrize(
    "change",
    [change_frame_indices, rewrite_file, touch_file, other_encoder_weights, other_frame_size],
)
def test_any_change_of_what_the_features_depend_on_misses(tmp_path, clips, change) -> None:
    tokenizer = frozen_tokenizer()
    cache = FrameFeatureCache(tmp_path / "cache")
    encode_frames_cached(tokenizer, *clips, cache)

    tokenizer, video, paths, indices = change(tokenizer, *clips)
    calls = count_encoded_frames(tokenizer)
    features = encode_frames_cached(tokenizer, video, paths, indices, cache)
    assert sum(calls) >= NUM_FRAMES, "a stale cache entry was read"
    torch.testing.assert_close(features, tokenizer.encode_frames(video))


def test_encoder_identity_follows_the_weights() -> None:
    torch.manual_seed(0)
    first, second = ConvFrameEncoder(channels=8), ConvFrameEncoder(channels=8)
    assert first.identity != second.identity
    assert first.identity.startswith(first.config_identity)
    second.load_state_dict(first.state_dict())
    assert second.identity == first.identity, "loading weights must refresh the digest"


def test_open_clip_identity_follows_the_weights(tmp_path) -> None:
    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 16, "layers": 1, "width": 16, "head_width": 8, "patch_size": 8},
        "text_cfg": {"context_length": 4, "vocab_size": 32, "width": 16, "heads": 2, "layers": 1},
    }
    path = tmp_path / "vtok-cache-test-vit.json"
    path.write_text(json.dumps(config))
    torch.manual_seed(0)
    first = OpenCLIPFrameEncoder(path.stem, model_config_path=str(path))
    second = OpenCLIPFrameEncoder(path.stem, model_config_path=str(path))
    assert first.config_identity == second.config_identity
    assert first.identity != second.identity


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated"])
def test_a_corrupt_file_warns_and_is_recomputed(tmp_path, clips, damage) -> None:
    tokenizer = frozen_tokenizer()
    cache = FrameFeatureCache(tmp_path / "cache")
    expected = encode_frames_cached(tokenizer, *clips, cache)
    file = next(iter(sorted((tmp_path / "cache").glob("*.pt"))))
    content = file.read_bytes()
    file.write_bytes({"garbage": b"not a cache file", "empty": b"", "truncated": content[:100]}[damage])

    calls = count_encoded_frames(tokenizer)
    with pytest.warns(UserWarning, match=file.name):
        features = encode_frames_cached(tokenizer, *clips, cache)
    assert calls == [NUM_FRAMES]
    torch.testing.assert_close(features, expected)
    encode_frames_cached(tokenizer, *clips, cache)  # the file was overwritten: no warning, no encoding
    assert calls == [NUM_FRAMES]


def test_float16_storage_rounds_every_epoch_alike(tmp_path, clips) -> None:
    tokenizer = frozen_tokenizer()
    cache = FrameFeatureCache(tmp_path / "cache", float16=True)
    first = encode_frames_cached(tokenizer, *clips, cache)
    assert first.dtype == torch.float32
    torch.testing.assert_close(first, tokenizer.encode_frames(clips[0]).half().float(), rtol=0, atol=0)
    torch.testing.assert_close(encode_frames_cached(tokenizer, *clips, cache), first, rtol=0, atol=0)


def test_a_trainable_encoder_is_refused(tmp_path, clips) -> None:
    tokenizer = frozen_tokenizer()
    tokenizer.frame_encoder.stem.requires_grad_(True)
    with pytest.raises(ValueError, match="frozen frame encoder.*freeze_tokenizer=True"):
        encode_frames_cached(tokenizer, *clips, FrameFeatureCache(tmp_path / "cache"))


def tiny_video_llm(**options) -> VideoLLM:
    tokenizer = VTokTokenizer(ConvFrameEncoder(channels=16, patch_size=4), token_dim=32, grid_size=2)
    lm = TransformerLM(hidden_size=32, num_layers=1, num_heads=2, max_seq_len=128)
    return VideoLLM(tokenizer, lm, projector_hidden_dim=32, **options)


def test_video_llm_needs_a_frozen_tokenizer_for_the_cache(tmp_path) -> None:
    with pytest.raises(ValueError, match="freeze_tokenizer: true"):
        tiny_video_llm(feature_cache_dir=str(tmp_path))


@pytest.fixture
def tiny_batch(tiny_corpus: Path) -> dict:
    data = VideoTextDataModule(manifest=str(tiny_corpus), num_frames=NUM_FRAMES, image_size=32, batch_size=4)
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def test_video_llm_loss_is_the_same_with_the_cache(tmp_path, tiny_batch) -> None:
    torch.manual_seed(0)
    model = tiny_video_llm(freeze_tokenizer=True, feature_cache_dir=str(tmp_path / "cache"))
    rows = question_rows(model.clip_questions(tiny_batch["questions"], sample=False))
    calls = count_encoded_frames(model.tokenizer)
    video, paths, indices = tiny_batch["video"], tiny_batch["path"], tiny_batch["frame_indices"]
    qa = model.model

    uncached = qa.loss(qa.video_prefix(video), rows)
    filling = qa.loss(qa.video_prefix(video, paths, indices), rows)
    assert len(calls) == 2
    reading = qa.loss(qa.video_prefix(video, paths, indices), rows)
    assert len(calls) == 2, "the second pass ran the frame encoder"
    torch.testing.assert_close(filling, uncached)
    torch.testing.assert_close(reading, uncached)


def test_training_runs_the_encoder_in_the_first_epoch_only(tmp_path, tiny_corpus) -> None:
    torch.manual_seed(0)
    model = tiny_video_llm(freeze_tokenizer=True, feature_cache_dir=str(tmp_path / "cache"))
    calls = count_encoded_frames(model.tokenizer)
    data = VideoTextDataModule(manifest=str(tiny_corpus), num_frames=NUM_FRAMES, image_size=32, batch_size=4)
    encoded: list[int] = []
    # Setup probes the encoder with one frame to check the grid fits; count from training's start.
    start = LambdaCallback(on_train_start=lambda trainer, module: encoded.append(sum(calls)))
    record = LambdaCallback(
        on_train_epoch_end=lambda trainer, module: encoded.append(sum(calls) - encoded[0])
    )
    trainer = L.Trainer(
        max_epochs=3,
        limit_val_batches=0,
        callbacks=[start, record],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(model, data)
    every_clip_once = len(data.datasets["train"]) * NUM_FRAMES
    assert encoded[1:] == [every_clip_once] * 3, "frames encoded by the end of each epoch"


def test_cli_fit_fills_the_cache(tmp_path) -> None:
    cache = tmp_path / "cache"
    main(
        [
            "fit",
            "-c",
            str(CONF / "understanding_tiny.yaml"),
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
            f"--trainer.default_root_dir={tmp_path}",
            f"--data.init_args.data_dir={tmp_path / 'corpus'}",
            "--model.init_args.freeze_tokenizer=true",
            f"--model.init_args.feature_cache_dir={cache}",
        ]
    )
    # 3 steps of 4 training clips (8 clips: each once) and one validation batch of 4.
    assert len(list(cache.glob("*.pt"))) == 8 + 4
