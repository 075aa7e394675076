"""Tables for people: summary.csv (full precision, percent), summary.md and the terminal text."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from analysis.aggregate import EXPORT_COLUMNS, is_missing, latency_batches, line_keys


def _base_label(record: dict[str, Any], varying_extras: list[str], several_finals: bool) -> str:
    """The method's own label, as its rows carry it (`Method.row_tags`), plus what tells apart
    lines that share it."""
    label = record.get("label")
    label = str(record.get("method")) if is_missing(label) else str(label)
    if record.get("method") == "dense":
        return "dense"
    if (several_finals and record.get("level_by") == "round"
            and not is_missing(record.get("final_target_sparsity"))):
        label += f" to {100 * record['final_target_sparsity']:g}%"
    for key in varying_extras:
        label += f", {key}={record.get(key)}"
    return label


def line_labels(agg: pd.DataFrame) -> dict[tuple, str]:
    """A readable, unique label per line (and per dense reference) of an aggregate table.

    Keys are :func:`line_id` tuples. The experiment name is prepended only where the
    same label would otherwise appear for two experiments.
    """
    keys = line_keys(agg)
    lines = agg.drop_duplicates(subset=keys)
    extras = list(agg.attrs.get("extra_keys", []))
    non_dense = lines[lines["method"] != "dense"]
    varying = [k for k in extras if non_dense[k].astype(str).nunique() > 1]
    by_round = non_dense[non_dense["level_by"] == "round"]
    several_finals = by_round["final_target_sparsity"].nunique() > 1
    base = {}
    for _, row in lines.iterrows():
        record = row.to_dict()
        base[line_id(record, keys)] = (record["experiment"],
                                                _base_label(record, varying, several_finals))
    experiments_per_label: dict[str, set] = {}
    for experiment, label in base.values():
        experiments_per_label.setdefault(label, set()).add(experiment)
    return {
        key: (f"{experiment}: {label}" if len(experiments_per_label[label]) > 1 else label)
        for key, (experiment, label) in base.items()
    }


def line_id(row: Any, keys: list[str]) -> tuple:
    """Hashable identity of a line; NaN (no scorer, no schedule) compares equal to NaN."""
    return tuple("nan" if is_missing(row[k]) else row[k] for k in keys)


def label_for(agg: pd.DataFrame, labels: dict[tuple, str], row: Any) -> str:
    return labels[line_id(row, line_keys(agg))]


def summary_table(agg: pd.DataFrame, matching: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: one row per method line and level, accuracies and sparsities in percent.

    Full precision (no rounding). ``delta_vs_dense_points`` = mean - dense mean, in points.
    The line's matching sparsity is repeated on each of its rows.
    """
    labels = line_labels(agg)
    metric = str(agg["metric"].iloc[0])
    keys = line_keys(agg)
    match_by_key = {line_id(m, keys): m for _, m in matching.iterrows()}
    records = []
    for _, row in agg.iterrows():
        m = match_by_key.get(line_id(row, keys))
        record = {
            "label": label_for(agg, labels, row),
            "experiment": row["experiment"],
            "method": row["method"],
            "scorer": row["scorer"],
            "schedule": row["schedule"],
        }
        for extra in agg.attrs.get("extra_keys", []):
            record[extra] = row[extra]
        record.update({
            "level_by": row["level_by"],
            "round": row["round"],
            "target_sparsity_pct": 100 * row["target_sparsity"],
            "sparsity_pct": 100 * row["sparsity"],
            "params_total": row["params_total"],
            "params_prunable": row["params_prunable"],
            "n": row["n"],
            "seeds": row["seeds"],
            f"{metric}_mean_pct": 100 * row["mean"],
            f"{metric}_std_pct": 100 * row["std"],
            "ci_low_pct": 100 * row["ci_low"],
            "ci_high_pct": 100 * row["ci_high"],
            "ci_method": row["ci_method"],
            "ci_outside_0_100": bool(row["ci_outside_range"]),
            "dense_mean_pct": 100 * row["dense_mean"],
            "delta_vs_dense_points": 100 * row["delta_vs_dense"],
            "dense_source": row["dense_source"],
            "matching_sparsity_pct": (100 * m["matching_sparsity"]) if m is not None
            else math.nan,
        })
        record.update({column: row[column] for column in cost_columns(agg)})
        record.update({column: row[column] for column in EXPORT_COLUMNS})
        record["collapsed_seeds"] = row["collapsed_seeds"]
        records.append(record)
    return pd.DataFrame.from_records(records)


