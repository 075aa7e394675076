"""prunetune's own TensorBoard events: curves named for what they are, rounds as rounds, and a
HParams session per round, so that methods compare at each sparsity
(docs/results-and-checkpoints.md, "TensorBoard").

Each trial's directory is a TensorBoard run:

* per epoch, on the trial's epoch count (continuing across rounds): `train/loss`, `train/acc`,
  `val/acc`, `lr`, `train/sparsity` and `train/round` (the round the epoch belongs to: its steps
  are where rounds begin);
* per round, on the round: `round/test_acc`, `round/val_acc`, `round/sparsity`, `round/params`
  (remaining), `round/flops`, `round/flops_effective`, `round/latency_ms_b<B>`,
  `round/speedup_b<B>`, and `round/layer_sparsity`, one image of every layer's sparsity;
* `sparsity/test_acc`: the test accuracy on the round's sparsity in basis points (9000 = 90%),
  which TensorBoard draws as accuracy against sparsity;
* a custom-scalars layout with the charts a pruning study opens first.

Each trial is a HParams session: its hyperparameters are the fields that decide a result and
take more than one value in the sweep (`method`, `target_sparsity` (its last round's), `seed`,
what the grid varies; a field the trial's method does not read is left out of its session), its
metrics the last `round/test_acc`, `round/sparsity`, `round/params`, `round/speedup_b1` and
`round/val_acc` it logged: its final round's.

Rows reach this callback in the sweep's driver, once each (trainables/reporting.py), so a
restarted trial does not log an epoch twice; the epoch count continues from the trial's
result.json.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune.logger import LoggerCallback

from sweeps.plan import config_text
from trainables.identity import identity_values
from trainables.methods import METHODS
from trainables.reporting import reported_rows

if TYPE_CHECKING:
    from sweeps.plan import PlannedTrial

#: Epoch-row field -> its tag.
EPOCH_TAGS = {
    "train_loss": "train/loss",
    "train_acc": "train/acc",
    "val_acc": "val/acc",
    "lr": "lr",
    "sparsity": "train/sparsity",
    "round": "train/round",
}
#: Round-row field -> its tag (plus every `latency_ms_b<B>` and `speedup_b<B>`).
ROUND_TAGS = {
    "test_acc": "round/test_acc",
    "val_acc": "round/val_acc",
    "sparsity": "round/sparsity",
    "params_total": "round/params",
    "flops": "round/flops",
    "flops_effective": "round/flops_effective",
}
_PER_BATCH = re.compile(r"^(latency_ms|speedup)_b(\d+)$")
SPARSITY_TAG = "sparsity/test_acc"
LAYER_SPARSITY_TAG = "round/layer_sparsity"
#: A session's metrics: TensorBoard reads the last value of each tag in the trial's run.
SESSION_METRICS = ("round/test_acc", "round/sparsity", "round/params", "round/speedup_b1",
                   "round/val_acc")
#: The custom-scalars layout: category -> chart -> ["Multiline", [tag regexes]].
LAYOUT = {
    "prunetune: accuracy against sparsity": {
        "test accuracy (step: sparsity in basis points, 9000 = 90%)":
            ["Multiline", [f"^{SPARSITY_TAG}$"]],
        "test accuracy per round": ["Multiline", ["^round/test_acc$"]],
        "sparsity per round": ["Multiline", ["^round/sparsity$"]],
        "speedup over dense per round": ["Multiline", [r"^round/speedup_b\d+$"]],
    },
    "prunetune: training": {
        "validation accuracy per epoch": ["Multiline", ["^val/acc$"]],
        "training loss per epoch": ["Multiline", ["^train/loss$"]],
        "learning rate per epoch": ["Multiline", ["^lr$"]],
        "round of each epoch": ["Multiline", ["^train/round$"]],
    },
}
EVENTS_SUFFIX = ".prunetune"


def sparsity_step(sparsity: float) -> int:
    """The step that places a value at `sparsity` on TensorBoard's x axis: basis points."""
    return round(10_000 * sparsity)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def epoch_scalars(row: dict[str, Any]) -> dict[str, float]:
    """Tag -> value of an epoch row (fields it lacks or that are not numbers are left out)."""
    return {tag: value for field, tag in EPOCH_TAGS.items()
            if (value := _number(row.get(field))) is not None}


