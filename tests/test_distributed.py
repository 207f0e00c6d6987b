"""Lightning's strategies on vtok-lit: the FSDP overlay's wrap policy, and (slow tier) a 2-process DDP
fit on the CPU through the real CLI against a 1-process fit.

``ddp_fork`` forks the worker processes from inside pytest; plain ``ddp`` would launch the whole
command line again, which under pytest is pytest itself. Forked workers leave with ``os._exit``, so
no interpreter shutdown runs in them (under ``ddp_spawn`` one worker now and then aborted there,
after its fit had ended, in a native thread's destructor). The workers run one thread each: a
worker forked from a parent whose OpenMP pool has run can hang in its first multi-threaded op.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.strategies import FSDPStrategy, Strategy
from torch import nn

from vtok_lit.cli import VTokCLI, main
from vtok_lit.core import TransformerBlock

CONF = Path(__file__).parent / "conf"
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
# The training loss is logged every step from each rank's own shard, unsynced (an all-reduce a step
# for a progress figure); epoch-level figures (val loss, skipped clips, metrics) are synced.
RANK_ZERO_METRICS = {"train/loss"}


@pytest.fixture(autouse=True)
def no_process_group_left() -> Iterator[None]:
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One intra-op thread in this process, and so in the workers it forks (Lightning keeps a set
    ``OMP_NUM_THREADS``); the thread count is restored after the test."""
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_fsdp_overlay_makes_each_transformer_block_a_shard_unit() -> None:
    overlay = yaml.safe_load((EXPERIMENTS / "strategies" / "fsdp.yaml").read_text())
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    strategy = parser.instantiate(parser.parse_object({"strategy": overlay["trainer"]["strategy"]})).strategy
    assert isinstance(strategy, FSDPStrategy)
    policy = strategy.kwargs["auto_wrap_policy"]
    assert policy(TransformerBlock(hidden_size=8, num_heads=2), recurse=False)
    assert not policy(nn.Linear(8, 8), recurse=False)


def fit(
    manifest: Path, out: Path, *extra: str, config: str = "pretraining_tiny.yaml"
) -> tuple[VTokCLI, list[dict[str, str]]]:
    """A tiny fit with validation (4 steps of ``config`` by default); returns the CLI and the rows of
    its metrics.csv."""
    cli = main(
        [
            "fit",
            "-c",
            str(CONF / config),
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.init_args.save_dir={out}",
            f"--trainer.default_root_dir={out}",
            "--trainer.enable_checkpointing=false",
            f"--data.init_args.manifest={manifest}",
            *extra,
        ]
    )
    # Not cli.trainer.log_dir: after ddp_fork the main process's logger would pick a new version.
    (metrics,) = out.rglob("metrics.csv")
    with open(metrics, newline="") as file:
        return cli, list(csv.DictReader(file))


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    single, single_rows = fit(tiny_corpus, tmp_path / "single", "--data.init_args.batch_size=4")
    ddp, ddp_rows = fit(
        tiny_corpus,
        tmp_path / "ddp",
        "--trainer.strategy=ddp_fork",
        "--trainer.devices=2",
        "--data.init_args.batch_size=2",
    )

    # The main process of ddp_fork gets rank 0's weights and callback_metrics back, not its loops.
    assert [row["step"] for row in ddp_rows] == [row["step"] for row in single_rows]
    assert ddp_rows[0].keys() == single_rows[0].keys()
    assert ddp.trainer.callback_metrics.keys() == single.trainer.callback_metrics.keys()
    for name, value in ddp.trainer.callback_metrics.items():
        assert math.isfinite(value), name
        if name not in RANK_ZERO_METRICS:
            # PSNR and SSIM are torchmetrics Metrics, their state summed over both ranks; the val loss
            # is the mean of the ranks' means (equal shards here).
            assert value.item() == pytest.approx(single.trainer.callback_metrics[name].item(), rel=1e-4), name

    # Each rank trains on every other clip of the same shuffled batch and DDP averages the gradients.
    single_weights = single.model.state_dict()
    for name, value in ddp.model.state_dict().items():
        torch.testing.assert_close(value, single_weights[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_two_process_ddp_keeps_the_token_statistics_of_the_whole_batch(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    """The understanding projector's token statistics after a step: two processes with half the batch
    each fold in the statistics of the whole batch, as one process does (not process 0's half)."""
    one_step = ("--trainer.max_steps=1", "--trainer.val_check_interval=1", "--trainer.callbacks=[]")
    understanding = {"config": "understanding_tiny.yaml"}
    single, _ = fit(
        tiny_corpus, tmp_path / "single", *one_step, "--data.init_args.batch_size=4", **understanding
    )
    ddp, _ = fit(
        tiny_corpus,
        tmp_path / "ddp",
        *one_step,
        "--trainer.strategy=ddp_fork",
        "--trainer.devices=2",
        "--data.init_args.batch_size=2",
        **understanding,
    )
    statistics = ddp.model.model.standardizer.state_dict()
    assert statistics["num_updates"].amax() == 1
    for name, value in single.model.model.standardizer.state_dict().items():
        torch.testing.assert_close(statistics[name], value, rtol=1e-4, atol=1e-6, msg=name)
