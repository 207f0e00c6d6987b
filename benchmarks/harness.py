"""What every benchmark script shares: common arguments, interleaved timing, machine info, the report.

A script builds its rows as dicts of raw numbers, names its columns, and hands both to
:func:`write_report`, which prints a markdown table and writes ``<output_dir>/<name>.md`` and
``<name>.json`` (the rows, every timing sample, the settings and the machine).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def build_run(configs: Sequence[Path]) -> Any:
    """The LightningCLI of a run's configs, built without running: its ``model`` and ``datamodule``.

    A run's saved ``config.yaml`` also holds the subcommand's own keys, which a bare build refuses,
    so only ``seed_everything``, ``model`` and ``data`` are read from each file.
    """
    import yaml

    from vtok_lit.cli import main as cli_main

    overlays = []
    for config in configs:
        settings = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
        settings = {key: settings[key] for key in ("seed_everything", "model", "data") if key in settings}
        overlays += ["-c", yaml.safe_dump(settings)]
    return cli_main([*overlays, "--trainer.logger=false"], run=False)


def parse_entries(entries: list[str], flag: str) -> list[tuple[str, list[Path]]]:
    """``NAME=PATH[,PATH...]`` entries as (name, paths), every path checked."""
    parsed = []
    for entry in entries:
        name, sep, paths = entry.partition("=")
        if not sep or not name or not paths:
            raise SystemExit(f"{flag} {entry!r}: expected NAME=PATH")
        for path in paths.split(","):
            if not Path(path).is_file():
                raise SystemExit(f"{flag} {entry!r}: no file at {path}")
        parsed.append((name, [Path(path) for path in paths.split(",")]))
    return parsed


def add_checkpoint_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """Adds ``--checkpoint NAME=CKPT``, repeatable: ``what`` says which module's checkpoints."""
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="NAME=CKPT",
        help=f"{what}; its run's config.yaml must sit beside checkpoints/ (repeat for more)",
    )


def checkpoint_runs(parser: argparse.ArgumentParser, entries: list[str]) -> list[tuple[str, Path, Path]]:
    """``--checkpoint`` entries as (name, checkpoint, the ``config.yaml`` its run saved beside
    ``checkpoints/``); exits naming the entry when none is given or a file is missing."""
    runs = []
    for name, paths in parse_entries(entries, "--checkpoint"):
        if len(paths) != 1:
            raise SystemExit(f"--checkpoint {name}=...: expected one checkpoint, got {len(paths)}")
        checkpoint = paths[0]
        config = checkpoint.parent.parent / "config.yaml"
        if not config.is_file():
            raise SystemExit(f"{name}: no config.yaml at {config} (the run's saved config)")
        runs.append((name, checkpoint, config))
    if not runs:
        parser.error("name at least one --checkpoint")
    return runs


