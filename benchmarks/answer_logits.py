"""What computing the answer loss's logits at the answer positions alone saves in an understanding step.

The answer loss reads the LM's logits at the few positions at the end of each row (the answer, its
end token, and the position before them), but an LM head over every position, video and question
included, computes ``positions x vocabulary`` logits. This times the LM part of one training step of
``experiments/understanding.yaml``'s sizes (a :class:`~vtok_lit.core.TransformerLM` of 3 layers of
width 128 and 4 heads; 32 clips of 31 VTok video tokens, 3 MotionShapes questions a clip) as forward,
answer loss and backward, interleaved round-robin:

- baseline: the head over every position (``logits_to_keep=0``), the loss on the answer positions;
- kept: the head over the last positions the answers need
  (:func:`vtok_lit.core.sequences.answer_logits`, which
  :meth:`~vtok_lit.core.video_qa.VideoQuestionAnswering.logits` calls),

for the byte text tokenizer (260 ids, the default) and open_clip's bundled BPE (49,409 ids). The two
losses are checked equal. The video tokens are random embeddings: the frame encoder and tokenizer,
the same in both, are left out.

    python benchmarks/answer_logits.py            # add --quick, --threads 1
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import torch
from harness import (
    Column,
    add_common_arguments,
    apply_threads,
    machine_info,
    median,
    milliseconds,
    time_interleaved,
    write_report,
)

from vtok_lit.core import ByteTokenizer, OpenCLIPTokenizer, TransformerLM
from vtok_lit.core.sequences import (
    answer_logit_positions,
    answer_logits,
    build_lm_sequences,
    next_token_loss,
)

VIDEO_TOKENS = 31  # VTok at T = 16 on a 4x4 grid
QUESTIONS = [
    ("Which way does the red circle move?", "left"),
    ("What color is the square?", "yellow"),
    ("Is the blue triangle moving or still?", "moving"),
]


def step(lm: TransformerLM, rows: tuple, keep_answer_logits: bool) -> torch.Tensor:
    """Embedding, forward, answer loss and backward of the LM over ``(prefix, prompts, answers)``
    rows; returns the loss."""
    sequences = build_lm_sequences(*rows, lm.embed_tokens, lm.max_seq_len)
    if keep_answer_logits:  # what the kit's answer loss does
        logits, labels = answer_logits(lm, sequences)
    else:  # the baseline: the head over every position
        logits = lm(sequences.inputs_embeds, attention_mask=sequences.attention_mask).logits
        labels = sequences.labels
    loss = next_token_loss(logits, labels)
    lm.zero_grad(set_to_none=True)
    loss.backward()
    return loss.detach()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser, repeats=None, warmup=2)
    parser.add_argument("--clips", type=int, default=32, help="clips a batch (3 questions each)")
    parser.add_argument("--quick", action="store_true", help="2 clips and 3 repeats")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    clips = 2 if args.quick else args.clips
    repeats = args.repeats or (3 if args.quick else 20)

    rows = []
    for name, text in [("bytes", ByteTokenizer()), ("open_clip BPE", OpenCLIPTokenizer())]:
        torch.manual_seed(args.seed)
        lm = TransformerLM(
            vocab_size=text.vocab_size, hidden_size=128, num_layers=3, num_heads=4, max_seq_len=384
        )
        prefix = torch.randn(clips * len(QUESTIONS), VIDEO_TOKENS, lm.hidden_size)
        prompts = [text.encode(question) for question, _ in QUESTIONS] * clips
        answers = [text.encode(answer) + [text.eos_id] for _, answer in QUESTIONS] * clips
        rows_in = (prefix, prompts, answers)
        sequences = build_lm_sequences(*rows_in, lm.embed_tokens, lm.max_seq_len)
        losses = {keep: step(lm, rows_in, keep) for keep in (False, True)}
        torch.testing.assert_close(losses[True], losses[False])  # the same loss either way
        samples = time_interleaved(
            {keep: partial(step, lm, rows_in, keep) for keep in (False, True)},
            args.warmup,
            repeats,
        )
        baseline, kept = median(samples[False]), median(samples[True])
        rows.append(
            {
                "text_tokenizer": name,
                "vocab_size": text.vocab_size,
                "positions": sequences.labels.shape[1],
                "logit_positions": answer_logit_positions(sequences.labels),
                "all_positions_s": baseline,
                "answer_positions_s": kept,
                "speedup": baseline / kept,
                "loss": float(losses[True]),
            }
        )
        print(f"{name}: every position {baseline * 1e3:.1f} ms, answer positions {kept * 1e3:.1f} ms")

    columns = [
        Column("text tokenizer", "text_tokenizer"),
        Column("vocabulary", "vocab_size", "d"),
        Column("positions a row", "positions", "d"),
        Column("positions with logits", "logit_positions", "d"),
        Column("step ms, head over every position (baseline)", "all_positions_s", milliseconds),
        Column("step ms, head over the answer positions", "answer_positions_s", milliseconds),
        Column("speed-up", "speedup", lambda value: f"{value:.2f}x"),
    ]
    notes = [
        f"The LM's forward, answer loss and backward on {clips} clips x {len(QUESTIONS)} questions "
        f"({VIDEO_TOKENS} random video embeddings a row), median of {repeats} interleaved repeats after "
        f"{args.warmup} untimed; the two losses are equal.",
    ]
    return write_report(
        "answer_logits",
        "Answer logits: the LM head at the answer positions only",
        notes,
        [("", columns, rows)],
        machine_info(),
        vars(args),
        Path(args.output_dir),
    )


if __name__ == "__main__":
    main()
