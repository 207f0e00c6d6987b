"""Where the time of a tokenizer-pretraining step (and validation batch) goes, and what the kit's
faster paths save.

The quickstart's budget is set by its 900 training steps, so this times one step of the model a
pretraining config builds (default ``experiments/quickstart.yaml``, through the CLI's parser), on a
random batch of the config's size, and its parts, interleaved round-robin:

- the whole step: the training loss (``TokenizerPretraining.training_loss``: tokenize, the decoder's
  loss and the config's other terms), backward, the optimizer's step;
- the frame encoder alone, forward + backward, on every frame of the batch;
- the tokenizer (encoder + pooling + projection), forward + backward;
- the decoder's loss on fixed tokens, forward + backward.

A second table times the encoder's patch-embedding stem (a convolution whose kernel is its stride)
run as ``nn.Conv2d``, the baseline, and as the one matrix product the encoders use
(:func:`vtok_lit.core.frame_encoders.embed_patches`), forward + backward on the batch's frames.

A third times the whole step with the decoder's locality bias stopped at ``LOCALITY_BIAS_FLOOR``
(the kit) and without a floor, the baseline: far tokens then get softmax weights that float32 holds
as denormals, which slow CPU matrix products. It shows once the locality strengths have been
learned, so time a trained model with ``--checkpoint``.

A fourth times one validation batch in evaluation mode: the decoder's loss and decoded clip as two
calls (the baseline) and as :meth:`~vtok_lit.core.video_decoders.VideoDecoder.loss_and_decode`, and
SSIM over the batch's frames with torchmetrics' ``StructuralSimilarityIndexMeasure`` (the baseline)
and the kit's :class:`~vtok_lit.metrics.StructuralSimilarity`.

A fifth times the whole step with still frames (``still_frames_per_clip``): the decoder's loss on 4
frames of each clip (the baseline), with 2 or 4 still frames, and on 2 frames with 2 still frames
(as many decoded frames as the baseline).

    python benchmarks/training_step.py            # add --quick, --config, --checkpoint, --threads 1
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from harness import (
    Column,
    add_common_arguments,
    apply_threads,
    machine_info,
    median,
    milliseconds,
    time_interleaved,
    write_report,
)
from torchmetrics.image import StructuralSimilarityIndexMeasure

from vtok_lit.cli import main as cli_main
from vtok_lit.core import video_decoders
from vtok_lit.core.frame_encoders import ConvFrameEncoder, ViTFrameEncoder, embed_patches
from vtok_lit.metrics import StructuralSimilarity
from vtok_lit.modules import TokenizerPretraining
from vtok_lit.modules.checkpoints import load_part_weights, read_checkpoint

NAME = "training_step"
REPOSITORY = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=REPOSITORY / "experiments" / "quickstart.yaml",
        help="a tokenizer-pretraining config (model and data sections are read)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="time the config's model with this pretraining checkpoint's (learned) weights",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="clips a step (default: the config's)")
    parser.add_argument("--frames", type=int, default=None, help="frames a clip (default: the config's)")
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    add_common_arguments(parser, repeats=None, warmup=2)
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 10)
    return args


def build(args: argparse.Namespace) -> tuple[TokenizerPretraining, torch.Tensor, dict[str, Any]]:
    """The config's model and a random batch of its clips."""
    cli = cli_main(["-c", str(args.config), "--trainer.logger=false"], run=False)
    model = cli.model
    if not isinstance(model, TokenizerPretraining):
        raise ValueError(f"{args.config}: model must be a TokenizerPretraining, got {type(model).__name__}")
    if args.checkpoint is not None:
        checkpoint = read_checkpoint(args.checkpoint)
        for part in ("tokenizer", "decoder"):
            load_part_weights(getattr(model, part), str(args.checkpoint), part, checkpoint)
    data = dict(cli.datamodule.hparams)
    batch_size = args.batch_size or data["batch_size"]
    frames = args.frames or data["num_frames"]
    generator = torch.Generator().manual_seed(args.seed)
    size = data["image_size"]
    video = torch.rand(batch_size, frames, 3, size, size, generator=generator)
    settings = {"batch_size": batch_size, "frames": frames, "image_size": size}
    return model.train(), video, settings


def stem_of(encoder: torch.nn.Module) -> torch.nn.Conv2d | None:
    if isinstance(encoder, ConvFrameEncoder):
        return encoder.stem
    if isinstance(encoder, ViTFrameEncoder):
        return encoder.patch_embedding
    return None


