"""Can the decoder use motion that reaches it as one token per frame? An oracle ablation of VTok.

VTok's claim rests on two steps: the tokenizer puts a frame's motion into its ONE residual token, and
the decoder renders that motion from it. ``val/residual_use`` and ``motion_probe.py`` show that the
kit's residual tokens carry little motion and that the decoder barely reads them; this script tells
which step fails. On single-object MotionShapes clips it trains the same tokenizer and decoder, for
the same steps on the same batches, three ways that differ only in what stands in the residual slots:

- ``vtok``: the tokenizer's residual tokens (the kit as shipped);
- ``oracle``: a learned map (an MLP) of the TRUE state of frame t: the object's displacement from the
  key frame, its growth and its fading; the key-frame tokens stay the tokenizer's;
- ``no_motion``: zeros, so the decoder has the key frame alone (the key-frame-only bound).

Each is scored on held-out clips by PSNR on all pixels and on the pixels that changed since the key
frame, and by ``residual_use`` (changed-pixel error with another clip's residual slots over the error
with the clip's own). If ``oracle`` is far ahead of ``vtok``, the decoder can render motion from one
token a frame and the tokenizer is what fails to deliver it; if ``oracle`` is no better than
``no_motion``, the decoder or its loss is the bottleneck.

    python benchmarks/motion_oracle.py                 # add --steps, --image-size, --quick
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Column, apply_threads, machine_info, read_clips, write_report  # noqa: E402

from vtok_lit.core import ConvFrameEncoder, RegressionVideoDecoder, VTokTokenizer  # noqa: E402
from vtok_lit.core.layers import MLP  # noqa: E402
from vtok_lit.core.tokens import TokenKind, VideoTokens  # noqa: E402
from vtok_lit.core.video_decoders import changed_pixels  # noqa: E402
from vtok_lit.data.manifest import ManifestRecord, read_manifest  # noqa: E402
from vtok_lit.data.motionshapes import MotionShapesConfig, ensure_motionshapes  # noqa: E402
from vtok_lit.data.motionshapes.corpus import FADE_END_OPACITY, GROWTH  # noqa: E402

VARIANTS = ("vtok", "oracle", "no_motion")
# Per frame: displacement (dx, dy) from the key frame in frame widths, growth and fading (0 when none).
ORACLE_FEATURES = 4


def frame_states(record: ManifestRecord, num_frames: int, image_size: int) -> torch.Tensor:
    """``(T, 4)``: the single object's displacement from frame 0, its growth and its fading at each
    frame, as the corpus draws them (linear in time over the clip)."""
    (obj,) = record.meta["objects"]
    progress = torch.linspace(0, 1, num_frames)
    (x0, y0), (x1, y1) = obj["start_center"], obj["end_center"]
    grows = (GROWTH - 1) * progress if obj["state"] == "grows" else torch.zeros(num_frames)
    fades = (1 - FADE_END_OPACITY) * progress if obj["state"] == "fades" else torch.zeros(num_frames)
    moves = torch.stack([(x1 - x0) * progress, (y1 - y0) * progress], dim=1) / image_size
    return torch.cat([moves, grows[:, None], fades[:, None]], dim=1)


def load_split(records: list[ManifestRecord], num_frames: int, image_size: int) -> dict[str, torch.Tensor]:
    """Every clip of a split in memory: ``video`` ``(N, T, 3, H, W)`` and ``states`` ``(N, T, 4)``."""
    states = [frame_states(r, num_frames, image_size) for r in records]
    return {"video": read_clips(records, num_frames, image_size), "states": torch.stack(states)}


class MotionSlots(nn.Module):
    """Fills the residual slots of VTok tokens: the tokenizer's own, an oracle's, or zeros."""

    def __init__(self, variant: str, token_dim: int) -> None:
        super().__init__()
        self.variant = variant
        self.oracle = MLP(ORACLE_FEATURES, token_dim, token_dim) if variant == "oracle" else None

    def forward(self, tokens: VideoTokens, states: torch.Tensor) -> VideoTokens:
        if self.variant == "vtok":
            return tokens
        residual = tokens.kinds == TokenKind.RESIDUAL
        values = tokens.tokens.clone()
        if self.oracle is None:
            values[:, residual] = 0
        else:
            # A residual token describes the frame it is indexed by (temporal_stride 1: one frame).
            values[:, residual] = self.oracle(states[:, tokens.frame_index[residual]])
        return tokens.with_tokens(values)


def build(
    variant: str, image_size: int, seed: int, residual_pooling: str = "mean", **decoder_switches: Any
) -> tuple[VTokTokenizer, RegressionVideoDecoder, MotionSlots]:
    """The slow tier's pretraining sizes (tests/conf/pretraining_learns.yaml), same seed for each."""
    torch.manual_seed(seed)
    tokenizer = VTokTokenizer(
        ConvFrameEncoder(channels=32, patch_size=4),
        token_dim=64,
        grid_size=4,
        residual_pooling=residual_pooling,
    )
    decoder = RegressionVideoDecoder(
        token_dim=64, image_size=image_size, patch_size=4, width=64, **decoder_switches
    )
    return tokenizer, decoder, MotionSlots(variant, 64)


