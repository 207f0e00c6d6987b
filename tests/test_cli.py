"""The ``vtok-lit`` command end to end: help, version, config errors, a tiny fit and its artifacts."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from vtok_lit import __version__
from vtok_lit.callbacks import NoUsableDataError
from vtok_lit.cli import main
from vtok_lit.data.manifest import read_manifest, write_manifest
from vtok_lit.data.video_io import read_frames
from vtok_lit.modules import CheckpointMismatchError, TokenizerPretraining, VideoLLM
from vtok_lit.modules.checkpoints import NotACheckpointError

CONF = Path(__file__).parent / "conf"


def cli_args(config: str, tmp_path: Path, *extra: str) -> list[str]:
    """Arguments that run ``tests/conf/<config>`` with every output and the corpus under ``tmp_path``."""
    return [
        "-c",
        str(CONF / config),
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        f"--trainer.default_root_dir={tmp_path}",
        f"--data.init_args.data_dir={tmp_path / 'corpus'}",
        *extra,
    ]


def run_args(tmp_path: Path, *extra: str) -> list[str]:
    return cli_args("pretraining_tiny.yaml", tmp_path, *extra)


def understanding_args(tmp_path: Path, *extra: str) -> list[str]:
    return cli_args("understanding_tiny.yaml", tmp_path, *extra)


def test_help_lists_subcommands(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for subcommand in ("fit", "validate", "test", "predict"):
        assert subcommand in out
    assert "vtok-lit import --help" in out


def test_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_import_leaves_heavy_video_libraries_alone() -> None:
    code = "import sys, vtok_lit.cli; print([m for m in ('decord', 'open_clip', 'av') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_fit_help_documents_model_arguments(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "vtok_lit.modules.TokenizerPretraining"])
    out = capsys.readouterr().out
    assert "--model.tokenizer" in out and "Rebuilds the clip from the tokens" in out


def test_wrong_config_key_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *run_args(tmp_path, "--model.init_args.tokenizer.init_args.grid_sise=3")])
    assert exit_info.value.code != 0
    assert "grid_sise" in capsys.readouterr().err


def test_image_size_mismatch_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"data.init_args.image_size is 32 but model.init_args.decoder.init_args"
    ):
        main(["fit", *run_args(tmp_path, "--model.init_args.decoder.init_args.image_size=64")])


@pytest.mark.parametrize(
    ("settings", "reader", "size"),
    [
        (["--model.init_args.decoder.init_args.token_dim=16"], "decoder", 16),
        # An objective left at its default size (128) beside the tiny tokenizer's 32.
        (
            ["--model.init_args.residual_objective=vtok_lit.core.ForegroundMotionObjective"],
            "residual_objective",
            128,
        ),
    ],
)
def test_a_token_size_mismatch_is_named(tmp_path: Path, settings: list[str], reader: str, size: int) -> None:
    message = (
        rf"model.init_args.{reader}.init_args.token_dim={size} does not match "
        r"model.init_args.tokenizer.init_args.token_dim=32"
    )
    with pytest.raises(ValueError, match=message):
        main(["fit", *run_args(tmp_path, *settings, "--trainer.max_steps=1")])


def test_fit_writes_events_config_and_a_loadable_checkpoint(tmp_path: Path) -> None:
    cli = main(["fit", *run_args(tmp_path)])
    log_dir = Path(cli.trainer.log_dir)
    assert list(log_dir.glob("events.out.tfevents.*")), "no TensorBoard event file"
    assert (log_dir / "config.yaml").is_file()
    checkpoints = list(log_dir.glob("checkpoints/*.ckpt"))
    assert checkpoints, "no checkpoint"
    restored = TokenizerPretraining.load_from_checkpoint(checkpoints[0], map_location="cpu")
    trained = cli.model.state_dict()
    for name, value in restored.state_dict().items():
        torch.testing.assert_close(value, trained[name], msg=f"{name} differs after load_from_checkpoint")
    assert "val/psnr" in cli.trainer.logged_metrics
    assert "val/psnr_repeat_key" in cli.trainer.logged_metrics
    # Where the error lives: on the pixels that changed since the key frame and on the rest.
    assert cli.trainer.logged_metrics["val/mse_changed_pixels"] > 0
    assert cli.trainer.logged_metrics["val/mse_static_pixels"] > 0
    assert cli.trainer.logged_metrics["val/mse_key_frame"] > 0
    # TensorBoard's HPARAMS tab: the hyperparameters, with the final validation figures beside them.
    events = EventAccumulator(str(log_dir))
    events.Reload()
    session = HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    )
    assert session.session_start_info.hparams["tokenizer/init_args/grid_size"].number_value == 2
    assert events.Scalars("hp/val/psnr")[0].value == pytest.approx(
        cli.trainer.logged_metrics["val/psnr"].item()
    )


def test_a_parts_learning_rate_scale_comes_from_the_config(tmp_path: Path) -> None:
    scales = '{"tokenizer.frame_encoder": 0.25}'
    cli = main(["fit", *run_args(tmp_path, f"--model.init_args.lr_scales={scales}", "--trainer.max_steps=1")])
    by_scale = {group["lr_scale"]: group for group in cli.trainer.optimizers[0].param_groups}
    assert by_scale[0.25]["lr"] == pytest.approx(0.25 * by_scale[1.0]["lr"])
    assert len(by_scale[0.25]["params"]) == len(list(cli.model.tokenizer.frame_encoder.parameters()))
    assert "tokenizer.frame_encoder: 0.25" in (Path(cli.trainer.log_dir) / "config.yaml").read_text()


def test_a_fit_resumes_under_the_learning_rate_scales_it_was_trained_with(tmp_path: Path) -> None:
    scales = '--model.init_args.lr_scales={"tokenizer.frame_encoder": 0.25}'
    cli = main(["fit", *run_args(tmp_path, scales)])  # 4 steps, a checkpoint at the end
    checkpoint = next(Path(cli.trainer.log_dir).glob("checkpoints/*.ckpt"))
    # The CLI takes a resumed model's hyperparameters from the checkpoint, lr_scales with them.
    other = '--model.init_args.lr_scales={"tokenizer.frame_encoder": 0.5}'
    resumed = main(
        ["fit", *run_args(tmp_path / "again", other, "--trainer.max_steps=5"), f"--ckpt_path={checkpoint}"]
    )
    assert resumed.trainer.global_step == 5
    by_scale = {group["lr_scale"]: group for group in resumed.trainer.optimizers[0].param_groups}
    assert by_scale[0.25]["lr"] == pytest.approx(0.25 * by_scale[1.0]["lr"])
    # A module built with other scales (the Python API) is refused: its optimizer would get the saved
    # rates, not the scales it was given.
    model = resumed.model
    model.lr_scales = {"tokenizer.frame_encoder": 0.5}
    trainer = Trainer(max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(
        ValueError, match=r"lr_scales is .*0\.5.* but the checkpoint resumed was trained with"
    ):
        trainer.fit(model, datamodule=resumed.datamodule, ckpt_path=checkpoint)


def test_validate_with_ckpt_path(tmp_path: Path) -> None:
    cli = main(["fit", *run_args(tmp_path)])
    checkpoint = next(Path(cli.trainer.log_dir).glob("checkpoints/*.ckpt"))
    validated = main(["validate", *run_args(tmp_path / "again"), f"--ckpt_path={checkpoint}"])
    assert "val/ssim" in validated.trainer.callback_metrics


def test_metrics_are_float32_under_bf16_mixed(tmp_path: Path) -> None:
    # The repeat-key figures depend on the data only: autocast must not leak into SSIM's convolutions.
    figures = {}
    for precision in ("32-true", "bf16-mixed"):
        cli = main(["validate", *run_args(tmp_path / precision, f"--trainer.precision={precision}")])
        figures[precision] = {
            name: cli.trainer.callback_metrics[name].item()
            for name in ("val/ssim_repeat_key", "val/psnr_repeat_key")
        }
    assert figures["bf16-mixed"] == pytest.approx(figures["32-true"], rel=1e-5)


def test_understanding_fit_logs_benchmark_accuracy(tmp_path: Path) -> None:
    cli = main(["fit", *understanding_args(tmp_path)])
    metrics = cli.trainer.logged_metrics
    assert "val/motionshapes/overall" in metrics
    assert "val/motionshapes/counting" in metrics
    assert metrics["val/accuracy"] == metrics["val/motionshapes/overall"]
    checkpoint = next(Path(cli.trainer.log_dir).glob("checkpoints/*.ckpt"))
    validated = main(["validate", *understanding_args(tmp_path / "again"), f"--ckpt_path={checkpoint}"])
    assert "val/motionshapes/overall" in validated.trainer.callback_metrics
    restored = VideoLLM.load_from_checkpoint(checkpoint, map_location="cpu")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert restored.state_dict().keys() == saved.keys()
    for name, value in restored.state_dict().items():
        torch.testing.assert_close(value, saved[name], msg=name)
    # A checkpoint written before the task models moved into core: the same weights without ``model.``.
    legacy = torch.load(checkpoint, map_location="cpu", weights_only=True)
    legacy["state_dict"] = {name.removeprefix("model."): value for name, value in saved.items()}
    torch.save(legacy, tmp_path / "legacy.ckpt")
    from_legacy = VideoLLM.load_from_checkpoint(tmp_path / "legacy.ckpt", map_location="cpu")
    for name, value in from_legacy.state_dict().items():
        torch.testing.assert_close(value, saved[name], msg=name)


def test_checkpoint_of_another_module_is_refused(tmp_path: Path) -> None:
    pretraining = main(["fit", *run_args(tmp_path / "pretraining")])
    checkpoint = next(Path(pretraining.trainer.log_dir).glob("checkpoints/*.ckpt"))
    with pytest.raises(CheckpointMismatchError, match="TokenizerPretraining"):
        main(["validate", *understanding_args(tmp_path / "understanding"), f"--ckpt_path={checkpoint}"])


def test_a_checkpoint_saved_after_its_last_validation_says_when_that_was() -> None:
    from vtok_lit.modules.checkpoints import describe

    saved = {"global_step": 900, "epoch": 7, "vtok_lit": {"val_metrics": {"val/psnr": 22.3}}}
    saved["vtok_lit"]["val_metrics_step"] = 450  # the periodic save at 900 comes before its validation
    assert describe(saved) == (
        "step 900, epoch 7; val/psnr=22.3 "
        "(from the validation at step 450; the run's logs have any later one)"
    )
    saved["vtok_lit"]["val_metrics_step"] = 900
    assert describe(saved) == "step 900, epoch 7; val/psnr=22.3"


def test_tokenizer_checkpoint_initialises_the_video_llm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    pretraining = main(["fit", *run_args(tmp_path / "pretraining")])
    checkpoint = next(Path(pretraining.trainer.log_dir).glob("checkpoints/*.ckpt"))
    monkeypatch.setattr(logging.getLogger("lightning.pytorch"), "propagate", True)
    caplog.set_level(logging.INFO)
    understanding = main(
        [
            "fit",
            *understanding_args(
                tmp_path / "understanding",
                "--trainer.max_steps=0",
                f"--model.init_args.tokenizer_checkpoint={checkpoint}",
            ),
        ]
    )
    # Which checkpoint became the tokenizer, and how far its run had trained, is said.
    assert re.search(
        rf"tokenizer weights loaded from {checkpoint}: step 4, epoch \d+; .*val/psnr=\d", caplog.text
    ), caplog.text
    pretrained = pretraining.model.tokenizer.state_dict()
    for name, value in understanding.model.tokenizer.state_dict().items():
        torch.testing.assert_close(value, pretrained[name])
    # jsonargparse wraps errors raised while instantiating the model in a ValueError that quotes them.
    with pytest.raises(
        ValueError, match="holds a tokenizer of class VTokTokenizer, but this run's tokenizer is KeyFrame"
    ):
        main(
            [
                "fit",
                *understanding_args(
                    tmp_path / "other",
                    "--trainer.max_steps=0",
                    "--model.init_args.tokenizer.class_path=vtok_lit.core.KeyFrameTokenizer",
                    f"--model.init_args.tokenizer_checkpoint={checkpoint}",
                ),
            ]
        )


def test_checkpoint_of_other_components_is_refused(tmp_path: Path) -> None:
    # As `validate -c experiments/understanding.yaml -c experiments/tokenizer/naive.yaml --ckpt_path <a VTok
    # run's checkpoint>`.
    vtok = main(["fit", *understanding_args(tmp_path / "vtok")])
    checkpoint = next(Path(vtok.trainer.log_dir).glob("checkpoints/*.ckpt"))
    naive = "--model.init_args.tokenizer.class_path=vtok_lit.core.FrameSamplingTokenizer"
    with pytest.raises(
        CheckpointMismatchError,
        match=r"model.tokenizer: checkpoint vtok_lit.core.VTokTokenizer, config .*FrameSamplingTokenizer",
    ):
        main(["validate", *understanding_args(tmp_path / "naive", naive), f"--ckpt_path={checkpoint}"])


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "is empty"), (b"\x80garbage" * 8, "is not a checkpoint"), (b"PK\x03\x04" + bytes(60), "is not a")],
)
def test_a_file_that_is_no_checkpoint_is_named(tmp_path: Path, content: bytes, reason: str) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    with pytest.raises(NotACheckpointError, match=rf"{bad} {reason}") as error:
        main(["validate", *run_args(tmp_path), f"--ckpt_path={bad}"])
    assert "weights_only=False" not in str(error.value)
    with pytest.raises(ValueError, match=rf"{bad} (is empty|is not a checkpoint)"):
        main(
            [
                "fit",
                *understanding_args(
                    tmp_path, "--trainer.max_steps=0", f"--model.init_args.tokenizer_checkpoint={bad}"
                ),
            ]
        )


def manifest_of(tmp_path: Path, tiny_corpus: Path, bad_splits: tuple[str, ...], with_qa: bool = True) -> Path:
    """The tiny corpus's manifest with every clip of ``bad_splits`` replaced by a corrupt file."""
    lines = []
    for record in read_manifest(tiny_corpus):
        video = str(record.video)
        if record.split in bad_splits:
            video = str(tmp_path / f"corrupt_{record.line}.mp4")
            Path(video).write_bytes(b"\x00garbage" * 64)
        qa = [vars(pair) for pair in record.qa] if with_qa else []
        lines.append({"video": video, "caption": record.caption, "qa": qa, "split": record.split})
    write_manifest(tmp_path / "manifest.jsonl", lines)
    return tmp_path / "manifest.jsonl"