@contextmanager
def locality_bias_floor(value: float) -> Iterator[None]:
    """The decoder's locality bias stops at ``value`` inside the block (``-inf``: no floor)."""
    saved = video_decoders.LOCALITY_BIAS_FLOOR
    video_decoders.LOCALITY_BIAS_FLOOR = value
    try:
        yield
    finally:
        video_decoders.LOCALITY_BIAS_FLOOR = saved


def paired_rows(samples: dict[str, list[float]], baselines: dict[str, str]) -> list[dict[str, Any]]:
    """One row a timed call: its median and its ratio to the median of its baseline call."""
    return [
        {"call": name, "seconds": median(times), "ratio": median(times) / median(samples[baselines[name]])}
        for name, times in samples.items()
    ]


def validation_seconds(
    model: TokenizerPretraining, video: torch.Tensor, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Times one validation batch's decoder calls and SSIM, each against the path it replaces."""
    model.eval()
    num_frames = video.shape[1]
    frames = video.flatten(0, 1)
    similarities = {
        "SSIM: torchmetrics": StructuralSimilarityIndexMeasure(data_range=1.0),
        "SSIM: StructuralSimilarity": StructuralSimilarity(data_range=1.0),
    }
    with torch.no_grad():
        tokens = model.tokenizer(video)
        rendered = model.decoder.decode(tokens, num_frames).flatten(0, 1)

        def similarity(name: str) -> None:
            similarities[name].update(rendered, frames)
            similarities[name].compute()
            similarities[name].reset()

        calls = {
            "loss, then decode": lambda: (
                model.decoder.loss(tokens, video),
                model.decoder.decode(tokens, num_frames),
            ),
            "loss_and_decode": lambda: model.decoder.loss_and_decode(tokens, video),
            **{name: partial(similarity, name) for name in similarities},
        }
        samples = time_interleaved(calls, args.warmup, args.repeats)
    model.train()
    return samples


def training_step(model: TokenizerPretraining, optimizer: torch.optim.Optimizer, video: torch.Tensor) -> None:
    """One optimizer step on the model's training loss of ``video``, as fitting takes it."""
    optimizer.zero_grad(set_to_none=True)
    model.training_loss(video)[0].backward()
    optimizer.step()


# (frames_per_clip, still_frames_per_clip) of each row.
STILL_SETTINGS = {
    "4 frames a clip": (4, 0),
    "4 frames + 2 still frames": (4, 2),
    "4 frames + 4 still frames": (4, 4),
    "2 frames + 2 still frames": (2, 2),
}
STILL_BASELINE = "4 frames a clip"


def still_frame_seconds(
    model: TokenizerPretraining,
    optimizer: torch.optim.Optimizer,
    video: torch.Tensor,
    args: argparse.Namespace,
) -> dict[str, list[float]]:
    """Seconds of the whole training step (:func:`training_step`) under each of ``STILL_SETTINGS``;
    the model's own settings are put back."""
    saved = model.decoder.frames_per_clip, model.still_frames_per_clip

    def step(frames_per_clip: int, still_frames: int) -> None:
        model.decoder.frames_per_clip, model.still_frames_per_clip = frames_per_clip, still_frames
        training_step(model, optimizer, video)

    calls = {name: partial(step, *setting) for name, setting in STILL_SETTINGS.items()}
    try:
        return time_interleaved(calls, args.warmup, args.repeats)
    finally:
        model.decoder.frames_per_clip, model.still_frames_per_clip = saved


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    apply_threads(args.threads)
    torch.manual_seed(args.seed)
    model, video, shape = build(args)
    machine = machine_info()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    encoder = model.tokenizer.frame_encoder
    frames = video.flatten(0, 1)
    with torch.no_grad():
        fixed = model.tokenizer(video)

    def step() -> None:
        training_step(model, optimizer, video)

    def decoder_only() -> None:
        model.decoder.loss(fixed.with_tokens(fixed.tokens.clone().requires_grad_()), video).backward()

    parts = {
        "whole step": step,
        "frame encoder": lambda: encoder(frames).square().mean().backward(),
        "tokenizer": lambda: model.tokenizer(video).tokens.square().mean().backward(),
        "decoder loss": decoder_only,
    }
    part_seconds = time_interleaved(parts, args.warmup, args.repeats)
    whole = median(part_seconds["whole step"])
    part_rows = [
        {"part": part, "seconds": median(samples), "share": median(samples) / whole}
        for part, samples in part_seconds.items()
    ]

    def step_without_floor() -> None:
        with locality_bias_floor(-math.inf):
            step()

    floor_seconds = time_interleaved(
        {"no floor": step_without_floor, "LOCALITY_BIAS_FLOOR": step}, args.warmup, args.repeats
    )
    floor_rows = paired_rows(floor_seconds, {name: "no floor" for name in floor_seconds})
    validation = validation_seconds(model, video, args)
    validation_rows = paired_rows(
        validation,
        {
            "loss, then decode": "loss, then decode",
            "loss_and_decode": "loss, then decode",
            "SSIM: torchmetrics": "SSIM: torchmetrics",
            "SSIM: StructuralSimilarity": "SSIM: torchmetrics",
        },
    )
    still = still_frame_seconds(model, optimizer, video, args)
    still_rows = paired_rows(still, {name: STILL_BASELINE for name in still})
    stem_rows, stem_seconds = [], {}
    stem = stem_of(encoder)
    if stem is not None:
        stem_input = torch.rand(len(frames), stem.in_channels, *frames.shape[-2:])
        stem_seconds = time_interleaved(
            {
                "nn.Conv2d": lambda: stem(stem_input).square().mean().backward(),
                "embed_patches": lambda: (
                    embed_patches(stem_input, stem.weight, stem.bias).square().mean().backward()
                ),
            },
            args.warmup,
            args.repeats,
        )
        baseline = median(stem_seconds["nn.Conv2d"])
        stem_rows = [
            {"stem": name, "seconds": median(samples), "ratio": median(samples) / baseline}
            for name, samples in stem_seconds.items()
        ]
    notes = [
        f"Model of {args.config.name}: a batch of {shape['batch_size']} random clips of {shape['frames']} "
        f"frames, {shape['image_size']}x{shape['image_size']}, in training mode. Times: median of "
        f"{args.repeats} calls after {args.warmup} warm-up, the parts interleaved round-robin; the "
        "parts overlap (the tokenizer holds the frame encoder; the whole step also holds the optimizer).",
        "Stem: the frame encoder's patch embedding, forward + backward on every frame of the batch, as "
        "nn.Conv2d (the baseline of the ratio) and as the matrix product the encoders run.",
        "Locality-bias floor: the whole step with the decoder's locality bias stopped at "
        f"LOCALITY_BIAS_FLOOR ({video_decoders.LOCALITY_BIAS_FLOOR:g}) and without a floor (the "
        "baseline). "
        + (
            f"Weights of {args.checkpoint.name}."
            if args.checkpoint
            else "Fresh weights: the floor matters once the locality strengths are learned (--checkpoint)."
        ),
        "Validation batch: the decoder's loss and decoded clip of every frame as two calls (the baseline) "
        "and as loss_and_decode; SSIM of the batch's decoded frames with torchmetrics (the baseline) "
        "and the kit's StructuralSimilarity.",
        "Still frames: the whole step as TokenizerPretraining trains it, with the decoder's loss on "
        "frames_per_clip frames of each clip and still_frames_per_clip other frames rebuilt as one-frame "
        f"clips, against {STILL_BASELINE!r} (the baseline).",
    ]
    tables = [
        (
            "Parts of a step",
            [
                Column("part", "part"),
                Column("ms", "seconds", milliseconds),
                Column("share of the whole step", "share", ".0%"),
            ],
            part_rows,
        )
    ]
    if stem_rows:
        tables.append(
            (
                "Patch-embedding stem",
                [
                    Column("stem", "stem"),
                    Column("ms", "seconds", milliseconds),
                    Column("time / nn.Conv2d", "ratio", ".2f"),
                ],
                stem_rows,
            )
        )
    paired_columns = [
        Column("call", "call"),
        Column("ms", "seconds", milliseconds),
        Column("time / baseline", "ratio", ".2f"),
    ]
    tables.append(("Locality-bias floor: the whole step", paired_columns, floor_rows))
    tables.append(("One validation batch (evaluation mode)", paired_columns, validation_rows))
    tables.append(("Still frames: the whole step", paired_columns, still_rows))
    return write_report(
        NAME,
        "Tokenizer-pretraining step: where the time goes",
        notes,
        tables,
        machine,
        {**vars(args), **shape},
        args.output_dir,
        raw={
            "seconds": {
                "parts": part_seconds,
                "stem": stem_seconds,
                "floor": floor_seconds,
                "validation": validation,
                "still_frames": still,
            }
        },
    )


if __name__ == "__main__":
    main()