def round_scalars(row: dict[str, Any]) -> dict[str, float]:
    """Tag -> value of a round row."""
    scalars = {tag: value for field, tag in ROUND_TAGS.items()
               if (value := _number(row.get(field))) is not None}
    for field, value in row.items():
        if _PER_BATCH.match(field) and (number := _number(value)) is not None:
            scalars[f"round/{field}"] = number
    return scalars


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _hparam_value(value: Any, numeric: bool) -> float | str:
    if numeric:
        return float(value)
    return value if isinstance(value, str) else json.dumps(value)


def _read_by_method(trial: PlannedTrial) -> Callable[[str], bool]:
    """Whether the trial's method reads a dotted field: `prune.*` and `dense_model.*` fields only
    when the method says so (`Method.reads`); every other field decides every trial."""
    reads = METHODS.get(trial.method).reads(trial.config)

    def read(key: str) -> bool:
        section = key.split(".", 1)[0]
        if section not in ("prune", "dense_model"):
            return True
        return key in reads or f"{section}.*" in reads

    return read


#: The hyperparameters that lead the HParams columns, in this order; the other varying fields
#: follow by name.
LEADING = ("experiment", "method", "target_sparsity", "seed")


@dataclass(frozen=True)
class SweepHparams:
    """The sweep's HParams columns (name -> a value of its type, in display order) and each
    trial's values (`config_text(trial.raw)` -> name -> value)."""

    columns: dict[str, float | str]
    by_trial: dict[str, dict[str, float | str]]


def varying_hparams(trials: Iterable[PlannedTrial]) -> SweepHparams:
    """The trials' hyperparameters: the config fields (dotted names) that decide results
    (`trainables.identity`: not paths, devices or measurement) and take more than one value
    among the trials whose method reads them; `target_sparsity`, the sparsity each trial's last
    round aims at (`Method.final_target`: 0 for dense, IMP's last level), in place of
    `prune.target_sparsity`; and `experiment`, the label, where labels say more than the methods
    do. Only what varies. Numbers stay numbers where every value is one; other values are
    strings (JSON for lists and None)."""
    trials = list(trials)
    deciding: set[str] = set()
    for trial in trials:
        deciding |= set(_flatten(identity_values(trial.config)))
    deciding.discard("prune.target_sparsity")
    fields = []
    for trial in trials:
        read = _read_by_method(trial)
        own = {key: value for key, value in _flatten(trial.raw).items()
               if key in deciding and read(key)}
        target = METHODS.get(trial.method).final_target(trial.config)
        if target is not None:
            own["target_sparsity"] = round(target, 9)  # 1 - 0.2 ** 3 is 0.9920000000000001
        if len({t.label for t in trials}) > len({t.method for t in trials}):
            own["experiment"] = trial.label
        fields.append(own)
    values: dict[str, list[Any]] = {}
    for own in fields:
        for key, value in own.items():
            values.setdefault(key, []).append(value)
    varying = [key for key, seen in values.items()
               if len({json.dumps(value, sort_keys=True) for value in seen}) > 1]
    varying.sort(key=lambda key: (LEADING.index(key) if key in LEADING else len(LEADING), key))
    numeric = {key: all(_number(value) is not None for value in values[key]) for key in varying}
    by_trial = {config_text(trial.raw): {key: _hparam_value(own[key], numeric[key])
                                         for key in varying if key in own}
                for trial, own in zip(trials, fields, strict=True)}
    columns = {key: 0.0 if numeric[key] else "" for key in varying}
    return SweepHparams(columns, by_trial)


