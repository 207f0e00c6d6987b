"""Token budget of VTok against naive frame sampling and the key frame alone, and what it buys.

For clips of T = 8, 16, 32, 64 frames and the three tokenizers on the same frame encoder, the
table gives the video tokens a clip costs, the language model's FLOPs per sample (one clip and one
question + answer), the measured time of one training step (forward + backward) of the whole
understanding model, and its peak extra memory; every figure also as a ratio to naive frame
sampling at the same T, measured in the same run. A second step time is that of the paper's setting:
the tokenizer frozen and its frame-encoder features read from a feature cache
(``freeze_tokenizer: true``, ``feature_cache_dir``), so the step is the tokenizer's pooling, the
projector and the LM; its ratio to naive is what to hold against the LM FLOPs ratio.

The model is :class:`~vtok_lit.modules.VideoLLM` as ``experiments/understanding.yaml`` builds it with
``understanding/tokenizer_from_scratch.yaml`` (the tokenizer from the config instead of a pretraining
run: the same sizes, random weights), plus ``experiments/tokenizer/naive.yaml`` or
``key_frame_only.yaml`` for the other tokenizers,
through the CLI's own parser (:func:`vtok_lit.cli.main` with ``run=False``); only the LM's
``max_seq_len`` and the tokenizer's ``max_frames`` are raised so that naive sampling of the longest
clip fits. The batch is synthetic: random clips of the config's frame size, each with the same three
MotionShapes-style questions.

FLOPs count a multiply-add as 2 FLOPs (matrix products only: attention scores and values, the
projections, the MLPs and the output head; norms, GELU and RoPE are left out) and take a training
step as 3x the forward (the backward costs twice the forward). The analytic count is checked
against ``torch.utils.flop_counter.FlopCounterMode`` on the LM itself (with the math SDPA kernel,
since the counter does not see the fused CPU attention kernel).

Peak memory is the rise above the memory held before a step (model and batch) during that step,
after one warm-up step on a 1-clip, 2-frame batch that pays the libraries' one-time allocations.
On a CPU it is the resident set size (VmHWM after resetting it) in a fresh subprocess per
configuration, since freed memory stays resident and would be reused by a later configuration; on
CUDA it is ``torch.cuda.max_memory_allocated``.

    python benchmarks/token_budget.py            # T = 8, 16, 32, 64, batch 8
    python benchmarks/token_budget.py --quick    # T = 8, 16, batch 2, fewer repeats
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from harness import (
    Column,
    add_common_arguments,
    apply_threads,
    machine_info,
    median,
    milliseconds,
    resolve_device,
    time_interleaved,
    write_report,
)
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from vtok_lit.cli import main as cli_main
from vtok_lit.core import ByteTokenizer, TransformerLM
from vtok_lit.modules import VideoLLM

NAME = "token_budget"
FRAMES = (8, 16, 32, 64)
QUICK_FRAMES = (8, 16)
EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
# The shipped understanding experiment with its tokenizer built from the config rather than loaded from
# a pretraining run (the weights do not change the cost), and the overlay that swaps in each
# tokenizer (VTok: none).
BASE = [EXPERIMENTS / "understanding.yaml", EXPERIMENTS / "understanding" / "tokenizer_from_scratch.yaml"]
# The naive baseline first: every ratio is against it.
TOKENIZERS = {
    "naive": EXPERIMENTS / "tokenizer" / "naive.yaml",
    "vtok": None,
    "key_frame": EXPERIMENTS / "tokenizer" / "key_frame_only.yaml",
}
BASELINE = "naive"
# Three MotionShapes questions of typical length (counting, direction, state).
QUESTIONS = [
    {"question": "How many objects are there?", "answer": "3", "category": "counting"},
    {"question": "Which way does the red circle move?", "answer": "left", "category": "direction"},
    {"question": "What happens to the blue square?", "answer": "grows", "category": "state"},
]


def text_lengths() -> list[int]:
    """Tokens of each question + answer + end token, as VideoLLM lays them out after the video."""
    text = ByteTokenizer()
    return [len(text.encode(qa["question"])) + len(text.encode(qa["answer"])) + 1 for qa in QUESTIONS]


def build_model(
    tokenizer: str, max_frames: int, max_seq_len: int | None = None, feature_cache_dir: str | None = None
) -> tuple[VideoLLM, int]:
    """The shipped understanding model with ``tokenizer``'s overlay, through the CLI's parser, and the
    frame size of its data; with ``feature_cache_dir`` its tokenizer is frozen and cached there.
    ``max_seq_len`` None keeps the config's."""
    args = [argument for config in BASE for argument in ("-c", str(config))]
    if TOKENIZERS[tokenizer] is not None:
        args += ["-c", str(TOKENIZERS[tokenizer])]
    args += [f"--model.init_args.tokenizer.init_args.max_frames={max_frames}", "--trainer.logger=false"]
    if max_seq_len is not None:
        args.append(f"--model.init_args.language_model.init_args.max_seq_len={max_seq_len}")
    if feature_cache_dir is not None:
        args += [
            "--model.init_args.freeze_tokenizer=true",
            f"--model.init_args.feature_cache_dir={feature_cache_dir}",
        ]
    cli = cli_main(args, run=False)
    return cli.model, cli.datamodule.hparams["image_size"]


