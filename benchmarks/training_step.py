"""Where the time of a tokenizer-pretraining step goes, and what the patch-embedding stem saves.

The quickstart's budget is set by its 900 training steps, so this times one step of the model a
pretraining config builds (default ``experiments/quickstart.yaml``, through the CLI's parser), on a
random batch of the config's size, and its parts, interleaved round-robin:

- the whole step: tokenize, the decoder's loss, backward, the optimizer's step;
- the frame encoder alone, forward + backward, on every frame of the batch;
- the tokenizer (encoder + pooling + projection), forward + backward;
- the decoder's loss on fixed tokens, forward + backward.

A second table times the encoder's patch-embedding stem (a convolution whose kernel is its stride)
run as ``nn.Conv2d``, the baseline, and as the one matrix product the encoders use
(:func:`vtok_lit.core.frame_encoders.embed_patches`), forward + backward on the batch's frames.

    python benchmarks/training_step.py            # add --quick, --config, --threads 1
"""

from __future__ import annotations

import argparse
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

from vtok_lit.cli import main as cli_main
from vtok_lit.core.frame_encoders import ConvFrameEncoder, ViTFrameEncoder, embed_patches
from vtok_lit.modules import TokenizerPretraining

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
        optimizer.zero_grad(set_to_none=True)
        model.decoder.loss(model.tokenizer(video), video).backward()
        optimizer.step()

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
    return write_report(
        NAME,
        "Tokenizer-pretraining step: where the time goes",
        notes,
        tables,
        machine,
        {**vars(args), **shape},
        args.output_dir,
        raw={"seconds": {"parts": part_seconds, "stem": stem_seconds}},
    )


if __name__ == "__main__":
    main()
