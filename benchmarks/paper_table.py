"""The paper-style table: VTok against naive frame sampling and key frame only, on one budget.

One command runs the kit's two-stage recipe for each tokenizer: a tokenizer pretraining run (the
first stage), then the understanding model and, where the tokenizer has a generation composition,
the generation model on that run's checkpoint (the second stage). Every row is composed the same
way, as a user runs it: the task's base experiment (``experiments/quickstart.yaml``,
``understanding.yaml``, ``generation.yaml``: VTok) plus, for another tokenizer, its overlay
(``experiments/tokenizer/<tokenizer>.yaml`` for pretraining, ``experiments/understanding/`` and
``experiments/generation/<tokenizer>.yaml`` for the tasks, whose checkpoint path this script points at
its own pretraining run). Every run is a ``vtok-lit fit`` subprocess with fixed seeds (the configs'
``seed_everything``) and the step budgets given here (learning-rate schedules fitted to them), so the
rows differ only in the tokenizer. The script then reads each run's last validation scalars from its
TensorBoard events and its tokens per video from the hyperparameters the run logged (what its module
was built with), and writes ``paper_table.md``/``.json`` and ``paper_table.png`` (accuracy against
tokens per video).

``--collect`` skips training and builds the table from the runs already under ``--runs-dir``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import RESULTS_DIR, Column, machine_info, write_report

from vtok_lit.data.motionshapes import QUESTION_CATEGORIES

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
TOKENIZERS = ("vtok", "naive", "key_frame_only")
# The tokenizer of every base experiment; the others are overlays.
BASE_TOKENIZER = "vtok"
# Each task's base experiment and the folder of the overlays that swap its tokenizer.
TASKS = {
    "pretraining": ("quickstart.yaml", "tokenizer"),
    "understanding": ("understanding.yaml", "understanding"),
    "generation": ("generation.yaml", "generation"),
}
VBENCH = ("temporal_flicker", "motion_smoothness", "subject_consistency", "dynamic_degree")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizers", nargs="+", default=list(TOKENIZERS), choices=TOKENIZERS)
    parser.add_argument("--understanding-steps", type=int, default=1500, help="optimizer steps a run")
    parser.add_argument("--pretraining-steps", type=int, default=900, help="tokenizer pretraining steps")
    parser.add_argument("--generation-steps", type=int, default=1500, help="optimizer steps a run")
    parser.add_argument(
        "--limit-val-batches", type=float, default=1.0, help="validation batches (or fraction) a run"
    )
    parser.add_argument("--skip-generation", action="store_true", help="only the understanding runs")
    parser.add_argument("--skip-understanding", action="store_true", help="only the generation runs")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "paper_table")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "motionshapes")
    parser.add_argument("--collect", action="store_true", help="no training: read the runs already there")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        help="one more `vtok-lit fit` argument for every run, with '=': --extra=--trainer.accelerator=gpu",
    )
    parser.add_argument(
        "--reuse-finished",
        action="store_true",
        help="skip a run whose last.ckpt is already under --runs-dir (to go on after a crash)",
    )
    return parser.parse_args(argv)


def configs(task: str, tokenizer: str) -> list[Path] | None:
    """``[base, overlay]`` of one row (the base alone for VTok); None where the task has no overlay
    for the tokenizer."""
    base, overlays = TASKS[task]
    if tokenizer == BASE_TOKENIZER:
        return [EXPERIMENTS / base]
    overlay = EXPERIMENTS / overlays / f"{tokenizer}.yaml"
    return [EXPERIMENTS / base, overlay] if overlay.is_file() else None


def run_dir(args: argparse.Namespace, name: str) -> Path:
    """Where the run ``name`` writes its events, config and ``checkpoints/`` (logger version 0)."""
    return args.runs_dir / name / "version_0"


def fit_command(
    configs: list[Path], name: str, steps: int, runs_dir: Path, data_dir: Path, limit_val_batches: float
) -> list[str]:
    """``vtok-lit fit`` of the configs for ``steps`` steps, validating once at the end on
    ``limit_val_batches``, logging to ``runs_dir/name/version_0``."""
    command = [sys.executable, "-m", "vtok_lit", "fit"]
    for config in configs:
        command += ["-c", str(config)]
    return command + [
        f"--trainer.max_steps={steps}",
        f"--trainer.val_check_interval={steps}",
        f"--trainer.limit_val_batches={limit_val_batches}",
        f"--trainer.default_root_dir={runs_dir / name}",
        f"--trainer.logger.init_args.save_dir={runs_dir}",
        f"--trainer.logger.init_args.name={name}",
        "--trainer.logger.init_args.version=0",
        f"--data.init_args.data_dir={data_dir}",
    ]


def fit(
    configs: list[Path], name: str, steps: int, args: argparse.Namespace, *overrides: str
) -> float | None:
    """Runs ``vtok-lit fit`` in a subprocess, logging to :func:`run_dir`; returns its wall seconds.

    With ``--reuse-finished`` a run that already has its ``last.ckpt`` is not run again (None).
    """
    if args.reuse_finished and (run_dir(args, name) / "checkpoints" / "last.ckpt").is_file():
        print(f"reusing the finished run {run_dir(args, name)}", flush=True)
        return None
    command = fit_command(configs, name, steps, args.runs_dir, args.data_dir, args.limit_val_batches)
    command += [*overrides, *args.extra]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - start


def last_scalars(run_dir: Path) -> tuple[dict[str, float], float | None]:
    """The last value of every scalar in a run's events, and its seconds per training step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted(run_dir.glob("events.out.tfevents.*"))
    if not events:
        raise FileNotFoundError(f"no TensorBoard events under {run_dir}; did the run finish?")
    scalars: dict[str, float] = {}
    step_seconds = None
    for path in events:
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars[tag] = accumulator.Scalars(tag)[-1].value
        if "train/loss" in accumulator.Tags()["scalars"]:
            losses = accumulator.Scalars("train/loss")
            if len(losses) > 2:
                # Between the first and last logged step, so start-up and validation are not counted
                # (validation falls outside only when it runs at the end, as here).
                step_seconds = (losses[-1].wall_time - losses[0].wall_time) / (
                    losses[-1].step - losses[0].step
                )
    return scalars, step_seconds


