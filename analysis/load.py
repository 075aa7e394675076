"""Read Ray Tune experiment directories written by the prunetune trainables into DataFrames.

Only the JSON files are read (``params.json``, ``result.json``, ``prunetune_sweep.json`` and each
checkpoint's ``metrics.json``); never the checkpoints' tensors, so this works on a laptop
without torch or ray.

Trial status (one value per trial, column ``trial_status``):

- ``diverged``: some round row has ``status == "diverged"`` (whatever else happened);
- ``finished``: a round row has ``final_round: true``. A leftover ``error.txt`` from a failure
  that Ray recovered from does not disqualify a trial that reached its final round;
- ``errored``: ``error.txt`` exists and the final round was never reported;
- ``unfinished``: none of the above (still running, killed, or stopped early);
- ``search``: a search trial of a tuned sweep (``search/<unit>/``), loaded only with
  ``all_trials``: it tuned a recipe on its own seed and is never a result.

Only ``finished`` trials enter aggregates; the others are listed by :func:`excluded_trials`.
A tuned sweep's results say so (``df.attrs["tuned"]``, see :func:`tuned_recipes`).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from trainables.schema import (
    ROUND_CHECKPOINT,
    ROUND_ROW,
    SchemaVersionError,
    check_version,
    search_trial_config,
)

SWEEP_FILE = "prunetune_sweep.json"
SEARCH_DIR = "search"  # a tuned sweep's search trials, one folder per unit (sweeps/search/stage.py)

# Columns of the tidy table, in order; swept hyper-parameters (dotted names) follow them. The
# round row's own are its declared fields (trainables/schema.py), by the names the code uses.
RESULT_COLUMNS = [
    "experiment",
    "trial_id",
    "trial_status",
    *(key for key in ROUND_ROW.by_key if key not in ("row_type", "schema_version",
                                                     "layer_sparsity", ROUND_CHECKPOINT)),
    "time_total_s",
    ROUND_CHECKPOINT,
    "trial_dir",
]

# Fields of a round row that carry what a swept key would say; a swept key whose last dotted
# component is one of these is already represented by the row's own column.
ROW_FIELDS = {"seed", "method", "scorer", "schedule", "target_sparsity", "round", "sparsity"}

TRIAL_TABLE_COLUMNS = [
    "experiment", "trial_id", "trial_status", "method", "scorer", "seed", "target_sparsity",
    "rounds_reported", "reason", "trial_dir",
]


class AnalysisInputError(ValueError):
    """An experiment directory is missing, empty or unreadable; the message is one line."""


@dataclass
class Trial:
    """One trial directory: its config, its reported rows and its status."""

    experiment: str
    trial_id: str
    path: Path
    config: dict[str, Any]
    round_rows: list[dict[str, Any]] = field(default_factory=list)
    status: str = "unfinished"
    reason: str = ""

    def epoch_rows(self) -> list[dict[str, Any]]:
        """The trial's epoch rows, read when asked for: a study holds hundreds of them per
        trial, and the summaries need only the round rows."""
        rows = _json_rows(self.path / "result.json", warn=False)
        return _dedupe_epochs([row for row in rows if row.get("row_type") == "epoch"])


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested dict into ``{"a.b.c": leaf}``; lists stay as values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


#: How an epoch row's type reads in result.json (json.dumps's separators, as Ray writes rows):
#: such a line is passed over unparsed where only round rows are wanted. Quotes inside a JSON
#: string are escaped, so only the row's own field reads like this.
_EPOCH_ROW = '"row_type": "epoch"'


def _json_rows(path: Path, warn: bool = True,
               epochs: bool = True) -> Iterator[dict[str, Any]]:
    """The rows of a JSON-lines file, one at a time (a study's files hold gigabytes of epoch
    rows in all); without `epochs`, complete epoch rows are skipped without parsing them (most
    of the reading time); with `warn`, lines that do not parse are reported once the file is
    read."""
    if not path.is_file():
        return
    bad, count = [], 0
    with open(path, encoding="utf-8") as f:
        for count, line in enumerate(f, start=1):  # noqa: B007 - the last count is the length
            line = line.strip()
            if not line or (not epochs and line.endswith("}") and _EPOCH_ROW in line):
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad.append(count)
                continue
            if isinstance(row, dict):
                yield row
    if not warn:
        return
    if bad == [count]:
        # A trial killed, or a disk filled, while the line was written: the rest is valid.
        warnings.warn(f"{path}: skipped its cut-off last line ({count})", stacklevel=3)
    elif bad:
        warnings.warn(f"{path}: skipped {len(bad)} unparsable line(s): {bad[:5]}", stacklevel=3)


def _last_error_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1][:200] if lines else ""


_TRIAL_ID_RE = re.compile(r"_([0-9a-f]{5}_\d{5})(?:_|$)")


#: run_sweep's trial directories end in Tune's id: `<readable name>_<experiment id>_<index>`.
_TRIAL_ID_SUFFIX = re.compile(r"_[0-9a-f]{5}_\d{5}$")


def readable_name(trial_dir: str | Path) -> str:
    """The trial's name without Tune's id: `imp_s0_p0.8x3` for `.../imp_s0_p0.8x3_999bf_00003`
    (what `prunetune export --trial` and the progress line call it); a directory named
    otherwise keeps its whole name. The rule of `trainables.tickets.readable_name`, here
    because analysis imports no torch."""
    return _TRIAL_ID_SUFFIX.sub("", Path(trial_dir).name)


def _trial_id_from_dir(name: str) -> str:
    match = _TRIAL_ID_RE.search(name)
    return match.group(1) if match else name


def _dedupe_rounds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the last report of each round (results written before rows travelled with their
    checkpoints could repeat a round after a restart)."""
    by_round: dict[Any, dict[str, Any]] = {}
    for row in rows:
        by_round[row.get("round")] = row
    return sorted(by_round.values(), key=lambda r: (r.get("round") is None, r.get("round") or 0))


