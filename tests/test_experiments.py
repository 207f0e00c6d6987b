"""Every YAML shipped under experiments/ parses through the real CLI.

A file with its own ``model.class_path`` is a whole experiment; any other file is an overlay and is
parsed on top of the experiment its first comment lines name with ``-c``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from vtok_lit.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "experiments").rglob("*.yaml"))


def config_chain(path: Path) -> list[Path]:
    config = yaml.safe_load(path.read_text()) or {}
    if "class_path" in (config.get("model") or {}):
        return [path]
    bases = re.findall(r"-c (experiments/\S+\.yaml)", path.read_text())
    bases = [ROOT / base for base in bases if ROOT / base != path]
    assert bases, (
        f"{path} is an overlay but its comments name no experiment to apply it to (-c experiments/...)"
    )
    return [*config_chain(bases[0]), path]


def test_experiments_exist() -> None:
    assert EXPERIMENTS


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_experiment_parses(path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["fit"]
    for config in config_chain(path):
        args += ["-c", str(config)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("vtok_lit.")


def test_shipped_recipes_cannot_load_a_debug_runs_checkpoint(capsys: pytest.CaptureFixture) -> None:
    # The generation recipes load runs/quickstart/...; a debug run of the quickstart writes elsewhere.
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
    for recipe in (ROOT / "experiments" / "generation").glob("*.yaml"):
        tokenizer_checkpoint = yaml.safe_load(recipe.read_text())["model"]["init_args"][
            "tokenizer_checkpoint"
        ]
        assert not Path(tokenizer_checkpoint).is_relative_to(debug_run), recipe


def test_shipped_experiments_checkpoint_every_few_steps() -> None:
    for path in EXPERIMENTS:
        callbacks = (yaml.safe_load(path.read_text()).get("trainer") or {}).get("callbacks") or []
        if "class_path" in (yaml.safe_load(path.read_text()).get("model") or {}):
            periodic = [c for c in callbacks if (c.get("init_args") or {}).get("every_n_train_steps")]
            assert periodic, f"{path} saves no checkpoint every N steps"