def tokens_per_video(run_dir: Path) -> int | None:
    """The sequence length of the run's tokenizer for the data's frame count, from the hyperparameters
    the run logged (``hparams.yaml``: the module's, a tokenizer built from a pretraining checkpoint
    included, and the data's).

    The tokenizer is built from its config, as the run built it, and asked; its weights do not matter.
    """
    import yaml

    from vtok_lit.core.tokenizers import VideoTokenizer
    from vtok_lit.modules.pretrained_parts import build_component

    hparams_file = run_dir / "hparams.yaml"
    if not hparams_file.is_file():
        return None
    hparams = yaml.safe_load(hparams_file.read_text(encoding="utf-8"))
    return build_component(hparams["tokenizer"], VideoTokenizer).num_tokens(hparams["num_frames"])


def trained_steps(run_dir: Path) -> int | None:
    """The run's ``trainer.max_steps`` from its saved config (the table's step budget)."""
    import yaml

    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        return None
    return yaml.safe_load(config_file.read_text(encoding="utf-8")).get("trainer", {}).get("max_steps")


def second_stage_overrides(base: Path, steps: int, args: argparse.Namespace) -> list[str]:
    """Overrides of a run of the task base ``base`` on a budget of ``steps``: the length of its
    learning-rate schedule (``total_steps`` or ``T_max``) set to ``steps`` and its ``warmup_steps``
    scaled by the same factor, and a feature cache it keeps moved under ``--runs-dir``."""
    import yaml

    init_args = yaml.safe_load(base.read_text(encoding="utf-8"))["model"]["init_args"]
    schedule = (init_args.get("lr_scheduler") or {}).get("init_args") or {}
    key = "--model.init_args.lr_scheduler.init_args."
    overrides = []
    for length in ("total_steps", "T_max"):
        if length in schedule:
            overrides.append(f"{key}{length}={steps}")
            if "warmup_steps" in schedule:
                overrides.append(f"{key}warmup_steps={schedule['warmup_steps'] * steps // schedule[length]}")
    if init_args.get("feature_cache_dir"):
        overrides.append(f"--model.init_args.feature_cache_dir={args.runs_dir / 'feature_cache'}")
    return overrides


def run_all(args: argparse.Namespace) -> dict[str, float | None]:
    """Per tokenizer: its tokenizer pretraining (the first stage), then each task on that run's
    checkpoint (the second stage), every run on the given step budget."""
    wall: dict[str, float | None] = {}
    budgets = {"understanding": args.understanding_steps, "generation": args.generation_steps}
    tasks = [task for task in budgets if not getattr(args, f"skip_{task}")]
    for tokenizer in args.tokenizers:
        composed = {}
        for task in tasks:
            chain = configs(task, tokenizer)
            if chain is None:
                print(f"no experiments/{TASKS[task][1]}/{tokenizer}.yaml: no {task} row for {tokenizer}")
            else:
                composed[task] = chain
        if not composed:
            continue
        name = f"pretraining_{tokenizer}"
        wall[name] = fit(configs("pretraining", tokenizer), name, args.pretraining_steps, args)
        checkpoint = run_dir(args, name) / "checkpoints" / "last.ckpt"
        if not checkpoint.is_file():
            raise FileNotFoundError(f"the tokenizer pretraining run {name} wrote no {checkpoint}")
        for task, chain in composed.items():
            wall[f"{task}_{tokenizer}"] = fit(
                chain,
                f"{task}_{tokenizer}",
                budgets[task],
                args,
                f"--model.init_args.tokenizer_checkpoint={checkpoint}",
                *second_stage_overrides(chain[0], budgets[task], args),
            )
    return wall