def train_and_score(
    variant: str, data: dict[str, dict[str, torch.Tensor]], args: argparse.Namespace
) -> dict[str, Any]:
    tokenizer, decoder, slots = build(
        variant,
        args.image_size,
        args.seed,
        residual_pooling=args.residual_pooling,
        frame_conditioning=args.frame_conditioning,
        motion_field=args.motion_field,
        changed_pixel_weight=args.changed_pixel_weight,
    )
    parameters = [*tokenizer.parameters(), *decoder.parameters(), *slots.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=args.lr)
    train = data["train"]
    order = torch.Generator().manual_seed(args.seed)  # the same batches for every variant
    for _ in range(args.steps):
        index = torch.randint(len(train["video"]), (args.batch_size,), generator=order)
        video = train["video"][index]
        loss = decoder.loss(slots(tokenizer(video), train["states"][index]), video)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"variant": variant, "train_loss": loss.item(), **score(tokenizer, decoder, slots, data["val"])}


@torch.no_grad()
def score(
    tokenizer: VTokTokenizer,
    decoder: RegressionVideoDecoder,
    slots: MotionSlots,
    val: dict[str, torch.Tensor],
) -> dict[str, float]:
    video, states = val["video"], val["states"]
    tokens = slots(tokenizer(video), states)
    own = decoder.decode(tokens, video.shape[1]).clamp(0, 1)
    other = decoder.decode(tokens.with_residuals_from_other_clips(), video.shape[1]).clamp(0, 1)
    changed = changed_pixels(video, tokenizer.key_frame_index(video.shape[1])).expand_as(video)
    own_error, other_error = (own - video).pow(2), (other - video).pow(2)
    changed_mse = own_error[changed].mean()
    return {
        "psnr": float(-10 * torch.log10(own_error.mean())),
        "psnr_changed": float(-10 * torch.log10(changed_mse)),
        "residual_use": float(other_error[changed].mean() / changed_mse),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data/motion_oracle"), help="corpus folder")
    parser.add_argument("--num-train", type=int, default=512)
    parser.add_argument("--num-val", type=int, default=128)
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1000, help="training steps of each variant")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--residual-pooling", choices=("mean", "moments"), default="mean", help="VTok's")
    parser.add_argument("--frame-conditioning", action="store_true", help="decoder switch (README)")
    parser.add_argument("--motion-field", action="store_true", help="decoder switch (README)")
    parser.add_argument("--changed-pixel-weight", type=float, default=0.0, help="decoder switch (README)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 clips, 3 steps")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", default="motion_oracle", help="file stem of the report")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_train, args.num_val, args.steps = 16, 4, 3
    apply_threads(args.threads)
    corpus = MotionShapesConfig(
        num_train=args.num_train,
        num_val=args.num_val,
        num_frames=args.num_frames,
        image_size=args.image_size,
        max_objects=1,
        seed=7,
    )
    records = read_manifest(ensure_motionshapes(args.data_dir, corpus))
    data = {
        split: load_split([r for r in records if r.split == split], args.num_frames, args.image_size)
        for split in ("train", "val")
    }
    rows = [train_and_score(variant, data, args) for variant in args.variants]
    columns = [
        Column("residual slots", "variant"),
        Column("PSNR (dB)", "psnr", ".2f"),
        Column("PSNR on changed pixels (dB)", "psnr_changed", ".2f"),
        Column("residual_use", "residual_use", ".3f"),
        Column("last train loss", "train_loss", ".4f"),
    ]
    notes = [
        f"Single-object MotionShapes clips ({args.num_train} train, {args.num_val} held out, "
        f"{args.num_frames} frames of {args.image_size}px). Every variant: the same tokenizer and "
        f"regression decoder sizes and seed, {args.steps} AdamW steps (lr {args.lr}) on the same batches "
        f"of {args.batch_size}; only the residual slots differ. 'oracle' = an MLP of the true displacement, "
        "growth and fading of each frame; 'no_motion' = zeros (key frame only). VTok's residual pooling: "
        f"{args.residual_pooling}. Decoder switches: "
        f"frame_conditioning={args.frame_conditioning}, motion_field={args.motion_field}, "
        f"changed_pixel_weight={args.changed_pixel_weight}.",
    ]
    return write_report(
        args.name,
        "Motion oracle: does the decoder render motion from one token a frame?",
        notes,
        [("", columns, rows)],
        machine_info(),
        vars(args) | {"data_dir": str(args.data_dir), "output_dir": str(args.output_dir)},
        args.output_dir,
    )


if __name__ == "__main__":
    main()
