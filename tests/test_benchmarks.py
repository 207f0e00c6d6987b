"""The benchmark scripts run end to end at their smallest settings, so they cannot rot.

Only the shape of each report is checked (rows, columns, the baseline's ratios of 1), never a timing.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
import yaml

from vtok_lit.core import ConvFrameEncoder, VTokTokenizer, video_decoders

ROOT = Path(__file__).resolve().parents[1]
TINY_VIT = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}
TIMING = ["--repeats", "1", "--warmup", "0", "--threads", "1"]


@pytest.fixture
def benchmarks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], ModuleType]]:
    """Imports a script from benchmarks/ the way ``python benchmarks/<name>.py`` sees its siblings.

    The scripts run with ``--threads 1`` (tiny parallel ops crawl on a busy machine); the fixture
    gives the other tests their thread count back.
    """
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    threads = torch.get_num_threads()
    yield importlib.import_module
    torch.set_num_threads(threads)


def read_report(output_dir: Path, name: str) -> tuple[str, dict]:
    markdown = (output_dir / f"{name}.md").read_text()
    return markdown, json.loads((output_dir / f"{name}.json").read_text())


def table_header(markdown: str) -> list[str]:
    header = next(line for line in markdown.splitlines() if line.startswith("| "))
    return [cell.strip() for cell in header.strip("|").split("|")]


def test_answer_logits(benchmarks, tmp_path: Path) -> None:
    report = benchmarks("answer_logits").main(["--quick", "--output-dir", str(tmp_path), *TIMING])
    markdown, saved = read_report(tmp_path, "answer_logits")
    assert saved == json.loads(json.dumps(report))
    rows = {row["text_tokenizer"]: row for row in report["tables"]["answer_logits"]}
    assert set(rows) == {"bytes", "open_clip BPE"}
    for row in rows.values():
        # The answers ("left", "yellow", "moving") and their end token, plus the position before them.
        assert 2 < row["logit_positions"] < row["positions"]
        assert row["all_positions_s"] > 0 and row["answer_positions_s"] > 0
    assert rows["bytes"]["logit_positions"] == len("moving") + 2
    assert "head over the answer positions" in markdown


def test_token_budget(benchmarks, tmp_path: Path) -> None:
    token_budget = benchmarks("token_budget")
    report = token_budget.main(
        ["--frames", "8", "--batch-size", "1", "--skip-memory", "--output-dir", str(tmp_path), *TIMING]
    )
    markdown, saved = read_report(tmp_path, "token_budget")
    assert saved == json.loads(json.dumps(report))
    rows = report["tables"]["token_budget"]
    assert [(row["frames"], row["tokenizer"]) for row in rows] == [
        (8, "naive"),
        (8, "vtok"),
        (8, "key_frame"),
    ]
    assert [row["video_tokens"] for row in rows] == [8 * 16, 16 + 7, 16]
    naive = rows[0]
    for ratio in ("tokens_vs_naive", "flops_vs_naive", "time_vs_naive", "cached_time_vs_naive"):
        assert naive[ratio] == 1.0
        assert all(0 < row[ratio] < math.inf for row in rows)
    assert naive["memory_vs_naive"] is None
    for check in report["raw"]["flop_checks"]:
        assert check["counted_forward"] == pytest.approx(check["analytic_forward"])
        assert check["counted_train"] == pytest.approx(3 * check["analytic_forward"])
    assert {"tokenizer", "video tokens", "FLOPs vs naive", "time vs naive", "mem vs naive"} <= set(
        table_header(markdown)
    )
    assert "Machine: torch" in markdown


def test_token_budget_memory_probe_runs_in_a_subprocess(benchmarks) -> None:
    token_budget = benchmarks("token_budget")
    config = {
        "tokenizer": "vtok",
        "frames": 4,
        "batch_size": 1,
        "max_frames": 64,
        "max_seq_len": 128,
        "seed": 0,
        "threads": 1,
    }
    memory = token_budget.step_memory(config, torch.device("cpu"))
    assert memory["peak_bytes"] > 0 and memory["method"]


def test_tokenizer_overhead(benchmarks, tmp_path: Path) -> None:
    config = tmp_path / "bench-tiny-vit.json"
    config.write_text(json.dumps(TINY_VIT))
    arguments = ["--batch-sizes", "1", "--frames", "4", "--clip-config", str(config)]
    report = benchmarks("tokenizer_overhead").main([*arguments, "--output-dir", str(tmp_path), *TIMING])
    markdown, _ = read_report(tmp_path, "tokenizer_overhead")
    rows = report["tables"]["tokenizer_overhead"]
    assert [(row["encoder"], row["tokenizer"]) for row in rows] == [
        ("conv", "vtok (mean)"),
        ("conv", "vtok (attention)"),
        ("open_clip bench-tiny-vit", "vtok (mean)"),
        ("open_clip bench-tiny-vit", "vtok (attention)"),
    ]
    for row in rows:
        assert row["overhead_direct"] == pytest.approx(row["features_seconds"] / row["encoder_seconds"])
    assert "overhead, tokenize_features / encoder" in table_header(markdown)


def test_data_loading(benchmarks, tmp_path: Path) -> None:
    arguments = ["--num-clips", "2", "--long-clips", "2", "--long-size", "32", "--long-frames", "8"]
    arguments += ["--frames", "4", "--batch-size", "2", "--workers", "0", "1", "--backends", "pyav", "decord"]
    report = benchmarks("data_loading").main(
        [*arguments, "--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path), *TIMING]
    )
    markdown, _ = read_report(tmp_path, "data_loading")
    rows = [row for row in report["tables"]["data_loading"] if "fps" in row]
    sources = {row["source"] for row in rows}
    assert len(sources) == 3
    baseline = "decord get_batch"
    for source in sources:
        measured = {(row["level"], row["backend"], row["workers"]) for row in rows if row["source"] == source}
        for backend in (baseline, "pyav", "decord"):
            assert {("reader", backend, "-"), ("dataset", backend, "-"), ("loader", backend, 0)} <= measured
        assert ("loader", baseline, 1) in measured
    for row in rows:
        assert row["fps"] > 0
        if row["backend"] == baseline:
            assert row["vs_baseline"] == 1.0
        if row["level"] == "reader" and row["backend"] != baseline:
            assert row["frame_error"] <= 1, row  # the kit's readers are exact
    assert {"level", "backend", "workers", "frames/s", "vs decord get_batch"} <= set(table_header(markdown))
    assert "torchcodec" in markdown


def test_paper_table_collects_finished_runs(benchmarks: Callable[[str], ModuleType], tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    tokenizers = {"vtok": "VTokTokenizer", "naive": "FrameSamplingTokenizer"}
    for tokenizer, class_name in tokenizers.items():
        run_dir = tmp_path / "runs" / f"understanding_{tokenizer}" / "version_0"
        run_dir.mkdir(parents=True)
        # What a run logs: its module's and data's hyperparameters, and its resolved config.
        hparams = {
            "tokenizer": {
                "class_path": f"vtok_lit.core.{class_name}",
                "init_args": {"frame_encoder": {"class_path": "vtok_lit.core.ConvFrameEncoder"}},
            },
            "num_frames": 16,
        }
        (run_dir / "hparams.yaml").write_text(yaml.safe_dump(hparams))
        (run_dir / "config.yaml").write_text(yaml.safe_dump({"trainer": {"max_steps": 4}}))
        writer = SummaryWriter(str(run_dir))
        for step in range(4):
            writer.add_scalar("train/loss", 1.0 / (step + 1), step)
        writer.add_scalar("val/motionshapes/overall", 0.5 if tokenizer == "vtok" else 0.25, 3)
        writer.close()

    report = benchmarks("paper_table").main(
        [
            "--collect",
            "--skip-generation",
            "--tokenizers",
            *tokenizers,
            "--runs-dir",
            str(tmp_path / "runs"),
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    rows = {row["tokenizer"]: row for row in report["tables"]["Understanding: held-out accuracy (%)"]}
    assert rows["vtok"]["tokens"] == 31 and rows["naive"]["tokens"] == 256
    assert rows["vtok"]["steps"] == rows["naive"]["steps"] == 4
    assert rows["vtok"]["overall"] == pytest.approx(50.0) and rows["naive"]["overall"] == pytest.approx(25.0)
    assert rows["vtok"]["counting"] is None
    assert (tmp_path / "out" / "paper_table.png").stat().st_size > 0
    assert "| vtok | 31 | 4 |" in (tmp_path / "out" / "paper_table.md").read_text()


@pytest.mark.slow
def test_paper_table_trains_both_tasks_on_their_own_pretraining(
    benchmarks: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    # The real subprocess fits at a few steps each, on a 16-clip corpus: the understanding and
    # generation runs must find the checkpoint the pretraining run wrote, and a rerun with
    # --reuse-finished trains nothing.
    paper_table = benchmarks("paper_table")
    arguments = [
        "--tokenizers",
        "vtok",
        "--pretraining-steps",
        "2",
        "--understanding-steps",
        "16",
        "--generation-steps",
        "2",
        "--limit-val-batches",
        "1",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--data-dir",
        str(tmp_path / "data"),
        "--output-dir",
        str(tmp_path / "out"),
        "--extra=--data.init_args.corpus.num_train=16",
        "--extra=--data.init_args.corpus.num_val=4",
        "--extra=--data.init_args.num_workers=0",
    ]
    report = paper_table.main(arguments)
    row = report["tables"]["Generation: judged alignment (%) and VBench-style figures"][0]
    assert row["tokenizer"] == "vtok" and row["tokens"] == 31
    assert all(row[name] is not None for name in ("overall", "temporal_flicker", "psnr_vs_real"))
    assert report["raw"]["wall_seconds"]["generation_vtok"] > 0
    (understood,) = report["tables"]["Understanding: held-out accuracy (%)"]
    assert understood["tokens"] == 31 and understood["steps"] == 16 and understood["overall"] is not None
    # The understanding run fine-tunes its tokenizer (the YAML's default): no frame features to cache.
    assert not (tmp_path / "runs" / "feature_cache").exists()

    rerun = paper_table.main([*arguments, "--reuse-finished"])
    assert rerun["raw"]["wall_seconds"] == dict.fromkeys(
        ["pretraining_vtok", "understanding_vtok", "generation_vtok"]
    )


TINY_PRETRAINING = ROOT / "tests" / "conf" / "pretraining_tiny.yaml"


def tiny_checkpoint(tmp_path: Path, config: Path = TINY_PRETRAINING, *options: str) -> Path:
    """A checkpoint of a short fit of ``config`` (default tests/conf/pretraining_tiny.yaml) with more
    command-line ``options``, its run under tmp_path/runs."""
    from vtok_lit.cli import main as cli_main

    cli_main(
        [
            "fit",
            "-c",
            str(config),
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
            f"--data.init_args.data_dir={tmp_path / 'corpus'}",
            "--data.init_args.num_workers=0",
            *options,
        ]
    )
    return next((tmp_path / "runs").rglob("*.ckpt"))


def test_caption_binding(benchmarks, tmp_path: Path) -> None:
    groups = "[[red, green, blue, yellow], [left, right], [up, down]]"
    checkpoint = tiny_checkpoint(
        tmp_path,
        TINY_PRETRAINING,
        "--model.init_args.residual_objective=vtok_lit.core.CaptionContrastObjective",
        "--model.init_args.residual_objective.init_args.token_dim=32",
        "--model.init_args.residual_objective.init_args.text_width=32",
        "--model.init_args.residual_objective.init_args.text_layers=1",
        f"--model.init_args.residual_objective.init_args.swap_groups={groups}",
    )
    report = benchmarks("caption_binding").main(
        ["--checkpoint", f"tiny={checkpoint}", "--output-dir", str(tmp_path), "--threads", "1"]
    )
    markdown, saved = read_report(tmp_path, "caption_binding")
    assert saved == json.loads(json.dumps(report))
    rows = report["tables"]["caption_binding"]
    assert rows[0]["test"] == "own caption nearest of 4" and rows[0]["chance"] == 0.25
    # The tiny corpus' four held-out captions: every exchange that has a pair in them gets a row.
    assert {row["test"] for row in rows[1:]} <= {
        "nearer than with two of red/green/blue/yellow exchanged",
        "nearer than with two of left/right exchanged",
        "nearer than with two of up/down exchanged",
    }
    for row in rows:
        assert 0 < row["clips"] <= 4 and 0.0 <= row["right"] <= 1.0
    assert table_header(markdown) == ["run", "test", "clips", "right %", "chance %"]
    with_ideal = benchmarks("caption_binding").main(
        ["--checkpoint", f"tiny={checkpoint}", "--output-dir", str(tmp_path), "--ideal-steps", "2"]
    )
    ideal = [row for row in with_ideal["tables"]["caption_binding"] if row["run"] == "ideal tokens, 2 steps"]
    assert ideal and ideal[0]["test"] == "own caption nearest of 4"
    plain = tiny_checkpoint(tmp_path / "plain")
    with pytest.raises(SystemExit, match="residual_objective is NoneType, not a CaptionContrastObjective"):
        benchmarks("caption_binding").main(["--checkpoint", f"plain={plain}", "--output-dir", str(tmp_path)])


def test_motion_probe(benchmarks, tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path)
    motion_probe = benchmarks("motion_probe")
    report = motion_probe.main(
        [
            "--checkpoint",
            f"tiny_trained={checkpoint}",
            "--random-init",
            f"tiny_random={TINY_PRETRAINING}",
            "--num-train",
            "12",
            "--num-val",
            "6",
            "--data-dir",
            str(tmp_path / "probe"),
            "--output-dir",
            str(tmp_path),
        ]
    )
    markdown, saved = read_report(tmp_path, "motion_probe")
    assert saved == json.loads(json.dumps(report))
    rows = report["tables"]["motion_probe"]
    assert [row["tokenizer"] for row in rows] == ["tiny_trained", "tiny_random", "chance (majority class)"]
    for row in rows[:2]:
        assert row["tokens"] == 4 + 7  # 2x2 key-frame cells + one residual token per later frame (T=8)
        for key in ("time_direction", "all_direction", "time_state", "all_state"):
            assert 0.0 <= row[key] <= 1.0
        assert math.isfinite(row["time_displacement"]) and row["time_displacement"] <= 1.0
    assert "direction % (time tokens)" in table_header(markdown)
    assert not any("shape" in column for column in table_header(markdown))  # see shape_probe
    with pytest.raises(SystemExit, match="no file at"):
        motion_probe.main(["--random-init", f"x={tmp_path / 'missing.yaml'}"])


def test_shape_probe(benchmarks, tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path)
    shape_probe = benchmarks("shape_probe")
    report = shape_probe.main(
        ["--checkpoint", f"tiny_trained={checkpoint}", "--random-init", f"tiny_random={TINY_PRETRAINING}"]
        + ["--num-train", "12", "--num-val", "6", "--data-dir", str(tmp_path / "probe")]
        + ["--output-dir", str(tmp_path)]
    )
    markdown, saved = read_report(tmp_path, "shape_probe")
    assert saved == json.loads(json.dumps(report))
    rows = report["tables"]["shape_probe"]
    stages = [(row["run"], row["stage"].split(",")[0]) for row in rows]
    trained = [
        ("tiny_trained", stage) for stage in ("encoder features", "key-frame token of the object's cell")
    ]
    assert stages[:3] == [("", "real key frame"), *trained]
    assert ("tiny_trained", "decoded key frame") in stages
    assert ("tiny_random", "decoded key frame") not in stages  # no trained decoder to read
    assert stages[-1] == ("chance (majority class)", "")
    # 32-px frames: 8-px crops of 3 colours; 3x3 patches of the 16-channel encoder; 32-dim tokens.
    features = {(row["run"], row["stage"].split(",")[0]): row["features"] for row in rows}
    assert features["", "real key frame"] == 3 * 8 * 8
    assert features["tiny_trained", "encoder features"] == 16 * 9
    assert features["tiny_trained", "key-frame token of the object's cell"] == 32
    for row in rows:
        assert all(0.0 <= row[target] <= 1.0 for target in ("shape", "colour", "size"))
    assert "shape %" in table_header(markdown)


def test_object_motion_probe(benchmarks, tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path)
    probe = benchmarks("object_motion_probe")
    key_frame_only = ROOT / "experiments" / "tokenizer" / "key_frame_only.yaml"
    report = probe.main(
        ["--checkpoint", f"tiny_trained={checkpoint}"]
        + ["--random-init", f"tiny_key_frame_only={TINY_PRETRAINING},{key_frame_only}"]
        + ["--num-train", "12", "--num-val", "8", "--data-dir", str(tmp_path / "probe")]
        + ["--output-dir", str(tmp_path)]
    )
    markdown, saved = read_report(tmp_path, "object_motion_probe")
    assert saved == json.loads(json.dumps(report))
    rows = report["tables"]["object_motion_probe"]
    # Key frame only has no token of a later frame: no rows for it. VTok's tokens and g_phi's input.
    pooled = "pooled residuals (g_phi's input)"
    assert [(row["run"], row["stage"], row["target"]) for row in rows] == [
        ("tiny_trained", "tokens", "direction (5 classes)"),
        ("tiny_trained", "tokens", "moving or still"),
        ("tiny_trained", pooled, "direction (5 classes)"),
        ("tiny_trained", pooled, "moving or still"),
    ]
    for row in rows:
        # Two residual tokens of 32, or two mean-pooled residuals of the 16 channels, and the colour
        # (4 colours).
        assert row["features"] == (2 * 32 if row["stage"] == "tokens" else 2 * 16) + 4
        assert 0.0 <= row["acc_all"] <= 1.0 and 0.0 < row["majority_all"] <= 1.0
    assert "1-object clips %" in table_header(markdown)
    assert "No rows for tiny_key_frame_only" in markdown


def test_object_motion_probe_reads_an_understanding_runs_fine_tuned_tokenizer(
    benchmarks, tmp_path: Path
) -> None:
    checkpoint = tiny_checkpoint(tmp_path, ROOT / "tests" / "conf" / "understanding_tiny.yaml")
    harness = benchmarks("harness")
    model, _, _ = harness.probe_model([checkpoint.parent.parent / "config.yaml"], checkpoint, ["tokenizer"])
    tokenizer, prefix = harness.model_part(model, "tokenizer")
    assert prefix == "model.tokenizer"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    for key, value in tokenizer.state_dict().items():
        torch.testing.assert_close(value, saved[f"model.tokenizer.{key}"])  # the fine-tuned weights
    report = benchmarks("object_motion_probe").main(
        ["--checkpoint", f"understanding={checkpoint}", "--num-train", "12", "--num-val", "8"]
        + ["--data-dir", str(tmp_path / "probe"), "--output-dir", str(tmp_path)]
    )
    stages = {row["stage"] for row in report["tables"]["object_motion_probe"]}
    assert stages == {"tokens", "pooled residuals (g_phi's input)"}
    with pytest.raises(SystemExit, match="has no decoder to probe"):
        harness.model_part(model, "decoder")


def test_object_motion_probe_reads_moving_or_still_off_its_direction_probe(benchmarks, monkeypatch) -> None:
    probe = benchmarks("object_motion_probe")
    # Val objects: still, left, right, up, down, still. The direction probe is replaced by a reader
    # that calls the first still object "right" and the "left" one "up": 4 of 6 directions right,
    # and 5 of 6 moving-or-still answers (the left one still moves).
    directions = torch.tensor([0, 1, 2, 3, 4, 0])
    predicted = torch.tensor([2, 3, 2, 3, 4, 0])
    calls = []

    def reader(train, test, y_train, classes, steps):
        calls.append(classes)
        return predicted

    monkeypatch.setattr(probe, "mlp_probe_predictions", reader)
    split = {
        "features": torch.randn(6, 3),
        "direction": directions,
        "objects": torch.ones(6, dtype=torch.long),
    }
    rows = probe.probe_rows("run", "tokens", split, split)
    assert calls == [len(probe.DIRECTIONS)]  # one probe, of the five directions
    accuracy = {row["target"]: row["acc_all"] for row in rows}
    assert accuracy == {
        "direction (5 classes)": pytest.approx(4 / 6),
        "moving or still": pytest.approx(5 / 6),
    }


def test_object_motion_probe_reads_the_last_and_middle_frames_not_the_key_frame(benchmarks) -> None:
    probe = benchmarks("object_motion_probe")
    assert probe.later_frames(8, key=0) == (7, 3)
    assert probe.later_frames(8, key=7) == (6, 3)
    assert probe.later_frames(8, key=3) == (7, 4)


def test_shape_probe_reader_learns_what_is_there_and_nothing_else(benchmarks) -> None:
    shape_probe = benchmarks("shape_probe")
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(600, 20, generator=generator)
    labels = features[:, :3].argmax(1)  # a nonlinear function of three of the features
    readable = shape_probe.mlp_probe(features[:400], features[400:], labels[:400], labels[400:], 3)
    shuffled = labels[torch.randperm(600, generator=generator)]
    unreadable = shape_probe.mlp_probe(features[:400], features[400:], shuffled[:400], shuffled[400:], 3)
    assert readable > 0.85
    assert unreadable < 0.5


def test_shape_probe_crops_centre_the_object(benchmarks) -> None:
    shape_probe = benchmarks("shape_probe")
    image = torch.zeros(1, 32, 32)
    image[0, 20, 5] = 1.0  # pixel (x=5, y=20), centre (5.5, 20.5)
    patch = shape_probe.crop(image, (5.5, 20.5), 4)
    assert patch.shape == (1, 8, 8)
    assert patch[0, 3:5, 3:5].sum() == 1.0  # at the crop's centre
    edge = shape_probe.crop(image, (0.0, 0.0), 4)  # past the corner: zero-padded, same size
    assert edge.shape == (1, 8, 8)
    obj = {"start_center": [10.0, 30.0], "end_center": [40.0, 0.0]}
    assert shape_probe.centre_at(obj, 0, 16) == (10.0, 30.0)
    assert shape_probe.centre_at(obj, 15, 16) == (40.0, 0.0)
    assert shape_probe.centre_at(obj, 5, 16) == (20.0, 20.0)


def test_generation_ceiling(benchmarks, tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path)
    generation_ceiling = benchmarks("generation_ceiling")
    report = generation_ceiling.main(
        ["--checkpoint", f"tiny={checkpoint}", "--max-clips", "4", "--output-dir", str(tmp_path)]
        + ["--blur", "0.25", "8"]
    )
    markdown, saved = read_report(tmp_path, "generation_ceiling")
    assert saved == json.loads(json.dumps(report))
    overall, sharp, blurred = report["tables"]["Overall"]
    assert overall["tokenizer"] == "tiny" and overall["clips"] >= 4
    for row in (overall, sharp, blurred):
        for key in ("shape_drawn_right", "ceiling", "ceiling_without_color", "colour_named"):
            assert 0.0 <= row[key] <= 1.0
        # Finding objects by colour alone can only find more of them.
        assert row["colour_named"] >= row["ceiling_without_color"]
    # The real clips, barely blurred, show more of their shapes than when blurred a lot.
    assert sharp["tokenizer"] == "real clips, blurred (sigma 0.25 px at 64 px)"
    assert sharp["clips"] == overall["clips"]
    assert sharp["shape_drawn_right"] > blurred["shape_drawn_right"]
    assert 0 <= sharp["mse_key_frame"] < blurred["mse_key_frame"]
    assert "shape drawn right %" in table_header(markdown) and "key-frame MSE" in table_header(markdown)
    with pytest.raises(SystemExit, match="no file at"):
        generation_ceiling.main(["--checkpoint", f"tiny={tmp_path / 'missing.ckpt'}"])
    with pytest.raises(SystemExit, match="expected one checkpoint, got 2"):
        generation_ceiling.main(["--checkpoint", f"tiny={checkpoint},{checkpoint}"])


def test_motion_oracle(benchmarks, tmp_path: Path) -> None:
    motion_oracle = benchmarks("motion_oracle")
    report = motion_oracle.main(
        ["--quick", "--threads", "1", "--data-dir", str(tmp_path / "corpus"), "--output-dir", str(tmp_path)]
    )
    markdown, saved = read_report(tmp_path, "motion_oracle")
    assert saved == json.loads(json.dumps(report))
    rows = {row["variant"]: row for row in report["tables"]["motion_oracle"]}
    assert list(rows) == ["vtok", "oracle", "no_motion"]
    assert rows["no_motion"]["residual_use"] == 1.0  # zeros swapped for zeros change nothing
    assert all(math.isfinite(row["psnr_changed"]) for row in rows.values())
    assert "PSNR on changed pixels (dB)" in table_header(markdown)


def test_motion_oracle_reads_each_frames_true_state(benchmarks) -> None:
    motion_oracle = benchmarks("motion_oracle")
    from vtok_lit.data.manifest import ManifestRecord

    obj = {"start_center": [10.0, 20.0], "end_center": [26.0, 20.0], "state": "grows"}
    record = ManifestRecord(video=Path("clip.mp4"), caption="", meta={"objects": [obj]})
    states = motion_oracle.frame_states(record, num_frames=5, image_size=32)
    torch.testing.assert_close(states[:, 0], torch.tensor([0.0, 0.125, 0.25, 0.375, 0.5]))  # 16 px of 32
    torch.testing.assert_close(states[-1], torch.tensor([0.5, 0.0, 0.5, 0.0]))  # grown 1.5x, not faded
    tokenizer, _, slots = motion_oracle.build("oracle", image_size=32, seed=0)
    tokens = tokenizer(torch.rand(2, 5, 3, 32, 32))
    moved = states.clone()
    moved[3] += 1.0
    before = slots(tokens, states.expand(2, 5, 4)).tokens
    after = slots(tokens, moved.expand(2, 5, 4)).tokens
    changed = (before - after).abs().sum(dim=(0, 2)) > 0
    residual = tokens.kinds == motion_oracle.TokenKind.RESIDUAL
    # Only frame 3's residual slot reads frame 3's state; the key-frame tokens are the tokenizer's.
    assert changed.tolist() == (residual & (tokens.frame_index == 3)).tolist()


def test_understanding_breakdown(benchmarks, tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path, ROOT / "tests" / "conf" / "understanding_tiny.yaml")
    report = benchmarks("understanding_breakdown").main(
        ["--checkpoint", f"tiny={checkpoint}", "--max-clips", "3", "--output-dir", str(tmp_path)]
    )
    markdown, saved = read_report(tmp_path, "understanding_breakdown")
    assert saved == json.loads(json.dumps(report))
    rows = report["tables"]["understanding_breakdown"]
    assert {row["tokens"] for row in rows} == {"own", "other clip's residuals"}
    for tokens in ("own", "other clip's residuals"):
        (overall,) = [row for row in rows if row["tokens"] == tokens and row["category"] == "overall"]
        per_category = [row for row in rows if row["tokens"] == tokens and row["category"] != "overall"]
        # Every question of the 3 clips is counted once under its category and once overall.
        assert overall["questions_all"] == sum(row["questions_all"] for row in per_category) > 0
        assert 0.0 <= overall["objects_all"] <= 1.0
        counts = [key for key in overall if key.startswith("questions_") and key != "questions_all"]
        assert sum(overall[key] for key in counts) == overall["questions_all"]
    assert "all %" in table_header(markdown)
    by_state = report["tables"]["By the state of the object asked about"]
    for tokens in ("own", "other clip's residuals"):
        (direction,) = [row for row in rows if row["tokens"] == tokens and row["category"] == "direction"]
        (direction_by_state,) = [
            row for row in by_state if row["tokens"] == tokens and row["category"] == "direction"
        ]
        # A direction question names one object: each is counted under that object's state.
        states = [key for key in direction_by_state if key.startswith("questions_")]
        assert {key[10:] for key in states} <= {"unchanged", "grows", "fades"}
        assert sum(direction_by_state[key] for key in states) == direction["questions_all"]
    assert {row["category"] for row in by_state}.isdisjoint({"counting", "color"})
    with pytest.raises(SystemExit, match="no file at"):
        benchmarks("understanding_breakdown").main(["--checkpoint", f"x={tmp_path / 'missing.ckpt'}"])
    lone = tmp_path / "lone" / "checkpoints" / "last.ckpt"  # a checkpoint without its run's config.yaml
    lone.parent.mkdir(parents=True)
    lone.write_bytes(checkpoint.read_bytes())
    with pytest.raises(SystemExit, match="no config.yaml"):
        benchmarks("understanding_breakdown").main(["--checkpoint", f"x={lone}"])


def test_training_step(benchmarks, tmp_path: Path) -> None:
    arguments = ["--batch-size", "2", "--frames", "4", "--output-dir", str(tmp_path), *TIMING]
    report = benchmarks("training_step").main(arguments)
    markdown, _ = read_report(tmp_path, "training_step")
    parts = report["tables"]["Parts of a step"]
    assert [row["part"] for row in parts] == ["whole step", "frame encoder", "tokenizer", "decoder loss"]
    assert parts[0]["share"] == pytest.approx(1.0)
    stems = report["tables"]["Patch-embedding stem"]
    assert [row["stem"] for row in stems] == ["nn.Conv2d", "embed_patches"]
    assert stems[0]["ratio"] == pytest.approx(1.0)
    assert report["settings"]["batch_size"] == 2 and report["settings"]["frames"] == 4
    assert "share of the whole step" in table_header(markdown)
    floor = report["tables"]["Locality-bias floor: the whole step"]
    assert [row["call"] for row in floor] == ["no floor", "LOCALITY_BIAS_FLOOR"]
    assert floor[0]["ratio"] == pytest.approx(1.0)
    validation = report["tables"]["One validation batch (evaluation mode)"]
    assert [row["call"] for row in validation] == [
        "loss, then decode",
        "loss_and_decode",
        "SSIM: torchmetrics",
        "SSIM: StructuralSimilarity",
    ]
    assert validation[0]["ratio"] == pytest.approx(1.0) and validation[2]["ratio"] == pytest.approx(1.0)
    still = report["tables"]["Still frames: the whole step"]
    assert [row["call"] for row in still] == [
        "4 frames a clip",
        "4 frames + 2 still frames",
        "4 frames + 4 still frames",
        "2 frames + 2 still frames",
    ]
    assert still[0]["ratio"] == pytest.approx(1.0)
    assert video_decoders.LOCALITY_BIAS_FLOOR == -50.0  # the floor is back after the timing
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        benchmarks("training_step").main([*arguments, "--checkpoint", str(tmp_path / "missing.ckpt")])


def test_unified_vs_separate_collects_finished_runs(
    benchmarks: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    from torch.utils.tensorboard import SummaryWriter

    # What each run logs: the unified one both tasks' figures under their own prefixes.
    logged = {
        "unified": {
            "val/motionshapes/understanding/overall": 0.6,
            "val/motionshapes/generation/overall": 0.2,
            "val/motionshapes/generation_reconstructed/overall": 0.3,
        },
        "understanding": {"val/motionshapes/overall": 0.5},
        "generation": {"val/motionshapes/overall": 0.1, "val/motionshapes_reconstructed/overall": 0.3},
    }
    for run, scalars in logged.items():
        run_dir = tmp_path / "runs" / f"{run}_vtok" / "version_0"
        run_dir.mkdir(parents=True)
        tokenizer = {
            "class_path": "vtok_lit.core.VTokTokenizer",
            "init_args": {"frame_encoder": {"class_path": "vtok_lit.core.ConvFrameEncoder"}},
        }
        (run_dir / "hparams.yaml").write_text(yaml.safe_dump({"tokenizer": tokenizer, "num_frames": 16}))
        (run_dir / "resources.json").write_text('{"wall_seconds": 10.0, "peak_rss_gb": 1.5}')
        writer = SummaryWriter(str(run_dir))
        for step in range(4):
            writer.add_scalar("train/loss", 1.0, step)
        for name, value in scalars.items():
            writer.add_scalar(name, value, 3)
        writer.close()

    report = benchmarks("unified_vs_separate").main(
        [
            "--collect",
            "--checkpoint",
            "vtok=unused.ckpt",
            "--steps",
            "4",
            "--repeats",
            "0",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    answers = {
        row["training"]: row for row in report["tables"]["Understanding: held-out answer accuracy (%)"]
    }
    assert answers["one LM, both tasks"]["answer_overall"] == pytest.approx(60.0)
    assert answers["understanding alone"]["answer_overall"] == pytest.approx(50.0)
    judged = {
        row["training"]: row
        for row in report["tables"]["Generation: the judge's alignment of generated clips (%)"]
    }
    assert judged["one LM, both tasks"]["judge_overall"] == pytest.approx(20.0)
    assert judged["generation alone"]["ceiling_overall"] == pytest.approx(30.0)
    assert {row["tokens"] for row in report["tables"]["Cost"]} == {31}


def test_understanding_oracle(benchmarks, tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path)
    oracle = benchmarks("understanding_oracle")
    report = oracle.main(
        ["--checkpoint", f"tiny={checkpoint}", "--data-dir", str(tmp_path / "corpus")]
        + ["--num-train", "8", "--num-val", "4", "--num-frames", "8", "--image-size", "32"]
        + ["--steps", "3", "--warmup-steps", "1", "--batch-size", "4", "--output-dir", str(tmp_path)]
    )
    markdown, saved = read_report(tmp_path, "understanding_oracle")
    assert saved == json.loads(json.dumps(report))
    table = report["tables"]["understanding_oracle"]
    rows = [(row["tokens"], row["scored_on"], row["video_tokens"]) for row in table]
    # 4x4 grid, 8 frames; key frame only and naive have no residual tokens to swap.
    held_out, swapped, training = oracle.HELD_OUT, oracle.SWAPPED, oracle.TRAINING
    assert rows == [
        ("ideal vtok", held_out, 16 + 7),
        ("ideal vtok", swapped, 16 + 7),
        ("ideal vtok", training, 16 + 7),
        ("ideal vtok_centred_moments", held_out, 16 + 7),
        ("ideal vtok_centred_moments", swapped, 16 + 7),
        ("ideal vtok_centred_moments", training, 16 + 7),
        ("ideal naive", held_out, 16 * 8),
        ("ideal naive", training, 16 * 8),
        ("ideal key_frame_only", held_out, 16),
        ("ideal key_frame_only", training, 16),
        ("tiny (frozen)", held_out, 4 + 7),  # its own 2x2 grid
        ("tiny (frozen)", swapped, 4 + 7),
        ("tiny (frozen)", training, 4 + 7),
    ]
    # One row per run and number of objects among the held-out clips.
    by_objects = report["tables"]["Held-out clips by the number of objects in them"]
    counts = sorted({row["objects"] for row in by_objects})
    assert [row["tokens"] for row in by_objects] == [
        name for name in dict.fromkeys(r[0] for r in rows) for _ in counts
    ]
    for row in report["tables"]["understanding_oracle"]:
        assert 0.0 <= row["overall"] <= 1.0
    assert "direction" in table_header(markdown)
    # The same checkpoint with g_phi's input in its residual slots: same layout, its own row name.
    pooled = oracle.main(
        ["--layouts", "--checkpoint", f"tiny={checkpoint}", "--checkpoint-residuals", "pooled"]
        + ["--data-dir", str(tmp_path / "corpus"), "--num-train", "8", "--num-val", "4", "--num-frames", "8"]
        + ["--image-size", "32", "--steps", "2", "--warmup-steps", "1", "--batch-size", "4"]
        + ["--train-eval-clips", "0", "--output-dir", str(tmp_path), "--name", "pooled"]
    )
    assert [(row["tokens"], row["video_tokens"]) for row in pooled["tables"]["pooled"]] == [
        ("tiny (frozen, pooled residuals)", 4 + 7),
        ("tiny (frozen, pooled residuals)", 4 + 7),
    ]


def test_understanding_oracle_ideal_maps_are_the_rendered_clip(benchmarks, tmp_path: Path) -> None:
    oracle = benchmarks("understanding_oracle")
    from vtok_lit.data.manifest import read_manifest
    from vtok_lit.data.motionshapes import MotionShapesConfig, ensure_motionshapes
    from vtok_lit.data.motionshapes.vocabulary import COLORS
    from vtok_lit.data.video_io import read_clip

    corpus = MotionShapesConfig(num_train=6, num_val=0, num_frames=6, image_size=48)
    checked = 0
    for record in read_manifest(ensure_motionshapes(tmp_path / "corpus", corpus)):
        frames = read_clip(record.video, 6)[0]  # (T, H, W, 3) uint8, decoded from the mp4
        video = frames.permute(3, 0, 1, 2).float() / 255  # (3, T, H, W)
        maps = oracle.ideal_feature_maps(record.meta["objects"], 6, 48)
        colours = maps[:, : len(COLORS)]
        # Where no object is drawn the clip shows the grey background; where one covers a pixel whole
        # and opaque, its colour (within the background noise and the codec's error).
        background = colours.sum(1) == 0
        assert (video[:, background].mean(1) - 0.5).abs().max() < 0.03
        for index, colour in enumerate(COLORS):
            # Two pixels in from the edge: the codec stores colour at half resolution.
            covered = -torch.nn.functional.max_pool2d(-(colours[:, index] == 1.0).float(), 5, 1, 2) == 1
            if covered.sum() > 10:
                drawn = video[:, covered].mean(1)
                assert (drawn - torch.tensor(COLORS[colour])).abs().max() < 0.08, (record.video, colour)
                checked += 1
    assert checked >= 6


def test_understanding_oracle_residual_tokens_hold_each_colours_move(benchmarks) -> None:
    oracle = benchmarks("understanding_oracle")
    red = {"shape": "circle", "color": "red", "size": "large", "state": "unchanged"}
    blue = {"shape": "square", "color": "blue", "size": "small", "state": "unchanged"}
    objects = [
        {**red, "start_center": [20.0, 20.0], "end_center": [40.0, 20.0]},  # right
        {**blue, "start_center": [40.0, 44.0], "end_center": [40.0, 44.0]},  # still
    ]
    layout = oracle.TokenLayout("vtok", num_frames=5, channels=len(oracle.IDEAL_CHANNELS), grid_size=4)
    tokens = layout.tokens(oracle.ideal_feature_maps(objects, 5, 64))
    assert tokens.shape == (16 + 4, layout.token_dim)
    moments = (
        tokens[16:, : layout.content_dim].reshape(4, 3, -1).transpose(1, 2)
    )  # (frame, channel, [1, x, y])
    red_channel, blue_channel = oracle.IDEAL_CHANNELS.index("red"), oracle.IDEAL_CHANNELS.index("blue")
    # The red circle's x moment grows frame by frame, its y moment stays put; the still blue square
    # leaves nothing.
    assert (moments[1:, red_channel, 1] > moments[:-1, red_channel, 1]).all()
    assert moments[:, red_channel, 2].abs().max() < 1e-2 * moments[-1, red_channel, 1]
    assert moments[:, blue_channel].abs().max() == 0
    # Every token says its cell (key-frame tokens) and its frame.
    assert tokens[:16, layout.content_dim : layout.content_dim + 16].argmax(1).tolist() == list(range(16))
    assert tokens[16:, layout.content_dim + 16 :].argmax(1).tolist() == [1, 2, 3, 4]


def test_understanding_oracle_pooled_reading_puts_g_phis_input_in_the_residual_slots(benchmarks) -> None:
    oracle = benchmarks("understanding_oracle")
    torch.manual_seed(0)
    encoder = ConvFrameEncoder(channels=8, patch_size=4)
    tokenizer = VTokTokenizer(encoder, token_dim=16, grid_size=2, residual_pooling="centred_moments")
    clips = torch.rand(2, 5, 3, 32, 32)
    made, read = tokenizer(clips), oracle.pooled_reading(tokenizer, clips)
    assert read.tokens.shape == (2, 4 + 4, 3 * 8 + 5)  # residual content: 3 moments of 8 channels, 5 frames
    torch.testing.assert_close(read.tokens[:, :4, :16], made.tokens[:, :4])  # spatial tokens as made
    assert read.tokens[:, :4, 16:].abs().max() == 0
    pooled = tokenizer.pooled_residuals(tokenizer.encode_frames(clips))
    torch.testing.assert_close(read.tokens[:, 4:, :24], pooled)
    assert read.tokens[0, 4:, 24:].argmax(1).tolist() == [1, 2, 3, 4]  # each residual token's frame
    assert torch.equal(read.kinds, made.kinds) and torch.equal(read.frame_index, made.frame_index)


def test_understanding_oracle_ideal_maps_at_an_encoders_resolution(benchmarks) -> None:
    oracle = benchmarks("understanding_oracle")
    red = {"shape": "circle", "color": "red", "size": "large", "state": "unchanged"}
    record = SimpleNamespace(
        meta={"objects": [{**red, "start_center": [20.0, 20.0], "end_center": [44.0, 20.0]}]}
    )
    layout = oracle.TokenLayout("vtok", num_frames=5, channels=len(oracle.IDEAL_CHANNELS), grid_size=4)
    full = oracle.ideal_tokens({"val": [record]}, layout, 64)["val"].tokens[0]
    coarse = oracle.ideal_tokens({"val": [record]}, layout, 64, map_size=8)["val"].tokens[0]
    # The 4x4 grid of an 8x8 average is the 4x4 grid of the frame: the key-frame tokens are the same.
    torch.testing.assert_close(coarse[:16], full[:16])
    # The move survives the coarser map, not exactly: the x moment of red still grows frame by frame.
    red_x = oracle.IDEAL_CHANNELS.index("red") + len(oracle.IDEAL_CHANNELS)  # the x block of the moments
    assert (coarse[17:, red_x] > coarse[16:-1, red_x]).all()
    assert not torch.allclose(coarse[16:], full[16:])


def test_understanding_oracle_entangled_maps_spread_each_object_over_every_channel(benchmarks) -> None:
    oracle = benchmarks("understanding_oracle")
    red = {"shape": "circle", "color": "red", "size": "large", "state": "unchanged"}
    moving = {**red, "start_center": [20.0, 20.0], "end_center": [44.0, 20.0]}
    signatures = oracle.entangled_signatures(12)
    assert len(signatures) == 4 * 3 * 2 and len({v.tobytes() for v in signatures.values()}) == 24
    attributes = oracle.ideal_feature_maps([moving], 5, 64)
    entangled = oracle.ideal_feature_maps([moving], 5, 64, signatures)
    coverage = attributes[:, oracle.IDEAL_CHANNELS.index("red")]
    expected = coverage[:, None] * torch.from_numpy(signatures["red", "circle", "large"])[None, :, None, None]
    torch.testing.assert_close(entangled, expected)
    # Every channel's x moment is the object's, times its signature's value in that channel.
    layout = oracle.TokenLayout("vtok", num_frames=5, channels=12, grid_size=4)
    x_moments = layout.tokens(entangled)[16:, 12:24]
    ratio = x_moments / torch.from_numpy(signatures["red", "circle", "large"])
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))


@pytest.mark.parametrize("setting", [["--entangled-channels", "-1"], ["--ideal-map-size", "0"]])
def test_understanding_oracle_names_a_setting_that_cannot_work(benchmarks, setting, capsys) -> None:
    with pytest.raises(SystemExit):
        benchmarks("understanding_oracle").main(setting)
    assert "--entangled-channels must be >= 0 and --ideal-map-size >= 1" in capsys.readouterr().err


def test_understanding_oracle_centred_moments_tell_a_fade_from_a_move(benchmarks) -> None:
    oracle = benchmarks("understanding_oracle")
    fading = {"shape": "circle", "color": "red", "size": "large", "state": "fades"}
    objects = [{**fading, "start_center": [48.0, 20.0], "end_center": [48.0, 20.0]}]  # still, right of centre
    red = oracle.IDEAL_CHANNELS.index("red")
    x_moment = {}
    for name in ("vtok", "vtok_centred_moments"):
        layout = oracle.TokenLayout(name, num_frames=5, channels=len(oracle.IDEAL_CHANNELS), grid_size=4)
        tokens = layout.tokens(oracle.ideal_feature_maps(objects, 5, 64))
        x_moment[name] = tokens[-1, : layout.content_dim].reshape(3, -1)[1, red]
    # The plain moments read the fade of an object right of centre as a move left; the centred ones
    # read (almost: their centre is that of the map's departure from a plane) no move.
    assert x_moment["vtok"] < -1e-3
    assert abs(x_moment["vtok_centred_moments"]) < 0.05 * abs(x_moment["vtok"])
