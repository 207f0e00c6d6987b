"""One LM for both tasks against one LM per task, at equal training compute.

For every tokenizer named (a tokenizer-pretraining checkpoint each), three ``vtok-lit fit`` runs on
that checkpoint, frozen, with the same LM (``experiments/unified.yaml``'s size), the same learning-rate
schedule (warmup and cosine decay over the budget) and the same number of optimizer steps:

- unified: ``experiments/unified.yaml`` (plus ``unified/<tokenizer>.yaml``), each step a batch of
  ``2 * clips`` clips, ``clips`` asked questions and ``clips`` written from captions;
- understanding alone: ``experiments/understanding.yaml`` (plus its overlay), each step ``clips`` clips;
- generation alone: ``experiments/generation.yaml`` (plus its overlay), each step ``clips`` clips.

So the two single-task models together see exactly the rows the unified model sees: the same
questions per clip, the same clips written. Every run validates once, at the end, on every held-out
clip: per-category answer accuracy and the judge's per-category alignment of generated clips (the
decoded real tokens beside, the ceiling). Step time comes from the training events (start-up and
validation left out), peak memory from the run's process (``ru_maxrss``, the loader's worker not
counted). The separate understanding run keeps no feature cache, so its step encodes frames as the
unified one does. A last table times the three training steps in one process, interleaved (median of
``--repeats`` after ``--warmup``): a unified step of ``2 * clips`` clips against an understanding step
on the first ``clips`` of them plus a generation step on the others, the ratio against that sum.

    python benchmarks/unified_vs_separate.py \\
        --checkpoint vtok=runs/quickstart/vtok/version_0/checkpoints/last.ckpt \\
        --checkpoint naive=runs/quickstart/naive/version_0/checkpoints/last.ckpt --steps 500

``--collect`` builds the tables from the runs already under ``--runs-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
from harness import RESULTS_DIR, Column, machine_info, median, time_interleaved, write_report
from paper_table import fit_command, last_scalars, tokens_per_video

from vtok_lit.cli import main as cli_main
from vtok_lit.data.motionshapes import QUESTION_CATEGORIES
from vtok_lit.modules.video_llm import draw_clip_questions, question_rows

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
BASE_TOKENIZER = "vtok"
# Each run's base experiment, the folder of its tokenizer overlays, and where its metrics are logged.
RUNS = {
    "unified": ("unified.yaml", "unified"),
    "understanding": ("understanding.yaml", "understanding"),
    "generation": ("generation.yaml", "generation"),
}
ANSWER_KEYS = {"unified": "val/motionshapes/understanding", "understanding": "val/motionshapes"}
JUDGE_KEYS = {"unified": "val/motionshapes/generation", "generation": "val/motionshapes"}
CEILING_KEYS = {
    "unified": "val/motionshapes/generation_reconstructed",
    "generation": "val/motionshapes_reconstructed",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="TOKENIZER=PATH",
        help="a tokenizer-pretraining checkpoint; TOKENIZER is vtok or the name of an overlay (naive)",
    )
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps of every run")
    parser.add_argument("--clips", type=int, default=16, help="clips a step of each task")
    parser.add_argument("--questions-per-video", type=int, default=3)
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "unified_vs_separate")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "motionshapes")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--collect", action="store_true", help="only build the tables from finished runs")
    parser.add_argument(
        "--repeats", type=int, default=10, help="timed training steps of each kind (0: no timing)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps of each kind first")
    args = parser.parse_args(argv)
    args.checkpoints = dict(entry.split("=", 1) for entry in args.checkpoint)
    if not args.checkpoints:
        parser.error("name at least one --checkpoint TOKENIZER=PATH")
    return args


def configs(run: str, tokenizer: str) -> list[Path]:
    base, overlays = RUNS[run]
    if tokenizer == BASE_TOKENIZER:
        return [EXPERIMENTS / base]
    overlay = EXPERIMENTS / overlays / f"{tokenizer}.yaml"
    if not overlay.is_file():
        raise SystemExit(f"no overlay {overlay} for the tokenizer {tokenizer!r}")
    return [EXPERIMENTS / base, overlay]


def overrides(run: str, checkpoint: str, args: argparse.Namespace) -> list[str]:
    """What makes the three runs of a tokenizer differ only in how the tasks share the LM."""
    schedule = {
        "class_path": "vtok_lit.core.WarmupCosineSchedule",
        "init_args": {"warmup_steps": max(1, args.steps // 15), "total_steps": args.steps},
    }
    common = [
        f"--model.init_args.tokenizer_checkpoint={checkpoint}",
        f"--model.init_args.lr_scheduler={json.dumps(schedule)}",
        f"--data.init_args.batch_size={2 * args.clips if run == 'unified' else args.clips}",
    ]
    if run == "unified":
        return [
            *common,
            "--model.init_args.generation_share=0.5",
            f"--model.init_args.questions_per_video={args.questions_per_video}",
        ]
    if run == "understanding":
        return [
            *common,
            "--model.init_args.feature_cache_dir=null",
            f"--model.init_args.questions_per_video={args.questions_per_video}",
        ]
    return common


def run_dir(args: argparse.Namespace, name: str) -> Path:
    return args.runs_dir / name / "version_0"


def fit(run: str, tokenizer: str, args: argparse.Namespace) -> dict[str, float]:
    """One ``vtok-lit fit`` subprocess; its wall seconds and peak resident memory (GB)."""
    name = f"{run}_{tokenizer}"
    command = fit_command(configs(run, tokenizer), name, args.steps, args.runs_dir, args.data_dir, 1.0)
    command += overrides(run, args.checkpoints[tokenizer], args)
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{name} failed (exit {os.waitstatus_to_exitcode(status)})")
    figures = {"wall_seconds": time.perf_counter() - start, "peak_rss_gb": usage.ru_maxrss / 2**20}
    (run_dir(args, name) / "resources.json").write_text(json.dumps(figures), encoding="utf-8")
    return figures


def row(run: str, tokenizer: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = run_dir(args, f"{run}_{tokenizer}")
    scalars, step_seconds = last_scalars(folder)
    resources = json.loads((folder / "resources.json").read_text(encoding="utf-8"))
    figures: dict[str, Any] = {
        "tokenizer": tokenizer,
        "training": "one LM, both tasks" if run == "unified" else f"{run} alone",
        "tokens": tokens_per_video(folder),
        "steps": args.steps,
        "step_seconds": step_seconds,
        **resources,
    }
    for prefix_keys, column in ((ANSWER_KEYS, "answer"), (JUDGE_KEYS, "judge"), (CEILING_KEYS, "ceiling")):
        if run in prefix_keys:
            for category in (*QUESTION_CATEGORIES, "overall"):
                value = scalars.get(f"{prefix_keys[run]}/{category}")
                figures[f"{column}_{category}"] = None if value is None else 100 * value
    return figures


def build(run: str, tokenizer: str, args: argparse.Namespace) -> Any:
    """The run's LightningCLI (model and data built, nothing run), as :func:`fit` configures it."""
    arguments = []
    for config in configs(run, tokenizer):
        arguments += ["-c", str(config)]
    arguments += [
        "--trainer.logger=false",
        f"--data.init_args.data_dir={args.data_dir}",
        "--data.init_args.num_workers=0",
        *overrides(run, args.checkpoints[tokenizer], args),
    ]
    return cli_main(arguments, run=False)


