"""Run every `bench_*.py` (full mode), write `benchmarks/results.json`, and refresh the results
table in `benchmarks/README.md` (between its `results:start` / `results:end` markers).

    python benchmarks/run_all.py            # all benchmarks, about 12-15 minutes on 2 cores
    python benchmarks/run_all.py --quick    # every --quick mode (a smoke run; not written)
    python benchmarks/run_all.py --only bench_latency   # refresh one; the others' figures stay
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: Cheapest first, so a broken benchmark shows up early.
BENCHMARKS = (
    "bench_gpu_packing",
    "bench_pruning_ops",
    "bench_input_pipeline",
    "bench_data_feed",
    "bench_dense_wait",
    "bench_framework_overhead",
    "bench_startup",
    "bench_memory",
    "bench_sweep_efficiency",
    "bench_latency",
    "bench_gpu_latency",
    "bench_storage",
    "bench_search",
    "bench_round_cost",
    "bench_busy_machine",
    "bench_export",
)
START, END = "<!-- results:start -->", "<!-- results:end -->"


def run(name: str, quick: bool) -> dict[str, Any]:
    command = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if quick else [])]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=HERE.parent, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        print(f"run_all: {name} failed:\n{done.stderr[-4000:]}", file=sys.stderr)
        return {"benchmark": name, "error": done.stderr[-4000:], "wall_s": wall}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"run_all: {name}: {wall:.0f} s", file=sys.stderr, flush=True)
    return result


def fmt(value: Any, unit: str) -> str:
    if value is None:
        return "pending"
    if unit == "fraction":
        return f"{100 * value:.2f}%"
    if isinstance(value, float):
        return f"{value:.3g} {unit}".strip()
    return f"{value} {unit}".strip()


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| benchmark | figure | value | bar | met |", "| --- | --- | --- | --- | --- |"]
    for name, result in results.items():
        if "error" in result:
            lines.append(f"| {name} | (failed) | | | no |")
            continue
        for row in result.get("bars", []):
            met = {True: "yes", False: "**no**", None: "n/a"}[row["met"]]
            if row["value"] is None:
                met = "pending"
            lines.append(
                f"| {name} | {row['name']} | {fmt(row['value'], row['unit'])} | "
                f"{row['bar']} | {met} |"
            )
    return "\n".join(lines)


def details(results: dict[str, dict[str, Any]]) -> str:
    """Each benchmark's own Markdown (its `markdown` field), under a heading of its name."""
    return "".join(
        f"\n### {name}\n\n{result['markdown']}\n"
        for name, result in results.items()
        if result.get("markdown")
    )


def update_readme(results: dict[str, dict[str, Any]], summary: dict[str, Any]) -> None:
    readme = HERE / "README.md"
    text = readme.read_text() if readme.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    machine = summary["machine"]
    refreshed = "".join(
        f" `{name}` was re-run alone at {date} (load average "
        f"{results[name].get('machine', {}).get('load_avg_1m_at_start')})."
        for name, date in summary.get("refreshed", {}).items()
    )
    block = (
        f"{START}\n"
        f"Taken {summary['date']} on {machine.get('cpu')} ({machine.get('cores')} cores, "
        f"{machine.get('memory_gib')} GiB, GPU: {machine.get('gpu') or 'none'}; torch "
        f"{machine.get('torch')}; 1-min load average {machine.get('load_avg_1m_at_start')} "
        f"when it started: a shared machine). `run_all.py` took {summary['wall_s']:.0f} s."
        f"{refreshed}\n\n"
        f"{table(results)}\n{details(results)}{END}"
    )
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    readme.write_text(head + block + tail)


def merged_with_previous(
    results: dict[str, dict[str, Any]], summary: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    path = HERE / "results.json"
    if not path.exists():
        return results, summary
    previous = json.loads(path.read_text())
    merged = {**previous["results"], **results}
    kept_summary = dict(previous["summary"])
    kept_summary["refreshed"] = {
        **kept_summary.get("refreshed", {}),
        **{name: summary["date"] for name in results},
    }
    return merged, kept_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="run every --quick mode instead")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = {name.removeprefix("bench_"): run(name, args.quick) for name in args.only}
    machine = next((r["machine"] for r in results.values() if "machine" in r), {})
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_s": time.perf_counter() - started,
        "quick": args.quick,
        "machine": machine,
    }
    print(table(results))
    print(f"run_all: {summary['wall_s']:.0f} s", file=sys.stderr)
    if not args.quick:
        if set(args.only) != set(BENCHMARKS):
            # A partial run refreshes its own figures and keeps everyone else's as they were.
            results, summary = merged_with_previous(results, summary)
        payload = {"summary": summary, "results": results}
        (HERE / "results.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
        update_readme(results, summary)
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
