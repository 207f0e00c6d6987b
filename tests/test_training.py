"""Slow tier: short training runs that must reach a target, through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from vtok_lit.cli import main

CONF = Path(__file__).parent / "conf"


@pytest.mark.slow
def test_vtok_reconstruction_beats_repeating_the_key_frame(tmp_path: Path) -> None:
    cli = main(
        [
            "fit",
            "-c",
            str(CONF / "pretraining_learns.yaml"),
            f"--trainer.default_root_dir={tmp_path}",
            f"--data.init_args.data_dir={tmp_path / 'corpus'}",
        ]
    )
    metrics = cli.trainer.callback_metrics
    assert metrics["val/psnr"] > metrics["val/psnr_repeat_key"] + 0.5, {
        k: float(v) for k, v in metrics.items()
    }
    assert metrics["val/ssim"] > metrics["val/ssim_repeat_key"]
