"""A tuned sweep end to end, as a user runs it (`sweeps/run_sweep.py` in a subprocess): the search
stage with Ray Tune's OptunaSearch and ASHA, the selection, the final trials on the chosen
recipe, the report, the analysis, a rerun with one more final seed, a changed search refused,
and a search killed mid-way that resumes with its searcher's state.

Tiny: digits, a width-4 ResNet, 2 batches a phase. Expected values are read from the trials'
own files by this test (brute force), never from the selection code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sweep_helpers import kill_sweep_when, run_plot, run_sweep

pytestmark = pytest.mark.slow

BASE = {
    "data": {"name": "digits"},
    "model": {"name": "resnet18_cifar", "width": 4},
    "train": {"epochs": 4, "batch_size": 32, "lr": 0.1, "max_batches": 2,
              "max_eval_batches": 2},
}
SPACE = {"train.lr": {"loguniform": [0.01, 0.5]}, "train.weight_decay": {"choice": [0.0, 5e-4]}}


def write(path: Path, **fields: Any) -> Path:
    path.write_text(yaml.safe_dump({"name": path.stem, "base": BASE, **fields}))
    return path


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def search_trials(unit: Path) -> list[Path]:
    return sorted(p.parent for p in unit.glob("*/params.json"))


def brute_force_choice(unit: Path) -> tuple[dict[str, Any], float]:
    """The sample with the highest final-round validation accuracy (one search seed here)."""
    best: tuple[float, dict[str, Any]] | None = None
    for trial in search_trials(unit):
        final = [r for r in lines(trial / "result.json")
                 if r.get("row_type") == "round" and r.get("final_round")]
        if final:
            values = json.loads((trial / "params.json").read_text())["search"]
            score = final[-1]["val_acc"]
            if best is None or score > best[0] or (
                    score == best[0] and [values[k] for k in sorted(values)]
                    < [best[1][k] for k in sorted(best[1])]):
                best = (score, values)
    assert best is not None
    return best[1], best[0]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("tuned")
    path = write(work / "tuned.yaml", grid={"seed": [0]},
                 search={"space": SPACE, "samples": 6, "searcher": "optuna",
                         "scheduler": "asha", "seeds": [100]},
                 experiments=[{"label": "dense", "config": {"method": "dense"}},
                              {"label": "snip", "config": {"method": "snip",
                                                           "prune": {"target_sparsity": 0.9}}}],
                 max_concurrent_trials=1)
    done = run_sweep(str(path), "--storage", str(work / "out"), cwd=work, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"work": work, "path": path, "experiment": work / "out" / "tuned",
            "stdout": done.stdout}


def test_progress_says_which_stage_runs(tuned):
    out = tuned["stdout"]
    assert "search stage, unit 1/2 (dense)" in out and "search stage, unit 2/2 (snip_sp0.9)" in out
    assert out.index("search stage done") < out.index("final stage: 2 trials")


def test_each_unit_chooses_the_brute_force_argmax_and_the_final_trials_run_on_it(tuned):
    experiment = tuned["experiment"]
    finals = {json.loads(p.read_text())["trial"]["method"]: json.loads(p.read_text())["trial"]
              for p in experiment.glob("*/params.json")}
    assert sorted(finals) == ["dense", "snip"]
    for unit, method in (("dense", "dense"), ("snip_sp0.9", "snip")):
        expected, score = brute_force_choice(experiment / "search" / unit)
        saved = json.loads((experiment / "search" / unit / "selection.json").read_text())
        assert saved["values"] == expected and saved["score"] == score
        final = finals[method]
        assert final["seed"] == 0
        assert final["train"]["lr"] == expected["train.lr"]
        assert final["train"]["weight_decay"] == expected["train.weight_decay"]
        # Every search trial ran at the search seed with a value inside the space.
        for trial in search_trials(experiment / "search" / unit):
            config = json.loads((trial / "params.json").read_text())
            assert 0.01 <= config["search"]["train.lr"] <= 0.5
            assert [r["seed"] for r in lines(trial / "result.json")
                    if r.get("row_type") == "round"] in ([], [100])


def test_asha_stops_only_at_its_rungs_and_the_report_counts_the_saved_epochs(tuned):
    experiment = tuned["experiment"]
    # 4 epochs + 1 round = 5 rows; ASHA may stop at rows 1 and 2 (grace 1, factor 2, up to
    # row 3 = one before the last epoch's row).
    trials = []
    for trial in sorted((experiment / "search").glob("*/*/params.json")):
        rows = [r for r in lines(trial.parent / "result.json")
                if r.get("row_type") in ("epoch", "round")]
        finished = any(r.get("final_round") for r in rows)
        epochs = len({(r["round"], r["epoch"]) for r in rows if r["row_type"] == "epoch"})
        assert finished or len(rows) in (1, 2), (trial.parent.name, len(rows))
        trials.append((trial.parent.parent.name, finished, epochs))
    assert len(trials) == 12
    report = {row["unit"]: row for row in _csv(experiment / "search_report.csv")}
    for unit in ("dense", "snip_sp0.9"):
        mine = [t for t in trials if t[0] == unit]
        run = sum(epochs for _, _, epochs in mine)
        assert int(report[unit]["epochs_run"]) == run
        assert int(report[unit]["epochs_full"]) == 4 * 6
        assert float(report[unit]["epochs_saved_share"]) == pytest.approx(1 - run / 24)
        assert int(report[unit]["stopped"]) == sum(1 for t in mine if not t[1])
    assert (experiment / "search_report.png").stat().st_size > 10_000
    text = (experiment / "search_report.md").read_text()
    assert "| dense |" in text and "| snip_sp0.9 |" in text


def _csv(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_analysis_uses_the_final_trials_and_says_the_recipes_were_tuned(tuned, tmp_path):
    experiment = tuned["experiment"]
    done = run_plot(str(experiment), "--out", str(tmp_path / "plot"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Recipes tuned (tuned)" in done.stdout and "12 search trials" in done.stdout
    results = _csv(tmp_path / "plot" / "results.csv")
    assert {row["seed"] for row in results} == {"0"}  # never a search seed
    summary = (tmp_path / "plot" / "summary.md").read_text()
    assert "search_report.md" in summary
    everything = run_plot(str(experiment), "--all", "--out", str(tmp_path / "all"))
    assert everything.returncode == 0, everything.stderr[-2000:]
    excluded = _csv(tmp_path / "all" / "excluded_trials.csv")
    searched = [row for row in excluded if row["trial_status"] == "search"]
    assert len(searched) == 12
    # Listed at their search seed, stopped ones too (their config's seed is a final seed).
    assert {row["seed"] for row in searched} == {"100"}
    assert {row["seed"] for row in _csv(tmp_path / "all" / "results.csv")
            if row["trial_status"] == "finished"} == {"0"}


def test_one_more_final_seed_runs_only_its_trials_and_a_changed_search_is_refused(tuned):
    experiment, work = tuned["experiment"], tuned["work"]
    before = {p: p.stat().st_mtime_ns for p in (experiment / "search").glob("*/*/result.json")}
    grown = run_sweep(str(tuned["path"]), "--storage", str(work / "out"),
                      "--set", "grid.seed=[0, 1]", cwd=work, timeout=600)
    assert grown.returncode == 0, grown.stdout[-3000:] + grown.stderr[-3000:]
    assert "searched before; its selection is reused" in grown.stdout
    assert "2 new trial(s) to run, 2 finished trial(s) reused" in grown.stdout
    after = {p: p.stat().st_mtime_ns for p in (experiment / "search").glob("*/*/result.json")}
    assert after == before  # no search trial ran again
    seeds = sorted(json.loads(p.read_text())["trial"]["seed"]
                   for p in experiment.glob("*/params.json"))
    assert seeds == [0, 0, 1, 1]

    sweep = yaml.safe_load(tuned["path"].read_text())
    sweep["search"]["space"]["train.lr"] = {"loguniform": [0.01, 1.0]}
    edited = work / "edited" / "tuned.yaml"
    edited.parent.mkdir()
    edited.write_text(yaml.safe_dump(sweep))
    changed = run_sweep(str(edited), "--storage", str(work / "out"), cwd=work)
    assert changed.returncode == 2
    assert changed.stderr.count("\n") == 1 and "Traceback" not in changed.stderr
    assert '"loguniform": [0.01, 0.5]' in changed.stderr and "[0.01, 1.0]" in changed.stderr


def test_a_killed_search_resumes_with_its_searchers_state(tmp_path):
    path = write(tmp_path / "resumed.yaml", grid={"seed": [0]},
                 base={**BASE, "train": {**BASE["train"], "epochs": 3, "max_batches": 12}},
                 search={"space": SPACE, "samples": 3, "searcher": "optuna",
                         "scheduler": "none", "seeds": [100, 101]},
                 experiments=[{"label": "dense", "config": {"method": "dense"}}],
                 max_concurrent_trials=1)
    unit = tmp_path / "out" / "resumed" / "search" / "dense"

    def one_search_trial_finished() -> bool:
        return any(any(r.get("final_round") for r in lines(t / "result.json"))
                   for t in search_trials(unit) if (t / "result.json").is_file())

    kill_sweep_when(one_search_trial_finished, str(path), "--storage", str(tmp_path / "out"),
                    cwd=tmp_path)
    first = {t.name: (t / "result.json").read_text() for t in search_trials(unit)
             if any(r.get("final_round") for r in lines(t / "result.json"))}
    assert len(first) < 6 and not (unit / "selection.json").exists()

    resumed = run_sweep(str(path), "--storage", str(tmp_path / "out"), cwd=tmp_path,
                        timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming its search" in resumed.stdout
    trials = search_trials(unit)
    # The restored Repeater and OptunaSearch go on where they were: 3 samples x 2 seeds, each
    # sample on both seeds, and the finished trials not run again.
    by_values: dict[str, set[int]] = {}
    for trial in trials:
        config = json.loads((trial / "params.json").read_text())
        seed = [100, 101][config.get("__trial_index__", 0)]
        by_values.setdefault(json.dumps(config["search"], sort_keys=True), set()).add(seed)
    assert len(trials) == 6 and all(seeds == {100, 101} for seeds in by_values.values())
    for name, text in first.items():
        assert (unit / name / "result.json").read_text() == text
    assert (unit / "selection.json").exists()
