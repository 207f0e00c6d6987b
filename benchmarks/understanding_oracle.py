"""Understanding from ideal tokens: what the understanding recipe's LM answers when its video tokens
hold exactly what a MotionShapes clip shows.

``motion_oracle.py`` asks whether the decoder can render motion from one token a frame; this asks
whether the LM can answer from it. Each clip's frames are replaced by an ideal feature map drawn from
the corpus' own record of the clip (every object's colour, shape, size, path, growth and fading):
one channel per colour and per shape, each the object's coverage of every pixel times its opacity.
From those maps each tokenizer's layout is built the way the kit's tokenizers pool features:

- ``vtok``: the key frame (the first) averaged to a ``g x g`` grid, S tokens, and one token for each
  later frame, the ``1, x, y`` position moments of the difference from the key frame's map (VTok's
  shipped ``residual_pooling: moments``, by ``VTokTokenizer.pooled_residuals``) with the identity
  for ``g_phi``: in a colour's channel, the change of an object's area and of its area times its
  place (a move, but also a fade or growth in place, in proportion to where the object stands);
- ``vtok_centred_moments``: the same with ``residual_pooling: centred_moments`` (the moments about
  each channel's centre in the key frame: a fade or growth in place leaves them at zero);
- ``naive``: every frame on the grid, ``T x S`` tokens;
- ``key_frame_only``: the key frame's S tokens alone (it cannot see motion: direction near chance).

Every token also carries a one-hot of its grid cell and of its frame (the kit's tokenizers add learned
embeddings of both). A ``--checkpoint`` adds a row with the tokens of a pretrained tokenizer, frozen,
read from the decoded clips; with ``--checkpoint-residuals pooled`` its residual tokens are what its
``g_phi`` reads instead (its pooled residuals and a one-hot of the frame): what ``g_phi`` keeps of
them for the LM. ``--ideal-map-size 8`` averages the ideal maps to the 8 x 8 of the shipped frame
encoder's feature map before pooling: what the encoder's resolution alone costs.
``--entangled-channels 64`` spreads them over 64 channels, each kind of object (colour, shape, size)
a random vector, as a learnt encoder spreads its features: what features that are not one attribute
a channel cost. Each row then trains the understanding recipe's LM, projector and token standardizer
(``experiments/understanding.yaml``: a 3-layer LM of width 128, 1500 AdamW steps of 32 clips at lr
1e-3 with 100 warmup steps and cosine decay, three questions a clip) on the corpus' training clips
and scores greedy answers to every question of its held-out clips, per category.
It is scored again with each clip's residual tokens taken from another clip (how much each category
leans on them), and on training clips (what it learnt against what it knows by heart). Rows differ in
their tokens alone: same seed, steps, batches and questions.

    python benchmarks/understanding_oracle.py
    python benchmarks/understanding_oracle.py \\
        --checkpoint vtok=runs/quickstart/vtok/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    RESULTS_DIR,
    Column,
    add_checkpoint_argument,
    checkpoint_runs,
    machine_info,
    model_part,
    probe_model,
    read_clips,
    write_report,
)

from vtok_lit.core import ConvFrameEncoder, TransformerLM, VTokTokenizer, WarmupCosineSchedule  # noqa: E402
from vtok_lit.core.tokenizers import pool_to_grid_tokens  # noqa: E402
from vtok_lit.core.tokens import TokenKind, VideoTokens  # noqa: E402
from vtok_lit.core.video_qa import VideoQuestionAnswering  # noqa: E402
from vtok_lit.data.manifest import read_manifest  # noqa: E402
from vtok_lit.data.motionshapes import MotionShapesConfig, ensure_motionshapes  # noqa: E402
from vtok_lit.data.motionshapes.corpus import object_weights  # noqa: E402
from vtok_lit.data.motionshapes.vocabulary import (  # noqa: E402
    COLORS,
    QUESTION_CATEGORIES,
    SHAPES,
    SIZES,
)
from vtok_lit.metrics import AnswerAccuracy  # noqa: E402
from vtok_lit.modules.video_llm import draw_clip_questions, question_rows  # noqa: E402

IDEAL_CHANNELS = (*COLORS, *SHAPES)
# VTok layouts and the residual pooling (VTokTokenizer.residual_pooling) each applies to the ideal maps.
RESIDUAL_POOLINGS = {"vtok": "moments", "vtok_centred_moments": "centred_moments"}
LAYOUTS = (*RESIDUAL_POOLINGS, "naive", "key_frame_only")
HELD_OUT, SWAPPED, TRAINING = (
    "held-out clips",
    "held-out clips, another clip's residual tokens",
    "training clips",
)


def ideal_feature_maps(
    objects: list[dict[str, Any]],
    num_frames: int,
    image_size: int,
    signatures: dict[tuple[str, str, str], np.ndarray] | None = None,
) -> torch.Tensor:
    """``(T, C, H, W)``: per frame, each colour's and each shape's coverage times opacity
    (:data:`IDEAL_CHANNELS`), from a MotionShapes record's ``objects``: the weights the corpus drew
    them with (:func:`~vtok_lit.data.motionshapes.corpus.object_weights`, from the recorded centres).
    With ``signatures`` (:func:`entangled_signatures`), each object's coverage times opacity times the
    ``(C,)`` vector of its colour, shape and size instead."""
    channels = len(IDEAL_CHANNELS) if signatures is None else len(next(iter(signatures.values())))
    maps = np.zeros((num_frames, channels, image_size, image_size), dtype=np.float32)
    for obj in objects:
        half_size = SIZES[obj["size"]] * image_size
        args = (obj["start_center"], obj["end_center"], half_size, obj["state"], num_frames, image_size)
        weight = object_weights(obj["shape"], *args)
        if signatures is None:
            maps[:, IDEAL_CHANNELS.index(obj["color"])] += weight
            maps[:, IDEAL_CHANNELS.index(obj["shape"])] += weight
        else:
            maps += weight[:, None] * signatures[obj["color"], obj["shape"], obj["size"]][None, :, None, None]
    return torch.from_numpy(maps)


def entangled_signatures(channels: int, seed: int = 0) -> dict[tuple[str, str, str], np.ndarray]:
    """One fixed random ``(channels,)`` Gaussian vector for each colour, shape and size of object: the
    ideal maps' content spread over every channel, as a learnt encoder's features spread it, where the
    attribute channels give each colour and shape a channel of its own."""
    rng = np.random.default_rng(seed)
    kinds = [(color, shape, size) for color in COLORS for shape in SHAPES for size in SIZES]
    return {kind: rng.standard_normal(channels).astype(np.float32) for kind in kinds}


class TokenLayout:
    """How a clip's ``(T, C, H, W)`` feature maps become tokens in one of :data:`LAYOUTS`, each token
    ``[content | one-hot grid cell | one-hot frame]`` of :attr:`token_dim`, with its kinds and frames."""

    def __init__(self, layout: str, num_frames: int, channels: int, grid_size: int) -> None:
        self.layout, self.num_frames, self.channels, self.grid_size = layout, num_frames, channels, grid_size
        self.cells = grid_size * grid_size
        self.content_dim = 3 * channels  # the widest content: a residual token's three moments
        self.token_dim = self.content_dim + self.cells + num_frames
        later = num_frames - 1
        if layout in RESIDUAL_POOLINGS:
            # VTok's own pooling of F(x_t) - F(x_key), with the ideal maps as F's features; g_phi is left
            # out (the identity), so a residual token is exactly what the pooling keeps.
            encoder = ConvFrameEncoder(channels=channels)
            pooling = RESIDUAL_POOLINGS[layout]
            self.vtok = VTokTokenizer(encoder, grid_size=grid_size, residual_pooling=pooling)
            kinds = [TokenKind.SPATIAL] * self.cells + [TokenKind.RESIDUAL] * later
            frames = [0] * self.cells + list(range(1, num_frames))
        elif layout == "naive":
            kinds = [TokenKind.FRAME] * (self.cells * num_frames)
            frames = [t for t in range(num_frames) for _ in range(self.cells)]
        else:
            kinds, frames = [TokenKind.SPATIAL] * self.cells, [0] * self.cells
        self.kinds = torch.tensor([int(kind) for kind in kinds])
        self.frame_index = torch.tensor(frames)

    def tokens(self, maps: torch.Tensor) -> torch.Tensor:
        """``(L, token_dim)`` tokens of one clip's feature maps."""
        # Every frame on the grid for naive; the key frame (the first) alone for the others.
        gridded = maps if self.layout == "naive" else maps[:1]
        cells = pool_to_grid_tokens(gridded, self.grid_size)  # (F, S, C)
        cell_ids = torch.eye(self.cells).expand(len(gridded), -1, -1)
        frame_ids = torch.eye(self.num_frames)[: len(gridded), None].expand(-1, self.cells, -1)
        cell_tokens = torch.cat([self._pad(cells), cell_ids, frame_ids], dim=-1).flatten(0, 1)  # (F * S, D)
        if self.layout not in RESIDUAL_POOLINGS:
            return cell_tokens
        moments = self.vtok.pooled_residuals(maps[None])[0]  # (T - 1, 3 * C): 1, x and y blocks
        frame_ids = torch.eye(self.num_frames)[1:]
        residual = torch.cat([moments, torch.zeros(len(moments), self.cells), frame_ids], dim=-1)
        return torch.cat([cell_tokens, residual])

    def _pad(self, content: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(content, (0, self.content_dim - content.shape[-1]))


class PrecomputedTokens(nn.Module):
    """Where :class:`VideoQuestionAnswering` keeps its tokenizer, for tokens computed beforehand: it
    gives the width of the tokens the projector reads, and the rows' tokens go in through
    :meth:`VideoQuestionAnswering.project_tokens`."""

    def __init__(self, token_dim: int) -> None:
        super().__init__()
        self.token_dim = token_dim


def train_and_score(
    tokens: dict[str, VideoTokens],
    questions: dict[str, list[list[dict[str, Any]]]],
    objects: dict[str, list[int]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Train the recipe's model on the train split's tokens and answers; per category accuracy on every
    val question (also with another clip's residual tokens) and on ``args.train_eval_clips`` train clips."""
    torch.manual_seed(args.seed)
    language_model = TransformerLM(
        hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=args.num_heads, max_seq_len=384
    )
    model = VideoQuestionAnswering(PrecomputedTokens(tokens["train"].tokens.shape[-1]), language_model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = WarmupCosineSchedule(optimizer, args.warmup_steps, args.steps)
    # Seeded again once the model is built (its size varies with the tokens): every row then draws the
    # same batches and questions.
    torch.manual_seed(args.seed)
    order: list[int] = []
    model.train()
    started = time.perf_counter()
    for step in range(args.steps):
        if len(order) < args.batch_size:
            order += torch.randperm(len(questions["train"])).tolist()
        clips, order = order[: args.batch_size], order[args.batch_size :]
        asked = draw_clip_questions([questions["train"][i] for i in clips], args.questions_per_video, True)
        loss = model.loss(model.project_tokens(tokens["train"].select(clips)), question_rows(asked))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 250 == 0 or step == args.steps - 1:
            print(f"  step {step}: loss {loss.item():.4f}", flush=True)
    seconds = time.perf_counter() - started
    model.eval()
    scores: dict[str, Any] = {"train_seconds": seconds}
    readings = [(HELD_OUT, "val", False)]
    if (tokens["val"].kinds == TokenKind.RESIDUAL).any():
        readings.append((SWAPPED, "val", True))
    if args.train_eval_clips:
        readings.append((TRAINING, "train", False))
    for reading, split, swap in readings:
        count = len(questions[split]) if split == "val" else min(args.train_eval_clips, len(questions[split]))
        asked = questions[split][:count]
        scores[reading] = score(model, tokens[split], asked, objects[split], swap, args.eval_batch_size)
    return scores


@torch.no_grad()
def score(
    model: VideoQuestionAnswering,
    tokens: VideoTokens,
    questions: list[list[dict[str, Any]]],
    objects: list[int],
    swap_residuals: bool,
    batch_size: int,
) -> dict[str, dict[str, float]]:
    """Accuracy per category of greedy answers to every question of the first ``len(questions)`` clips
    of ``tokens`` (each clip's residual tokens taken from another clip when ``swap_residuals``): of all
    of them (``"all"``) and of the clips of each number of ``objects`` (``"1"``, ``"2"``, ...)."""
    total = AnswerAccuracy(QUESTION_CATEGORIES)
    groups = {count: AnswerAccuracy(QUESTION_CATEGORIES) for count in sorted(set(objects[: len(questions)]))}
    for start in range(0, len(questions), batch_size):
        clips = list(range(start, min(start + batch_size, len(questions))))
        video = tokens.select(clips)
        if swap_residuals:
            video = video.with_residuals_from_other_clips()
        asked = draw_clip_questions([questions[i] for i in clips], 0, False)
        predictions = model.generate(model.project_tokens(video), question_rows(asked))
        records = [qa for _, qa in asked]
        total.update(records, predictions)
        for count, accuracy in groups.items():
            chosen = [i for i, (clip, _) in enumerate(asked) if objects[clips[clip]] == count]
            accuracy.update([records[i] for i in chosen], [predictions[i] for i in chosen])
    figures = {"all": total, **{str(count): accuracy for count, accuracy in groups.items()}}
    return {
        group: {k: float(v) for k, v in accuracy.compute().items()} for group, accuracy in figures.items()
    }


def stack_tokens(rows: list[torch.Tensor], layout: TokenLayout) -> VideoTokens:
    """A split's clips' ``(L, D)`` tokens as ``(N, L, D)`` video tokens, ``layout``'s kinds and frames."""
    values = torch.stack(rows)
    padding = torch.zeros(values.shape[:2], dtype=torch.bool)
    return VideoTokens(values, layout.kinds, layout.frame_index, padding)


def ideal_tokens(
    records: dict[str, list[Any]],
    layout: TokenLayout,
    image_size: int,
    map_size: int | None = None,
    signatures: dict[tuple[str, str, str], np.ndarray] | None = None,
) -> dict[str, VideoTokens]:
    """Each split's ideal tokens in ``layout``, from its records' objects (through ``signatures`` when
    given, :func:`ideal_feature_maps`); with ``map_size``, from the maps averaged to ``map_size x
    map_size`` first (the resolution of a frame encoder's feature map)."""

    def maps(objects: list[dict[str, Any]]) -> torch.Tensor:
        full = ideal_feature_maps(objects, layout.num_frames, image_size, signatures)
        return full if map_size is None else nn.functional.adaptive_avg_pool2d(full, map_size)

    return {
        split: stack_tokens([layout.tokens(maps(r.meta["objects"])) for r in rows], layout)
        for split, rows in records.items()
    }


@torch.no_grad()
def checkpoint_tokens(
    checkpoint: Path,
    config: Path,
    records: dict[str, list[Any]],
    num_frames: int,
    image_size: int,
    batch_size: int,
    residuals: str = "tokens",
) -> dict[str, VideoTokens]:
    """The tokens a pretraining checkpoint's tokenizer (frozen) makes of the decoded clips; with
    ``residuals="pooled"`` each residual token is what ``g_phi`` reads instead (:func:`pooled_reading`)."""
    model, run_frames, run_size = probe_model([config], checkpoint, ("tokenizer",))
    if (run_frames, run_size) != (num_frames, image_size):
        raise SystemExit(
            f"{checkpoint}: its run reads clips of {run_frames} frames of {run_size}px, this corpus has "
            f"{num_frames} of {image_size}px"
        )
    tokenizer = model_part(model, "tokenizer")[0]
    if residuals == "pooled" and not isinstance(tokenizer, VTokTokenizer):
        raise SystemExit(
            f"{checkpoint}: --checkpoint-residuals pooled needs a VTok tokenizer, "
            f"not {type(tokenizer).__name__}"
        )
    read = tokenizer if residuals == "tokens" else lambda clips: pooled_reading(tokenizer, clips)
    out = {}
    for split, rows in records.items():
        batches = [
            read(read_clips(rows[i : i + batch_size], num_frames, image_size))
            for i in range(0, len(rows), batch_size)
        ]
        out[split] = VideoTokens(
            torch.cat([b.tokens for b in batches]).float(),
            batches[0].kinds.cpu(),
            batches[0].frame_index.cpu(),
            torch.cat([b.padding_mask for b in batches]).cpu(),
        )
    return out


def pooled_reading(tokenizer: VTokTokenizer, clips: torch.Tensor) -> VideoTokens:
    """A VTok tokenizer's tokens of ``clips`` with every residual token replaced by ``g_phi``'s input,
    ``[pooled residual | one-hot of its frame]`` (:meth:`VTokTokenizer.pooled_residuals`; the one-hot
    stands for the frame embedding a token gets after ``g_phi``); spatial tokens as made, all padded
    to one width."""
    num_frames = clips.shape[1]
    features = tokenizer.encode_frames(clips)
    spatial = tokenizer.spatial_tokens(features)  # (B, S, D)
    pooled = tokenizer.pooled_residuals(features)  # (B, G, C * K)
    kinds, frame_index, _ = tokenizer.token_layout(num_frames)
    frame_ids = torch.eye(num_frames)[frame_index[kinds == TokenKind.RESIDUAL]].to(pooled)
    residual = torch.cat([pooled, frame_ids.expand(len(pooled), -1, -1)], dim=-1)
    width = max(spatial.shape[-1], residual.shape[-1])
    tokens = torch.cat([nn.functional.pad(t, (0, width - t.shape[-1])) for t in (spatial, residual)], dim=1)
    return tokenizer.video_tokens(tokens, num_frames)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_checkpoint_argument(parser, "a tokenizer-pretraining checkpoint (its tokens, frozen, make a row)")
    parser.add_argument(
        "--checkpoint-residuals",
        choices=("tokens", "pooled"),
        default="tokens",
        help="a checkpoint row's residual tokens: the tokenizer's, or g_phi's input (its pooled residuals)",
    )
    parser.add_argument(
        "--layouts", nargs="*", default=list(LAYOUTS), choices=LAYOUTS, help="ideal-token rows"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path("data/motionshapes"), help="the corpus (made if missing)"
    )
    parser.add_argument("--num-train", type=int, default=2000, help="clips of the corpus' train split")
    parser.add_argument("--num-val", type=int, default=200, help="clips of its val split")
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--grid-size", type=int, default=4, help="side g of the key frame's grid")
    parser.add_argument(
        "--entangled-channels",
        type=int,
        default=0,
        help="spread the ideal maps over this many channels, a random vector for each colour, shape and "
        "size of object (entangled_signatures); 0: a channel for each colour and shape",
    )
    parser.add_argument(
        "--ideal-map-size",
        type=int,
        default=None,
        help="average the ideal maps to this side before pooling (the frame encoder's map: 8 for the "
        "shipped 64px frames and patch size 8); unset: every pixel",
    )
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32, help="clips a step")
    parser.add_argument("--questions-per-video", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=3)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--eval-batch-size", type=int, default=50)
    parser.add_argument(
        "--train-eval-clips",
        type=int,
        default=200,
        help="training clips scored too (0: none): learnt or by heart",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="understanding_oracle", help="file stem of the report")
    args = parser.parse_args(argv)
    checkpoints = checkpoint_runs(parser, args.checkpoint) if args.checkpoint else []
    if args.entangled_channels < 0 or (args.ideal_map_size is not None and args.ideal_map_size < 1):
        parser.error(
            f"--entangled-channels must be >= 0 and --ideal-map-size >= 1, got {args.entangled_channels} "
            f"and {args.ideal_map_size}"
        )

    corpus = MotionShapesConfig(
        num_train=args.num_train, num_val=args.num_val, num_frames=args.num_frames, image_size=args.image_size
    )
    manifest = read_manifest(ensure_motionshapes(args.data_dir, corpus))
    records = {split: [r for r in manifest if r.split == split] for split in ("train", "val")}
    questions = {split: [[asdict(pair) for pair in r.qa] for r in rows] for split, rows in records.items()}
    objects = {split: [len(r.meta["objects"]) for r in rows] for split, rows in records.items()}

    runs: list[tuple[str, dict[str, VideoTokens]]] = []
    signatures = entangled_signatures(args.entangled_channels) if args.entangled_channels else None
    channels = args.entangled_channels or len(IDEAL_CHANNELS)
    for name in args.layouts:
        layout = TokenLayout(name, args.num_frames, channels, args.grid_size)
        tokens = ideal_tokens(records, layout, args.image_size, args.ideal_map_size, signatures)
        at = "" if args.ideal_map_size is None else f", {args.ideal_map_size}x{args.ideal_map_size} maps"
        spread = f", entangled over {channels} channels" if signatures else ""
        runs.append((f"ideal {name}{spread}{at}", tokens))
    for name, checkpoint, config in checkpoints:
        read = checkpoint_tokens(
            checkpoint, config, records, args.num_frames, args.image_size, 50, args.checkpoint_residuals
        )
        pooled = args.checkpoint_residuals == "pooled"
        runs.append((f"{name} (frozen{', pooled residuals' if pooled else ''})", read))

    rows, by_objects = [], []
    for name, tokens in runs:
        video_tokens = tokens["train"].tokens.shape[1]
        print(f"{name}: {video_tokens} video tokens a clip", flush=True)
        scores = train_and_score(tokens, questions, objects, args)
        for reading in (HELD_OUT, SWAPPED, TRAINING):
            if reading not in scores:
                continue
            figures = scores[reading]
            print(f"  {reading}: " + ", ".join(f"{k}={v:.3f}" for k, v in figures["all"].items()), flush=True)
            row = {"tokens": name, "scored_on": reading, "video_tokens": video_tokens, **figures["all"]}
            rows.append({**row, "train_minutes": scores["train_seconds"] / 60})
            if reading == HELD_OUT:
                counts = sorted(group for group in figures if group != "all")
                by_objects += [{"tokens": name, "objects": int(count), **figures[count]} for count in counts]

    percent = lambda value: "n/a" if math.isnan(value) else f"{100 * value:.1f}"  # noqa: E731
    categories = [Column(category, category, percent) for category in (*QUESTION_CATEGORIES, "overall")]
    columns = [
        Column("tokens", "tokens"),
        Column("scored on", "scored_on"),
        Column("video tokens", "video_tokens", "d"),
        *categories,
        Column("training minutes", "train_minutes", ".1f"),
    ]
    object_columns = [Column("tokens", "tokens"), Column("objects in the clip", "objects", "d"), *categories]
    tables = [
        ("", columns, rows),
        ("Held-out clips by the number of objects in them", object_columns, by_objects),
    ]
    notes = [
        "Each row trains the understanding recipe's LM, projector and token standardizer from scratch on "
        f"the tokens named: {args.steps} AdamW steps of {args.batch_size} clips (lr {args.lr}, "
        f"{args.warmup_steps} warmup steps, cosine decay), {args.questions_per_video} questions a clip, "
        f"an LM of {args.num_layers} layers of width {args.hidden_size}, seed {args.seed}; greedy answers "
        f"to every question of the {len(records['val'])} held-out clips of {args.data_dir} "
        f"({len(records['train'])} training clips), % exact match. 'ideal': tokens pooled from ideal "
        "feature maps of the clips (one channel per colour and per shape: coverage times opacity), see "
        "the script's docstring. "
        "Each model is also scored with every held-out clip's residual tokens taken from another clip "
        f"(how much each category leans on them) and on {min(args.train_eval_clips, len(records['train']))} "
        "of its training clips.",
        "Runs: " + ("; ".join(f"{name}: {path}" for name, path, _ in checkpoints) or "ideal tokens only"),
    ]
    return write_report(
        args.name,
        "Understanding from ideal tokens",
        notes,
        tables,
        machine_info(),
        vars(args),
        args.output_dir,
    )


if __name__ == "__main__":
    main()
