"""Experiment tracking: the sweep file's `loggers` list as Ray Tune's own logger callbacks.

`tensorboard` (prunetune's own events, sweeps/tensorboard_log.py), `ray_tensorboard` (Ray's
TBXLoggerCallback: every row field under `ray/tune/`, on Ray's iteration counter; off unless
asked for), `csv` (CSVLoggerCallback, progress.csv), `mlflow` (MLflowLoggerCallback) and `wandb`
(WandbLoggerCallback). Ray's JsonLoggerCallback is always added, without the config copy Ray
puts in every row (sweeps/json_rows.py): analysis reads the params.json and result.json it
writes. MLflow and W&B are optional extras (`pip install 'prunetune[mlflow]'`,
`'prunetune[wandb]'`) and are configured the way those tools configure themselves:

- MLflow: MLFLOW_TRACKING_URI (default: a local SQLite store, `<experiment dir>/mlflow.db`,
  for local storage), MLFLOW_EXPERIMENT_NAME (default: the sweep's name);
- W&B: WANDB_PROJECT (default: prunetune), WANDB_API_KEY or `wandb login`, WANDB_MODE=offline
  to keep runs on disk without an account (`<experiment dir>/wandb/offline-run-*-<trial id>`,
  uploadable later with `wandb sync`); the group is the sweep's name.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruning.registry import Registry
from trainables.errors import ConfigError

if TYPE_CHECKING:
    from sweeps.plan import PlannedTrial

DEFAULT_LOGGERS = ["tensorboard", "csv"]
#: Loggers that need an optional extra: logger -> module it imports.
_EXTRA_MODULES = {"mlflow": "mlflow", "wandb": "wandb"}
DEFAULT_WANDB_PROJECT = "prunetune"


def check_installed(loggers: list[str]) -> None:
    """ConfigError (one line) for a logger whose optional extra is not installed."""
    for name in loggers:
        module = _EXTRA_MODULES.get(name)
        if module is not None and importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"{name} needs the optional extra: pip install 'prunetune[{name}]' "
                f"(or remove {name} from loggers)"
            )


def mlflow_tracking_uri(experiment_dir: str) -> str | None:
    """MLFLOW_TRACKING_URI, else a SQLite file in a local experiment dir (None: MLflow's own
    default, for cloud storage)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if "://" in experiment_dir:
        return None
    return f"sqlite:///{Path(experiment_dir) / 'mlflow.db'}"


@dataclass(frozen=True)
class LoggerContext:
    """What a logger is made for: the sweep's name, its experiment directory, and its planned
    trials."""

    name: str
    experiment_dir: str
    trials: tuple[PlannedTrial, ...] = field(default=())


LoggerFactory = Callable[[LoggerContext], Any]
"""The sweep -> one Ray Tune logger callback, configured but not set up."""
LOGGERS: Registry[LoggerFactory] = Registry("logger", error=ConfigError)


def logger_callbacks(loggers: list[str], context: LoggerContext) -> list[Any]:
    """Ray Tune logger callbacks for `loggers` (JSON always first), configured but not set up."""
    from sweeps.json_rows import RowsJsonLogger

    callbacks: list[Any] = [RowsJsonLogger()]
    for logger in dict.fromkeys(loggers):  # each once, in the order given
        callbacks.append(LOGGERS.get(logger)(context))
    return callbacks


@LOGGERS.register("tensorboard")
def _tensorboard(context: LoggerContext) -> Any:
    from sweeps.tensorboard_log import PrunetuneTensorBoard

    return PrunetuneTensorBoard(context.trials)


@LOGGERS.register("ray_tensorboard")
def _ray_tensorboard(context: LoggerContext) -> Any:
    from ray.tune.logger import TBXLoggerCallback

    return TBXLoggerCallback()


@LOGGERS.register("csv")
def _csv(context: LoggerContext) -> Any:
    from ray.tune.logger import CSVLoggerCallback

    return CSVLoggerCallback()


@LOGGERS.register("mlflow")
def _mlflow(context: LoggerContext) -> Any:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    return MLflowLoggerCallback(
        tracking_uri=mlflow_tracking_uri(context.experiment_dir),
        experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME") or context.name,
    )


@LOGGERS.register("wandb")
def _wandb(context: LoggerContext) -> Any:
    project = os.environ.get("WANDB_PROJECT") or DEFAULT_WANDB_PROJECT
    # Runs go straight to `<experiment dir>/wandb/` when that is local: by default W&B writes
    # into Ray's staging copy of the trial dir, synced to storage before the run's last
    # records are.
    local = {} if "://" in context.experiment_dir else {"dir": context.experiment_dir}
    return _wandb_callback()(project=project, group=context.name, **local)


def _wandb_callback() -> type:
    """Ray's WandbLoggerCallback, whose per-trial logging actor also waits for W&B's writer.

    Ray kills a trial's logging actor as soon as `wandb.finish()` returns, but W&B (>= 0.19)
    writes the run from a separate service process that finish() does not wait for: the last
    trial's run file was left empty. `wandb.teardown()` waits for it.
    """
    from ray.air.integrations.wandb import WandbLoggerCallback

    from trainables.ray_adapter import wandb_logging_actor_class

    class FlushingLoggingActor(wandb_logging_actor_class()):
        def run(self) -> None:
            super().run()
            self._wandb.teardown()

    return type("WandbLoggerCallback", (WandbLoggerCallback,),
                {"_logger_actor_cls": FlushingLoggingActor})


def check_reachable(callbacks: list[Any]) -> None:
    """Set the callbacks up now (Tune sets them up again, which they allow), so that a missing
    W&B login or an unreachable MLflow server is a one-line ConfigError before Ray starts
    rather than a failed experiment."""
    for callback in callbacks:
        try:
            callback.setup()
        except Exception as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ConfigError(
                f"loggers: {type(callback).__name__} could not start ({reason})"
            ) from None
