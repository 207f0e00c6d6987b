"""Linear probes of frozen video tokens: do they carry where a single object moves?

For every tokenizer named (a pretraining checkpoint, or a config for random weights), the clips of a
MotionShapes corpus with ONE object each are tokenized and linear probes are fitted on the train
split and scored on the val split:

- direction: left, right, up, down or still (5 classes), accuracy;
- state: grows, fades or unchanged (3 classes), accuracy;
- displacement: the object's (dx, dy) from the first to the last frame, R^2 of a ridge regression.

What the object is (its shape) is not probed here: a linear probe reads it from a crop of the real
pixels around the object only about half the time (51-61% on single-object clips, chance 35%), so it
cannot say whether tokens hold it. ``benchmarks/shape_probe.py`` reads shape with an MLP at each stage.

Each probe reads the tokens that describe time (a VTok tokenizer's residual tokens) and, separately,
every token of the clip. The L2 strength of each probe is chosen by cross-validation on the train
split. The majority class of the val split is the chance row.

    python benchmarks/motion_probe.py \\
        --checkpoint vtok=runs/quickstart/vtok/version_0/checkpoints/last.ckpt \\
        --checkpoint naive=runs/quickstart/naive/version_0/checkpoints/last.ckpt \\
        --random-init vtok_random_init=experiments/quickstart.yaml

A checkpoint's run is rebuilt from the ``config.yaml`` Lightning saved beside its ``checkpoints/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    Column,
    add_probe_arguments,
    machine_info,
    probe_corpus,
    probe_model,
    probe_runs,
    probe_runs_note,
    read_clips,
    write_report,
)

from vtok_lit.core.tokenizers import VideoTokenizer  # noqa: E402
from vtok_lit.core.tokens import TokenKind  # noqa: E402
from vtok_lit.data.motionshapes.vocabulary import DIRECTIONS as MOVES  # noqa: E402
from vtok_lit.data.motionshapes.vocabulary import STATES  # noqa: E402

DIRECTIONS = (*MOVES, "still")
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
FOLDS = 3


def clip_labels(record: Any) -> dict[str, Any]:
    (obj,) = record.meta["objects"]
    (x0, y0), (x1, y1) = obj["start_center"], obj["end_center"]
    return {
        "direction": obj["direction"],
        "state": obj["state"],
        "displacement": (x1 - x0, y1 - y0),
    }


@torch.no_grad()
def token_features(
    tokenizer: VideoTokenizer, records: list[Any], num_frames: int, image_size: int, batch_size: int
) -> dict[str, torch.Tensor]:
    """``{"time": (N, F), "all": (N, F')}``: the flattened tokens that describe time, and all tokens."""
    time_parts, all_parts = [], []
    for start in range(0, len(records), batch_size):
        tokens = tokenizer(read_clips(records[start : start + batch_size], num_frames, image_size))
        residual = tokens.kinds == TokenKind.RESIDUAL
        time_tokens = tokens.tokens[:, residual] if residual.any() else tokens.tokens
        time_parts.append(time_tokens.flatten(1))
        all_parts.append(tokens.tokens.flatten(1))
    return {"time": torch.cat(time_parts), "all": torch.cat(all_parts)}


def standardized_span(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardizes with the train statistics, then expresses both in the basis of the train rows'
    span: an L2-regularised linear probe's weights lie in that span, so the probe is the same and far
    cheaper when features outnumber clips."""
    mean, std = train.mean(0), train.std(0).clamp(min=1e-6)
    train, test = (train - mean) / std, (test - mean) / std
    if train.shape[1] > train.shape[0]:
        basis = torch.linalg.svd(train, full_matrices=False).Vh  # (N, F)
        train, test = train @ basis.T, test @ basis.T
    return train / train.shape[1] ** 0.5, test / train.shape[1] ** 0.5


def fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float) -> torch.Tensor:
    weights = torch.zeros(x.shape[1] + 1, classes, requires_grad=True)
    inputs = F.pad(x, (0, 1), value=1.0)
    optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(inputs @ weights, y) + l2 * weights[:-1].pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weights.detach()


def fit_ridge(x: torch.Tensor, y: torch.Tensor, l2: float) -> torch.Tensor:
    inputs = F.pad(x, (0, 1), value=1.0)
    penalty = l2 * len(x) * torch.eye(inputs.shape[1])
    penalty[-1, -1] = 0.0
    return torch.linalg.solve(inputs.T @ inputs + penalty, inputs.T @ y)


def accuracy(weights: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(((F.pad(x, (0, 1), value=1.0) @ weights).argmax(1) == y).float().mean())


def r_squared(weights: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    residual = (F.pad(x, (0, 1), value=1.0) @ weights - y).pow(2).sum(0)
    total = (y - y.mean(0)).pow(2).sum(0).clamp(min=1e-12)
    return float((1 - residual / total).mean())


def probe(
    train: torch.Tensor, test: torch.Tensor, y_train: torch.Tensor, y_test: torch.Tensor, classes: int | None
) -> float:
    """Test accuracy (``classes`` given) or R^2 (None) of a linear probe, its L2 strength picked by
    ``FOLDS``-fold cross-validation on the train rows."""
    fit = (lambda x, y, l2: fit_logistic(x, y, classes, l2)) if classes else fit_ridge
    score = accuracy if classes else r_squared
    folds = torch.arange(len(train)) % FOLDS
    # The folds' standardized features do not depend on the L2 strength: computed once.
    splits = [
        (
            *standardized_span(train[folds != fold], train[folds == fold]),
            y_train[folds != fold],
            y_train[folds == fold],
        )
        for fold in range(FOLDS)
    ]

    def cross_validated(l2: float) -> float:
        return (
            sum(score(fit(x_fit, y_fit, l2), x_held, y_held) for x_fit, x_held, y_fit, y_held in splits)
            / FOLDS
        )

    best = max(L2_GRID, key=cross_validated)
    x_train, x_test = standardized_span(train, test)
    return score(fit(x_train, y_train, best), x_test, y_test)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_probe_arguments(parser, name="motion_probe", num_train=600, num_val=300, corpus_seed=7, batch_size=32)
    args = parser.parse_args(argv)
    runs = probe_runs(parser, args)

    rows = []
    for name, configs, checkpoint in runs:
        model, num_frames, image_size = probe_model(configs, checkpoint, parts=("tokenizer",))
        tokenizer = model.tokenizer
        splits = probe_corpus(args, num_frames, image_size, max_objects=1)
        labels = {split: [clip_labels(r) for r in splits[split]] for split in splits}
        targets = {
            split: {
                "direction": torch.tensor([DIRECTIONS.index(lab["direction"]) for lab in labels[split]]),
                "state": torch.tensor([STATES.index(lab["state"]) for lab in labels[split]]),
                "displacement": torch.tensor([lab["displacement"] for lab in labels[split]]) / image_size,
            }
            for split in splits
        }
        features = {
            split: token_features(tokenizer, splits[split], num_frames, image_size, args.batch_size)
            for split in splits
        }
        row: dict[str, Any] = {
            "tokenizer": name,
            "class": type(tokenizer).__name__,
            "weights": "trained" if checkpoint else "random init",
            "tokens": features["val"]["all"].shape[1] // tokenizer.token_dim,
        }
        for view in ("time", "all"):
            train, test = features["train"][view], features["val"][view]
            for target, classes in (
                ("direction", len(DIRECTIONS)),
                ("state", len(STATES)),
                ("displacement", None),
            ):
                row[f"{view}_{target}"] = probe(
                    train, test, targets["train"][target], targets["val"][target], classes
                )
        rows.append(row)
        print(f"{name}: " + ", ".join(f"{k}={v:.3f}" for k, v in row.items() if isinstance(v, float)))

    val_targets = targets["val"]
    chance = {"tokenizer": "chance (majority class)", "class": "", "weights": "", "tokens": None}
    for view in ("time", "all"):
        for target in ("direction", "state"):
            chance[f"{view}_{target}"] = float(
                val_targets[target].bincount().max() / len(val_targets[target])
            )
        chance[f"{view}_displacement"] = 0.0
    rows.append(chance)

    percent = lambda value: f"{100 * value:.1f}"  # noqa: E731
    columns = [
        Column("tokenizer", "tokenizer"),
        Column("weights", "weights"),
        Column("tokens", "tokens", "d"),
    ]
    for view, label in (("time", "time tokens"), ("all", "all tokens")):
        columns += [
            Column(f"direction % ({label})", f"{view}_direction", percent),
            Column(f"state % ({label})", f"{view}_state", percent),
            Column(f"displacement R^2 ({label})", f"{view}_displacement", ".3f"),
        ]
    notes = [
        f"Linear probes of frozen tokens on single-object MotionShapes clips: fitted on {args.num_train} "
        f"clips, scored on {args.num_val} others (corpus seed {args.corpus_seed}). 'time tokens' are a VTok "
        "tokenizer's residual tokens (every token for the others); 'all tokens' the whole sequence. "
        f"L2 strength by {FOLDS}-fold cross-validation on the fitting clips.",
        probe_runs_note(runs),
    ]
    return write_report(
        args.name, "Motion probe", notes, [("", columns, rows)], machine_info(), vars(args), args.output_dir
    )


if __name__ == "__main__":
    main()