def cost_columns(agg: pd.DataFrame) -> list[str]:
    """The measured-cost columns of an aggregate that hold a value somewhere: MACs, MACs by
    nonzero weights, and per batch size the latency (ms) and the speedup against dense."""
    columns = ["flops", "flops_effective"]
    for batch in latency_batches(agg):
        columns += [f"latency_ms_b{batch}", f"speedup_b{batch}", f"disturbed_b{batch}",
                    f"disturbed_reason_b{batch}"]
    return [c for c in columns if c in agg.columns and agg[c].notna().any()]


def cost_headers(columns: list[str]) -> list[str]:
    """Headers of `cost_cells` for the cost columns `columns` (see `cost_columns`)."""
    headers = ["MMACs"] if "flops" in columns else []
    return headers + [f"b{c.removeprefix('latency_ms_b')} ms (x dense)"
                      for c in columns if c.startswith("latency_ms_b")]


def cost_cells(row: dict[str, Any], columns: list[str]) -> list[str]:
    """Cells for the cost columns of one summary row (MACs in millions; latency in ms with its
    paired speedup against dense, † where a seed's measurement stayed disturbed), under
    `cost_headers(columns)`."""
    cells = []
    if "flops" in columns:
        cells.append("n/a" if is_missing(row["flops"]) else f"{row['flops'] / 1e6:.3g}")
    for column in columns:
        if column.startswith("latency_ms_b"):
            batch = column.removeprefix("latency_ms_b")
            speedup = row.get(f"speedup_b{batch}")
            mark = DISTURBED_MARK if disturbed_seeds(row, batch) else ""
            cells.append("n/a" if is_missing(row[column]) else (
                f"{row[column]:.3g} ({'n/a' if is_missing(speedup) else f'{speedup:.2f}'}"
                f"{mark})"))
    return cells


#: Marks a speedup whose measurement stayed disturbed in some seed (see `disturbance_note`).
DISTURBED_MARK = "‡"


def disturbed_seeds(row: dict[str, Any], batch: str | int) -> int:
    """How many seeds of a summary row measured batch `batch` disturbed (0 if not recorded)."""
    count = row.get(f"disturbed_b{batch}")
    return 0 if is_missing(count) else int(count)


def speedup_note(agg: pd.DataFrame) -> str:
    """What the x-dense figures are, and the levels whose measurement stayed disturbed."""
    note = ("In brackets, the speedup over dense: each round timed against its trial's dense "
            "reference side by side in the same process (passes alternating), geometric mean "
            "over seeds; the ms are as measured, and depend on what else the machine did.")
    flagged = []
    for _, row in agg.iterrows():
        for batch in latency_batches(agg):
            if disturbed_seeds(row.to_dict(), batch):
                reason = row.get(f"disturbed_reason_b{batch}")
                flagged.append(f"{row.get('label', row['method'])} at batch {batch} "
                               f"({disturbed_seeds(row.to_dict(), batch)} seed(s): {reason})")
    if flagged:
        note += (f" {DISTURBED_MARK} the load changed while it was measured, in a measurement "
                 "and its repeat: " + "; ".join(flagged) + ".")
    return note


def _pct(value: float, digits: int = 2) -> str:
    return "n/a" if is_missing(value) else f"{value:.{digits}f}"


#: Marks an interval that reaches past 0% or 100% (a t interval with few, spread-out seeds).
OUTSIDE_MARK = "†"


