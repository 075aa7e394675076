"""Trials that fail with an error a retry cannot fix are not retried.

Ray Tune retries every failed trial up to `max_failures` times, whatever the error. A trial
whose config is wrong, or whose granted GPU torch cannot use, fails the same way each time: two
tracebacks and a doubled wait for nothing. Such a trial reports a `FATAL_ROW` row just before it
raises (trainables/tune_trainable.py); Ray hands a function trainable's rows to the driver in
order, and the trial's error only after the driver took the row, so this callback sees the row
first and sets that one trial's `max_failures` to 0: `Trial.should_recover()` then says no.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from ray.tune import Callback

from trainables.ray_adapter import never_retry
from trainables.reporting import FATAL_ROW


class NoRetryOnFatalErrors(Callback):
    """Stops Tune retrying a trial that reported a fatal error; prints that error in one line."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream  # None: sys.stderr when printing (Tune pickles its callbacks)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if result.get("row_type") != FATAL_ROW:
            return
        never_retry(trial)
        print(f"run_sweep: trial {trial} failed, not retried: {result[FATAL_ROW]}",
              file=self.stream or sys.stderr, flush=True)
