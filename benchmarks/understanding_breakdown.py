"""Where does an understanding model go wrong? Accuracy by category and by objects in the clip.

For every VideoLLM checkpoint named, the held-out MotionShapes clips of its run are answered twice:
with each clip's own video tokens, and with its residual tokens swapped for another clip's (the
next one in the batch; key-frame tokens kept). Accuracy is reported per question category and per
number of objects in the clip. The first pass tells whether a category fails everywhere or only
where several objects share the one residual token a frame gets; the second whether the model reads
the residual tokens at all (a category it answers from them falls to chance).

    python benchmarks/understanding_breakdown.py \\
        --checkpoint vtok=runs/understanding/vtok/version_0/checkpoints/last.ckpt

A checkpoint's data settings (folder, frames, frame size) come from the ``config.yaml`` Lightning
saved beside its ``checkpoints/``.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Column, add_checkpoint_argument, checkpoint_runs, machine_info, write_report  # noqa: E402

from vtok_lit.core.tokens import TokenKind  # noqa: E402
from vtok_lit.data.datamodule import VideoTextDataModule  # noqa: E402
from vtok_lit.data.dataset import collate_video_text  # noqa: E402
from vtok_lit.data.motionshapes import MotionShapesConfig  # noqa: E402
from vtok_lit.metrics.answer_scoring import is_correct  # noqa: E402
from vtok_lit.modules import VideoLLM  # noqa: E402
from vtok_lit.modules.video_llm import question_rows  # noqa: E402

TOKENS = ("own", "other clip's residuals")


def run_data_settings(config: Path) -> dict[str, Any]:
    """The DataModule arguments of a run's saved ``config.yaml``."""
    settings = dict(yaml.safe_load(config.read_text(encoding="utf-8"))["data"]["init_args"])
    if isinstance(settings.get("corpus"), dict):
        settings["corpus"] = MotionShapesConfig(**settings["corpus"])
    return settings


def asked_state(question: str, objects: list[dict[str, Any]]) -> str | None:
    """The state of the one object of the clip the question names by colour and shape, else None."""
    named = [obj for obj in objects if f"{obj.get('color')} {obj.get('shape')}" in question]
    return str(named[0].get("state")) if len(named) == 1 else None


@torch.no_grad()
def answer_correctness(
    model: VideoLLM, dataset: Any, batch_size: int, passes: tuple[str, ...], max_clips: int | None
) -> dict[str, list[tuple[str, int, str | None, bool]]]:
    """For each pass of :data:`TOKENS` asked, ``(category, objects in the clip, state of the object
    asked about, answered right)`` for every question of the clips; a batch is tokenized once for all
    passes."""
    results: dict[str, list[tuple[str, int, str | None, bool]]] = {tokens: [] for tokens in passes}
    count = len(dataset) if max_clips is None else min(max_clips, len(dataset))
    for start in range(0, count, batch_size):
        batch = collate_video_text([dataset[index] for index in range(start, min(start + batch_size, count))])
        questions = model.clip_questions(batch["questions"], sample=False)
        rows = question_rows(questions)
        own = model.model.tokenizer(batch["video"])
        for tokens in passes:
            video_tokens = own if tokens == TOKENS[0] else own.with_residuals_from_other_clips()
            predictions = model.model.generate(model.model.project_tokens(video_tokens), rows)
            for (clip, qa), prediction in zip(questions, predictions, strict=True):
                objects = batch["meta"][clip].get("objects", [])
                right = is_correct(prediction, qa["answer"], qa.get("options"))
                category = qa.get("category") or "uncategorised"
                results[tokens].append((category, len(objects), asked_state(qa["question"], objects), right))
    return results