@pytest.mark.parametrize(
    ("bad_split", "message"), [("train", "gave a loss to train on"), ("val", "held a readable clip")]
)
def test_a_split_of_unreadable_clips_stops_the_run(
    tmp_path: Path, tiny_corpus: Path, bad_split: str, message: str
) -> None:
    manifest = manifest_of(tmp_path, tiny_corpus, (bad_split,))
    skip = ["--data.init_args.bad_video_policy=skip", f"--data.init_args.manifest={manifest}"]
    with pytest.raises(
        NoUsableDataError,
        match=rf"No batch of split '{bad_split}' \(for {bad_split}\) {message} in epoch \d; its clips are "
        rf"unreadable, e.g.:\n  {tmp_path}/manifest.jsonl line \d+: cannot decode .*corrupt_\d+.mp4",
    ):
        main(["fit", *run_args(tmp_path, *skip, "--trainer.num_sanity_val_steps=0")])


def test_a_split_whose_every_file_is_missing_is_named(tmp_path: Path, tiny_corpus: Path) -> None:
    manifest = manifest_of(tmp_path, tiny_corpus, ("train",))
    for corrupt in tmp_path.glob("corrupt_*.mp4"):
        corrupt.unlink()
    skip = ["--data.init_args.bad_video_policy=skip", f"--data.init_args.manifest={manifest}"]
    with (
        pytest.warns(UserWarning, match="skipping 8 of 12"),
        pytest.raises(
            FileNotFoundError,
            match=r"split 'train' \(for train\) of .*: every one of its 8 video files is missing",
        ),
    ):
        main(["fit", *run_args(tmp_path, *skip)])


