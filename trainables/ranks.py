"""The data-parallel workers of one trial, as the training loop sees them.

A trial with `resources.workers` N > 1 runs as N processes (Ray Train's workers, one
`torch.distributed` process group). Each holds the whole model and the same masks; what is split
is the work on each batch:

* a training batch stays the global batch (`train.batch_size`): every rank draws the same batch
  in the same order and loads, augments and trains on its own contiguous part (`Ranks.part`;
  the random draws are the whole batch's, so each sample is augmented as in one process); DDP
  averages the gradients, so a step is the single-process step up to the order of float
  additions;
* an evaluation batch is split the same way and the ranks' correct and seen *counts* are summed
  (`Ranks.sum`), never a mean of their means: the accuracy is exact over the whole split.

`SOLO` is the one-process trial: every operation is the identity, nothing touches
torch.distributed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from trainables.errors import RankDivergenceError


@dataclass(frozen=True)
class Ranks:
    """This process's place among a trial's data-parallel workers."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes rows, checkpoints and measurements."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1

    def part(self, total: int) -> slice:
        """This rank's contiguous rows of a global batch of `total`: equal parts when the batch
        divides; otherwise the first ranks take one more (as `torch.tensor_split` splits)."""
        size, extra = divmod(total, self.world)
        start = self.rank * size + min(self.rank, extra)
        return slice(start, start + size + (self.rank < extra))

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over the ranks, in place (returned for chaining)."""
        if self.parallel:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def from_main(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (any picklable object)."""
        if not self.parallel:
            return value
        box = [value if self.main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (any picklable object), in rank order, on every rank."""
        if not self.parallel:
            return [value]
        values: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(values, value)
        return values

    def check_same(self, value: str, what: str) -> None:
        """Raise `RankDivergenceError` on every rank unless all ranks hold the same `value`."""
        if not self.parallel:
            return
        values = self.gather(value)
        differing = [rank for rank, seen in enumerate(values) if seen != values[0]]
        if differing:
            raise RankDivergenceError(
                f"data-parallel ranks disagree on {what}: rank(s) {differing} differ from rank 0 "
                f"({values[differing[0]]} != {values[0]}); the trial stops rather than train "
                "different networks"
            )


SOLO = Ranks()


def mask_checksum(mask: Mapping[str, torch.Tensor]) -> str:
    """A SHA-256 (first 16 hex digits) of a mask: its names, shapes and kept entries."""
    digest = hashlib.sha256()
    for name in sorted(mask):
        keep = mask[name].detach().to("cpu", dtype=torch.bool).contiguous()
        digest.update(f"{name}:{tuple(keep.shape)}:".encode())
        digest.update(keep.numpy().tobytes())
    return digest.hexdigest()[:16]
