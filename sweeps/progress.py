"""A compact progress view for a sweep (instead of Ray's full trial table): one line when
something changes, at most every few seconds, with counts, the best accuracy so far and an ETA.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ray.tune import Callback


def _short(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class CompactProgress(Callback):
    """Prints `[elapsed] done/total finished, running, errored | best test acc | ETA`."""

    def __init__(
        self, total_trials: int, names: dict[str, str] | None = None, every_s: float = 10.0,
        stream: TextIO | None = None,
    ) -> None:
        self.total = total_trials
        self.names = names or {}
        self.every_s = every_s
        # Looked up when printing, not held: Tune pickles its callbacks, and a replaced
        # sys.stdout (a notebook's, pytest's capture) need not pickle.
        self.stream = stream
        self.started = time.monotonic()
        self.last_printed = 0.0
        self.best: tuple[float, str] | None = None
        self.finished: set[str] = set()
        self.errored: set[str] = set()
        self.last_state = ""

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if result.get("row_type") != "round":
            return
        accuracy = result.get("test_acc")
        if accuracy is not None and (self.best is None or accuracy > self.best[0]):
            where = f"{trial}, round {result.get('round')}"
            self.best = (float(accuracy), where)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished.add(trial.trial_id)
        self._print(trials, force=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.errored.add(trial.trial_id)
        self._print(trials, force=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._print(trials, force=False)

    def line(self, trials: list) -> str:
        # Statuses lag the callbacks by a step; trials restored as finished have no callback.
        finished = self.finished | {t.trial_id for t in trials if t.status == "TERMINATED"}
        errored = self.errored | {t.trial_id for t in trials if t.status == "ERROR"}
        running = sum(
            1 for t in trials
            if t.status == "RUNNING" and t.trial_id not in finished | errored
        )
        done = len(finished) + len(errored)
        elapsed = time.monotonic() - self.started
        parts = [
            f"[{_short(elapsed)}] {len(finished)}/{self.total} finished, {running} running, "
            f"{len(errored)} errored"
        ]
        if self.best is not None:
            parts.append(f"best test acc {100 * self.best[0]:.2f}% ({self.best[1]})")
        if 0 < done < self.total:
            parts.append(f"ETA ~{_short(elapsed / done * (self.total - done))}")
        return " | ".join(parts)

    def _print(self, trials: list, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self.last_printed < self.every_s:
            return
        text = self.line(trials)
        # An unchanged state (the line without its clock and ETA) is not worth a line, except
        # as a heartbeat once a minute.
        state = text.split("] ", 1)[1].split(" | ETA")[0]
        if not force and state == self.last_state and now - self.last_printed < 60:
            return
        self.last_printed = now
        self.last_state = state
        print(text, file=self.stream or sys.stdout, flush=True)