def _dedupe_epochs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the last report of each (round, epoch), in order of first appearance."""
    by_epoch: dict[Any, dict[str, Any]] = {}
    for row in rows:
        by_epoch[(row.get("round"), row.get("epoch"))] = row
    return list(by_epoch.values())


def trial_dirs(experiment_dir: Path) -> list[Path]:
    """Subdirectories of an experiment directory that are trial directories."""
    return sorted(
        p
        for p in experiment_dir.iterdir()
        if p.is_dir() and ((p / "params.json").is_file() or (p / "result.json").is_file())
    )


def load_trial(path: Path, experiment: str) -> Trial:
    """Read one trial directory and classify it (see the module docstring)."""
    config: dict[str, Any] = {}
    params = path / "params.json"
    if params.is_file():
        try:
            config = json.loads(params.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            warnings.warn(f"{params}: not valid JSON; config columns left empty", stacklevel=2)
    # Only the round rows are kept: memory stays flat however many epochs a trial ran.
    rounds, trial_id, row_config = [], None, None
    for row in _json_rows(path / "result.json", epochs=False):
        if row.get("row_type") == "round":
            try:
                check_version(row, str(path / "result.json"))
            except SchemaVersionError as error:
                raise AnalysisInputError(str(error)) from None
            rounds.append(ROUND_ROW.read(row))
        if trial_id is None and row.get("trial_id"):
            trial_id = str(row["trial_id"])
        if row_config is None and isinstance(row.get("config"), dict):
            row_config = row["config"]
    if not config and row_config is not None:
        config = row_config
    # run_sweep hands each trial its whole config under one key: {"trial": {...}}.
    if isinstance(config, dict) and set(config) == {"trial"} and isinstance(config["trial"], dict):
        config = config["trial"]
    round_rows = _dedupe_rounds(rounds)
    trial = Trial(
        experiment=experiment,
        trial_id=trial_id or _trial_id_from_dir(path.name),
        path=path,
        config=config if isinstance(config, dict) else {},
        round_rows=round_rows,
    )
    diverged = [r.get("round") for r in round_rows if r.get("status") == "diverged"]
    finished = any(bool(r.get("final_round")) for r in round_rows)
    error_file = path / "error.txt"
    if diverged:
        trial.status = "diverged"
        trial.reason = f"diverged in round {diverged[0]}"
        if error_file.is_file():
            trial.reason += f"; errored: {_last_error_line(error_file)}"
    elif finished:
        trial.status = "finished"
    elif error_file.is_file():
        trial.status = "errored"
        trial.reason = f"errored after {len(round_rows)} round(s): {_last_error_line(error_file)}"
    else:
        trial.status = "unfinished"
        trial.reason = f"unfinished: {len(round_rows)} round(s) reported, no final round"
    return trial


def read_sweep(experiment_dir: Path) -> dict[str, Any] | None:
    """The experiment's ``prunetune_sweep.json``, or None when absent or unreadable."""
    path = experiment_dir / SWEEP_FILE
    if not path.is_file():
        return None
    try:
        sweep = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        warnings.warn(f"{path}: not valid JSON; swept keys inferred from trial configs",
                      stacklevel=2)
        return None
    return sweep if isinstance(sweep, dict) else None