def rows_by_state(
    name: str, tokens: str, results: list[tuple[str, int, str | None, bool]]
) -> list[dict[str, Any]]:
    """Accuracy per category and state of the object asked about, for the questions that name one."""
    groups: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for category, _, state, right in results:
        if state is not None:
            groups[(category, state)].append(right)
    rows = []
    for category in sorted({key[0] for key in groups}):
        row: dict[str, Any] = {"model": name, "tokens": tokens, "category": category}
        for state in sorted({key[1] for key in groups}):
            answers = groups.get((category, state), [])
            row[f"state_{state}"] = sum(answers) / len(answers) if answers else None
            row[f"questions_{state}"] = len(answers)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_checkpoint_argument(parser, "a VideoLLM checkpoint")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--max-clips", type=int, default=None, help="held-out clips to answer (all)")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--name", default="understanding_breakdown", help="file stem of the report")
    args = parser.parse_args(argv)
    rows, state_rows = [], []
    runs = checkpoint_runs(parser, args.checkpoint)
    for name, checkpoint, config in runs:
        model = VideoLLM.load_from_checkpoint(checkpoint, map_location="cpu").eval()
        datamodule = VideoTextDataModule(**run_data_settings(config))
        datamodule.prepare_data()
        datamodule.setup("validate")
        dataset = datamodule.datasets["val"]
        has_residuals = bool(
            (model.model.tokenizer.token_layout(datamodule.hparams.num_frames)[0] == TokenKind.RESIDUAL).any()
        )
        passes = TOKENS if has_residuals else TOKENS[:1]
        for tokens, results in answer_correctness(
            model, dataset, args.batch_size, passes, args.max_clips
        ).items():
            state_rows += rows_by_state(name, tokens, results)
            groups: dict[tuple[str, str], list[bool]] = defaultdict(list)
            for category, objects, _, right in results:
                for key in (
                    (category, str(objects)),
                    (category, "all"),
                    ("overall", str(objects)),
                    ("overall", "all"),
                ):
                    groups[key].append(right)
            counts = sorted({key[1] for key in groups} - {"all"}) + ["all"]
            for category in sorted({key[0] for key in groups} - {"overall"}) + ["overall"]:
                row: dict[str, Any] = {"model": name, "tokens": tokens, "category": category}
                for objects in counts:
                    answers = groups.get((category, objects), [])
                    row[f"objects_{objects}"] = sum(answers) / len(answers) if answers else None
                    row[f"questions_{objects}"] = len(answers)
                rows.append(row)
            print(f"{name} ({tokens}): overall {row['objects_all']:.3f}")

    object_counts = sorted({key[8:] for row in rows for key in row if key.startswith("objects_")} - {"all"})
    percent = lambda value: f"{100 * value:.1f}"  # noqa: E731
    columns = [Column("model", "model"), Column("tokens", "tokens"), Column("category", "category")]
    columns += [Column(f"{count} object(s) %", f"objects_{count}", percent) for count in object_counts]
    columns += [Column("all %", "objects_all", percent), Column("questions", "questions_all", "d")]
    states = sorted({key[6:] for row in state_rows for key in row if key.startswith("state_")})
    state_columns = [Column("model", "model"), Column("tokens", "tokens"), Column("category", "category")]
    state_columns += [Column(f"{state} %", f"state_{state}", percent) for state in states]
    state_columns += [Column(f"{state} questions", f"questions_{state}", "d") for state in states]
    notes = [
        "Accuracy of each understanding checkpoint on the held-out clips of its run, per question "
        "category and per number of objects in the clip; 'other clip's residuals' answers with each "
        "clip's residual tokens replaced by the next clip's (key-frame tokens kept).",
        "The second table counts the questions that name one object of the clip by colour and shape "
        "(direction, size, state and motion; a relative-position question names two) under that "
        "object's state.",
        "Runs: " + "; ".join(f"{name}: {checkpoint}" for name, checkpoint, _ in runs),
    ]
    settings = {
        "checkpoints": {name: str(checkpoint) for name, checkpoint, _ in runs},
        "max_clips": args.max_clips,
    }
    return write_report(
        args.name,
        "Understanding by category and objects per clip",
        notes,
        [("", columns, rows), ("By the state of the object asked about", state_columns, state_rows)],
        machine_info(),
        settings,
        args.output_dir,
    )


if __name__ == "__main__":
    main()
