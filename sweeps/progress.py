"""A compact progress view for a sweep (instead of Ray's full trial table): one line when the
counts change, otherwise at most every few seconds when something else changes, with the counts,
the best accuracy so far and an ETA.

The counts follow Tune's trial callbacks, not trial statuses: Tune calls `on_trial_start` before
it marks the trial RUNNING and `on_trial_complete` before it marks it TERMINATED (Ray 2.60,
ray/tune/execution/tune_controller.py: `_actor_started`, `stop_trial`), so statuses read in a
callback are a step behind. Statuses only fill in what has no callback: trials restored already
finished or errored, and trials stopped with the whole experiment (a stopper, the disk guard).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ray.tune import Callback

#: Statuses of a trial that is not running, whatever callbacks said (no callback marks them
#: when the experiment stops its trials, or a scheduler pauses one).
_STOPPED = ("TERMINATED", "ERROR", "PAUSED")


def _short(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class CompactProgress(Callback):
    """Prints `[elapsed] done/total finished, running, errored | best test acc | ETA`.

    A change of the counts is printed once it has held `settle_s` (a trial's end and the start
    of the next trial on its reused worker come a step or two apart: one line, not two), or
    after `every_s` if the counts keep changing; a new best accuracy at most every `every_s`.
    """

    def __init__(
        self, total_trials: int, names: dict[str, str] | None = None, every_s: float = 10.0,
        stream: TextIO | None = None, settle_s: float = 1.0, metric: str = "test_acc",
    ) -> None:
        self.total = total_trials
        # A search stage shows its trials' best validation accuracy: the one that chooses.
        self.metric = metric
        self.names = names or {}
        self.every_s = every_s
        self.settle_s = settle_s
        # Looked up when printing, not held: Tune pickles its callbacks, and a replaced
        # sys.stdout (a notebook's, pytest's capture) need not pickle.
        self.stream = stream
        self.started = time.monotonic()
        self.last_printed = 0.0
        self.best: tuple[float, str] | None = None
        # Trial ids by what the callbacks of this run said last; each id in one set at most.
        self.running: set[str] = set()
        self.finished: set[str] = set()
        self.errored: set[str] = set()
        self.changed_at = 0.0  # when a callback last changed the sets
        self.last_counts: tuple[int, int, int] | None = None
        self.last_state = ""

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A resumed experiment brings the callback pickled by the prunetune that started it,
        # perhaps one without some of these attributes.
        self.__dict__.update({**CompactProgress(state.get("total", 0)).__dict__, **state})

    def setup(self, **info: Any) -> None:
        # Once per fit: a resumed sweep's callback is unpickled with its first run's clock.
        self.started = time.monotonic()

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if result.get("row_type") != "round":
            return
        accuracy = result.get(self.metric)
        if accuracy is not None and (self.best is None or accuracy > self.best[0]):
            where = f"{trial}, round {result.get('round')}"
            self.best = (float(accuracy), where)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Also a retried or resumed trial: it leaves `errored`.
        self._move(trial.trial_id, self.running)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._move(trial.trial_id, self.finished)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._move(trial.trial_id, self.errored)  # failed for good: no retry left

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._move(trial.trial_id, None)  # failed, requeued (PENDING) for a retry

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._print(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._print(trials, final=True)

    def _move(self, trial_id: str, into: set[str] | None) -> None:
        for group in (self.running, self.finished, self.errored):
            group.discard(trial_id)
        if into is not None:
            into.add(trial_id)
        self.changed_at = time.monotonic()

    def counts(self, trials: list) -> tuple[int, int, int]:
        """(finished, running, errored) among `trials` (Tune's trial list)."""
        status = {t.trial_id: t.status for t in trials}
        running = {t for t in self.running if status.get(t) not in _STOPPED}
        finished = (self.finished | {t for t, s in status.items() if s == "TERMINATED"}) - running
        errored = (self.errored | {t for t, s in status.items() if s == "ERROR"}) - running
        return len(finished), len(running), len(errored - finished)

    def line(self, trials: list) -> str:
        finished, running, errored = self.counts(trials)
        elapsed = time.monotonic() - self.started
        parts = [
            f"[{_short(elapsed)}] {finished}/{self.total} finished, {running} running, "
            f"{errored} errored"
        ]
        if self.best is not None:
            name = self.metric.replace("_acc", " acc").replace("_", " ")
            parts.append(f"best {name} {100 * self.best[0]:.2f}% ({self.best[1]})")
        # The rate of this run's trials only: trials restored finished took no time here.
        done_here = len(self.finished | self.errored)
        left = self.total - finished - errored
        if done_here and left > 0:
            parts.append(f"ETA ~{_short(elapsed / done_here * left)}")
        return " | ".join(parts)

    def _print(self, trials: list, final: bool = False) -> None:
        now = time.monotonic()
        counts = self.counts(trials)
        text = self.line(trials)
        # The line without its clock and ETA: unchanged, it is worth a line only as a heartbeat
        # once a minute.
        state = text.split("] ", 1)[1].split(" | ETA")[0]
        since = now - self.last_printed
        if counts != self.last_counts:
            due = final or now - self.changed_at >= self.settle_s or since >= self.every_s
        elif state != self.last_state:
            due = final or since >= self.every_s
        else:
            due = since >= 60 and not final
        if not due:
            return
        self.last_printed = now
        self.last_counts = counts
        self.last_state = state
        print(text, file=self.stream or sys.stdout, flush=True)