def _hashable(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def swept_keys(trials: list[Trial], sweep: dict[str, Any] | None) -> list[str]:
    """The grid keys from ``prunetune_sweep.json``; else config leaves that vary across trials."""
    if sweep and isinstance(sweep.get("grid_keys"), list):
        return [str(k) for k in sweep["grid_keys"]]
    flats = [flatten(t.config) for t in trials]
    names = sorted({k for flat in flats for k in flat})
    varying = []
    for name in names:
        values = {_hashable(flat.get(name)) for flat in flats}
        if len(values) > 1:
            varying.append(name)
    return varying


def load_experiment(experiment_dir: str | Path,
                    all_trials: bool = False) -> tuple[str, list[Trial], list[str]]:
    """Read the trials of one experiment directory: (name, trials, swept keys). A grown
    experiment's trials that its sweep file no longer has (`removed_trials` of
    prunetune_sweep.json, see sweeps/grow.py) are left out unless `all_trials`."""
    path = Path(experiment_dir)
    if not path.exists():
        raise AnalysisInputError(f"{path}: no such directory")
    if not path.is_dir():
        raise AnalysisInputError(f"{path}: not a directory (expected an experiment directory)")
    dirs = trial_dirs(path)
    if not dirs:
        raise AnalysisInputError(
            f"{path}: no trial directories (expected subdirectories with params.json/result.json"
            " as written by Ray Tune)"
        )
    sweep = read_sweep(path)
    name = str(sweep["name"]) if sweep and sweep.get("name") else path.resolve().name
    removed = set() if all_trials or not sweep else set(sweep.get("removed_trials") or [])
    trials = [load_trial(d, name) for d in dirs if d.name not in removed]
    keys = swept_keys(trials, sweep)
    if all_trials:
        trials += search_trials(path, name)
    return name, trials, keys


def _search_trial_dirs(experiment_dir: Path) -> list[Path]:
    directory = experiment_dir / SEARCH_DIR
    if not directory.is_dir():
        return []
    return [trial for unit in sorted(directory.iterdir()) if unit.is_dir()
            for trial in trial_dirs(unit)]


def search_trials(experiment_dir: Path, name: str) -> list[Trial]:
    """A tuned sweep's search trials, with status ``search``: visible, never aggregated."""
    trials = []
    for trial_dir in _search_trial_dirs(experiment_dir):
        trial = load_trial(trial_dir, name)
        if isinstance(trial.config.get("trial"), dict):  # its recipe, values and search seed
            trial.config = search_trial_config(trial.config)
        trial.reason = (f"search trial of unit {trial_dir.parent.name} ({trial.status}): it "
                        "tuned the recipe, see search_report.md")
        trial.status = "search"
        trials.append(trial)
    return trials


def tuned_recipes(*experiment_dirs: str | Path) -> list[dict[str, Any]]:
    """For each tuned sweep among `experiment_dirs`: its name, its search report and how many
    search trials chose its recipes (none for a sweep without `search:`)."""
    tuned = []
    for directory in map(Path, experiment_dirs):
        sweep = read_sweep(directory)
        search = (sweep or {}).get("search")
        if not isinstance(search, dict):
            continue
        tuned.append({
            "experiment": str(sweep.get("name") or directory.name) if sweep else directory.name,
            "report": str(directory / str(search.get("report", "search_report.md"))),
            "units": search.get("units"),
            "search_trials": len(_search_trial_dirs(directory)),
        })
    return tuned


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def load_trials(*experiment_dirs: str | Path,
                all_trials: bool = False) -> tuple[list[Trial], list[str]]:
    """The trials of the given experiment directories (see `load_experiment`), and the union
    of their swept keys.

    Two directories with the same experiment name get distinct names (``name#2``).
    """
    if not experiment_dirs:
        raise AnalysisInputError("no experiment directory given")
    loaded = [load_experiment(d, all_trials) for d in experiment_dirs]
    names = _unique_names([name for name, _, _ in loaded])
    trials: list[Trial] = []
    keys: list[str] = []
    for name, (_, exp_trials, exp_keys) in zip(names, loaded, strict=True):
        for trial in exp_trials:
            trial.experiment = name
        trials.extend(exp_trials)
        keys.extend(k for k in exp_keys if k not in keys)
    return trials, keys


def _trials_frame(trials: list[Trial], keys: list[str]) -> pd.DataFrame:
    records = []
    for trial in trials:
        flat = flatten(trial.config)
        swept = {k: _hashable(flat.get(k)) for k in keys}
        for row in trial.round_rows:
            record = {
                "experiment": trial.experiment,
                "trial_id": trial.trial_id,
                "trial_status": trial.status,
                "trial_dir": str(trial.path),
            }
            # Every field the trainable reported is kept (extra fields become columns), except
            # Ray's copy of the config: swept keys get their own columns below.
            record.update({k: v for k, v in row.items() if k not in record and k != "config"})
            for key, value in swept.items():
                record.setdefault(key, value)
            records.append(record)
    frame = pd.DataFrame.from_records(records)
    for column in RESULT_COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype="float64")
    extra = [c for c in frame.columns if c not in RESULT_COLUMNS]
    ordered_keys = [k for k in keys if k in extra]
    others = [c for c in extra if c not in ordered_keys]
    frame = frame[RESULT_COLUMNS + ordered_keys + others]
    # Dict-valued fields (e.g. a layer_sparsity copy) cannot live in a CSV/Parquet cell.
    for column in frame.columns:
        if frame[column].map(lambda v: isinstance(v, dict | list)).any():
            frame[column] = frame[column].map(
                lambda v: json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v
            )
    return frame