def test_missing_files_are_counted_as_skipped_videos(tmp_path: Path, tiny_corpus: Path) -> None:
    manifest = manifest_of(tmp_path, tiny_corpus, ())
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:1] + [lines[1].replace("train_", "gone_")] + lines[2:]) + "\n")
    skip = ["--data.init_args.bad_video_policy=skip", f"--data.init_args.manifest={manifest}"]
    with pytest.warns(UserWarning, match="skipping 1 of 12 clips whose video file is missing"):
        cli = main(
            ["fit", *run_args(tmp_path, *skip, "--trainer.max_steps=2", "--trainer.val_check_interval=2")]
        )
    # Two steps of batch 4 read the 8 training clips once, the missing one among them.
    assert cli.trainer.logged_metrics["data/skipped_videos"] == 1


def test_video_llm_on_clips_without_questions_is_an_error(tmp_path: Path, tiny_corpus: Path) -> None:
    manifest = manifest_of(tmp_path, tiny_corpus, (), with_qa=False)
    with pytest.raises(
        ValueError, match=r"no clip of split 'train' \(for train\) in .*manifest.jsonl has any"
    ):
        main(["fit", *understanding_args(tmp_path, f"--data.init_args.manifest={manifest}")])


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("--model.init_args.tokenizer.init_args.grid_size=0", r"grid_size must be at least 1, got 0"),
        ("--model.init_args.tokenizer.init_args.grid_size=-2", r"grid_size must be at least 1, got -2"),
        (
            "--model.init_args.tokenizer.init_args.frame_encoder.init_args.patch_size=5",
            r"model.init_args.tokenizer.init_args.frame_encoder.init_args.patch_size=5 does not divide the "
            r"frame side data.init_args.image_size=32",
        ),
        (
            "--model.init_args.tokenizer.init_args.grid_size=9",
            r"model.init_args.tokenizer.init_args.grid_size=9 is larger than the 8x8 feature map",
        ),
    ],
)
def test_tokenizer_settings_that_cannot_work_are_named(tmp_path: Path, setting: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        main(["fit", *run_args(tmp_path, setting, "--trainer.max_steps=1")])


def test_predict_writes_files_and_prints_where(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pretraining = main(["fit", *run_args(tmp_path / "pretraining")])
    checkpoint = next(Path(pretraining.trainer.log_dir).glob("checkpoints/*.ckpt"))
    predicted = main(["predict", *run_args(tmp_path / "pretraining"), f"--ckpt_path={checkpoint}"])
    table = Path(predicted.trainer.log_dir) / "predictions" / "predictions.jsonl"
    assert str(table) in capsys.readouterr().err
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    assert len(rows) == 4  # the corpus's 4 validation clips
    frames = read_frames(table.parent / rows[0]["reconstruction"], range(8))
    assert frames.shape == (8, 32, 32, 3) and rows[0]["reconstruction"] == "val_00000_reconstructed.mp4"

    understanding = main(["fit", *understanding_args(tmp_path / "understanding")])
    checkpoint = next(Path(understanding.trainer.log_dir).glob("checkpoints/*.ckpt"))
    out = tmp_path / "answers"
    main(
        [
            "predict",
            *understanding_args(tmp_path / "understanding"),
            f"--ckpt_path={checkpoint}",
            f"--prediction_writer.output_dir={out}",
        ]
    )
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and len(rows[0]["answers"]) == len(rows[0]["questions"]) > 0
    assert all(isinstance(answer, str) for row in rows for answer in row["answers"])
