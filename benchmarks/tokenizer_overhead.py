"""What VTok adds on top of the frame encoder: tokenization time over the bare encoder forward.

A VTok tokenizer's forward is ``encode_frames`` (the frame encoder on every frame) followed by
``tokenize_features`` (grid-pool the key frame, pool and project the residuals). The goal is that
tokenizing costs at most 5% more than the encoder alone. For clips of T = 16 frames and a couple
of batch sizes, the table times, in the same run and interleaved round-robin:

- the bare frame encoder on the ``B * T`` frames,
- the whole tokenizer forward on the clips,
- ``tokenize_features`` alone on the encoder's features,

and gives the overhead both ways: end to end (tokenizer / encoder - 1, which carries the timing
noise of two large numbers) and directly (``tokenize_features`` / encoder). Everything runs in
inference mode (no gradients), as when a frozen tokenizer feeds an LM.

Encoders: the ConvFrameEncoder of the understanding experiments (64 channels, 64x64 frames), and
an open_clip ViT with random weights (``--clip-model``, default ViT-S-32 at its 224x224 input, the
frames being resized inside the encoder; ``--clip-config`` takes a JSON model config instead).
Nothing is downloaded.

    python benchmarks/tokenizer_overhead.py           # batch sizes 1 and 4
    python benchmarks/tokenizer_overhead.py --quick   # batch size 1, fewer repeats
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
    resolve_device,
    time_interleaved,
    write_report,
)

from vtok_lit.core import ConvFrameEncoder, FrameEncoder, OpenCLIPFrameEncoder, VTokTokenizer

NAME = "tokenizer_overhead"
GOAL = 0.05
# VTok variants: the default (mean-pooled residuals) and attention-pooled residuals.
VARIANTS = {"vtok (mean)": "mean", "vtok (attention)": "attention"}


def build_encoder(name: str, clip_model: str, clip_config: Path | None) -> FrameEncoder:
    if name == "conv":
        return ConvFrameEncoder(channels=64)
    if clip_config is not None:
        return OpenCLIPFrameEncoder(clip_config.stem, pretrained=None, model_config_path=str(clip_config))
    return OpenCLIPFrameEncoder(clip_model, pretrained=None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoders", nargs="+", choices=["conv", "clip"], default=["conv", "clip"])
    parser.add_argument("--clip-model", default="ViT-S-32", help="open_clip model name, random weights")
    parser.add_argument(
        "--clip-config",
        type=Path,
        default=None,
        help="an open_clip JSON model config (overrides --clip-model)",
    )
    parser.add_argument("--frames", type=int, default=16, help="clip length T")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=None, help="clips a call (default 1 4; 1 with --quick)"
    )
    parser.add_argument("--image-size", type=int, default=64, help="side of the input frames")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--quick", action="store_true", help="batch size 1, 3 repeats")
    add_common_arguments(parser, repeats=None, warmup=1)
    args = parser.parse_args(argv)
    args.batch_sizes = args.batch_sizes or ([1] if args.quick else [1, 4])
    args.repeats = args.repeats or (3 if args.quick else 7)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    apply_threads(args.threads)
    device = resolve_device(args.device)
    machine = machine_info(device)
    rows, samples = [], {}
    for encoder_name in args.encoders:
        torch.manual_seed(args.seed)
        encoder = build_encoder(encoder_name, args.clip_model, args.clip_config).to(device).eval()
        # The variants share the one encoder, so every row times the very same frame features.
        tokenizers = {
            variant: VTokTokenizer(encoder, residual_pooling=pooling).to(device).eval()
            for variant, pooling in VARIANTS.items()
        }
        clip_name = args.clip_config.stem if args.clip_config is not None else args.clip_model
        label = "conv" if encoder_name == "conv" else f"open_clip {clip_name}"
        for batch_size in args.batch_sizes:
            generator = torch.Generator().manual_seed(args.seed)
            size = args.image_size
            video = torch.rand(batch_size, args.frames, 3, size, size, generator=generator).to(device)
            frames = video.flatten(0, 1)
            with torch.inference_mode():
                features = next(iter(tokenizers.values())).encode_frames(video)
                calls = {"encoder": lambda encoder=encoder, frames=frames: encoder(frames)}
                for variant, tokenizer in tokenizers.items():
                    calls[variant] = lambda tokenizer=tokenizer, video=video: tokenizer(video)
                    calls[f"{variant} features"] = lambda t=tokenizer, f=features: t.tokenize_features(f)
                timings = time_interleaved(calls, args.warmup, args.repeats, device)
            samples[f"{label}/B={batch_size}"] = timings
            encoder_seconds = median(timings["encoder"])
            for variant in tokenizers:
                tokenizer_seconds = median(timings[variant])
                features_seconds = median(timings[f"{variant} features"])
                rows.append(
                    {
                        "encoder": label,
                        "batch_size": batch_size,
                        "frames": batch_size * args.frames,
                        "tokenizer": variant,
                        "encoder_seconds": encoder_seconds,
                        "tokenizer_seconds": tokenizer_seconds,
                        "features_seconds": features_seconds,
                        "overhead_end_to_end": tokenizer_seconds / encoder_seconds - 1,
                        "overhead_direct": features_seconds / encoder_seconds,
                        "meets_goal": features_seconds / encoder_seconds <= GOAL,
                    }
                )

    columns = [
        Column("encoder", "encoder"),
        Column("B", "batch_size"),
        Column("frames", "frames"),
        Column("tokenizer", "tokenizer"),
        Column("encoder (ms)", "encoder_seconds", milliseconds),
        Column("tokenizer forward (ms)", "tokenizer_seconds", milliseconds),
        Column("tokenize_features (ms)", "features_seconds", milliseconds),
        Column("overhead, end to end", "overhead_end_to_end", "+.1%"),
        Column("overhead, tokenize_features / encoder", "overhead_direct", ".1%"),
        Column(f"direct <= {GOAL:.0%}", "meets_goal", lambda ok: "yes" if ok else "no"),
    ]
    notes = [
        f"VTokTokenizer (token_dim 128, grid 4) over each encoder on T = {args.frames} random "
        f"{args.image_size}x{args.image_size} frames, inference mode. Times: median of {args.repeats} "
        f"calls after {args.warmup} warm-up, the encoder and the tokenizers interleaved round-robin.",
        "Overhead end to end = tokenizer forward / bare encoder - 1; direct = tokenize_features on the "
        f"cached features / bare encoder, both measured in this run. The goal is at most {GOAL:.0%}.",
    ]
    return write_report(
        NAME,
        "VTok tokenization overhead over the frame encoder",
        notes,
        [("", columns, rows)],
        machine,
        vars(args),
        args.output_dir,
        raw={"seconds": samples},
    )


if __name__ == "__main__":
    main()