def load_results(*experiment_dirs: str | Path, all_trials: bool = False) -> pd.DataFrame:
    """One row per (trial, finished round) of every trial in the given experiment directories.

    Columns: ``RESULT_COLUMNS`` (experiment, trial_id, trial_status, method, scorer, schedule,
    seed, round, target_sparsity, sparsity, parameter counts, val_acc, test_acc, epochs,
    best_epoch, round/total wall time, ...), then every swept hyper-parameter under its dotted
    name, then any further field the trainable reported. Rows of errored, unfinished and diverged
    trials are included with their ``trial_status``; nothing is rounded. ``df.attrs`` holds
    ``swept_keys`` and ``trials`` (the per-trial status table of :func:`trial_table`, as a list
    of records so that attrs stay JSON-serialisable).

    Raises :class:`AnalysisInputError` for a missing directory or one without trials. A grown
    experiment's removed grid points are left out unless ``all_trials``, which also lists a
    tuned sweep's search trials (status ``search``; they enter no aggregate).
    """
    trials, keys = load_trials(*experiment_dirs, all_trials=all_trials)
    frame = _trials_frame(trials, keys)
    frame.attrs["swept_keys"] = keys
    frame.attrs["trials"] = TrialRecords(trial_table(trials).to_dict(orient="records"))
    frame.attrs["tuned"] = tuned_recipes(*experiment_dirs)
    return frame


class TrialRecords(list):
    """The per-trial table as a frame's attrs carry it (a list of records). pandas deep-copies
    a frame's attrs into every frame derived from it, thousands of times in one analysis:
    passed on as it is instead, so that one dict per trial is not copied each time (with 960
    trials that copying was most of `plot`'s time). Treat it as read-only."""

    def __deepcopy__(self, memo: dict[int, Any]) -> TrialRecords:
        return self


