"""Every YAML shipped under experiments/ parses through the real CLI, on its own or composed.

A file with its own ``model.class_path`` is a base experiment; any other file is an overlay. Every
composition the docs show (a ``vtok-lit ... -c experiments/A.yaml -c experiments/B.yaml`` line in a
YAML's comments or in the README) is parsed as written, and every overlay is named by at least one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from vtok_lit.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "experiments").rglob("*.yaml"))
READMES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "benchmarks" / "README.md"]
DOCUMENTED_IN = [*EXPERIMENTS, *READMES]


def is_base(path: Path) -> bool:
    return "class_path" in ((yaml.safe_load(path.read_text()) or {}).get("model") or {})


def documented_compositions() -> list[tuple[str, ...]]:
    """Every chain of ``-c``/``--config`` experiment files on one documented ``vtok-lit`` command line."""
    chains = set()
    for source in DOCUMENTED_IN:
        for line in source.read_text().splitlines():
            if "vtok-lit " not in line:
                continue
            chain = tuple(re.findall(r"(?:-c|--config) (experiments/[\w/-]+\.yaml)", line))
            if chain:
                chains.add(chain)
    return sorted(chains)


COMPOSITIONS = documented_compositions()
# Overlays that change how a run trains, not what it is: they keep the run's name.
NOT_SWAPS = {str(p.relative_to(ROOT)) for p in (ROOT / "experiments" / "strategies").glob("*.yaml")}


def parse(chain: list[str] | tuple[str, ...], capsys: pytest.CaptureFixture) -> dict:
    """The config ``vtok-lit fit -c ... --print_config`` resolves for the chain."""
    args = ["fit"]
    for config in chain:
        args += ["-c", str(ROOT / config)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)


def test_experiments_exist() -> None:
    assert EXPERIMENTS


BASES = [path for path in EXPERIMENTS if is_base(path)]


@pytest.mark.parametrize("path", BASES, ids=lambda path: str(path.relative_to(ROOT)))
def test_experiment_parses(path: Path, capsys: pytest.CaptureFixture) -> None:
    printed = parse([str(path.relative_to(ROOT))], capsys)
    assert printed["model"]["class_path"].startswith("vtok_lit.")


@pytest.mark.parametrize("chain", COMPOSITIONS, ids=" + ".join)
def test_documented_composition_parses(chain: tuple[str, ...], capsys: pytest.CaptureFixture) -> None:
    assert is_base(ROOT / chain[0]), f"{chain[0]} is no base experiment, yet a command starts with it"
    printed = parse(chain, capsys)
    assert printed["model"]["class_path"].startswith("vtok_lit.")


def test_every_overlay_is_documented_on_a_base() -> None:
    composed = {config for chain in COMPOSITIONS for config in chain[1:]}
    for path in EXPERIMENTS:
        if not is_base(path):
            assert str(path.relative_to(ROOT)) in composed, (
                f"{path} is an overlay but no documented command applies it (-c experiments/...)"
            )


def test_overlays_tell_runs_apart(capsys: pytest.CaptureFixture) -> None:
    # The same task with another component logs to another TensorBoard run, under the task's folder
    # (smoke runs of experiments/debug/ share runs/debug/).
    runs = {}
    for chain in [chain for chain in COMPOSITIONS if "experiments/debug/fast.yaml" not in chain]:
        logger = parse(chain, capsys)["trainer"]["logger"]["init_args"]
        runs.setdefault(Path(logger["save_dir"]) / logger["name"], set()).add(chain)
    for run, chains in runs.items():
        tasks_and_swaps = {(chain[0], *sorted(set(chain[1:]) - NOT_SWAPS)) for chain in chains}
        assert len(tasks_and_swaps) == 1, f"{run} is the run folder of {sorted(chains)}"


def test_shipped_recipes_cannot_load_a_debug_runs_checkpoint(capsys: pytest.CaptureFixture) -> None:
    # The understanding and generation recipes load runs/quickstart/...; a debug run of the quickstart
    # writes elsewhere.
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "-c",
                "experiments/quickstart.yaml",
                "-c",
                "experiments/debug/fast.yaml",
                "--print_config",
            ]
        )
    logger = yaml.safe_load(capsys.readouterr().out)["trainer"]["logger"]["init_args"]
    debug_run = Path(logger["save_dir"]) / logger["name"]
    second_stages = ("experiments/generation.yaml", "experiments/understanding.yaml")
    loaded = 0
    for recipe in [chain for chain in COMPOSITIONS if chain[0] in second_stages]:
        tokenizer_checkpoint = parse(recipe, capsys)["model"]["init_args"]["tokenizer_checkpoint"]
        if tokenizer_checkpoint is not None:  # tokenizer_from_scratch.yaml loads none
            loaded += 1
            assert not Path(tokenizer_checkpoint).is_relative_to(debug_run), recipe
    assert loaded >= 6  # both bases, their naive overlays, key frame only, fine-tuning, ...


def test_shipped_experiments_checkpoint_every_few_steps() -> None:
    for path in EXPERIMENTS:
        callbacks = (yaml.safe_load(path.read_text()).get("trainer") or {}).get("callbacks") or []
        if is_base(path):
            periodic = [c for c in callbacks if (c.get("init_args") or {}).get("every_n_train_steps")]
            assert periodic, f"{path} saves no checkpoint every N steps"
            owners = [c for c in callbacks if (c.get("init_args") or {}).get("save_last")]
            assert len(owners) == 1, f"{path}: {len(owners)} callbacks save last.ckpt (one may)"


@pytest.mark.usefixtures("one_thread")
def test_a_shipped_run_keeps_one_last_checkpoint(tmp_path: Path) -> None:
    # Two ModelCheckpoints that both save last.ckpt leave a last-v1.ckpt beside it: only one may.
    cli = main(
        [
            "fit",
            "-c",
            "experiments/quickstart.yaml",
            "-c",
            "experiments/debug/fast.yaml",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
            f"--data.init_args.data_dir={tmp_path / 'data'}",
            "--data.init_args.corpus.num_train=16",
            "--data.init_args.corpus.num_val=8",
            "--trainer.enable_progress_bar=false",
        ]
    )
    checkpoints = Path(cli.trainer.log_dir) / "checkpoints"
    assert sorted(path.name for path in checkpoints.glob("last*")) == ["last.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 5
