"""When masks change during training, and by how much: the gradual-pruning schedule of Zhu & Gupta
(2017) and the drop schedule of dynamic sparse training (Evci et al. 2020, Mocanu et al. 2018).

Steps are 0-based optimizer-step indices within one training phase of ``total_steps`` steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _check_fraction(name: str, value: float, upper_inclusive: bool = True) -> None:
    ok = 0.0 <= value <= 1.0 if upper_inclusive else 0.0 <= value < 1.0
    if not ok:
        raise ValueError(f"{name} must be in [0, 1{']' if upper_inclusive else ')'}; got {value}")


@dataclass(frozen=True)
class GradualSchedule:
    """Zhu & Gupta's cubic schedule: at steps ``t0 + k*dt`` (k = 0..n) the target sparsity is

        s_k = s_f + (s_i - s_f) * (1 - k / n) ** 3,

    reaching ``final`` at the last pruning step; training then continues at ``final``.
    """

    begin_step: int
    interval: int
    count: int
    """n: the number of intervals; there are n + 1 pruning steps."""
    initial: float
    final: float

    @classmethod
    def from_fractions(
        cls,
        total_steps: int,
        *,
        start: float,
        end: float,
        frequency: float,
        initial: float,
        final: float,
    ) -> GradualSchedule:
        """The schedule for a phase of ``total_steps`` steps, positions given as fractions of it.

        ``t0 = floor(start * T)``, ``dt = max(1, round(frequency * T))`` and ``n`` the largest
        count with ``t0 + n*dt <= min(floor(end * T), T - 1)``: the last pruning step always
        falls inside the phase, so the phase always ends at ``final``. With ``n = 0`` there is
        one pruning step, straight to ``final``.
        """
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1; got {total_steps}")
        for name, value in (("start", start), ("end", end), ("frequency", frequency)):
            _check_fraction(name, value)
        if frequency == 0:
            raise ValueError("frequency must be > 0")
        if start > end:
            raise ValueError(f"start ({start}) must not be after end ({end})")
        _check_fraction("initial", initial, upper_inclusive=False)
        _check_fraction("final", final, upper_inclusive=False)
        if initial > final:
            raise ValueError(f"initial sparsity {initial} is above the final {final}")
        last = total_steps - 1
        begin = min(math.floor(start * total_steps), last)
        stop = max(begin, min(math.floor(end * total_steps), last))
        interval = max(1, round(frequency * total_steps))
        return cls(begin, interval, (stop - begin) // interval, initial, final)

    def pruning_steps(self) -> list[int]:
        return [self.begin_step + k * self.interval for k in range(self.count + 1)]

    def sparsity_at(self, k: int) -> float:
        """Target sparsity of the k-th pruning step (0-based)."""
        if not 0 <= k <= self.count:
            raise ValueError(f"pruning step index {k} is outside 0..{self.count}")
        if self.count == 0:
            return self.final
        return self.final + (self.initial - self.final) * (1.0 - k / self.count) ** 3

    def target_at_step(self, step: int) -> float | None:
        """The target if ``step`` is a pruning step, else None."""
        offset = step - self.begin_step
        if offset < 0 or offset % self.interval or offset // self.interval > self.count:
            return None
        return self.sparsity_at(offset // self.interval)

    @property
    def last_step(self) -> int:
        return self.begin_step + self.count * self.interval


@dataclass(frozen=True)
class DropSchedule:
    """RigL's mask-update schedule: every ``interval`` steps up to ``end_step``, drop the fraction

        alpha / 2 * (1 + cos(pi * t / T_end))

    of each layer's active weights. Updates happen at ``t = interval, 2*interval, ...`` (after
    that many steps of training; never at step 0) while ``t <= end_step``.
    """

    interval: int
    end_step: int
    alpha: float

    @classmethod
    def from_fractions(
        cls, total_steps: int, *, interval: int, end: float, alpha: float
    ) -> DropSchedule:
        """``end_step = floor(end * total_steps)`` (RigL's default end is 0.75)."""
        if interval < 1:
            raise ValueError(f"interval must be >= 1; got {interval}")
        _check_fraction("end", end)
        _check_fraction("alpha", alpha)
        return cls(interval, math.floor(end * total_steps), alpha)

    def due(self, step: int) -> bool:
        return 0 < step <= self.end_step and step % self.interval == 0

    def drop_fraction(self, step: int) -> float:
        return self.alpha / 2.0 * (1.0 + math.cos(math.pi * step / self.end_step))

    def update_steps(self) -> list[int]:
        return list(range(self.interval, self.end_step + 1, self.interval))
