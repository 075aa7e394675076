"""The rows of a trial as Ray's JSON logger writes them (`result.json`, `params.json`), less the
copy of the trial's config Ray puts in every row: `params.json` holds it once, and in a long
study that copy was most of every epoch row (about 1.9 KB of it)."""

from __future__ import annotations

from typing import Any

from ray.tune.logger import JsonLoggerCallback


class RowsJsonLogger(JsonLoggerCallback):
    """`JsonLoggerCallback` writing each row without its `config`."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        super().log_trial_result(iteration, trial,
                                 {key: value for key, value in result.items() if key != "config"})