def mean_ci_text(row: dict[str, Any], metric: str) -> str:
    """A summary row's mean and interval in percent, e.g. '97.96 ± 1.74' or '42.13 ± 69.58†'."""
    mean = row[f"{metric}_mean_pct"]
    if is_missing(row["ci_low_pct"]):
        if row["n"] > 1:
            return f"{mean:.2f} (no CI: {row['ci_method'].split(': ', 1)[-1]})"
        return f"{mean:.2f} (n=1, no CI)"
    half = (row["ci_high_pct"] - row["ci_low_pct"]) / 2
    mark = OUTSIDE_MARK if row["ci_outside_0_100"] else ""
    # Bootstrap and logit-t intervals need not be symmetric: show their ends then.
    if abs((mean - row["ci_low_pct"]) - (row["ci_high_pct"] - mean)) > 0.005:
        return f"{mean:.2f} [{row['ci_low_pct']:.2f}, {row['ci_high_pct']:.2f}]{mark}"
    return f"{mean:.2f} ± {half:.2f}{mark}"


INTERVAL_NAMES = {"t": "Student-t CI", "logit-t": "logit-t CI", "bootstrap": "bootstrap CI"}


def interval_name(agg: pd.DataFrame) -> str:
    """Short name of an aggregate's interval, e.g. '95% Student-t CI'."""
    interval = agg.attrs.get("interval", "t")
    return f"{100 * agg.attrs.get('ci', 0.95):g}% {INTERVAL_NAMES.get(interval, interval)}"


def interval_legend(agg: pd.DataFrame) -> str:
    """What an aggregate's intervals are, in words (and what a † means, when one is shown)."""
    interval = agg.attrs.get("interval", "t")
    text = {
        "t": "Student-t interval of the mean over seeds (assumes normal seed-to-seed "
             "variation)",
        "logit-t": "Student-t interval on the logit scale, mapped back to percent (always "
                   "inside 0-100%, shown as [low, high])",
        "bootstrap": "percentile bootstrap interval of the mean over seeds (seeded; too "
                     "narrow with few seeds)",
    }.get(interval, interval)
    text = f"{100 * agg.attrs.get('ci', 0.95):g}% {text}"
    if agg["ci_outside_range"].any():
        text += (f". {OUTSIDE_MARK} the interval reaches past 0% or 100%: too few seeds for "
                 "their spread to pin the mean down (`--interval logit-t` stays inside 0-100%)")
    return text


def _sparsity_cell(row: dict[str, Any]) -> str:
    if row["level_by"] == "dense":
        return "0 (dense)"
    text = f"{row['sparsity_pct']:.2f}"
    if row["level_by"] == "round":
        text += f" (round {int(row['round'])})"
    return text


def signed_text(value: float) -> str:
    """A change in points with its sign, e.g. '+0.56'; 'n/a' when missing."""
    return "n/a" if is_missing(value) else f"{value:+.2f}"


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table's lines; `|` inside a cell is escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return lines


def tuned_lines(tuned: list[dict[str, Any]]) -> list[str]:
    """What a reader must know of tuned recipes: they were chosen on validation accuracy by
    search trials that are not among the results, and where the report is."""
    return [
        f"Recipes tuned ({t['experiment']}): each unit's training recipe was chosen on "
        f"validation accuracy by {t['search_trials']} search trials on their own seeds, which "
        f"are not in these results (`--all` lists them); see {t['report']}."
        for t in tuned
    ]


def tuned_title(title: str, tuned: list[dict[str, Any]]) -> str:
    """A figure's or summary's title, saying when the recipes were tuned."""
    return f"{title} (recipes tuned on validation)" if tuned else title


