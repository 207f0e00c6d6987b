"""A training loader that a resumed run replays exactly, mid-epoch included.

Lightning checkpoints the loops but not the data order: it only saves ``state_dict()`` of a train
loader that has one and hands it back to ``load_state_dict`` on resume. So the order here depends on
nothing but ``(seed, epoch)``, and the loader's state is how many batches of which epoch it handed
out; a resumed run skips those batches (their indices only: no clip is read) and goes on.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler


class EpochSeededSampler(RandomSampler):
    """Shuffles with ``torch.randperm`` seeded by ``seed + epoch``; Lightning calls ``set_epoch``.

    Under DDP Lightning swaps it for its ``DistributedSampler``, which draws the same permutation
    from the ``seed_everything`` seed and gives each rank every world-size-th index of it.
    """

    def __init__(self, data_source: Any, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(len(self.data_source), generator=generator).tolist())


class SkippingBatchSampler(BatchSampler):
    """A ``BatchSampler`` whose passes leave out their first ``skip`` batches."""

    skip = 0

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(super().__iter__(), self.skip, None)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`SkippingBatchSampler` that Lightning saves in checkpoints.

    ``state_dict()`` is the epoch and the number of batches handed out in it; after
    ``load_state_dict`` the pass over that same epoch starts at the next batch. A pass over another
    epoch (the saved one had ended) starts at its beginning.
    """

    _epoch = 0
    _batches = 0
    _resume_at: tuple[int, int] | None = None

    def _sampler_epoch(self) -> int:
        # EpochSeededSampler, or the DistributedSampler Lightning puts in its place under DDP.
        return getattr(self.batch_sampler.sampler, "epoch", 0)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = (state["epoch"], state["batches"])

    def __iter__(self) -> Iterator[Any]:
        # A generator: nothing runs until the first batch is asked for, after Lightning's set_epoch.
        self._epoch, self._batches = self._sampler_epoch(), 0
        if self._resume_at is not None and self._resume_at[0] == self._epoch:
            self._batches = self._resume_at[1]
        self._resume_at = None
        # torch's iterators may iterate the batch sampler more than once while they start.
        self.batch_sampler.skip = self._batches
        batches = super().__iter__()
        self.batch_sampler.skip = 0
        for batch in batches:
            self._batches += 1
            yield batch