def trial_table(trials: list[Trial]) -> pd.DataFrame:
    """One row per trial: experiment, trial_id, trial_status, method, seed, rounds, reason."""
    records = []
    for trial in trials:
        first = trial.round_rows[0] if trial.round_rows else {}
        flat = flatten(trial.config)
        records.append(
            {
                "experiment": trial.experiment,
                "trial_id": trial.trial_id,
                "trial_status": trial.status,
                "method": first.get("method", flat.get("method")),
                "scorer": first.get("scorer"),
                "seed": first.get("seed", flat.get("seed")),
                "target_sparsity": trial.round_rows[-1].get("target_sparsity")
                if trial.round_rows
                else flat.get("prune.target_sparsity"),
                "rounds_reported": len(trial.round_rows),
                "reason": trial.reason,
                "trial_dir": str(trial.path),
            }
        )
    return pd.DataFrame.from_records(records, columns=TRIAL_TABLE_COLUMNS)


def excluded_trials(results: pd.DataFrame) -> pd.DataFrame:
    """The trials left out of aggregates (errored, unfinished, diverged) with the reason."""
    records = results.attrs.get("trials")
    if records is not None:
        trials = pd.DataFrame.from_records(records, columns=TRIAL_TABLE_COLUMNS)
    else:
        trials = (
            results.groupby(["experiment", "trial_id"], sort=False, dropna=False)
            .agg(trial_status=("trial_status", "first"), method=("method", "first"),
                 seed=("seed", "first"), rounds_reported=("round", "size"))
            .reset_index()
        )
        trials["reason"] = trials["trial_status"]
    return trials[trials["trial_status"] != "finished"].reset_index(drop=True)


def load_epochs(*experiment_dirs: str | Path) -> pd.DataFrame:
    """The per-epoch rows (``row_type == "epoch"``) of every trial, with trial identifiers."""
    trials, _ = load_trials(*experiment_dirs)
    records = []
    for trial in trials:
        for row in trial.epoch_rows():
            record = {"experiment": trial.experiment, "trial_id": trial.trial_id,
                      "trial_status": trial.status}
            record.update({k: v for k, v in row.items() if k not in record and k != "config"})
            records.append(record)
    return pd.DataFrame.from_records(records)


def load_layer_sparsity(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-layer sparsity of the given result rows, read from each checkpoint's metrics.json.

    Returns one row per (result row, parameter): the identifying columns of ``rows`` plus
    ``param``, ``numel``, ``remaining``, ``layer_sparsity``. Rows whose checkpoint is missing are
    skipped with a warning.
    """
    records = []
    missing = 0
    for _, row in rows.iterrows():
        metrics = _find_metrics(Path(row["trial_dir"]), row.get(ROUND_CHECKPOINT),
                                row.get("round"))
        if metrics is None:
            missing += 1
            continue
        for param, info in (metrics.get("layer_sparsity") or {}).items():
            records.append(
                {
                    "experiment": row["experiment"],
                    "trial_id": row["trial_id"],
                    "method": row["method"],
                    "scorer": row["scorer"],
                    "schedule": row["schedule"],
                    "seed": row["seed"],
                    "round": row["round"],
                    "param": param,
                    "numel": info.get("numel"),
                    "remaining": info.get("remaining"),
                    "layer_sparsity": info.get("sparsity"),
                }
            )
    if missing:
        warnings.warn(f"{missing} round(s) have no checkpoint metrics.json; skipped", stacklevel=2)
    return pd.DataFrame.from_records(
        records,
        columns=["experiment", "trial_id", "method", "scorer", "schedule", "seed", "round",
                 "param", "numel", "remaining", "layer_sparsity"],
    )


def _find_metrics(trial_dir: Path, checkpoint: Any, round_index: Any) -> dict[str, Any] | None:
    found = round_checkpoint_dir(trial_dir, checkpoint, round_index)
    return None if found is None else json.loads((found / "metrics.json").read_text("utf-8"))


def round_checkpoint_dir(trial_dir: Path, checkpoint: Any, round_index: Any) -> Path | None:
    """The checkpoint directory of a result row's round: the one the row names
    (``round_checkpoint``), else the one whose metrics.json records that round."""
    if isinstance(checkpoint, str) and checkpoint:
        path = trial_dir / checkpoint / "metrics.json"
        if path.is_file():
            return path.parent
    # Fall back to scanning the checkpoints for the one recording this round.
    candidates = [*trial_dir.glob("round_*/metrics.json"),
                  *trial_dir.glob("checkpoint_*/metrics.json")]  # the earlier layout's
    for path in sorted(candidates):
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            continue
        if metrics.get("round") == round_index:
            return path.parent
    return None
