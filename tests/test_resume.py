"""Resume: N steps straight equal N/2 steps, a stop, and N/2 more from ``--ckpt_path``.

Eight training clips in batches of 2 make a 4-step epoch, so a stop after step 3 lands mid-epoch
and one after step 4 on the epoch boundary; both runs then cross into the next epoch. The random
frame subset (``frames_per_clip``) and the video-LLM's question sampling draw from the global torch
RNG, so they check that a checkpoint restores it.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from vtok_lit.cli import VTokCLI, main
from vtok_lit.data import VideoTextDataModule
from vtok_lit.data.resumable import ResumableDataLoader

CONF = Path(__file__).parent / "conf"
TOTAL_STEPS = 6
LONG_RUN = 10_000
# Per config, a setting that makes training draw from the global RNG: frame subsets, sampled questions.
RANDOM_DRAWS = {
    "pretraining_tiny.yaml": "--model.init_args.decoder.init_args.frames_per_clip=4",
    "understanding_tiny.yaml": "--model.init_args.questions_per_video=1",
}


def train_paths(loader: ResumableDataLoader, epoch: int) -> list[list[str]]:
    loader.batch_sampler.sampler.set_epoch(epoch)
    return [batch["path"] for batch in loader]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_train_loader_resumes_where_it_stopped(tiny_corpus: Path, num_workers: int) -> None:
    datamodule = VideoTextDataModule(
        manifest=str(tiny_corpus), num_frames=2, image_size=16, batch_size=2, num_workers=num_workers
    )
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    epochs = [train_paths(loader, 0), train_paths(loader, 1)]
    assert epochs[0] != epochs[1]
    assert sorted(sum(epochs[0], [])) == sorted(sum(epochs[1], []))

    batches = iter(loader)
    loader.batch_sampler.sampler.set_epoch(1)
    assert [next(batches)["path"] for _ in range(3)] == epochs[1][:3]
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches": 3}

    # A fresh loader, as in a resumed run: the rest of epoch 1, then epoch 2 in the same order.
    resumed = datamodule.train_dataloader()
    resumed.load_state_dict(state)
    assert train_paths(resumed, 1) == epochs[1][3:]
    assert resumed.state_dict() == {"epoch": 1, "batches": 4}
    assert train_paths(resumed, 2) == train_paths(loader, 2)

    # A saved state of a finished epoch: the next epoch is whole.
    after_epoch = datamodule.train_dataloader()
    after_epoch.load_state_dict({"epoch": 1, "batches": 4})
    assert train_paths(after_epoch, 2) == train_paths(loader, 2)


def fit_args(config: str, manifest: Path, out: Path, *extra: str) -> list[str]:
    """``vtok-lit fit`` arguments of a tiny config on ``manifest``, checkpointing every step into ``out``."""
    return [
        "fit",
        "-c",
        str(CONF / config),
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.init_args.save_dir={out}",
        f"--trainer.default_root_dir={out}",
        f"--trainer.max_steps={TOTAL_STEPS}",
        f"--trainer.val_check_interval={TOTAL_STEPS}",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={out / 'checkpoints'}",
        "--trainer.callbacks.every_n_train_steps=1",
        "--trainer.callbacks.save_top_k=-1",
        f"--data.init_args.manifest={manifest}",
        "--data.init_args.batch_size=2",
        RANDOM_DRAWS[config],
        *extra,
    ]


def fit(config: str, manifest: Path, out: Path, *extra: str) -> tuple[VTokCLI, list[dict[str, str]]]:
    """Fit a tiny config on ``manifest``, checkpointing every step; returns the CLI and metrics.csv rows."""
    cli = main(fit_args(config, manifest, out, *extra))
    with open(Path(cli.trainer.log_dir) / "metrics.csv", newline="") as file:
        return cli, list(csv.DictReader(file))


def logged(rows: list[dict[str, str]]) -> dict[tuple[str, int], float]:
    """``(metric, step) -> value`` of every value in a metrics.csv."""
    return {
        (key, int(row["step"])): float(value)
        for row in rows
        for key, value in row.items()
        if value and key not in ("step", "epoch")
    }


@pytest.fixture(scope="module")
def straight_run(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable:
    """``straight_run(config)``: the uninterrupted run of a config, fitted once per module."""
    runs: dict[str, tuple[VTokCLI, list[dict[str, str]]]] = {}

    def run(config: str) -> tuple[VTokCLI, list[dict[str, str]]]:
        if config not in runs:
            runs[config] = fit(config, tiny_corpus, tmp_path_factory.mktemp("straight"))
        return runs[config]

    return run


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "stop_after", "num_workers"),
    [
        ("pretraining_tiny.yaml", 3, 0),
        ("pretraining_tiny.yaml", 4, 0),
        # Worker processes read ahead of training; the interrupted runs use them, the straight one not.
        ("pretraining_tiny.yaml", 3, 2),
        ("understanding_tiny.yaml", 3, 0),
        ("understanding_tiny.yaml", 4, 0),
    ],
    ids=["mid_epoch", "epoch_boundary", "mid_epoch_workers", "llm_mid_epoch", "llm_epoch_boundary"],
)
def test_resumed_run_matches_a_straight_run(
    config: str, stop_after: int, num_workers: int, straight_run: Callable, tiny_corpus: Path, tmp_path: Path
) -> None:
    straight, straight_rows = straight_run(config)
    workers = f"--data.init_args.num_workers={num_workers}"
    _, first_rows = fit(config, tiny_corpus, tmp_path / "first", f"--trainer.max_steps={stop_after}", workers)
    checkpoint = tmp_path / "first" / "checkpoints" / f"epoch=0-step={stop_after}.ckpt"
    resumed, second_rows = fit(config, tiny_corpus, tmp_path / "second", f"--ckpt_path={checkpoint}", workers)

    assert resumed.trainer.global_step == straight.trainer.global_step == TOTAL_STEPS
    resumed_weights = resumed.model.state_dict()
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed_weights[name], value, msg=f"{name} differs after resuming")

    expected = logged(straight_rows)
    pieces = logged(first_rows) | logged(second_rows)
    # Stopping mid-epoch ends that epoch early, so the first run flushes its epoch-level sum there.
    assert pieces.keys() - expected.keys() <= {("data/skipped_videos", stop_after - 1)}
    for key, value in expected.items():
        assert pieces[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["sigint", "sigterm"]
)
def test_a_run_stopped_by_a_signal_resumes_to_the_same_weights(
    signum: int, status: int, tiny_corpus: Path, tmp_path: Path
) -> None:
    config = "pretraining_tiny.yaml"
    out = tmp_path / "interrupted"
    # Far more steps than the run gets to take: the signal comes once its first checkpoint is written.
    args = fit_args(config, tiny_corpus, out, "--trainer.max_steps=100000")
    process = subprocess.Popen(
        [sys.executable, "-m", "vtok_lit", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    while not list((out / "checkpoints").glob("*.ckpt")) and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signum)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == status, output
    interrupted = list((out / "checkpoints").glob("interrupted-step=*.ckpt"))
    assert len(interrupted) == 1, output
    assert "--ckpt_path last" in output

    # Resumed by "the same command plus --ckpt_path last", it ends where a run that never stopped does.
    end = f"--trainer.max_steps={int(interrupted[0].stem.split('=')[1]) + 3}"
    resumed, _ = fit(config, tiny_corpus, out, end, "--ckpt_path=last")
    assert resumed.trainer.ckpt_path == str(interrupted[0])
    straight, _ = fit(config, tiny_corpus, tmp_path / "straight", end)
    assert resumed.trainer.global_step == straight.trainer.global_step
    resumed_weights = resumed.model.state_dict()
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed_weights[name], value, msg=f"{name} differs after resuming")


def test_ckpt_path_last_without_a_checkpoint_is_an_error(tiny_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"--ckpt_path last: this run has no checkpoint yet \(.*checkpoints"
    ):
        main(fit_args("pretraining_tiny.yaml", tiny_corpus, tmp_path, "--ckpt_path=last"))


def test_ckpt_path_last_continues_the_runs_own_folder(tiny_corpus: Path, tmp_path: Path) -> None:
    # The shipped layout: checkpoints in the logger's runs/<name>/version_N/checkpoints.
    common = [
        "fit",
        "-c",
        str(CONF / "pretraining_tiny.yaml"),
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        f"--data.init_args.manifest={tiny_corpus}",
    ]
    first = main([*common, "--trainer.max_steps=4"])
    resumed = main([*common, "--trainer.max_steps=6", "--ckpt_path=last"])
    assert resumed.trainer.ckpt_path == str(next(Path(first.trainer.log_dir).glob("checkpoints/*.ckpt")))
    assert resumed.trainer.log_dir == first.trainer.log_dir
    assert resumed.trainer.global_step == 6
