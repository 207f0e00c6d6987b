"""Where an object's shape is lost between the key frame and its decoding.

For every tokenizer named (a pretraining checkpoint, or a config for random weights), each object of a
MotionShapes corpus is read at its place in the key frame at four stages:

- pixels: the real key frame, a square crop centred on the object (side: a quarter of the frame, 16 px
  at 64, where the largest object is 15 px), once for all runs;
- encoder features: the frame encoder's feature vectors of the 3x3 patches around the object;
- key-frame token: the key-frame token whose grid cell holds the object's centre, and the four nearest;
- decoded: the decoder's rendering of the key frame, the same crop as the pixels (checkpoints only).

One small MLP probe (the same for every stage) is fitted on the train split's objects and scored on the
val split's, for the object's shape, colour and size. A linear probe is no use here: it reads the
shape of an object from the real pixels only about half the time (the colours vary; shape is not a
linear function of RGB values), so it cannot say where the shape is lost. The majority class of the
val objects is the chance row.

    python benchmarks/shape_probe.py \\
        --checkpoint vtok=runs/quickstart/vtok/version_0/checkpoints/last.ckpt \\
        --checkpoint naive=runs/quickstart/naive/version_0/checkpoints/last.ckpt \\
        --random-init vtok_random_init=experiments/quickstart.yaml

A checkpoint's run is rebuilt from the ``config.yaml`` Lightning saved beside its ``checkpoints/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    Column,
    add_probe_arguments,
    machine_info,
    mlp_probe,
    probe_corpus,
    probe_model,
    probe_runs,
    probe_runs_note,
    read_clips,
    write_report,
)

from vtok_lit.core.tokens import TokenKind  # noqa: E402
from vtok_lit.core.video_decoders import key_frame_of  # noqa: E402
from vtok_lit.data.motionshapes.vocabulary import COLORS, SHAPES, SIZES  # noqa: E402

TARGETS = {"shape": SHAPES, "colour": tuple(COLORS), "size": tuple(SIZES)}
PROBE_STEPS = 400


def object_labels(records: list[Any]) -> dict[str, torch.Tensor]:
    """``{target: (N,) long}`` over every object of ``records``, in order."""
    objects = [obj for record in records for obj in record.meta["objects"]]
    keys = {"shape": "shape", "colour": "color", "size": "size"}
    return {
        target: torch.tensor([TARGETS[target].index(obj[keys[target]]) for obj in objects])
        for target in TARGETS
    }


def centre_at(obj: dict[str, Any], frame: int, num_frames: int) -> tuple[float, float]:
    """The object's centre in pixels at ``frame``: MotionShapes moves objects at a constant speed."""
    progress = frame / max(num_frames - 1, 1)
    (x0, y0), (x1, y1) = obj["start_center"], obj["end_center"]
    return x0 + (x1 - x0) * progress, y0 + (y1 - y0) * progress


def crop(image: torch.Tensor, centre: tuple[float, float], half: int) -> torch.Tensor:
    """The ``(C, 2 half, 2 half)`` square of ``image`` ``(C, H, W)`` centred on ``centre`` (pixels),
    zero outside the image."""
    padded = F.pad(image, (half, half, half, half))
    x, y = round(centre[0]) + half, round(centre[1]) + half
    return padded[:, y - half : y + half, x - half : x + half]


