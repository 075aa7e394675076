"""What a tuned sweep's search chose and what it cost: `search_report.md`, `search_report.csv`
(one row per unit), `search_trials.csv` (one row per search trial) and `search_report.png`
(validation accuracy against each searched field, per unit), in the experiment directory.

The cost is counted from the rows: the epochs each search trial ran (its distinct epoch rows)
against the epochs it would have run to the end (`Method.training_epochs` of its config), so
"epochs saved" is what ASHA's stops spared.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeps.search.select import SearchTrial
from trainables.files import atomic_write

REPORT_FILE = "search_report.md"
UNITS_CSV = "search_report.csv"
TRIALS_CSV = "search_trials.csv"
FIGURE_FILE = "search_report.png"


@dataclass
class UnitReport:
    """One unit's search as the report shows it."""

    name: str
    label: str
    per: str
    metric: str
    chosen: dict[str, Any]
    score: float
    trials: list[SearchTrial]
    full_epochs: list[int]  # per trial: the epochs it would have run to the end
    log_fields: frozenset[str] = frozenset()
    choices: dict[str, list[Any]] | None = None  # field -> its choices (drawn as categories)

    @property
    def epochs_run(self) -> int:
        return sum(trial.epochs_run for trial in self.trials)

    @property
    def epochs_full(self) -> int:
        return sum(self.full_epochs)

    @property
    def saved_share(self) -> float:
        return 1 - self.epochs_run / self.epochs_full if self.epochs_full else 0.0

    @property
    def stopped(self) -> int:
        return sum(1 for trial in self.trials if trial.status == "stopped")

    def row(self) -> dict[str, Any]:
        return {
            "unit": self.name, "label": self.label, "per": self.per, "metric": self.metric,
            "score": self.score,
            **{f"chosen.{key}": value for key, value in sorted(self.chosen.items())},
            "trials": len(self.trials),
            "finished": sum(1 for trial in self.trials if trial.finished),
            "stopped": self.stopped,
            "errored": sum(1 for trial in self.trials if trial.status == "errored"),
            "epochs_run": self.epochs_run, "epochs_full": self.epochs_full,
            "epochs_saved_share": self.saved_share,
        }


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]

    def write(target: Path) -> None:
        with target.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def _markdown(units: list[UnitReport], name: str) -> str:
    lines = [
        f"# {name}: tuned recipes",
        "",
        "Each unit's recipe was chosen by Ray Tune's search on validation accuracy, from search "
        "trials on their own seeds; the experiment's results come from fresh seeds on the chosen "
        "recipe. Test accuracy took no part in the choice.",
        "",
        "| unit | chosen | validation score | trials (finished / stopped / errored) "
        "| epochs run / to the end | epochs saved |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for unit in units:
        row = unit.row()
        chosen = ", ".join(f"`{key}` = {_short(value)}" for key, value in sorted(
            unit.chosen.items()))
        lines.append(
            f"| {unit.name} | {chosen} | {unit.metric} {unit.score:.4f} | {row['trials']} "
            f"({row['finished']} / {row['stopped']} / {row['errored']}) | {unit.epochs_run} / "
            f"{unit.epochs_full} | {100 * unit.saved_share:.0f}% |")
    run = sum(unit.epochs_run for unit in units)
    full = sum(unit.epochs_full for unit in units)
    saved = f"{100 * (1 - run / full):.0f}%" if full else "n/a"
    lines += ["", f"In all: {sum(len(u.trials) for u in units)} search trials, {run} of {full} "
              f"trial-epochs run ({saved} saved by stopping trials early).", "",
              f"Per trial: `{TRIALS_CSV}`. Figure: `{FIGURE_FILE}`.", ""]
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


def _figure(units: list[UnitReport], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fields = sorted({key for unit in units for key in unit.chosen})
    if not fields or not units:
        return
    fig, axes = plt.subplots(len(units), len(fields), squeeze=False,
                             figsize=(3.6 * len(fields), 2.6 * len(units)))
    for row, unit in enumerate(units):
        for column, key in enumerate(fields):
            ax = axes[row][column]
            choices = (unit.choices or {}).get(key)

            def x_of(value: Any, choices: list[Any] | None = choices) -> Any:
                return choices.index(value) if choices and value in choices else value

            for finished, style in ((True, {"color": "C0", "label": "ran to the end"}),
                                    (False, {"facecolors": "none", "edgecolors": "C7",
                                             "label": "stopped (last value)"})):
                points = [(t.values.get(key), t.score if finished else t.last_value)
                          for t in unit.trials if t.finished == finished]
                points = [(x_of(x), y) for x, y in points if x is not None and y is not None]
                if points:
                    ax.scatter([x for x, _ in points], [y for _, y in points], s=18, **style)
            if key in unit.chosen:
                ax.scatter([x_of(unit.chosen[key])], [unit.score], marker="*", s=140,
                           color="C3", label="chosen", zorder=3)
            if choices:
                ax.set_xticks(range(len(choices)), [_short(value) for value in choices])
                ax.set_xlim(-0.5, len(choices) - 0.5)
            elif key in unit.log_fields:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(key)
            ax.set_ylabel(unit.metric if column == 0 else "")
            ax.set_title(unit.name, fontsize=9)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    atomic_write(path, lambda target: fig.savefig(target, dpi=110, format="png"))
    plt.close(fig)


def write_report(units: list[UnitReport], experiment_dir: str, name: str) -> Path:
    """Write the report files into `experiment_dir`; the Markdown file's path."""
    directory = Path(experiment_dir)
    directory.mkdir(parents=True, exist_ok=True)
    _write_csv(directory / UNITS_CSV, [unit.row() for unit in units])
    trial_rows = []
    for unit in units:
        for trial, full in zip(unit.trials, unit.full_epochs, strict=True):
            trial_rows.append({
                "unit": unit.name, "trial_dir": trial.trial_dir, "seed": trial.seed,
                **{f"values.{key}": value for key, value in sorted(trial.values.items())},
                "status": trial.status, "score": trial.score, "last_value": trial.last_value,
                "rows": trial.rows, "epochs_run": trial.epochs_run, "epochs_full": full,
            })
    _write_csv(directory / TRIALS_CSV, trial_rows)
    path = directory / REPORT_FILE
    text = _markdown(units, name)
    atomic_write(path, lambda target: target.write_text(text, encoding="utf-8"))
    _figure(units, directory / FIGURE_FILE)
    return path
