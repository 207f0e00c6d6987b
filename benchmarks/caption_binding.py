"""Which words of a caption a caption-contrast run's residual tokens tell apart.

A tokenizer pretrained with ``CaptionContrastObjective`` matches the mean of a clip's residual tokens
to its caption. Whether that match is made of the right things shows when the caption is changed by
one exchange of two words of one swap group (``exchanged_words``: "a yellow square moves down; a blue
circle moves up" against "a blue square moves down; a yellow circle moves up"): the same words, the
same grammar, another clip. For every group of the run's own ``swap_groups``, this reads, over the
held-out clips whose caption has two different words of that group, how often the true caption lies
nearer the clip's tokens than the exchanged one (50%: the tokens say nothing of which object that
group's words belong to). It also reads top-1 retrieval: how often a clip's own caption is the
nearest of the read clips' captions.

    python benchmarks/caption_binding.py \\
        --checkpoint caption_contrast=runs/quickstart/caption_contrast/version_0/checkpoints/last.ckpt

A checkpoint's run is rebuilt from the ``config.yaml`` Lightning saved beside its ``checkpoints/``;
its clips are the val split of the run's own data directory.

``--ideal-steps N`` adds a reference row: the first run's objective (its settings, fresh weights)
trained N steps on the ideal VTok tokens of the same corpus (``understanding_oracle.py``: one channel
per colour and per shape, the ``1, x, y`` moments of their change since the key frame;
``--ideal-entangled-channels`` spreads them over that many channels as a learnt encoder does) and
read the same way. High there and near 50% on a run's tokens: the objective and its caption encoder
can learn the binding, and the run's tokens do not hold it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import (  # noqa: E402
    RESULTS_DIR,
    Column,
    add_checkpoint_argument,
    apply_threads,
    build_run,
    checkpoint_runs,
    machine_info,
    read_clips,
    write_report,
)
from understanding_oracle import IDEAL_CHANNELS, TokenLayout, entangled_signatures, ideal_tokens  # noqa: E402

from vtok_lit.core.caption_contrast import CaptionContrastObjective, exchanged_words  # noqa: E402
from vtok_lit.data.manifest import read_manifest  # noqa: E402
from vtok_lit.modules.checkpoints import load_part_weights  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_checkpoint_argument(parser, "a tokenizer-pretraining checkpoint with a CaptionContrastObjective")
    parser.add_argument("--num-clips", type=int, default=200, help="held-out clips read")
    parser.add_argument("--batch-size", type=int, default=50, help="clips tokenized at once")
    parser.add_argument("--seed", type=int, default=0, help="which pair of words each exchange takes")
    parser.add_argument(
        "--ideal-steps",
        type=int,
        default=0,
        help="train the reference row on ideal tokens this long (0: none)",
    )
    parser.add_argument(
        "--ideal-entangled-channels",
        type=int,
        default=0,
        help="spread the ideal maps over this many channels (0: one per colour and shape)",
    )
    parser.add_argument("--ideal-train-clips", type=int, default=2000, help="training clips of the reference")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (unset: torch's default)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="caption_binding", help="file stem of the report")
    args = parser.parse_args(argv)
    args.runs = checkpoint_runs(parser, args.checkpoint)
    return args


def rebuild_run(
    checkpoint: Path, config: Path
) -> tuple[Any, CaptionContrastObjective, dict[str, list[Any]], int, int]:
    """The run's model and objective as its config builds them (fresh weights), its corpus' records by
    split (``train``, ``val``), and its clip length and frame size; exits when the run has no caption
    contrast or its corpus is missing."""
    cli = build_run([config])
    model = cli.model
    objective = getattr(model, "residual_objective", None)
    if not isinstance(objective, CaptionContrastObjective):
        raise SystemExit(
            f"{checkpoint}: the run's model.init_args.residual_objective is "
            f"{type(objective).__name__}, not a CaptionContrastObjective"
        )
    data = cli.datamodule.hparams
    manifest = Path(data["data_dir"]) / "manifest.jsonl"
    if not manifest.is_file():
        raise SystemExit(f"{checkpoint}: its run's corpus is not at {manifest}")
    records = read_manifest(manifest)
    by_split = {split: [record for record in records if record.split == split] for split in ("train", "val")}
    return model, objective, by_split, data["num_frames"], data["image_size"]


@torch.no_grad()
def run_rows(name: str, checkpoint: Path, config: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The tests of one run's tokens and objective, with the checkpoint's weights."""
    model, objective, records, num_frames, image_size = rebuild_run(checkpoint, config)
    load_part_weights(model.tokenizer, str(checkpoint), "tokenizer")
    load_part_weights(objective, str(checkpoint), "residual_objective")
    tokenizer, objective = model.tokenizer.eval(), objective.eval()
    records = records["val"][: args.num_clips]
    clips = []
    for start in range(0, len(records), args.batch_size):
        video = read_clips(records[start : start + args.batch_size], num_frames, image_size)
        clips.append(objective.clip_embeddings(tokenizer(video)))
    return binding_rows(name, objective, torch.cat(clips), [record.caption for record in records], args)