@torch.no_grad()
def stage_features(
    model: Any, records: list[Any], num_frames: int, image_size: int, batch_size: int, decoded: bool
) -> dict[str, torch.Tensor]:
    """``{stage: (N, F)}``: what each stage holds of each object of ``records`` at its key-frame place."""
    tokenizer = model.tokenizer.eval()
    half = image_size // 8
    parts: dict[str, list[torch.Tensor]] = {"pixels": [], "features": [], "token": [], "tokens4": []}
    if decoded:
        parts["decoded"] = []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        video = read_clips(batch, num_frames, image_size)
        tokens = tokenizer(video)
        key = key_frame_of(tokens)
        features = tokenizer.frame_encoder(video[:, key])  # (B, C, h, w)
        cells = (tokens.frame_index == key) & (tokens.kinds != TokenKind.RESIDUAL)
        cell_tokens, cell_xy = tokens.tokens[:, cells], tokens.cell_xy[cells]  # (B, S, D), (S, 2)
        rendering = model.decoder.eval().decode(tokens, num_frames)[:, key] if decoded else None
        patches_per_side = features.shape[-1]
        padded = F.pad(features, (1, 1, 1, 1))
        for index, record in enumerate(batch):
            for obj in record.meta["objects"]:
                centre = centre_at(obj, key, num_frames)
                parts["pixels"].append(crop(video[index, key], centre, half).flatten())
                px, py = (min(int(c / image_size * patches_per_side), patches_per_side - 1) for c in centre)
                parts["features"].append(padded[index, :, py : py + 3, px : px + 3].flatten())
                distance = (cell_xy - torch.tensor(centre) / image_size).pow(2).sum(dim=1)
                parts["token"].append(cell_tokens[index, distance.argmin()])
                parts["tokens4"].append(cell_tokens[index, distance.argsort()[:4]].flatten())
                if rendering is not None:
                    parts["decoded"].append(crop(rendering[index], centre, half).flatten())
    return {stage: torch.stack(rows) for stage, rows in parts.items()}


def probe_row(
    run: str, stage: str, features: dict[str, torch.Tensor], labels: dict[str, dict[str, torch.Tensor]]
) -> dict[str, Any]:
    row: dict[str, Any] = {"run": run, "stage": stage, "features": features["train"].shape[1]}
    for target, classes in TARGETS.items():
        row[target] = mlp_probe(
            features["train"],
            features["val"],
            labels["train"][target],
            labels["val"][target],
            len(classes),
            steps=PROBE_STEPS,
        )
    print(f"{run} / {stage}: " + ", ".join(f"{t}={row[t]:.3f}" for t in TARGETS))
    return row


STAGES = {
    "features": "encoder features, 3x3 patches at the object",
    "token": "key-frame token of the object's cell",
    "tokens4": "the 4 key-frame tokens nearest the object",
    "decoded": "decoded key frame, crop at the object",
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_probe_arguments(
        parser, name="shape_probe", num_train=1200, num_val=200, corpus_seed=11, batch_size=50
    )
    args = parser.parse_args(argv)
    runs = probe_runs(parser, args)

    rows: list[dict[str, Any]] = []
    for name, configs, checkpoint in runs:
        model, num_frames, image_size = probe_model(configs, checkpoint, parts=("tokenizer", "decoder"))
        splits = probe_corpus(args, num_frames, image_size, max_objects=3)
        labels = {split: object_labels(splits[split]) for split in splits}
        features = {
            split: stage_features(
                model, splits[split], num_frames, image_size, args.batch_size, decoded=checkpoint is not None
            )
            for split in splits
        }
        by_stage = {stage: {split: features[split][stage] for split in splits} for stage in features["train"]}
        if not any(row["stage"].startswith("real key frame") for row in rows):
            rows.append(probe_row("", "real key frame, crop at the object", by_stage["pixels"], labels))
        for stage, label in STAGES.items():
            if stage in by_stage:
                rows.append(probe_row(name, label, by_stage[stage], labels))

    val_labels = labels["val"]
    chance = {"run": "chance (majority class)", "stage": "", "features": None}
    for target in TARGETS:
        chance[target] = float(val_labels[target].bincount().max() / len(val_labels[target]))
    rows.append(chance)

    percent = lambda value: f"{100 * value:.1f}"  # noqa: E731
    columns = [
        Column("run", "run"),
        Column("stage", "stage"),
        Column("features", "features", "d"),
        *(Column(f"{target} %", target, percent) for target in TARGETS),
    ]
    notes = [
        f"An MLP probe (one hidden layer of 256, {PROBE_STEPS} steps) reads each object's shape, colour and "
        f"size at its key-frame place: fitted on the objects of {args.num_train} MotionShapes clips, scored "
        f"on those of {args.num_val} others (corpus seed {args.corpus_seed}; "
        f"{len(val_labels['shape'])} objects scored).",
        probe_runs_note(runs),
    ]
    return write_report(
        args.name, "Shape probe", notes, [("", columns, rows)], machine_info(), vars(args), args.output_dir
    )


if __name__ == "__main__":
    main()