def summary_markdown(
    summary: pd.DataFrame,
    matching: pd.DataFrame,
    excluded: pd.DataFrame,
    agg: pd.DataFrame,
    title: str,
    tolerance: float,
    params_column: str = "params_total",
    collapses: pd.DataFrame | None = None,
    checked: tuple[int, int] | None = None,
) -> str:
    """summary.md: the per-level table, the matching sparsities, layer collapse (when
    `collapses` is given: analysis/collapse.py), the rounds to export and the excluded
    trials."""
    metric = str(agg["metric"].iloc[0])
    ci_name = interval_name(agg)
    out = [f"# {title}", ""]
    out.append(
        f"{metric} in percent: mean over seeds ± half-width of the interval, or [low, high] "
        f"where it is not symmetric. Interval: {interval_legend(agg)}; intervals need "
        "n >= 2. Δ vs dense is in percentage points. Sparsity = measured pruned fraction of "
        "the prunable weights (mean over seeds); params = remaining nonzero parameters."
    )
    out.append("")
    tuned = tuned_lines(agg.attrs.get("tuned") or [])
    if tuned:
        out += [*tuned, ""]
    out.append("Dense reference: " + "; ".join(
        f"{exp}: {src}" for exp, src in agg.attrs.get("dense_sources", {}).items()) + ".")
    if not agg.attrs.get("dense_sources"):
        out[-1] = "Dense reference: none (no dense trials and no IMP round 0)."
    out.append("")
    costs = cost_columns(agg)
    header = ["method", "sparsity %", "target %", f"{params_column}", "n",
              f"{metric} % (± {ci_name})", "Δ vs dense"]
    rows = []
    for _, r in summary.iterrows():
        row = r.to_dict()
        rows.append([row["label"], _sparsity_cell(row), _pct(row["target_sparsity_pct"]),
                     f"{row[params_column]:,.0f}", int(row["n"]), mean_ci_text(row, metric),
                     signed_text(row["delta_vs_dense_points"]), *cost_cells(row, costs)])
    out += markdown_table(header + cost_headers(costs), rows)
    if costs:
        out += ["", "MMACs: millions of multiply-accumulates of one forward pass at batch 1 "
                "(mean over seeds). Latency: median ms of a forward pass at batch B on the "
                "trials' device (mean over seeds). " + speedup_note(summary)]
    out += ["", f"## Matching sparsity (tolerance {tolerance:g} point(s))", "",
            "The highest sparsity level whose mean accuracy is >= the dense mean minus the "
            f"tolerance (mean >= dense_mean - {tolerance:g} points). Levels need not be "
            "monotone: a qualifying level above a failing one still counts.", ""]
    labels = line_labels(agg)
    keys = line_keys(agg)
    mrows = []
    for _, m in matching.iterrows():
        label = labels.get(line_id(m, keys), str(m["method"]))
        if m["matched"]:
            mrows.append([label, _pct(100 * m["matching_sparsity"]),
                          _pct(100 * m["mean_at_matching"]), _pct(100 * m["dense_mean"])])
        else:
            mrows.append([label, "none", "n/a", _pct(100 * m["dense_mean"])])
    out += markdown_table(["method", "matching sparsity %", f"mean {metric} % there",
                      "dense mean %"], mrows)
    if collapses is not None:
        out += collapse_section(collapses, checked)
    out += export_section(summary, metric)
    out += ["", f"## Excluded trials ({len(excluded)})", ""]
    if excluded.empty:
        out.append("None: every trial finished without diverging.")
    else:
        out.append("Listed with their completed rounds in results.csv; left out of every "
                   "aggregate above.")
        out.append("")
        erows = [[r["experiment"], r["trial_id"], r["trial_status"], r["method"],
                  r["scorer"] if not is_missing(r["scorer"]) else "", r["seed"],
                  r["rounds_reported"], r["reason"]] for _, r in excluded.iterrows()]
        out += markdown_table(["experiment", "trial", "status", "method", "scorer", "seed",
                          "rounds", "reason"], erows)
    return "\n".join(out) + "\n"


def collapse_section(collapses: pd.DataFrame, checked: tuple[int, int] | None) -> list[str]:
    """summary.md's "Layer collapse": every round that left a layer with no weights."""
    done, total = checked or (0, 0)
    scope = f"{done} of the finished trials' {total} rounds checked, from their checkpoints"
    out = ["", "## Layer collapse", ""]
    if collapses.empty:
        return out + [f"None: every checked round keeps weights in every layer ({scope})."]
    out += [f"**Warning: {len(collapses)} round(s) leave a layer with no weights**, which cuts "
            "every path through it (the whole network, or a residual block's branch); their "
            f"points are marked ✕ in the figures ({scope}).", ""]
    rows = [[r["label"], r["seed"], int(r["round"]), _pct(100 * r["sparsity"]),
             r["dead_layers"].replace(";", ", ")] for _, r in collapses.iterrows()]
    return out + markdown_table(["method", "seed", "round", "sparsity %", "layers with no "
                                 "weights"], rows)