def ideal_rows(checkpoint: Path, config: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The tests of the reference: the run's objective, fresh, trained on the ideal tokens of the run's
    corpus (its train split), read on the same held-out clips."""
    _, _, records, num_frames, image_size = rebuild_run(checkpoint, config)
    records = {"train": records["train"][: args.ideal_train_clips], "val": records["val"][: args.num_clips]}
    if any("objects" not in r.meta for rows in records.values() for r in rows):
        raise SystemExit(
            f"--ideal-steps needs a MotionShapes corpus (records with 'objects'): the corpus of {checkpoint}"
        )
    channels = args.ideal_entangled_channels
    signatures = entangled_signatures(channels) if channels else None
    layout = TokenLayout("vtok", num_frames, channels or len(IDEAL_CHANNELS), grid_size=4)
    tokens = ideal_tokens(records, layout, image_size, signatures=signatures)
    torch.manual_seed(args.seed)
    # The run's own settings of the objective (its config), for tokens of the ideal layout's width.
    settings = yaml.safe_load(config.read_text(encoding="utf-8"))["model"]["init_args"]["residual_objective"]
    objective = CaptionContrastObjective(**{**settings.get("init_args", {}), "token_dim": layout.token_dim})
    optimizer = torch.optim.AdamW(objective.parameters(), lr=1e-3, weight_decay=0.01)
    captions = {split: [r.caption for r in rows] for split, rows in records.items()}
    for step in range(args.ideal_steps):
        clips = torch.randint(len(captions["train"]), (16,)).tolist()
        loss = objective(tokens["train"].select(clips), torch.empty(0), [captions["train"][i] for i in clips])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 250 == 0 or step == args.ideal_steps - 1:
            print(f"  ideal tokens, step {step}: caption contrast {loss.item():.3f}", flush=True)
    objective.eval()
    with torch.no_grad():
        clips = objective.clip_embeddings(tokens["val"])
        name = f"ideal tokens ({channels} spread channels)" if channels else "ideal tokens"
        return binding_rows(f"{name}, {args.ideal_steps} steps", objective, clips, captions["val"], args)


def binding_rows(
    name: str,
    objective: CaptionContrastObjective,
    clips: torch.Tensor,
    captions: list[str],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Top-1 retrieval of each clip's caption among ``captions``, and for each swap group how often
    the true caption is nearer the clip than the caption with two of the group's words exchanged."""
    true = objective.caption_embeddings(captions)
    nearest = (clips @ true.T).argmax(dim=1)
    rows = [
        {
            "run": name,
            "test": f"own caption nearest of {len(captions)}",
            "clips": len(captions),
            "right": (nearest == torch.arange(len(captions))).float().mean().item(),
            "chance": 1 / len(captions),
        }
    ]
    generator = torch.Generator().manual_seed(args.seed)
    for group in objective.swap_groups:
        exchanged = [exchanged_words(caption, [group], generator) for caption in captions]
        kept = [i for i, caption in enumerate(exchanged) if caption is not None]
        if not kept:
            continue
        other = objective.caption_embeddings([exchanged[i] for i in kept])
        margin = (clips[kept] * true[kept]).sum(-1) - (clips[kept] * other).sum(-1)
        rows.append(
            {
                "run": name,
                "test": f"nearer than with two of {'/'.join(group)} exchanged",
                "clips": len(kept),
                "right": (margin > 0).float().mean().item(),
                "chance": 0.5,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    apply_threads(args.threads)
    rows = [row for name, checkpoint, config in args.runs for row in run_rows(name, checkpoint, config, args)]
    if args.ideal_steps:
        rows += ideal_rows(*args.runs[0][1:], args)
    columns = [
        Column("run", "run"),
        Column("test", "test"),
        Column("clips", "clips"),
        Column("right %", "right", lambda value: f"{100 * value:.1f}"),
        Column("chance %", "chance", lambda value: f"{100 * value:.1f}"),
    ]
    notes = [
        "Each clip's mean residual token, through the run's CaptionContrastObjective, against its own "
        "caption and the caption with two different words of one swap group exchanged, over the "
        f"first {args.num_clips} held-out clips of the run's corpus (those with such a pair, per group).",
        "Runs: " + "; ".join(f"{name}: {checkpoint}" for name, checkpoint, _ in args.runs),
    ]
    if args.ideal_steps:
        notes.append(
            f"The ideal-token row: the first run's objective settings, fresh weights, trained "
            f"{args.ideal_steps} AdamW steps (lr 1e-3) of 16 clips on the ideal VTok tokens of the first "
            f"{args.ideal_train_clips} training clips of the same corpus, read on the same held-out clips."
        )
    settings = {key: value for key, value in vars(args).items() if key not in ("runs", "checkpoint")}
    return write_report(
        args.name, "Caption binding", notes, [("", columns, rows)], machine_info(), settings, args.output_dir
    )


if __name__ == "__main__":
    main()