def mlp_probe_predictions(
    train: torch.Tensor, test: torch.Tensor, y_train: torch.Tensor, classes: int, steps: int = 400
) -> torch.Tensor:
    """The ``(N,)`` classes that a one-hidden-layer MLP (256 units, dropout, weight decay), fitted on
    standardized ``train`` features with a fixed budget of ``steps``, predicts for ``test``: the same
    reader for every stage or run a probe compares (a linear one misses what is there but not linear)."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    mean, std = train.mean(0), train.std(0).clamp(min=1e-6)
    train, test = (train - mean) / std, (test - mean) / std
    probe = nn.Sequential(
        nn.Dropout(0.2), nn.Linear(train.shape[1], 256), nn.GELU(), nn.Dropout(0.2), nn.Linear(256, classes)
    )
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-3, weight_decay=0.05)
    for _ in range(steps):
        rows = torch.randint(0, len(train), (256,), generator=generator)
        loss = F.cross_entropy(probe(train[rows]), y_train[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    probe.eval()
    with torch.no_grad():
        return probe(test).argmax(1)


def mlp_probe(
    train: torch.Tensor,
    test: torch.Tensor,
    y_train: torch.Tensor,
    y_test: torch.Tensor,
    classes: int,
    steps: int = 400,
) -> float:
    """Test accuracy of :func:`mlp_probe_predictions`."""
    return float((mlp_probe_predictions(train, test, y_train, classes, steps) == y_test).float().mean())


def add_probe_arguments(
    parser: argparse.ArgumentParser,
    *,
    name: str,
    num_train: int,
    num_val: int,
    corpus_seed: int,
    batch_size: int,
) -> None:
    """The arguments of a probe of tokenizers on a MotionShapes corpus of its own: ``--checkpoint``
    and ``--random-init`` (the tokenizers, :func:`probe_runs`), the corpus (``--data-dir``,
    ``--num-train``, ``--num-val``, ``--corpus-seed``), ``--batch-size``, ``--output-dir`` and
    ``--name`` (default ``name``)."""
    add_checkpoint_argument(parser, "a tokenizer-pretraining checkpoint")
    parser.add_argument(
        "--random-init",
        action="append",
        default=[],
        metavar="NAME=CONFIG[,OVERLAY...]",
        help="the tokenizer of a config (and overlays) with random weights",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data") / name,
        help="folder of the probe corpus (made on first use)",
    )
    parser.add_argument("--num-train", type=int, default=num_train, help="probe-fitting clips")
    parser.add_argument("--num-val", type=int, default=num_val, help="probe-scoring clips")
    parser.add_argument("--corpus-seed", type=int, default=corpus_seed, help="seed of the probe corpus")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default=name, help="file stem of the report")


def probe_runs(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> list[tuple[str, list[Path], Path | None]]:
    """``(name, configs, checkpoint)`` of each ``--checkpoint`` (its run's saved ``config.yaml``) and
    ``--random-init`` (no checkpoint); exits naming the run whose config is missing."""
    runs = [
        (name, [paths[0].parent.parent / "config.yaml"], paths[0])
        for name, paths in parse_entries(args.checkpoint, "--checkpoint")
    ] + [(name, paths, None) for name, paths in parse_entries(args.random_init, "--random-init")]
    if not runs:
        parser.error("name at least one --checkpoint or --random-init")
    for name, configs, _ in runs:
        if not configs[0].is_file():
            raise SystemExit(f"{name}: no config.yaml at {configs[0]} (the run's saved config)")
    return runs


def probe_corpus(
    args: argparse.Namespace, num_frames: int, image_size: int, max_objects: int
) -> dict[str, list[Any]]:
    """``{"train": records, "val": records}`` of the probe's MotionShapes corpus for clips of
    ``num_frames`` frames of ``image_size``, made in ``args.data_dir`` on first use and read once a
    process: runs of the same clip shape share it."""
    settings = (args.num_train, args.num_val, args.corpus_seed)
    return _probe_corpus(Path(args.data_dir), *settings, num_frames, image_size, max_objects)


@functools.cache
def _probe_corpus(
    data_dir: Path,
    num_train: int,
    num_val: int,
    seed: int,
    num_frames: int,
    image_size: int,
    max_objects: int,
) -> dict[str, list[Any]]:
    from vtok_lit.data.manifest import read_manifest
    from vtok_lit.data.motionshapes import MotionShapesConfig, ensure_motionshapes

    corpus = MotionShapesConfig(
        num_train=num_train,
        num_val=num_val,
        num_frames=num_frames,
        image_size=image_size,
        max_objects=max_objects,
        seed=seed,
    )
    records = read_manifest(ensure_motionshapes(data_dir / f"t{num_frames}_s{image_size}", corpus))
    return {split: [record for record in records if record.split == split] for split in ("train", "val")}


def model_part(model: Any, name: str) -> tuple[Any, str]:
    """A LightningModule's part ``name`` (``tokenizer``) and its prefix in the module's checkpoints: the
    module's own attribute (tokenizer pretraining) or its core model's (``model.tokenizer`` of an
    understanding or generation module)."""
    part = getattr(model, name, None)
    if part is None:
        part = getattr(getattr(model, "model", None), name, None)
    for prefix, module in model.named_modules():
        if part is not None and module is part:
            return part, prefix
    raise SystemExit(f"a {type(model).__name__} has no {name} to probe")


def probe_model(
    configs: Sequence[Path], checkpoint: Path | None, parts: Sequence[str]
) -> tuple[Any, int, int]:
    """A probed run's model in evaluation mode, with the checkpoint's weights for ``parts`` (random
    weights without a checkpoint), and its data's clip length and frame size. A part is the module's
    own or its core model's (:func:`model_part`)."""
    from vtok_lit.modules.checkpoints import load_part_weights

    cli = build_run(configs)
    model = cli.model
    if checkpoint is not None:
        for part in parts:
            module, prefix = model_part(model, part)
            load_part_weights(module, str(checkpoint), prefix)
    data = cli.datamodule.hparams
    return model.eval(), data["num_frames"], data["image_size"]


def read_clips(records: Sequence[Any], num_frames: int, image_size: int) -> torch.Tensor:
    """``(N, T, 3, H, W)``: the clips of ``records`` read and resized as the data module does."""
    from vtok_lit.data.dataset import square_resize
    from vtok_lit.data.video_io import read_clip

    return torch.stack(
        [square_resize(read_clip(record.video, num_frames)[0], image_size) for record in records]
    )


def probe_runs_note(runs: Sequence[tuple[str, list[Path], Path | None]]) -> str:
    """The report's line naming each probed run's checkpoint, or the configs of its random weights."""
    return "Runs: " + "; ".join(
        f"{name}: {checkpoint or 'random init from ' + ' + '.join(map(str, configs))}"
        for name, configs, checkpoint in runs
    )


def add_common_arguments(parser: argparse.ArgumentParser, repeats: int | None, warmup: int) -> None:
    """Adds ``--repeats``, ``--warmup``, ``--seed``, ``--threads`` and ``--output-dir``.

    A ``repeats`` of None leaves the default to the script (e.g. fewer under ``--quick``).
    """
    parser.add_argument("--repeats", type=int, default=repeats, help="timed repeats; the median is reported")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed calls before timing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the synthetic inputs")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's own choice)"
    )
    parser.add_argument(
        "--output-dir", type=Path, default=RESULTS_DIR, help="where <name>.md and <name>.json are written"
    )


