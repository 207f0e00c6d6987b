"""The per-kind token statistics that the understanding projector and the text-to-video token head
read tokens through: what they follow, and that processes of a distributed run keep the same ones."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed
import torch.multiprocessing

from vtok_lit.core.token_standardizer import TokenStandardizer
from vtok_lit.core.tokens import TokenKind

KINDS = torch.tensor([TokenKind.SPATIAL] * 3 + [TokenKind.RESIDUAL] * 2)


def batches(count: int) -> list[torch.Tensor]:
    """``count`` batches of 8 clips' tokens: spatial around 5 with spread 3, residual around -1 with
    spread 0.2, each batch shifted a little so that the running statistics move."""
    generator = torch.Generator().manual_seed(0)
    scale = torch.tensor([3.0, 3.0, 3.0, 0.2, 0.2])[:, None]
    shift = torch.tensor([5.0, 5.0, 5.0, -1.0, -1.0])[:, None]
    return [shift + step + scale * torch.randn(8, 5, 4, generator=generator) for step in range(count)]


def test_token_standardizer_round_trips_and_follows_the_data_of_each_kind() -> None:
    standardizer = TokenStandardizer(4)
    kinds = torch.tensor([TokenKind.SPATIAL] * 3 + [TokenKind.RESIDUAL] * 2)
    # Spatial tokens around 5 with spread 3, residual tokens around -1 with spread 0.2.
    scale = torch.tensor([3.0, 3.0, 3.0, 0.2, 0.2])[:, None]
    shift = torch.tensor([5.0, 5.0, 5.0, -1.0, -1.0])[:, None]
    tokens = shift + scale * torch.randn(1000, 5, 4)
    standardizer.update(tokens, kinds)
    standardized = standardizer(tokens, kinds)
    for kind in (TokenKind.SPATIAL, TokenKind.RESIDUAL):
        of_kind = standardized[:, kinds == kind]
        assert of_kind.mean().abs() < 0.1 and (of_kind.std() - 1).abs() < 0.1, kind
    torch.testing.assert_close(standardizer.inverse(standardized, kinds), tokens)


def test_a_small_spread_on_a_large_mean_is_measured_in_float32() -> None:
    """Tokens around 1000 with spread 0.01: a mean of squares minus a squared mean would lose it."""
    tokens = 1000 + 0.01 * torch.randn(64, 5, 4, generator=torch.Generator().manual_seed(0))
    standardizer = TokenStandardizer(4)
    standardizer.update(tokens, KINDS)
    spatial = tokens[:, KINDS == TokenKind.SPATIAL].reshape(-1, 4).double()
    torch.testing.assert_close(
        standardizer.var[TokenKind.SPATIAL].double(), spatial.var(0, unbiased=False), rtol=1e-2, atol=0
    )


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    torch.distributed.all_reduce(tensor)
    return tensor


def update_on_one_rank(rank: int, world_size: int, init_file: str, out: str) -> None:
    """Rank ``rank`` of ``world_size`` updates on its share (every other clip) of each batch."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        standardizer = TokenStandardizer(4, momentum=0.5)
        standardizer.sum_across_processes = sum_over_ranks
        for batch in batches(3):
            standardizer.update(batch[rank::world_size], KINDS)
        torch.save(standardizer.state_dict(), Path(out) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_processes_of_a_distributed_run_keep_the_statistics_of_the_whole_batch(tmp_path: Path) -> None:
    """Two processes, each with half of every batch, end with the statistics one process reaches on the
    whole batches (not each its own half's): what DDP, FSDP and DeepSpeed runs all rely on."""
    torch.multiprocessing.spawn(
        update_on_one_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True
    )
    whole = TokenStandardizer(4, momentum=0.5)
    half = TokenStandardizer(4, momentum=0.5)
    for batch in batches(3):
        whole.update(batch, KINDS)
        half.update(batch[0::2], KINDS)
    for rank in range(2):
        state = torch.load(tmp_path / f"rank{rank}.pt")
        for name, value in whole.state_dict().items():
            torch.testing.assert_close(state[name], value, msg=f"rank {rank}: {name}")
    assert not torch.allclose(half.mean, whole.mean)  # the halves alone would differ