def collapse_warnings(collapses: pd.DataFrame, shown: int = 5) -> list[str]:
    """Terminal lines: the first `shown` collapsed rounds, and how many more."""
    lines = [f"warning: layer collapse: {r['label']} seed {r['seed']} round {int(r['round'])} "
             f"({100 * r['sparsity']:.2f}% sparsity): no weights left in "
             f"{r['dead_layers'].replace(';', ', ')}" for _, r in collapses.head(shown).iterrows()]
    if len(collapses) > shown:
        lines.append(f"warning: layer collapse in {len(collapses) - shown} more round(s): "
                     "see summary.md")
    return lines


def export_section(summary: pd.DataFrame, metric: str) -> list[str]:
    """summary.md's "Networks to export": per method and level, the round whose seed is closest
    to the mean, and the command that writes it as an ONNX file."""
    out = ["", "## Networks to export", "",
           f"Per method and level, the seed whose {metric} is closest to the mean (every seed's "
           "trial and round: `export_all` in summary.csv). `prunetune export DIR --trial NAME "
           "--round K` writes it as ONNX (`--format torchscript|safetensors`).", ""]
    rows = [[r["label"], _sparsity_cell(r.to_dict()), r["export_trial"],
             int(r["export_round"]), _pct(100 * r["export_value"]),
             f"`prunetune export {r['export_dir']} --trial {r['export_trial']} "
             f"--round {int(r['export_round'])}`"]
            for _, r in summary.iterrows()]
    return out + markdown_table(["method", "sparsity %", "trial", "round", f"its {metric} %",
                                 "command"], rows)


def terminal_text(summary: pd.DataFrame, matching: pd.DataFrame, excluded: pd.DataFrame,
                  agg: pd.DataFrame, tolerance: float) -> str:
    """A compact plain-text version of summary.md for the terminal."""
    metric = str(agg["metric"].iloc[0])
    lines = []
    width = max([len(s) for s in summary["label"]] + [6])
    costs = cost_columns(agg)
    lines.append(f"{'method':<{width}}  {'sparsity%':>19}  {'n':>2}  {metric + ' % ± CI':>22}"
                 f"  {'Δ dense':>7}" + "".join(f"  {h:>16}" for h in cost_headers(costs)))
    for _, r in summary.iterrows():
        row = r.to_dict()
        cells = "".join(f"  {cell:>16}" for cell in cost_cells(row, costs))
        lines.append(f"{row['label']:<{width}}  {_sparsity_cell(row):>19}  {int(row['n']):>2}  "
                     f"{mean_ci_text(row, metric):>22}  "
                     f"{signed_text(row['delta_vs_dense_points']):>7}" + cells)
    lines.append("")
    lines.append(f"interval: {interval_legend(agg)}")
    lines += tuned_lines(agg.attrs.get("tuned") or [])
    lines.append("dense reference: " + ("; ".join(
        f"{e}: {s}" for e, s in agg.attrs.get("dense_sources", {}).items()) or "none"))
    labels = line_labels(agg)
    keys = line_keys(agg)
    for _, m in matching.iterrows():
        label = labels.get(line_id(m, keys), str(m["method"]))
        value = (f"{100 * m['matching_sparsity']:.2f}% sparsity" if m["matched"]
                 else "none within tolerance")
        lines.append(f"matching sparsity (within {tolerance:g} pt of dense) {label}: {value}")
    if excluded.empty:
        lines.append("excluded trials: none")
    else:
        lines.append(f"excluded trials ({len(excluded)}), not in any aggregate:")
        for _, r in excluded.iterrows():
            lines.append(f"  {r['experiment']}/{r['trial_id']} {r['method']} seed {r['seed']}: "
                         f"{r['reason']}")
    return "\n".join(lines)
