"""The changed-pixel weight schedule: the decoder's weight follows the global step, in a real fit too."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from test_cli import cli_args

from vtok_lit.callbacks import ChangedPixelWeightDecay
from vtok_lit.cli import main


def started(schedule: ChangedPixelWeightDecay, weight: float) -> SimpleNamespace:
    module = SimpleNamespace(decoder=SimpleNamespace(changed_pixel_weight=weight))
    schedule.on_fit_start(SimpleNamespace(), module)
    return module


def test_weight_holds_then_falls_linearly_to_the_final_weight() -> None:
    schedule = ChangedPixelWeightDecay(start_step=100, end_step=300, final_weight=1.0)
    started(schedule, 5.0)
    weights = [schedule.weight_at(step) for step in (0, 100, 150, 200, 300, 1000)]
    assert weights == pytest.approx([5.0, 5.0, 4.0, 3.0, 1.0, 1.0])


def test_a_resumed_run_keeps_the_configured_start_weight() -> None:
    # The decoder's weight is already lowered when fitting starts again in the same process: the
    # schedule still starts from the weight it read first.
    schedule = ChangedPixelWeightDecay(start_step=0, end_step=10)
    module = started(schedule, 4.0)
    module.decoder.changed_pixel_weight = schedule.weight_at(5)
    schedule.on_fit_start(SimpleNamespace(), module)
    assert schedule.weight_at(5) == pytest.approx(2.0)


def test_a_fit_ends_with_the_final_weight_and_logs_it(tmp_path: Path) -> None:
    cli = main(
        [
            "fit",
            *cli_args("pretraining_tiny.yaml", tmp_path),
            "--data.init_args.num_workers=0",
            "--model.init_args.decoder.init_args.changed_pixel_weight=4.0",
            "--trainer.callbacks+=vtok_lit.callbacks.ChangedPixelWeightDecay",
            "--trainer.callbacks.start_step=1",
            "--trainer.callbacks.end_step=3",
        ]
    )
    assert cli.model.decoder.changed_pixel_weight == 0.0
    assert float(cli.trainer.callback_metrics["train/changed_pixel_weight"]) == 0.0


def test_a_module_without_a_decoder_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="ChangedPixelWeightDecay.*trainer.callbacks.*VideoLLM"):
        ChangedPixelWeightDecay(0, 10).on_fit_start(SimpleNamespace(), type("VideoLLM", (), {})())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((10, 5), "start_step and end_step"),
        ((-1, 5), "start_step and end_step"),
        ((0, 5, -1.0), "final_weight"),
    ],
)
def test_bad_settings_are_named(arguments: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChangedPixelWeightDecay(*arguments)


def test_the_constant_weight_ablation_keeps_every_other_quickstart_callback() -> None:
    experiments = Path(__file__).resolve().parent.parent / "experiments"
    base = yaml.safe_load((experiments / "quickstart.yaml").read_text(encoding="utf-8"))
    overlay = yaml.safe_load(
        (experiments / "tokenizer" / "constant_changed_pixel_weight.yaml").read_text(encoding="utf-8")
    )
    decay = "vtok_lit.callbacks.ChangedPixelWeightDecay"
    base_callbacks = base["trainer"]["callbacks"]
    assert decay in [callback["class_path"] for callback in base_callbacks]
    assert overlay["trainer"]["callbacks"] == [c for c in base_callbacks if c["class_path"] != decay]