def collect(args: argparse.Namespace, wall: dict[str, float | None]) -> tuple[list[dict], list[dict]]:
    understanding, generation = [], []
    for tokenizer in args.tokenizers:
        for task, rows in (("understanding", understanding), ("generation", generation)):
            directory = run_dir(args, f"{task}_{tokenizer}")
            if not directory.is_dir():
                continue
            scalars, step_seconds = last_scalars(directory)
            row: dict[str, Any] = {
                "tokenizer": tokenizer,
                "tokens": tokens_per_video(directory),
                "steps": trained_steps(directory),
                "step_seconds": step_seconds,
                "wall_seconds": wall.get(f"{task}_{tokenizer}"),
            }
            for category in (*QUESTION_CATEGORIES, "overall"):
                value = scalars.get(f"val/motionshapes/{category}")
                row[category] = None if value is None else 100 * value
            for name in VBENCH:
                row[name] = scalars.get(f"val/vbench/{name}")
            ceiling = scalars.get("val/motionshapes_reconstructed/overall")
            row["reconstructed_overall"] = None if ceiling is None else 100 * ceiling
            row["psnr_vs_real"] = scalars.get("val/psnr_vs_real")
            row["generation_seconds_per_clip"] = scalars.get("val/generation_seconds_per_clip")
            rows.append(row)
    return understanding, generation


def plot(understanding: list[dict], generation: list[dict], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for rows, task, marker in ((understanding, "understanding", "o"), (generation, "generation", "s")):
        points = [row for row in rows if row["tokens"] and row["overall"] is not None]
        for row in points:
            axis.scatter(row["tokens"], row["overall"], marker=marker, s=60)
            axis.annotate(
                f"{row['tokenizer']} ({task})",
                (row["tokens"], row["overall"]),
                fontsize=8,
                xytext=(5, 3),
                textcoords="offset points",
            )
    axis.set_xscale("log")
    ticks = sorted({row["tokens"] for row in understanding + generation if row["tokens"]})
    axis.set_xticks(ticks, [str(tick) for tick in ticks])
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.set_xlabel("tokens per video (log scale)")
    axis.set_ylabel("overall accuracy / alignment (%)")
    axis.set_title("MotionShapes: accuracy against tokens per video")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    wall = {} if args.collect else run_all(args)
    understanding, generation = collect(args, wall)
    if not understanding and not generation:
        raise SystemExit(f"no runs under {args.runs_dir}: run without --collect first")
    percent = ".1f"
    base = [Column("tokenizer", "tokenizer"), Column("tokens / video", "tokens"), Column("steps", "steps")]
    accuracy = [Column(name, name, percent) for name in (*QUESTION_CATEGORIES, "overall")]
    cost = [Column("s / step", "step_seconds", ".3f")]
    tables = [
        ("Understanding: held-out accuracy (%)", base + accuracy + cost, understanding),
        (
            "Generation: judged alignment (%) and VBench-style figures",
            base
            + accuracy
            + [Column("overall, decoded real tokens", "reconstructed_overall", percent)]
            + [Column(name, name, ".3f") for name in VBENCH]
            + [
                Column("PSNR vs real", "psnr_vs_real", ".2f"),
                Column("s / clip", "generation_seconds_per_clip", ".3f"),
            ]
            + cost,
            generation,
        ),
    ]
    notes = [
        "Each row is one `vtok-lit fit` run of the task's base experiment plus, for naive and key frame "
        "only, the overlay that swaps the tokenizer; the rows of a table differ only in it. Accuracy "
        "is exact match on held-out MotionShapes questions; alignment is the "
        "rule-based judge's answers on generated clips against the prompt's attributes; 'overall, decoded "
        "real tokens' is the judge on the decoder's rendering of the real clip's own tokens, the "
        "alignment a perfect LM would reach with that tokenizer and decoder.",
    ]
    report = write_report(
        "paper_table",
        "VTok against naive frame sampling and key frame only",
        notes,
        [table for table in tables if table[2]],
        machine_info(),
        vars(args),
        args.output_dir,
        raw={"wall_seconds": wall},
    )
    plot(understanding, generation, args.output_dir / "paper_table.png")
    return report


if __name__ == "__main__":
    main()
