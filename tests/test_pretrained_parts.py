"""A task model takes the tokenizer (and decoder) a pretraining checkpoint saved when its config leaves
them out, and its own checkpoints rebuild them without that file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from test_cli import cli_args

from vtok_lit.cli import main
from vtok_lit.core import ConvFrameEncoder, TransformerLM, VTokTokenizer
from vtok_lit.modules import CheckpointMismatchError, TextToVideo, VideoLLM
from vtok_lit.modules.pretrained_parts import config_differences

pytestmark = pytest.mark.usefixtures("one_thread")

# tests/conf/generation_tiny.yaml with its tokenizer and decoder left to the checkpoint, frozen.
FROM_CHECKPOINT = [
    "--model.init_args.tokenizer=null",
    "--model.init_args.decoder=null",
    "--model.init_args.freeze_tokenizer=true",
    "--model.init_args.freeze_decoder=true",
    "--model.init_args.decoder_loss_weight=0.0",
]


@pytest.fixture(scope="module")
def pretraining(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny tokenizer-pretraining run's checkpoint and its saved hyperparameters."""
    tmp_path = tmp_path_factory.mktemp("pretraining")
    cli = main(["fit", *cli_args("pretraining_tiny.yaml", tmp_path, "--data.init_args.num_workers=0")])
    checkpoint = next(Path(cli.trainer.log_dir).glob("checkpoints/*.ckpt"))
    return checkpoint, torch.load(checkpoint, weights_only=True)["hyper_parameters"]


def test_generation_builds_its_parts_from_the_checkpoint_and_keeps_them(
    pretraining: tuple[Path, dict], tmp_path: Path
) -> None:
    checkpoint, saved = pretraining
    own_copy = tmp_path / "pretraining.ckpt"
    own_copy.write_bytes(checkpoint.read_bytes())
    arguments = cli_args(
        "generation_tiny.yaml",
        tmp_path,
        "--data.init_args.num_workers=0",
        f"--model.init_args.tokenizer_checkpoint={own_copy}",
        *FROM_CHECKPOINT,
    )
    cli = main(["fit", *arguments])
    model = cli.model
    assert type(model.tokenizer).__name__ == saved["tokenizer"]["class_path"].rsplit(".", 1)[1]
    pretrained = torch.load(own_copy, weights_only=True)["state_dict"]
    for name, value in model.decoder.state_dict().items():
        torch.testing.assert_close(value, pretrained[f"decoder.{name}"], msg=name)

    written = next(Path(cli.trainer.log_dir).glob("checkpoints/*.ckpt"))
    hparams = torch.load(written, weights_only=True)["hyper_parameters"]
    assert hparams["tokenizer"] == saved["tokenizer"] and hparams["decoder"] == saved["decoder"]
    assert hparams["tokenizer_checkpoint"] is None
    logged = yaml.safe_load((Path(cli.trainer.log_dir) / "hparams.yaml").read_text())
    assert logged["tokenizer"] == saved["tokenizer"] and logged["num_frames"] == 8

    # Self-contained: the pretraining file may go, the config may still leave the parts out.
    own_copy.unlink()
    validated = main(["validate", *arguments, f"--ckpt_path={written}"])
    assert type(validated.model.tokenizer) is type(model.tokenizer)
    with pytest.warns(UserWarning, match="no tokenizer_checkpoint"):
        reloaded = TextToVideo.load_from_checkpoint(written)
    for name, value in reloaded.tokenizer.state_dict().items():
        torch.testing.assert_close(value, model.tokenizer.state_dict()[name], msg=name)


def test_video_llm_builds_its_tokenizer_from_the_checkpoint(pretraining: tuple[Path, dict]) -> None:
    checkpoint, saved = pretraining
    language_model = TransformerLM(hidden_size=32, num_layers=1, num_heads=2, max_seq_len=128)
    model = VideoLLM(language_model=language_model, tokenizer_checkpoint=str(checkpoint))
    pretrained = torch.load(checkpoint, weights_only=True)["state_dict"]
    for name, value in model.tokenizer.state_dict().items():
        torch.testing.assert_close(value, pretrained[f"tokenizer.{name}"], msg=name)
    assert model.hparams["tokenizer"] is model.tokenizer  # built directly, hyperparameters hold parts


def test_a_checkpoint_without_the_parts_config_is_named(tmp_path: Path) -> None:
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}}, bare)
    language_model = TransformerLM(hidden_size=32, num_layers=1, num_heads=2, max_seq_len=128)
    with pytest.raises(CheckpointMismatchError, match=rf"{bare} has no saved hyper_parameters\.tokenizer"):
        VideoLLM(language_model=language_model, tokenizer_checkpoint=str(bare))
    with pytest.raises(ValueError, match="model.init_args.tokenizer is not set and there is no"):
        VideoLLM(language_model=language_model)
    with pytest.raises(ValueError, match="set model.init_args.language_model"):
        VideoLLM(tokenizer=VTokTokenizer(ConvFrameEncoder(channels=8)))


def test_config_and_checkpoint_of_other_sizes_are_named(
    pretraining: tuple[Path, dict], tmp_path: Path
) -> None:
    checkpoint, _ = pretraining
    arguments = cli_args(
        "generation_tiny.yaml",
        tmp_path,
        f"--model.init_args.tokenizer_checkpoint={checkpoint}",
        "--model.init_args.tokenizer.init_args.token_dim=16",
        "--trainer.max_steps=0",
    )
    # LightningCLI reports a failed instantiation as a ValueError quoting the module's error.
    with pytest.raises(ValueError) as error:
        main(["fit", *arguments])
    message = str(error.value)
    assert str(checkpoint) in message
    assert "model.init_args.tokenizer.init_args.token_dim: config 16, checkpoint 32" in message


def test_config_differences_name_nested_keys() -> None:
    config = {"class_path": "A", "init_args": {"width": 8, "encoder": {"init_args": {"channels": 4}}}}
    saved = {"class_path": "A", "init_args": {"width": 8, "encoder": {"init_args": {"channels": 16}}}}
    assert config_differences(config, saved, "model.init_args.tokenizer") == [
        "model.init_args.tokenizer.init_args.encoder.init_args.channels: config 4, checkpoint 16"
    ]
    assert config_differences(None, saved, "model.init_args.tokenizer") == []


def test_a_missing_first_stage_is_named_with_how_to_make_it(tmp_path: Path) -> None:
    missing = tmp_path / "runs" / "quickstart" / "vtok" / "version_0" / "checkpoints" / "last.ckpt"
    with pytest.raises(
        FileNotFoundError, match="tokenizer_checkpoint: no file at .*last.ckpt.*quickstart.yaml"
    ):
        VideoLLM(
            language_model=TransformerLM(hidden_size=32, num_layers=1, num_heads=2),
            tokenizer_checkpoint=str(missing),
        )
