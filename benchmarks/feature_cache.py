"""Seconds per training epoch of a frozen-encoder VideoLLM without and with the frame-feature cache.

With ``freeze_tokenizer`` the frame encoder's features of a clip never change, so
``VideoLLM(feature_cache_dir=...)`` computes them in the first epoch and reads them from disk after.
This script trains such a VideoLLM with a Lightning ``Trainer`` on the real ``VideoTextDataModule``
over a small MotionShapes corpus generated into a temporary folder (clips are decoded every epoch,
with or without the cache: the cache skips the encoder only), for two frame encoders:

- ``conv``: the default ``ConvFrameEncoder`` (64 channels), cheap next to the LM;
- ``open_clip``: a random-init open_clip ViT (6 layers of width 256 on 8x8 patches of the 64x64
  frames unless ``--open-clip-model`` names a built-in architecture), which dominates the step.
  Nothing is downloaded: the weights are random.

The rest of the model has the sizes of ``experiments/understanding.yaml``: 128-d VTok tokens on
a 4x4 grid and a 3-layer TransformerLM of width 128, 3 questions a clip; validation is off.

Uncached and cached epochs are interleaved in ONE ``fit`` per encoder, so a load that comes and goes
on the machine hits both alike: after ``--warmup`` untimed uncached epochs, the first cached epoch
fills the cache, then ``--repeats`` rounds of (one uncached epoch, one cached epoch) follow; a
callback switches the module's cache off for the uncached epochs. The speed-up is the median
uncached epoch over the median later cached epoch; "fill vs uncached" is the cost of writing the
cache. The frames the encoder ran on in each kind of epoch are counted too (0 once cached).

    python benchmarks/feature_cache.py            # 32 clips of 16 frames, batch 16, three rounds
    python benchmarks/feature_cache.py --quick    # 16 clips, batch 8, one round
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from harness import (
    Column,
    add_common_arguments,
    apply_threads,
    machine_info,
    median,
    resolve_device,
    synchronize,
    write_report,
)
from lightning.pytorch.callbacks import Callback

from vtok_lit.core import (
    ConvFrameEncoder,
    FrameEncoder,
    FrameFeatureCache,
    OpenCLIPFrameEncoder,
    TransformerLM,
    VTokTokenizer,
)
from vtok_lit.data import VideoTextDataModule
from vtok_lit.data.motionshapes import MotionShapesConfig, generate_motionshapes
from vtok_lit.modules import VideoLLM

NAME = "feature_cache"
ENCODERS = ("conv", "open_clip")
# A small ViT whose cost still dwarfs the rest of the model on 64x64 frames.
BENCH_VIT = "vtok-bench-vit"
BENCH_VIT_CONFIG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 6, "width": 256, "head_width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="16 clips, batch 8, one timed round")
    parser.add_argument("--clips", type=int, default=None, help="training clips (default 32, quick 16)")
    parser.add_argument("--frames", type=int, default=16, help="frames a clip")
    parser.add_argument("--image-size", type=int, default=64, help="side of the square frames")
    parser.add_argument("--batch-size", type=int, default=None, help="clips a step (default 16, quick 8)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--encoders", nargs="+", choices=ENCODERS, default=list(ENCODERS))
    parser.add_argument(
        "--open-clip-model",
        default=None,
        help=f"a built-in open_clip ViT (random init, e.g. ViT-B-32) instead of the small {BENCH_VIT}",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--precision", default="32-true", help="the Trainer's precision")
    parser.add_argument(
        "--float16-cache", action="store_true", help="store cached features as float16 (FrameFeatureCache)"
    )
    add_common_arguments(parser, repeats=None, warmup=1)
    args = parser.parse_args(argv)
    args.clips = args.clips or (16 if args.quick else 32)
    args.batch_size = args.batch_size or (8 if args.quick else 16)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


class CacheSwitchingEpochTimer(Callback):
    """Turns the module's feature cache on or off before each epoch, by plan, and times the epoch.

    Attributes:
        seconds: Per epoch kind (``"warmup"``, ``"fill"``, ``"uncached"``, ``"cached"``), the epoch times.
        cpu_seconds: The same in CPU time of this process (all its threads, loader workers excluded).
        encoded_frames: Per epoch kind, the frames the encoder ran on in each epoch.
    """

    def __init__(self, plan: list[str], encoder_calls: list[int], device: torch.device) -> None:
        self.plan = plan
        self.encoder_calls = encoder_calls
        self.device = device
        self.seconds: dict[str, list[float]] = {kind: [] for kind in plan}
        self.cpu_seconds: dict[str, list[float]] = {kind: [] for kind in plan}
        self.encoded_frames: dict[str, list[int]] = {kind: [] for kind in plan}
        self._cache: FrameFeatureCache | None = None
        self._frames_before = 0
        self._start = self._cpu_start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: VideoLLM) -> None:
        if self._cache is None:
            self._cache = module.feature_cache
        kind = self.plan[trainer.current_epoch]
        module.feature_cache = None if kind in ("warmup", "uncached") else self._cache
        synchronize(self.device)
        self._frames_before = sum(self.encoder_calls)
        self._start, self._cpu_start = time.perf_counter(), time.process_time()

    def on_train_epoch_end(self, trainer: L.Trainer, module: VideoLLM) -> None:
        synchronize(self.device)
        kind = self.plan[trainer.current_epoch]
        self.seconds[kind].append(time.perf_counter() - self._start)
        self.cpu_seconds[kind].append(time.process_time() - self._cpu_start)
        self.encoded_frames[kind].append(sum(self.encoder_calls) - self._frames_before)
        module.feature_cache = self._cache


def build_encoder(name: str, args: argparse.Namespace, workdir: Path) -> FrameEncoder:
    if name == "conv":
        return ConvFrameEncoder(channels=64)
    if args.open_clip_model is not None:
        return OpenCLIPFrameEncoder(args.open_clip_model, pretrained=None)
    config_path = workdir / f"{BENCH_VIT}.json"
    config_path.write_text(json.dumps(BENCH_VIT_CONFIG), encoding="utf-8")
    return OpenCLIPFrameEncoder(BENCH_VIT, pretrained=None, model_config_path=str(config_path))


def measure(name: str, args: argparse.Namespace, manifest: Path, workdir: Path) -> tuple[dict, dict]:
    """Trains one encoder's VideoLLM through the epoch plan; returns its table row and raw samples."""
    L.seed_everything(args.seed, verbose=False)
    encoder = build_encoder(name, args, workdir)
    tokenizer = VTokTokenizer(encoder, token_dim=128, grid_size=4, max_frames=max(64, args.frames))
    language_model = TransformerLM(hidden_size=128, num_layers=3, num_heads=4, max_seq_len=256)
    cache_dir = workdir / f"cache-{name}"
    model = VideoLLM(
        tokenizer,
        language_model,
        freeze_tokenizer=True,
        feature_cache_dir=str(cache_dir),
        questions_per_video=3,
    )
    if args.float16_cache:
        model.feature_cache = FrameFeatureCache(cache_dir, float16=True)
    encoder_calls: list[int] = []
    encoder.register_forward_hook(lambda module, inputs, output: encoder_calls.append(len(inputs[0])))
    data = VideoTextDataModule(
        manifest=str(manifest),
        num_frames=args.frames,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        seed=args.seed,
    )
    plan = ["warmup"] * args.warmup + ["fill"] + ["uncached", "cached"] * args.repeats
    device = resolve_device(args.device)
    timer = CacheSwitchingEpochTimer(plan, encoder_calls, device)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=args.precision,
        max_epochs=len(plan),
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=workdir,
    )
    trainer.fit(model, data)

    uncached, cached = median(timer.seconds["uncached"]), median(timer.seconds["cached"])
    fill = timer.seconds["fill"][0]
    row = {
        "encoder": name if name == "conv" else f"open_clip {args.open_clip_model or BENCH_VIT}",
        "encoder_params": sum(p.numel() for p in encoder.parameters()),
        "clips": len(data.datasets["train"]),
        "uncached_seconds": uncached,
        "fill_seconds": fill,
        "cached_seconds": cached,
        "speedup": uncached / cached,
        "fill_vs_uncached": fill / uncached,
        "cpu_speedup": median(timer.cpu_seconds["uncached"]) / median(timer.cpu_seconds["cached"]),
        "encoded_uncached": timer.encoded_frames["uncached"][0],
        "encoded_cached": max(timer.encoded_frames["cached"]),
        "cache_bytes": sum(file.stat().st_size for file in cache_dir.glob("*.pt")),
    }
    return row, {
        "seconds": timer.seconds,
        "cpu_seconds": timer.cpu_seconds,
        "encoded_frames": timer.encoded_frames,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    apply_threads(args.threads)
    device = resolve_device(args.device)
    machine = machine_info(device)
    # A benchmark's single-process loader and tiny validation are deliberate.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    rows, samples = [], {}
    with tempfile.TemporaryDirectory(prefix="vtok-feature-cache-") as tmp:
        workdir = Path(tmp)
        corpus = MotionShapesConfig(
            num_train=args.clips,
            num_val=1,
            num_frames=args.frames,
            image_size=args.image_size,
            seed=args.seed,
        )
        manifest = generate_motionshapes(workdir / "corpus", corpus, processes=2)
        for name in args.encoders:
            row, samples[row["encoder"]] = measure(name, args, manifest, workdir)
            rows.append(row)

    columns = [
        Column("encoder", "encoder"),
        Column("encoder params (M)", "encoder_params", lambda v: f"{v / 1e6:.2f}"),
        Column("uncached epoch (s)", "uncached_seconds", ".2f"),
        Column("first cached epoch, fills (s)", "fill_seconds", ".2f"),
        Column("later cached epoch (s)", "cached_seconds", ".2f"),
        Column("speed-up (uncached / cached)", "speedup", ".2f"),
        Column("fill vs uncached", "fill_vs_uncached", ".2f"),
        Column("speed-up in CPU time", "cpu_speedup", ".2f"),
        Column("frames encoded / uncached epoch", "encoded_uncached"),
        Column("frames encoded / later cached epoch", "encoded_cached"),
        Column("cache (MiB)", "cache_bytes", lambda v: f"{v / 2**20:.1f}"),
    ]
    notes = [
        f"VideoLLM (VTok tokens 128-d on a 4x4 grid, 3-layer TransformerLM of width 128, frozen tokenizer) "
        f"trained with a Lightning Trainer ({args.precision}) on the VideoTextDataModule: {args.clips} "
        f"MotionShapes clips of {args.frames} {args.image_size}x{args.image_size} frames, batch "
        f"{args.batch_size}, {args.num_workers} loader workers, 3 questions a clip, no validation. "
        f"Cache features stored as {'float16' if args.float16_cache else 'float32'}.",
        f"One fit per encoder: {args.warmup} untimed uncached warm-up epoch(s), the cache-filling epoch, "
        f"then {args.repeats} round(s) of one uncached and one cached epoch; epoch times are medians over "
        "the rounds, and every ratio is between epochs of the same run. Clips are decoded in every "
        "epoch: the cache skips only the frame encoder. The CPU-time speed-up (this process, all its "
        "threads) resists other load on the machine; with loader workers it leaves out their decoding, "
        "and on a GPU it misses the device's work.",
    ]
    return write_report(
        NAME,
        "Frozen-encoder feature cache: seconds per training epoch",
        notes,
        [("", columns, rows)],
        machine,
        vars(args),
        args.output_dir,
        raw=samples,
    )


if __name__ == "__main__":
    main()
