"""Whether a page's generated block and one regenerated from results of another CPU agree within
the seed intervals.

The promise (docs/sweeps.md, "Reproducibility"): the same CPU model and commit give the pages'
numbers bit for bit; another CPU's float kernels round differently in the last bits, the training
trajectories drift apart, and the numbers land elsewhere inside the intervals over seeds. So on
another CPU, `make docs-check` compares the two blocks table by table:

- the tables must have the same header and the same rows (the method of each row, in order);
- every accuracy cell ("mean ± half-width", "mean [low, high]", or several joined by " / ") must
  hold as many intervals as its twin, and each interval must overlap its twin's: the two runs do
  not contradict each other at the seeds' precision;
- every other cell that differs (remaining parameters chosen by trained scores, measured
  latency, differences against dense) is listed, not judged: those depend on the trajectory or
  on the machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_INTERVAL = re.compile(
    r"(-?\d+(?:\.\d+)?)\s*(?:±\s*(\d+(?:\.\d+)?)|\[\s*(-?\d+(?:\.\d+)?),\s*(-?\d+(?:\.\d+)?)\])"
)
# CPU model names carry parentheses ("Intel(R) Xeon(R) Processor"), so only ";" ends one.
_CPU = re.compile(r"; ([^;]+?), \d+ cores, torch ")


@dataclass
class Comparison:
    """The outcome: `problems` (empty when consistent), intervals compared, other cells that
    differ."""

    problems: list[str] = field(default_factory=list)
    intervals: int = 0
    other_differences: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not self.problems


def block_cpu(block: str) -> str | None:
    """The CPU model a generated block's provenance line names, or None."""
    match = _CPU.search(block)
    return match.group(1) if match else None


def intervals(cell: str) -> list[tuple[float, float]]:
    """The (low, high) intervals written in a table cell, in order."""
    found = []
    for mean, half, low, high in _INTERVAL.findall(cell):
        if half:
            found.append((float(mean) - float(half), float(mean) + float(half)))
        else:
            found.append((float(low), float(high)))
    return found


def table_rows(block: str) -> list[list[str]]:
    """The cells of every Markdown table row in `block` (header included, rule lines not)."""
    rows = []
    for line in block.splitlines():
        line = line.strip()
        if line.startswith("|") and not set(line) <= set("|- "):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def compare_blocks(published: str, regenerated: str, name: str) -> Comparison:
    """Compare section `name`'s block as its page has it with one regenerated elsewhere."""
    result = Comparison()
    old, new = table_rows(published), table_rows(regenerated)
    if not old or not new or old[0] != new[0]:
        result.problems.append(f"{name}: the tables' headers differ")
        return result
    if [row[0] for row in old] != [row[0] for row in new]:
        result.problems.append(f"{name}: the tables list other rows (methods) or another order")
        return result
    for old_row, new_row in zip(old[1:], new[1:], strict=True):
        for column, before, after in zip(old[0], old_row, new_row, strict=True):
            where = f"{name}: {old_row[0]}, {column}"
            if "CI" not in column:  # not an accuracy column
                if before != after:
                    result.other_differences.append(f"{where}: {before} -> {after}")
                continue
            old_intervals, new_intervals = intervals(before), intervals(after)
            if len(old_intervals) != len(new_intervals) or not old_intervals:
                result.problems.append(f"{where}: {before!r} and {after!r} do not pair up")
                continue
            for (low, high), (new_low, new_high) in zip(old_intervals, new_intervals,
                                                        strict=True):
                result.intervals += 1
                if new_high < low or new_low > high:
                    result.problems.append(f"{where}: {after} lies outside {before} (no overlap)")
    return result