def apply_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA where there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    calls: dict[Hashable, Callable[[], object]],
    warmup: int,
    repeats: int,
    device: torch.device | None = None,
) -> dict[Hashable, list[float]]:
    """Seconds per call of every callable, ``repeats`` samples each.

    Repeats go round-robin over the callables (one sample of each, then the next round), so a load
    that comes and goes on the machine shifts all of them alike and ratios between them stay fair.
    ``device`` is synchronised around every call when it is a GPU.
    """
    device = device or torch.device("cpu")
    for call in calls.values():
        for _ in range(warmup):
            call()
    synchronize(device)
    samples: dict[Hashable, list[float]] = {key: [] for key in calls}
    for _ in range(repeats):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            synchronize(device)
            samples[key].append(time.perf_counter() - start)
    return samples


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def machine_info(device: torch.device | None = None) -> dict[str, Any]:
    """The facts a reader needs to compare two runs: versions, threads, CPU, load at start."""
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "device": str(device) if device is not None else "cpu",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@dataclass(frozen=True)
class Column:
    """One table column: its header, the row key it shows, and a format spec (or a callable)."""

    header: str
    key: str
    fmt: str | Callable[[Any], str] = ""

    def cell(self, row: dict[str, Any]) -> str:
        value = row.get(self.key)
        if value is None:
            return "n/a"
        if callable(self.fmt):
            return self.fmt(value)
        return format(value, self.fmt)


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f}"


def markdown_table(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| " + " | ".join(column.header for column in columns) + " |",
        "|" + "|".join(" --- " for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(column.cell(row) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(machine: dict[str, Any]) -> str:
    parts = [
        f"torch {machine['torch']}",
        f"{machine['torch_threads']} torch threads",
        f"{machine['usable_cpus']}/{machine['cpu_count']} usable CPUs ({machine['cpu']})",
        f"load average {machine['load_average_1min']:.2f} at start"
        if machine["load_average_1min"] is not None
        else "load average unknown",
        f"device {machine.get('gpu', machine['device'])}",
    ]
    return "Machine: " + ", ".join(parts) + f"; {machine['date']}."


def write_report(
    name: str,
    title: str,
    notes: Sequence[str],
    tables: Sequence[tuple[str, Sequence[Column], Sequence[dict[str, Any]]]],
    machine: dict[str, Any],
    settings: dict[str, Any],
    output_dir: Path,
    raw: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Prints the markdown report and writes it and its JSON twin; returns the JSON content.

    Args:
        name: File stem of the outputs.
        title: The report's heading.
        notes: Paragraphs printed under the heading (conventions, what a ratio is against).
        tables: ``(caption, columns, rows)`` for each table; rows hold raw numbers.
        machine: From :func:`machine_info`.
        settings: The arguments of the run.
        output_dir: Folder of the outputs, made if missing.
        raw: Anything else worth keeping in the JSON (e.g. every timing sample).
    """
    parts = [f"# {title}", *notes, machine_line(machine)]
    for caption, columns, rows in tables:
        if caption:
            parts.append(f"## {caption}")
        parts.append(markdown_table(columns, rows))
    text = "\n\n".join(parts) + "\n"
    print(text)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"{name}.md").write_text(text, encoding="utf-8")
    report = {
        "benchmark": name,
        "machine": machine,
        "settings": {
            key: str(value) if isinstance(value, Path) else value for key, value in settings.items()
        },
        "tables": {caption or name: list(rows) for caption, _, rows in tables},
        "raw": raw or {},
    }
    (output_dir / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