def layer_sparsity_image(layers: dict[str, float], title: str) -> Any:
    """Every layer's sparsity as one horizontal bar chart: an HWC uint8 array."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(layers)
    figure = Figure(figsize=(6.0, 1.2 + 0.22 * len(names)), dpi=80)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = range(len(names))
    axes.barh(positions, [100 * layers[name] for name in names], color="#4c72b0")
    axes.set_yticks(list(positions), names, fontsize=7)
    axes.invert_yaxis()  # the first layer on top
    axes.set_xlim(0, 100)
    axes.set_xlabel("sparsity (% of the layer's weights pruned)")
    axes.set_title(title, fontsize=9)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def epochs_logged(trial_dir: Path) -> int:
    """How many epoch rows the trial has reported before (its result.json): where its epoch
    count continues after a restart."""
    return sum(row.get("row_type") == "epoch" for row in reported_rows(trial_dir))


class TrialEvents:
    """One trial's event writer, its epoch count, and its HParams session."""

    def __init__(self, trial_dir: Path, hparams: dict[str, float | str],
                 columns: dict[str, float | str] | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        self.trial_dir = trial_dir
        self.epochs = epochs_logged(trial_dir)
        self.pending: list[futures.Future] = []
        self.writer = SummaryWriter(str(trial_dir), filename_suffix=EVENTS_SUFFIX)
        self.writer.add_custom_scalars(LAYOUT)
        metrics = dict.fromkeys(SESSION_METRICS, 0.0)
        # The experiment (the sweep's columns and the metrics, in order), written by every trial
        # alike: without it TensorBoard would make every scalar a metric.
        experiment, _, _ = hparams_summaries(columns if columns is not None else hparams,
                                             metrics)
        _, start, _ = hparams_summaries(hparams, metrics)
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(start)

    def epoch(self, row: dict[str, Any]) -> None:
        for tag, value in epoch_scalars(row).items():
            self.writer.add_scalar(tag, value, self.epochs)
        self.epochs += 1
        self.writer.flush()

    def round(self, row: dict[str, Any]) -> None:
        step = int(row["round"])
        for tag, value in round_scalars(row).items():
            self.writer.add_scalar(tag, value, step)
        if (test := _number(row.get("test_acc"))) is not None and "sparsity" in row:
            self.writer.add_scalar(SPARSITY_TAG, test, sparsity_step(row["sparsity"]))
        self.writer.flush()
        layers = row.get("layer_sparsity")
        if isinstance(layers, dict) and layers:
            pruned = 100 * row.get("sparsity", 0.0)
            title = f"round {step}: {pruned:.2f}% of the prunable weights pruned"
            # Drawn on a thread of its own: the driver's loop, which saves the experiment's
            # state, is not held up by a figure (0.2-0.6 s each).
            self.pending.append(_renderer().submit(self._draw_layers, dict(layers), title, step))

    def _draw_layers(self, layers: dict[str, float], title: str, step: int) -> None:
        try:
            image = layer_sparsity_image(layers, title)
        except Exception as error:  # a figure must never stop a sweep
            print(f"prunetune: no layer-sparsity image for {self.trial_dir.name} round {step}: "
                  f"{type(error).__name__}: {error}", flush=True)
            return
        self.writer.add_image(LAYER_SPARSITY_TAG, image, step, dataformats="HWC")
        self.writer.flush()

    def close(self, status: str | None = None) -> None:
        """Close the writer once its images are drawn; with `status` ("STATUS_SUCCESS",
        "STATUS_FAILURE"), end the session first."""
        futures.wait(self.pending)
        if status is not None:
            self.writer.file_writer.add_summary(session_end(status))
        self.writer.close()


@functools.cache
def _renderer() -> futures.ThreadPoolExecutor:
    """The one thread that draws every trial's layer-sparsity images, in order."""
    return futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="prunetune-tensorboard")


def session_end(status: str) -> Any:
    """TensorBoard's summary that ends a HParams session with `status`."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo

    content = HParamsPluginData(session_end_info=SessionEndInfo(status=Status.Value(status)),
                                version=metadata.PLUGIN_DATA_VERSION)
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME,
                                        content=content.SerializeToString())
    return Summary(value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG,
                                        metadata=SummaryMetadata(plugin_data=plugin))])


class PrunetuneTensorBoard(LoggerCallback):
    """The `tensorboard` logger: prunetune's events for every trial (module docstring)."""

    def __init__(self, trials: Iterable[PlannedTrial] = ()) -> None:
        self.hparams = varying_hparams(trials)
        self._trials: dict[Any, TrialEvents] = {}

    def __getstate__(self) -> dict[str, Any]:  # Ray saves callbacks with the experiment
        return {"hparams": self.hparams, "_trials": {}}

    def _events(self, trial: Any) -> TrialEvents:
        if trial not in self._trials:
            trial.init_local_path()
            own = self.hparams.by_trial.get(config_text(trial.config.get("trial", {})), {})
            self._trials[trial] = TrialEvents(Path(trial.local_path), own, self.hparams.columns)
        return self._trials[trial]

    def log_trial_start(self, trial: Any) -> None:
        events = self._trials.pop(trial, None)
        if events is not None:
            events.close()
        self._events(trial)

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        kind = result.get("row_type")
        if kind == "epoch":
            self._events(trial).epoch(result)
        elif kind == "round":
            self._events(trial).round(result)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        events = self._trials.pop(trial, None)
        if events is not None:
            events.close("STATUS_FAILURE" if failed else "STATUS_SUCCESS")
