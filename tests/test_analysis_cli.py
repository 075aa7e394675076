"""analysis/plot.py: files written, terminal summary, exit codes, several experiments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis import plot

try:
    from fixtures_experiments import TrialSpec, build_experiment, build_standard_experiment
except ImportError:  # tests/ collected as a package
    from tests.fixtures_experiments import TrialSpec, build_experiment, build_standard_experiment

REPO = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _script(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "analysis/plot.py", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    exp = build_standard_experiment(tmp_path_factory.mktemp("cli"))
    proc = _script(exp)
    assert proc.returncode == 0, proc.stderr
    return exp, proc


def test_script_writes_tables_and_figures(written):
    exp, proc = written
    for name in [
        "results.csv",
        "summary.csv",
        "summary.md",
        "excluded_trials.csv",
        "accuracy_vs_params.png",
        "accuracy_vs_params.svg",
        "accuracy_vs_round.png",
        "layer_sparsity.png",
    ]:
        assert (exp / name).is_file(), name
        assert str(exp / name) in proc.stdout
    for name in ["accuracy_vs_params.png", "accuracy_vs_round.png", "layer_sparsity.png"]:
        data = (exp / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 20_000, name
    assert "<svg" in (exp / "accuracy_vs_params.svg").read_text()


def test_results_csv_full_precision_and_statuses(written):
    exp, _ = written
    df = pd.read_csv(exp / "results.csv")
    assert set(df["trial_status"]) == {"finished", "errored", "unfinished", "diverged"}
    assert 0.812 in set(df["test_acc"])
    assert 0.501 in set(df["sparsity"])


def test_summary_csv_and_md_numbers(written):
    exp, proc = written
    summary = pd.read_csv(exp / "summary.csv")
    snip = summary[(summary["label"] == "SNIP") & (summary["target_sparsity_pct"] == 50)]
    assert snip["test_acc_mean_pct"].item() == pytest.approx(81.2, abs=1e-9)
    assert snip["delta_vs_dense_points"].item() == pytest.approx(-0.8, abs=1e-9)
    imp = summary[summary["label"] == "IMP iterative"]
    assert imp["matching_sparsity_pct"].unique().tolist() == pytest.approx([75.1])
    md = (exp / "summary.md").read_text()
    # 95% t half-width for dense: 4.302652729911275 * 2 / sqrt(3) = 4.968 points.
    assert "82.00 ± 4.97" in md
    assert "| SNIP | 50.10 | 50.00 |" in md
    assert "-0.80" in md
    assert "## Excluded trials (3)" in md
    for status in ("errored", "unfinished", "diverged"):
        assert f"| {status} |" in md
    assert "mean >= dense_mean - 1 points" in md
    # SNIP at 90%: 0.68, 0.70, 0.72 -> seed 1 is the mean; its command exports that round.
    seed1 = next(p.name for p in exp.glob("*method=snip,seed=1_*")
                 if '"target_sparsity": 0.9' in (p / "params.json").read_text())
    assert "## Networks to export" in md
    assert f"| {seed1} | 1 | 70.00 | `prunetune export {exp} --trial {seed1} --round 1` |" in md
    # Terminal: the same summary, the excluded trials and where files went.
    assert "excluded trials (3)" in proc.stdout
    assert "RuntimeError: CUDA out of memory" in proc.stdout
    assert "IMP iterative: 75.10% sparsity" in proc.stdout


def test_main_in_process_options(tmp_path):
    exp = build_standard_experiment(tmp_path)
    out = tmp_path / "report"
    code = plot.main(
        [
            str(exp),
            "--out",
            str(out),
            "--metric",
            "val_acc",
            "--ci",
            "0.9",
            "--bootstrap",
            "--tolerance",
            "2",
            "--params",
            "prunable",
            "--layer-sparsity",
            "0.9",
        ]
    )
    assert code == 0
    summary = pd.read_csv(out / "summary.csv")
    assert "val_acc_mean_pct" in summary.columns
    assert summary["ci_method"].str.startswith("bootstrap").all()
    assert (out / "accuracy_vs_params.png").is_file()
    assert not (exp / "summary.csv").exists()


def test_several_experiments_on_one_figure(tmp_path):
    a = build_standard_experiment(tmp_path / "a", name="imp")
    b = build_experiment(
        tmp_path / "b",
        "snip",
        [TrialSpec("snip", s, [(0.5, 0.79 + 0.01 * s)]) for s in range(3)],
    )
    out = tmp_path / "both"
    assert plot.main([str(a), str(b), "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv")
    # SNIP exists in both experiments: labels name the experiment; dense only in "imp".
    assert {"imp: SNIP", "snip: SNIP", "dense", "IMP iterative"} <= set(summary["label"])
    other = summary[summary["label"] == "snip: SNIP"].iloc[0]
    assert other["test_acc_mean_pct"] == pytest.approx(80.0, abs=1e-9)
    assert other["delta_vs_dense_points"] == pytest.approx(80.0 - 82.0, abs=1e-9)
    assert "pooled over experiments" in other["dense_source"]
    assert (out / "accuracy_vs_params.png").stat().st_size > 20_000


@pytest.mark.slow
def test_missing_directory_exit_2_no_traceback(tmp_path):
    proc = _script(tmp_path / "nope")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "nope" in proc.stderr and "no such directory" in proc.stderr


def _main(capsys, *args):
    code = plot.main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, err


def test_directory_without_results_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = _main(capsys, tmp_path / "empty")
    assert code == 2 and err.count("\n") == 1
    assert "no trial directories" in err
    # Trials exist but none reported a round.
    exp = build_experiment(tmp_path, "dead", [TrialSpec("dense", 0, [(0.0, 0.8)])])
    for result in exp.glob("*/result.json"):
        result.write_text("")
    code, err = _main(capsys, exp)
    assert code == 2 and "no round results" in err and err.count("\n") == 1


def test_only_failed_trials_exit_2_but_list_them(tmp_path, capsys):
    exp = build_experiment(tmp_path, "bad", [
        TrialSpec("imp", 0, [(0.0, 0.8), (0.5, 0.1)],
                  schedule="iterative", outcome="errored")])
    code, err = _main(capsys, exp)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error:")
    assert "no finished trial" in err and "RuntimeError" in err
    assert (exp / "results.csv").is_file() and (exp / "excluded_trials.csv").is_file()


@pytest.mark.slow
def test_script_runs_from_another_working_directory(written, tmp_path):
    exp, _ = written
    proc = subprocess.run(
        [sys.executable, str(REPO / "analysis" / "plot.py"), str(exp), "--out", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