def describe(model: VideoLLM, image_size: int) -> str:
    """``"ConvFrameEncoder, 128-d tokens on a 4x4 grid, TransformerLM 3 x 128 ..."``: the sizes that set
    the cost of a step."""
    tokenizer, language_model = model.tokenizer, model.language_model
    return (
        f"{type(tokenizer.frame_encoder).__name__} on {image_size}x{image_size} frames, "
        f"{tokenizer.token_dim}-d tokens on a {tokenizer.grid_size}x{tokenizer.grid_size} grid, "
        f"{type(language_model).__name__} of {len(language_model.blocks)} layers of width "
        f"{language_model.hidden_size}, {model.questions_per_video} questions a clip"
    )


def synthetic_batch(
    batch_size: int, num_frames: int, image_size: int, seed: int, clip_files: list[str] | None = None
) -> dict[str, Any]:
    """Random clips ``(B, T, 3, H, W)`` in [0, 1], each with the three :data:`QUESTIONS`; with
    ``clip_files`` (one per clip) also the ``path`` and ``frame_indices`` a feature cache keys on."""
    generator = torch.Generator().manual_seed(seed)
    batch = {
        "video": torch.rand(batch_size, num_frames, 3, image_size, image_size, generator=generator),
        "questions": [list(QUESTIONS) for _ in range(batch_size)],
        "num_skipped": 0,
    }
    if clip_files is not None:
        batch["path"] = clip_files[:batch_size]
        batch["frame_indices"] = torch.arange(num_frames).expand(batch_size, num_frames)
    return batch


def clip_files(directory: Path, count: int) -> list[str]:
    """Stand-ins for the clips' video files: the feature cache keys on a file's path, size and mtime."""
    files = []
    for index in range(count):
        path = directory / f"clip_{index}.mp4"
        path.write_bytes(index.to_bytes(4, "little"))
        files.append(str(path))
    return files


def train_step(model: VideoLLM, batch: dict[str, Any]) -> None:
    """One forward + backward through ``VideoLLM.training_step`` (no optimizer step)."""
    model.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        # Outside a Trainer, self.log warns and does nothing.
        warnings.filterwarnings("ignore", message=r".*self\.log\(\)")
        loss = model.training_step(batch, 0)
    loss.backward()


def lm_forward_flops(language_model: TransformerLM, seq_len: int) -> int:
    """Matrix-product FLOPs of one TransformerLM forward over ``seq_len`` positions.

    Per layer: qkv 6 L d^2, output projection 2 L d^2, MLP 4 L d m (m its hidden width, 4d as
    shipped), scores and values 4 L^2 d; then the output head 2 L d V.
    """
    d, vocab_size = language_model.hidden_size, language_model.vocab_size
    mlp_width = language_model.blocks[0].mlp[0].out_features
    per_layer = 8 * seq_len * d * d + 4 * seq_len * d * mlp_width + 4 * seq_len * seq_len * d
    return len(language_model.blocks) * per_layer + 2 * seq_len * d * vocab_size


def counted_lm_flops(language_model: TransformerLM, seq_len: int) -> tuple[int, int]:
    """FlopCounterMode's forward and backward FLOPs of the LM on one sequence of ``seq_len``."""
    device = language_model.head.weight.device
    inputs = torch.randn(1, seq_len, language_model.hidden_size, device=device, requires_grad=True)
    mask = torch.ones(1, seq_len, dtype=torch.bool, device=device)
    # The counter knows the math kernel's matrix products but not the fused CPU attention kernel.
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as forward:
            logits = language_model(inputs, attention_mask=mask).logits
        with FlopCounterMode(display=False) as backward:
            logits.sum().backward()
    language_model.zero_grad(set_to_none=True)
    return forward.get_total_flops(), backward.get_total_flops()


