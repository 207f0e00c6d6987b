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

Beside each run's key-frame error, reference rows put the real clips through a Gaussian blur of
each ``--blur`` sigma instead of a tokenizer and decoder: how sharp a decoding must be (and how
low its key-frame error) for the judge to read the shapes.

    python benchmarks/generation_ceiling.py \\
        --checkpoint vtok=runs/quickstart/vtok/version_0/checkpoints/last.ckpt \\
        --checkpoint naive=runs/quickstart/naive/version_0/checkpoints/last.ckpt

A checkpoint's run is rebuilt from the ``config.yaml`` Lightning saved beside its ``checkpoints/``.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Callable
from functools import partial
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
from vtok_lit.data.motionshapes.judge import REFERENCE_SIDE, MotionShapesJudge  # noqa: E402
from vtok_lit.metrics.structural_similarity import gaussian_blur  # noqa: E402
from vtok_lit.modules.checkpoints import load_part_weights  # noqa: E402


def share(hits: list[bool]) -> float | None:
    return sum(hits) / len(hits) if hits else None


def blurred(video: torch.Tensor, sigma: float) -> torch.Tensor:
    """Clips blurred by a Gaussian of ``sigma`` px of a 64-px frame, scaled to the clips' side as the
    judge scales its thresholds."""
    return gaussian_blur(video, sigma * video.shape[-1] / REFERENCE_SIDE)


@torch.no_grad()
def judge_decodings(
    data: Any, decode: Callable[[torch.Tensor], torch.Tensor], max_clips: int | None
) -> dict[str, Any]:
    """The judge three ways on ``decode(video)`` of every val clip of ``data``, and the key frame's
    squared error (the first frame: the runs read here take their key frame first)."""
    judge, by_colour = MotionShapesJudge(), MotionShapesJudge(name_by_shape=False)
    ceiling: dict[str, list[bool]] = defaultdict(list)
    colour_named: dict[str, list[bool]] = defaultdict(list)
    shapes_right: list[bool] = []
    key_frame_errors: list[torch.Tensor] = []
    clips = 0
    for batch in data.val_dataloader():
        if max_clips is not None and clips >= max_clips:
            break
        video = batch["video"]
        decoded = decode(video)
        key_frame_errors.append((decoded[:, 0] - video[:, 0]).pow(2).flatten(1).mean(1))
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
    row["mse_key_frame"] = torch.cat(key_frame_errors).mean().item()
    row["ceiling"] = share([hit for hits in ceiling.values() for hit in hits])
    row["colour_named"] = share([hit for hits in colour_named.values() for hit in hits])
    row["ceiling_without_color"] = share(
        [hit for category, hits in ceiling.items() if category != "color" for hit in hits]
    )
    for category in QUESTION_CATEGORIES:
        row[f"ceiling_{category}"] = share(ceiling[category])
        row[f"colour_named_{category}"] = share(colour_named[category])
    return row


def load_run(checkpoint: Path, config: Path) -> tuple[Any, Any]:
    """The run's model, with the checkpoint's tokenizer and decoder, and its data, set up to validate."""
    cli = build_run([config])
    model = cli.model
    load_part_weights(model.tokenizer, str(checkpoint), "tokenizer")
    load_part_weights(model.decoder, str(checkpoint), "decoder")
    data = cli.datamodule
    data.hparams.num_workers = 0
    data.prepare_data()
    data.setup("validate")
    return model.eval(), data


def decoder_of(model: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """Tokenize and decode a clip, with the same sampling noise in every run."""
    generator = torch.Generator().manual_seed(0)
    return lambda video: model.decoder.decode(model.tokenizer(video), video.shape[1], generator)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_checkpoint_argument(parser, "a tokenizer-pretraining checkpoint")
    parser.add_argument("--max-clips", type=int, default=None, help="judge at most this many val clips")
    parser.add_argument(
        "--blur",
        type=float,
        nargs="*",
        default=[1.0, 1.5, 2.0, 3.0],
        metavar="SIGMA",
        help="reference rows: the first run's real val clips blurred by a Gaussian of each SIGMA "
        "(px of a 64-px frame)",
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="generation_ceiling", help="file stem of the report")
    args = parser.parse_args(argv)
    rows, reference = [], None
    for name, checkpoint, config in checkpoint_runs(parser, args.checkpoint):
        model, data = load_run(checkpoint, config)
        if reference is None:  # the blurred rows read the first run's clips
            reference = data
        rows.append({"tokenizer": name, **judge_decodings(data, decoder_of(model), args.max_clips)})
    for sigma in args.blur:
        if sigma <= 0:
            parser.error(f"--blur {sigma}: a blur's sigma must be positive")
        blur = partial(blurred, sigma=sigma)
        rows.append(
            {
                "tokenizer": f"real clips, blurred (sigma {sigma:g} px at 64 px)",
                **judge_decodings(reference, blur, args.max_clips),
            }
        )
    for row in rows:
        print(
            f"{row['tokenizer']}: "
            + ", ".join(f"{k}={v:.3f}" for k, v in row.items() if isinstance(v, float))
        )

    percent = lambda value: f"{100 * value:.1f}"  # noqa: E731
    summary = [
        Column("tokenizer", "tokenizer"),
        Column("val clips", "clips", "d"),
        Column("key-frame MSE", "mse_key_frame", ".5f"),
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
        "Key-frame MSE: the decoded first frame against the real one (noisy: the corpus's pixel noise "
        "alone, std 0.03, costs 0.0009). The rows 'real clips, blurred' put the real clips of the first "
        "run's corpus through a Gaussian blur instead of a tokenizer and decoder: how sharp a decoding "
        "must be for the judge to read the shapes.",
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
