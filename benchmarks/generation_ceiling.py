"""The generation ceiling, taken apart: what the judge reads off decoded REAL tokens, and why not more.

For every tokenizer-pretraining checkpoint named, each held-out MotionShapes clip of the run's own
corpus is tokenized and decoded, and the rule-based judge answers the clip's questions on the
decoding (the ceiling: what a perfect LM would reach with that tokenizer and decoder). Two readings
say where the points go:

- shape drawn right: the share of objects whose colour the judge finds in the decoded key frame
  with the shape the clip has (the judge fits circle, square and triangle; the real frames read
  100%). The judge finds the object a question names ("the red circle") by colour AND shape, so a
  shape drawn wrong loses every question about that object;
- the ceiling with objects found by colour alone (``MotionShapesJudge(name_by_shape=False)``; a
  clip's objects differ in colour), colour questions left out (they ask the colour of a shape): what
  the decodings show of counts, motion, size and state once the shapes stop costing points.

    python benchmarks/generation_ceiling.py \\
        --checkpoint vtok=runs/quickstart/vtok/version_0/checkpoints/last.ckpt \\
        --checkpoint naive=runs/quickstart/naive/version_0/checkpoints/last.ckpt

A checkpoint's run is rebuilt from the ``config.yaml`` Lightning saved beside its ``checkpoints/``.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    RESULTS_DIR,
    Column,
    add_checkpoint_argument,
    build_run,
    checkpoint_runs,
    machine_info,
    write_report,
)

from vtok_lit.data.motionshapes import QUESTION_CATEGORIES  # noqa: E402
from vtok_lit.data.motionshapes.judge import MotionShapesJudge  # noqa: E402
from vtok_lit.modules.checkpoints import load_part_weights  # noqa: E402


def share(hits: list[bool]) -> float | None:
    return sum(hits) / len(hits) if hits else None


@torch.no_grad()
def read_run(checkpoint: Path, config: Path, max_clips: int | None) -> dict[str, Any]:
    """Decode the run's val clips from their own tokens and judge them three ways."""
    cli = build_run([config])
    model = cli.model
    load_part_weights(model.tokenizer, str(checkpoint), "tokenizer")
    load_part_weights(model.decoder, str(checkpoint), "decoder")
    model.eval()
    data = cli.datamodule
    data.hparams.num_workers = 0
    data.prepare_data()
    data.setup("validate")
    judge, by_colour = MotionShapesJudge(), MotionShapesJudge(name_by_shape=False)
    ceiling: dict[str, list[bool]] = defaultdict(list)
    colour_named: dict[str, list[bool]] = defaultdict(list)
    shapes_right: list[bool] = []
    clips = 0
    generator = torch.Generator().manual_seed(0)
    for batch in data.val_dataloader():
        if max_clips is not None and clips >= max_clips:
            break
        video = batch["video"]
        decoded = model.decoder.decode(model.tokenizer(video), video.shape[1], generator)
        questions = [[pair["question"] for pair in clip] for clip in batch["questions"]]
        for reader, hits in ((judge, ceiling), (by_colour, colour_named)):
            for clip, answers in zip(
                batch["questions"], reader.answer_clips(decoded, questions), strict=True
            ):
                for pair, answer in zip(clip, answers, strict=True):
                    if reader is judge or pair["category"] != "color":
                        hits[pair["category"]].append(answer == pair["answer"])
        for frames, meta in zip(decoded, batch["meta"], strict=True):
            drawn = judge.shapes(frames)
            shapes_right += [drawn.get(obj["color"]) == obj["shape"] for obj in meta["objects"]]
        clips += len(video)
    row: dict[str, Any] = {"clips": clips, "shape_drawn_right": share(shapes_right)}
    row["ceiling"] = share([hit for hits in ceiling.values() for hit in hits])
    row["colour_named"] = share([hit for hits in colour_named.values() for hit in hits])
    row["ceiling_without_color"] = share(
        [hit for category, hits in ceiling.items() if category != "color" for hit in hits]
    )
    for category in QUESTION_CATEGORIES:
        row[f"ceiling_{category}"] = share(ceiling[category])
        row[f"colour_named_{category}"] = share(colour_named[category])
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_checkpoint_argument(parser, "a tokenizer-pretraining checkpoint")
    parser.add_argument("--max-clips", type=int, default=None, help="judge at most this many val clips")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="generation_ceiling", help="file stem of the report")
    args = parser.parse_args(argv)
    rows = []
    for name, checkpoint, config in checkpoint_runs(parser, args.checkpoint):
        rows.append({"tokenizer": name, **read_run(checkpoint, config, args.max_clips)})
        print(f"{name}: " + ", ".join(f"{k}={v:.3f}" for k, v in rows[-1].items() if isinstance(v, float)))

    percent = lambda value: f"{100 * value:.1f}"  # noqa: E731
    summary = [
        Column("tokenizer", "tokenizer"),
        Column("val clips", "clips", "d"),
        Column("shape drawn right %", "shape_drawn_right", percent),
        Column("ceiling %", "ceiling", percent),
        Column("ceiling %, colour questions out", "ceiling_without_color", percent),
        Column("objects found by colour alone %, colour questions out", "colour_named", percent),
    ]
    by_category = [Column("tokenizer", "tokenizer")]
    for category in QUESTION_CATEGORIES:
        by_category.append(Column(f"{category} (judge)", f"ceiling_{category}", percent))
        if category != "color":
            by_category.append(Column(f"{category} (by colour)", f"colour_named_{category}", percent))
    notes = [
        "The judge on each run's decoded real tokens, its own held-out MotionShapes clips. 'shape drawn "
        "right': objects whose colour the judge finds in the decoded key frame with the clip's shape "
        "(chance about 33%). 'by colour': the judge finding a question's object by its colour alone, "
        "so a wrong shape costs nothing; colour questions (the colour of a shape) are left out of it.",
        "Runs: " + "; ".join(args.checkpoint),
    ]
    return write_report(
        args.name,
        "Generation ceiling: what decoded real tokens show",
        notes,
        [("Overall", summary, rows), ("By category (%)", by_category, rows)],
        machine_info(),
        vars(args),
        args.output_dir,
    )


if __name__ == "__main__":
    main()