def _current_rss_bytes() -> int:
    with open("/proc/self/statm", encoding="utf-8") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Resets the kernel's RSS high-water mark to the current RSS (Linux 4.0+); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def _peak_rss_bytes(was_reset: bool) -> int:
    if was_reset:
        with open("/proc/self/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    # Without a reset, the lifetime peak: valid only when the step is the process's biggest moment.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_step_memory(config: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Peak extra memory of one training step of one configuration, in this process.

    On a CPU this is only meaningful in a fresh process (freed memory stays resident and is reused
    by later steps); :func:`step_memory` runs it in one.
    """
    apply_threads(config["threads"])
    model, image_size = build_model(config["tokenizer"], config["max_frames"], config["max_seq_len"])
    model = model.to(device)
    # A step on one 2-frame clip first pays the libraries' one-time allocations (tens of MiB on a CPU).
    warmup = synthetic_batch(1, 2, image_size, config["seed"])
    train_step(model, {**warmup, "video": warmup["video"].to(device)})
    model.zero_grad(set_to_none=True)
    batch = synthetic_batch(config["batch_size"], config["frames"], image_size, config["seed"])
    batch["video"] = batch["video"].to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        train_step(model, batch)
        torch.cuda.synchronize(device)
        return {"peak_bytes": torch.cuda.max_memory_allocated(device) - before, "method": "cuda"}
    before = _current_rss_bytes()
    was_reset = _reset_peak_rss()
    train_step(model, batch)
    method = "VmHWM after clear_refs" if was_reset else "ru_maxrss"
    return {"peak_bytes": _peak_rss_bytes(was_reset) - before, "method": method}


def step_memory(config: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """:func:`measure_step_memory` in a fresh subprocess on a CPU, in this process on CUDA."""
    if device.type == "cuda":
        return measure_step_memory(config, device)
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", json.dumps(config)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {config} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--frames", type=int, nargs="+", default=None, help=f"clip lengths T (default {FRAMES})"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="clips a step (default 8; 2 with --quick)"
    )
    parser.add_argument(
        "--tokenizers",
        nargs="+",
        choices=list(TOKENIZERS),
        default=list(TOKENIZERS),
        help="which tokenizers (naive, the baseline, is always measured)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--skip-memory", action="store_true", help="do not measure peak memory")
    parser.add_argument("--quick", action="store_true", help=f"T = {QUICK_FRAMES}, batch 2, 3 repeats")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    add_common_arguments(parser, repeats=None, warmup=1)
    args = parser.parse_args(argv)
    args.frames = args.frames or list(QUICK_FRAMES if args.quick else FRAMES)
    args.batch_size = args.batch_size or (2 if args.quick else 8)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.tokenizers = [BASELINE] + [name for name in args.tokenizers if name != BASELINE]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.memory_probe is not None:
        print(json.dumps(measure_step_memory(json.loads(args.memory_probe), torch.device("cpu"))))
        return {}
    apply_threads(args.threads)
    device = resolve_device(args.device)
    machine = machine_info(device)
    lengths = text_lengths()
    max_frames = max(64, *args.frames)
    shipped, image_size = build_model(BASELINE, max_frames)
    # Room for naive sampling of the longest clip and the longest text.
    max_seq_len = shipped.tokenizer.num_tokens(max(args.frames)) + max(lengths)
    cache_root = Path(tempfile.mkdtemp(prefix="token_budget_"))
    files = clip_files(cache_root, args.batch_size)

    rows, samples, flop_checks = [], {}, []
    for frames in args.frames:
        models, cached = {}, {}
        for name in args.tokenizers:
            models[name] = build_model(name, max_frames, max_seq_len)[0].to(device).train()
            cache_dir = str(cache_root / f"T{frames}_{name}")
            cached[name] = build_model(name, max_frames, max_seq_len, cache_dir)[0].to(device).train()
        batch = synthetic_batch(args.batch_size, frames, image_size, args.seed + frames, files)
        batch["video"] = batch["video"].to(device)
        for model in cached.values():
            train_step(model, batch)  # fills the cache: every timed step reads the features back
        pairs = [*models.items(), *(((name, "cached"), model) for name, model in cached.items())]
        steps = {key: lambda model=model, batch=batch: train_step(model, batch) for key, model in pairs}
        timings = time_interleaved(steps, args.warmup, args.repeats, device)
        for name, model in models.items():
            video_tokens = model.tokenizer.num_tokens(frames)
            language_model = model.language_model
            forward = sum(lm_forward_flops(language_model, video_tokens + n) for n in lengths)
            forward /= len(lengths)
            counted = [counted_lm_flops(language_model, video_tokens + n) for n in lengths]
            counted_forward = sum(f for f, _ in counted) / len(lengths)
            counted_train = sum(f + b for f, b in counted) / len(lengths)
            flop_checks.append(
                {
                    "frames": frames,
                    "tokenizer": name,
                    "analytic_forward": forward,
                    "counted_forward": counted_forward,
                    "counted_train": counted_train,
                }
            )
            memory = None
            if not args.skip_memory:
                config = {
                    "tokenizer": name,
                    "frames": frames,
                    "batch_size": args.batch_size,
                    "max_frames": max_frames,
                    "max_seq_len": max_seq_len,
                    "seed": args.seed,
                    "threads": torch.get_num_threads(),
                }
                memory = step_memory(config, device)
            samples[f"T={frames}/{name}"] = timings[name]
            samples[f"T={frames}/{name}/frozen_cached"] = timings[(name, "cached")]
            rows.append(
                {
                    "frames": frames,
                    "tokenizer": name,
                    "video_tokens": video_tokens,
                    "seq_len": video_tokens + sum(lengths) / len(lengths),
                    "lm_forward_flops": forward,
                    "lm_train_flops": 3 * forward,
                    "step_seconds": median(timings[name]),
                    "cached_step_seconds": median(timings[(name, "cached")]),
                    "peak_memory_bytes": None if memory is None else memory["peak_bytes"],
                    "memory_method": None if memory is None else memory["method"],
                }
            )
        baseline = rows[-len(models)]
        for row in rows[-len(models) :]:
            for key, ratio in (
                ("video_tokens", "tokens_vs_naive"),
                ("lm_train_flops", "flops_vs_naive"),
                ("step_seconds", "time_vs_naive"),
                ("cached_step_seconds", "cached_time_vs_naive"),
                ("peak_memory_bytes", "memory_vs_naive"),
            ):
                ok = row[key] is not None and baseline[key]
                row[ratio] = row[key] / baseline[key] if ok else None

    shutil.rmtree(cache_root)
    worst = max(abs(c["counted_forward"] / c["analytic_forward"] - 1) for c in flop_checks)
    worst_train = max(abs(c["counted_train"] / (3 * c["analytic_forward"]) - 1) for c in flop_checks)
    memory_note = (
        "not measured."
        if args.skip_memory
        else "the rise over the model and batch during one step, after a warm-up step on one 2-frame "
        "clip; a fresh process each (VmHWM after clear_refs on a Linux CPU, max_memory_allocated on CUDA)."
    )
    columns = [
        Column("T", "frames"),
        Column("tokenizer", "tokenizer"),
        Column("video tokens", "video_tokens"),
        Column("tokens vs naive", "tokens_vs_naive", ".3f"),
        Column("LM seq len (mean)", "seq_len", ".1f"),
        Column("LM fwd MFLOPs/sample", "lm_forward_flops", lambda v: f"{v / 1e6:,.1f}"),
        Column("LM train MFLOPs/sample (3x fwd)", "lm_train_flops", lambda v: f"{v / 1e6:,.1f}"),
        Column("FLOPs vs naive", "flops_vs_naive", ".3f"),
        Column("fwd+bwd step (ms)", "step_seconds", milliseconds),
        Column("time vs naive", "time_vs_naive", ".3f"),
        Column("frozen + cached step (ms)", "cached_step_seconds", milliseconds),
        Column("frozen + cached time vs naive", "cached_time_vs_naive", ".3f"),
        Column("peak mem Δ (MiB)", "peak_memory_bytes", lambda v: f"{v / 2**20:,.1f}"),
        Column("mem vs naive", "memory_vs_naive", ".3f"),
    ]
    notes = [
        f"VideoLLM as experiments/understanding.yaml builds it ({describe(shipped, image_size)}; "
        "naive and key frame only through experiments/tokenizer/naive.yaml and key_frame_only.yaml), LM "
        f"max_seq_len {max_seq_len}; batch {args.batch_size} synthetic clips x "
        f"{len(QUESTIONS)} questions = {args.batch_size * len(QUESTIONS)} LM rows a step, padded to the "
        f"longest question. Question + answer + end token: {lengths} tokens.",
        "A sample is one clip with one question + answer. FLOPs: 2 per multiply-add, matrix products "
        "only; training = 3x forward. FlopCounterMode (math SDPA) on the LM differs from the analytic "
        f"forward count by at most {worst:.2%} and from 3x forward (forward + backward) by at most "
        f"{worst_train:.2%}.",
        f"Step time: median of {args.repeats} forward + backward steps of the whole model after "
        f"{args.warmup} warm-up, tokenizers interleaved round-robin. Peak memory: {memory_note} Every "
        "ratio is against naive frame sampling at the same T, in this run.",
        "Frozen + cached: the paper's setting, freeze_tokenizer: true with a feature_cache_dir; one "
        "untimed step fills the cache, and every timed step reads the clips' frame-encoder features "
        "back from disk, so the step is the cache read, the tokenizer's pooling (and VTok's residual "
        "MLP), the projector and the LM. Its ratio to naive is the one to hold against 'FLOPs vs "
        "naive', the LM's share of the work; the whole-model ratio also pays the frame encoder on "
        "all T frames, the same for every tokenizer.",
    ]
    return write_report(
        NAME,
        "Token budget: VTok vs naive frame sampling vs key frame only",
        notes,
        [("", columns, rows)],
        machine,
        vars(args),
        args.output_dir,
        raw={"step_seconds": samples, "flop_checks": flop_checks},
    )


if __name__ == "__main__":
    main()