def time_steps(tokenizer: str, args: argparse.Namespace) -> dict[str, Any]:
    """Seconds of a unified training step and of the two single-task steps on the same clips."""
    unified_cli = build("unified", tokenizer, args)
    unified, data = unified_cli.model, unified_cli.datamodule
    understanding, generation = (build(run, tokenizer, args).model for run in ("understanding", "generation"))
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    asked, written = range(args.clips), range(args.clips, 2 * args.clips)
    video, captions, questions = batch["video"], batch["caption"], batch["questions"]

    def rows(clips: range) -> list:
        return question_rows(
            draw_clip_questions([questions[i] for i in clips], args.questions_per_video, True)
        )

    def step(module: Any, loss: Any) -> Any:
        optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=0.0)

        def call() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss().backward()
            optimizer.step()

        return call

    calls = {
        "unified": step(
            unified,
            lambda: unified.model.losses(
                video, rows(asked), list(written), [captions[i] for i in written], unified.caption_dropout
            )["loss"],
        ),
        "understanding": step(
            understanding,
            lambda: understanding.model.loss(
                understanding.model.video_prefix(video[: args.clips]), rows(asked)
            ),
        ),
        "generation": step(
            generation,
            lambda: generation.model.losses(
                video[args.clips :], [captions[i] for i in written], generation.caption_dropout
            )["loss"],
        ),
    }
    for module in (unified, understanding, generation):
        module.train()
    seconds = {
        name: median(samples) for name, samples in time_interleaved(calls, args.warmup, args.repeats).items()
    }
    separate = seconds["understanding"] + seconds["generation"]
    return {
        "tokenizer": tokenizer,
        "unified_ms": 1e3 * seconds["unified"],
        "understanding_ms": 1e3 * seconds["understanding"],
        "generation_ms": 1e3 * seconds["generation"],
        "separate_ms": 1e3 * separate,
        "ratio": seconds["unified"] / separate,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if not args.collect:
        for tokenizer in args.checkpoints:
            for run in RUNS:
                fit(run, tokenizer, args)
    rows = [row(run, tokenizer, args) for tokenizer in args.checkpoints for run in RUNS]
    percent = ".1f"
    who = [
        Column("tokenizer", "tokenizer"),
        Column("training", "training"),
        Column("tokens / video", "tokens"),
    ]
    categories = (*QUESTION_CATEGORIES, "overall")
    tables = [
        (
            "Understanding: held-out answer accuracy (%)",
            who + [Column(name, f"answer_{name}", percent) for name in categories],
            [r for r in rows if r.get("answer_overall") is not None],
        ),
        (
            "Generation: the judge's alignment of generated clips (%)",
            who
            + [Column(name, f"judge_{name}", percent) for name in categories]
            + [Column("overall, decoded real tokens", "ceiling_overall", percent)],
            [r for r in rows if r.get("judge_overall") is not None],
        ),
        (
            "Cost",
            who
            + [
                Column("steps", "steps"),
                Column("s / step", "step_seconds", ".3f"),
                Column("wall s", "wall_seconds", ".0f"),
                Column("peak RSS GB", "peak_rss_gb", ".2f"),
            ],
            rows,
        ),
        (
            "Step time in one process, interleaved (ms)",
            [
                Column("tokenizer", "tokenizer"),
                Column("unified step", "unified_ms", ".1f"),
                Column("understanding step", "understanding_ms", ".1f"),
                Column("generation step", "generation_ms", ".1f"),
                Column("the two single-task steps", "separate_ms", ".1f"),
                Column("unified / the two", "ratio", ".2f"),
            ],
            [time_steps(tokenizer, args) for tokenizer in args.checkpoints] if args.repeats > 0 else [],
        ),
    ]
    notes = [
        f"Every run: {args.steps} optimizer steps on a frozen tokenizer and decoder from the named "
        f"pretraining checkpoint, the same LM and learning-rate schedule. A unified step holds "
        f"{2 * args.clips} clips: {args.clips} asked {args.questions_per_video} questions each, "
        f"{args.clips} written from their captions; a single-task step holds {args.clips} clips of its "
        "task, so the two single-task runs together train on the rows the unified run trains on. "
        "Accuracy and alignment on all held-out clips, once at the end.",
    ]
    report = write_report(
        "unified_vs_separate",
        "One LM for understanding and generation against one LM per task",
        notes,
        [table for table in tables if table[2]],
        machine_info(),
        vars(args),
        args.output_dir,
    )
    return report


if __name__ == "__main__":
    main()
