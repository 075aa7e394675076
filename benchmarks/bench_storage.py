"""Storage: the bytes a trial's round checkpoints take, as multiples of W, the bytes of one fp32
copy of the network's state dict.

* The quickstart (`sweeps/quickstart.yaml`: dense, IMP with rewinding, SNIP and random at 80%,
  96% and 99.2%, 3 seeds; `--quick`: dense, IMP, SNIP at 99.2%, seed 0, `--smoke`) run through
  `sweeps/run_sweep.py`: per method and level, a trial's checkpoint bytes (every file under
  its `round_*` directories) and its whole directory's bytes, over W; per round, one round
  checkpoint's bytes over W; the whole experiment directory in MB.
* Beside each figure, what the same round states take as one `torch.save` file each (the earlier
  layout's `state.pt`, which also held the optimizer state this layout no longer keeps in
  finished rounds: the earlier figure here is a lower bound of what that layout took).
* A real ResNet-18 (11.2 M parameters, torchvision's, 10 classes): a one-shot IMP trial to 90%
  on synthetic 32 px images, one training batch per phase, in-process: its dense and its pruned
  round, over W; and the seconds to write and read its pruned round in either layout.

* Bookkeeping at scale: experiments of 24, 240 and 960 trials made of copies of the quickstart's
  (each a seed and trial id of its own; its epoch rows repeated to `--epoch-rows` per trial, a
  real study's count; JSON files only): `analysis/plot.py`'s wall time and peak memory (its
  own `ru_maxrss`), and the disk guard's count of the trials' files (`synced_bytes`, once a
  minute) and scan of their round checkpoints.

Bars: an IMP trial with rewinding <= 4 W, a SNIP trial at 99.2% <= 1.5 W, the whole quickstart
<= 120 MB, `plot` on 960 trials peaking under 0.5 GB.

    python benchmarks/bench_storage.py [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import yaml

IMP_BAR_W, SNIP_BAR_W, EXPERIMENT_BAR_MB = 4.0, 1.5, 120.0


def tree_bytes(path: Path) -> int:
    """Bytes of every file under `path` (apparent sizes, as `du --apparent-size` counts)."""
    return sum((Path(root) / name).stat().st_size
               for root, _, names in os.walk(path) for name in names)


def legacy_bytes(checkpoint: Path) -> int:
    """The checkpoint's state as one `torch.save` file (the earlier layout's `state.pt`)."""
    import torch

    from trainables.checkpoints import load_round_checkpoint

    buffer = io.BytesIO()
    torch.save({**load_round_checkpoint(checkpoint), "format_version": 1}, buffer)
    return buffer.tell()


def weight_bytes(checkpoint: Path) -> int:
    """W: the bytes of one fp32 copy of the round's full (dense-shaped) state dict."""
    from trainables.checkpoints import load_round_checkpoint

    model = load_round_checkpoint(checkpoint)["model"]
    return sum(tensor.numel() * 4 if tensor.is_floating_point() else tensor.nbytes
               for tensor in model.values())


def round_checkpoints(trial_dir: Path) -> list[Path]:
    from trainables.trial_store import round_dirs

    return round_dirs(trial_dir)


def trial_label(trial_dir: Path) -> str:
    raw = json.loads((trial_dir / "params.json").read_text())["trial"]
    method = raw["method"]
    target = (raw.get("prune") or {}).get("target_sparsity")
    return method if method in ("dense", "imp") or target is None else f"{method} {target:g}"


def trial_figures(trial_dir: Path, w: int) -> dict[str, Any]:
    checkpoints = round_checkpoints(trial_dir)
    stored = sum(tree_bytes(path) for path in checkpoints)
    return {
        "checkpoints_w": stored / w,
        "trial_dir_w": tree_bytes(trial_dir) / w,
        "rounds_w": [tree_bytes(path) / w for path in checkpoints],
        "legacy_w": sum(legacy_bytes(path) for path in checkpoints) / w,
        "legacy_rounds_w": [legacy_bytes(path) / w for path in checkpoints],
    }


def quickstart_storage(work: Path, quick: bool) -> dict[str, Any]:
    storage = work / "out"
    sweep = common.REPO / "sweeps" / "quickstart.yaml"
    if quick:  # dense, IMP and SNIP at 99.2%, seed 0, a few batches per phase
        spec = yaml.safe_load(sweep.read_text())
        experiments = [{**e, "grid": {"prune.target_sparsity": [0.992]}} if "grid" in e else e
                       for e in spec["experiments"] if e["label"] in ("dense", "imp", "snip")]
        sweep = common.write_sweep(work, {**spec, "grid": {**spec["grid"], "seed": [0]},
                                          "experiments": experiments})
    wall = common.run_sweep(sweep, storage, ["--smoke"] if quick else [])
    (experiment,) = [path for path in storage.iterdir() if path.is_dir()]
    trials = sorted(path.parent for path in experiment.glob("*/params.json"))
    dense = next(path for path in trials if trial_label(path) == "dense")
    w = weight_bytes(round_checkpoints(dense)[0])
    per_trial: dict[str, list[dict[str, Any]]] = {}
    for trial_dir in trials:
        per_trial.setdefault(trial_label(trial_dir), []).append(trial_figures(trial_dir, w))
    methods = {}
    for label, figures in per_trial.items():
        methods[label] = {
            "trials": len(figures),
            **{key: statistics.mean(f[key] for f in figures)
               for key in ("checkpoints_w", "trial_dir_w", "legacy_w")},
            "rounds_w": [statistics.mean(r) for r in zip(*(f["rounds_w"] for f in figures),
                                                         strict=True)],
            "legacy_rounds_w": [statistics.mean(r) for r in zip(
                *(f["legacy_rounds_w"] for f in figures), strict=True)],
        }
    cache = experiment / "dense_cache"
    return {"experiment_dir": str(experiment), "w_bytes": w, "sweep_wall_s": wall,
            "experiment_mb": tree_bytes(experiment) / 1e6,
            "dense_cache_mb": tree_bytes(cache) / 1e6 if cache.is_dir() else 0.0,
            "dense_cache_entries": len([p for p in cache.iterdir() if p.is_dir()])
            if cache.is_dir() else 0,
            "trials": len(trials), "methods": methods}


def save_load_times(trial_dir: Path, reps: int) -> dict[str, float]:
    """Seconds to write and to read back the last round of `trial_dir` in either layout: one
    `torch.save` file, and this store (referencing the earlier rounds, as a trial writes it);
    the median of `reps` repetitions, the four interleaved."""
    import shutil

    import torch

    from trainables.checkpoints import (
        load_round_checkpoint,
        save_round_checkpoint,
        stored_tensors,
    )

    *earlier, last = round_checkpoints(trial_dir)
    state = load_round_checkpoint(last)
    state.pop("format_version")
    held = stored_tensors(earlier)
    legacy, store = trial_dir / "timed.pt", trial_dir / "checkpoint_timed"
    times: dict[str, list[float]] = {"save_state_pt_s": [], "save_store_s": [],
                                     "load_state_pt_s": [], "load_store_s": []}
    for _ in range(reps):
        shutil.rmtree(store, ignore_errors=True)
        times["save_state_pt_s"].append(common.timed(lambda: torch.save(state, legacy)))
        times["save_store_s"].append(common.timed(
            lambda: save_round_checkpoint(store, state, held)))
        times["load_state_pt_s"].append(common.timed(
            lambda: torch.load(legacy, map_location="cpu", weights_only=True)))
        times["load_store_s"].append(common.timed(lambda: load_round_checkpoint(store)))
    legacy.unlink()
    shutil.rmtree(store)
    return {key: common.median(values) for key, values in times.items()}


def resnet18_rounds(work: Path, quick: bool) -> dict[str, Any]:
    from trainables.reporting import DirectoryReporter
    from trainables.resolve import parse_trial_config
    from trainables.trial import run_trial

    raw = {
        "method": "imp", "seed": 0, "imp": {"schedule": "oneshot"},
        "prune": {"target_sparsity": 0.9},
        "data": {"name": "synthetic", "root": "unused", "image_size": 32},
        "model": {"name": "resnet18", "width": 8 if quick else 64},
        "train": {"epochs": 1, "batch_size": 8, "eval_batch_size": 32, "max_batches": 1,
                  "max_eval_batches": 1, "device": "cpu"},
        "measure": {"enabled": False},
    }
    trial_dir = work / "resnet18"
    run_trial(parse_trial_config(raw), DirectoryReporter(trial_dir), cpus=1)
    checkpoints = round_checkpoints(trial_dir)
    w = weight_bytes(checkpoints[0])
    return {"w_bytes": w, "width": raw["model"]["width"],
            **trial_figures(trial_dir, w), **save_load_times(trial_dir, 1 if quick else 5)}


#: Trials in the scaled experiments, and the epoch rows each trial gets there.
SCALE_TRIALS = (24, 240, 960)
EPOCH_ROWS = 300
PLOT_BAR_GB = 0.5
#: Runs a script as __main__ and prints its own peak resident memory (KiB) when it ends: VmHWM
#: of /proc/self/status, the high-water mark of this program's memory since its exec (getrusage's
#: ru_maxrss would include the pages the child shared with this process when it was forked).
PEAK_PROBE = ("import re, runpy, sys\n"
              "sys.argv = sys.argv[1:]\n"
              "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
              "finally:\n    status = open('/proc/self/status').read()\n"
              "    print('peak_rss_kib', re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1),"
              " file=sys.stderr)\n")


def copy_trial(source: Path, target: Path, index: int, seed_offset: int, epoch_rows: int,
               template: list[dict[str, Any]]) -> None:
    """The JSON files of `source` as another trial: trial id, seed and name its own, its epoch
    rows repeated (epoch numbers continued) to `epoch_rows` in all; a trial that trained no
    epoch itself (its dense round reused from the cache, its only round) repeats `template`'s,
    another trial's, as the trial that trained the shared dense model would have them."""
    params = json.loads((source / "params.json").read_text())
    params["trial"]["seed"] += seed_offset
    seed = params["trial"]["seed"]
    parts = source.name.split("_")  # <label>_s<seed>[_<level>]_<experiment id>_<index>
    trial_id = f"{parts[-2]}_{index:05d}"
    directory = target / "_".join([parts[0], f"s{seed}", *parts[2:-2], trial_id])
    directory.mkdir(parents=True)
    (directory / "params.json").write_text(json.dumps(params))
    rows = [json.loads(line) for line in (source / "result.json").read_text().splitlines()]
    epochs = [row for row in rows if row.get("row_type") == "epoch"] or template
    extra = []
    for number in range(max(0, epoch_rows - len(epochs))):
        row = dict(epochs[number % len(epochs)])
        row["epoch"] = row["epoch"] + 1000 * (1 + number // len(epochs))
        extra.append(row)
    with (directory / "result.json").open("w") as stream:
        for row in extra + rows:
            row = {**row, "trial_id": trial_id}
            if "seed" in row:
                row["seed"] = seed
            if isinstance(row.get("config"), dict) and "trial" in row["config"]:
                row["config"] = {**row["config"], "trial": params["trial"]}
            stream.write(json.dumps(row) + "\n")
    for path in [*source.glob("round_*/metrics.json"), source / "rounds.json"]:
        if path.is_file():
            copied = directory / path.relative_to(source)
            copied.parent.mkdir(parents=True, exist_ok=True)
            copied.write_bytes(path.read_bytes())


def epoch_rows_of(trial_dir: Path) -> list[dict[str, Any]]:
    lines = (trial_dir / "result.json").read_text().splitlines()
    return [row for row in map(json.loads, lines) if row.get("row_type") == "epoch"]


def scaled_experiment(source: Path, target: Path, trials: int, epoch_rows: int) -> Path:
    originals = sorted(path.parent for path in source.glob("*/params.json"))
    template = next(rows for trial in originals if (rows := epoch_rows_of(trial)))
    for index in range(trials):
        copy = index // len(originals)
        copy_trial(originals[index % len(originals)], target, index, 1000 * copy, epoch_rows,
                   template)
    for path in source.iterdir():  # the sweep's own files (prunetune_sweep.json, ...)
        if path.is_file() and path.suffix == ".json" and not path.name.startswith(
                ("experiment_state", "basic-variant")):
            (target / path.name).write_bytes(path.read_bytes())
    return target


def plot_cost(experiment: Path, out: Path) -> dict[str, float]:
    """`analysis/plot.py` on `experiment`: wall seconds and its peak resident memory."""
    import subprocess
    import sys

    command = [sys.executable, "-c", PEAK_PROBE, str(common.REPO / "analysis" / "plot.py"),
               str(experiment), "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=common.REPO, env=common.sweep_env(), capture_output=True,
                          text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"plot failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    peak = next(int(line.split()[1]) for line in done.stderr.splitlines()
                if line.startswith("peak_rss_kib"))
    return {"wall_s": wall, "peak_rss_gb": peak * 1024 / 1e9}


def scan_cost(experiment: Path) -> dict[str, float]:
    """The disk guard's periodic work on `experiment`: counting the files Ray copies (once a
    minute) and finding the round checkpoints (when the disk fills)."""
    from sweeps.disk_guard import round_checkpoint_dirs, synced_bytes

    return {"synced_bytes_s": common.timed(lambda: synced_bytes(experiment)),
            "round_checkpoints_s": common.timed(lambda: round_checkpoint_dirs(experiment))}


def analysis_at_scale(source: Path, work: Path, sizes: tuple[int, ...],
                      epoch_rows: int) -> dict[str, Any]:
    figures = {}
    for trials in sizes:
        experiment = scaled_experiment(source, work / f"scaled_{trials}" / "study", trials,
                                       epoch_rows)
        figures[str(trials)] = {
            "json_mb": tree_bytes(experiment) / 1e6,
            **plot_cost(experiment, work / f"scaled_{trials}" / "plots"),
            **scan_cost(experiment),
        }
    return {"epoch_rows_per_trial": epoch_rows, "trials": figures}


def markdown(quickstart: dict[str, Any], resnet: dict[str, Any], scale: dict[str, Any]) -> str:
    lines = [
        f"The quickstart ({quickstart['trials']} trials, W = {quickstart['w_bytes'] / 1e6:.2f} MB"
        f"): {quickstart['experiment_mb']:.1f} MB in all, of which `dense_cache/` (the dense "
        f"models that trials of one recipe share and reference) "
        f"{quickstart['dense_cache_mb']:.1f} MB for {quickstart['dense_cache_entries']} "
        "recipes (one per seed).",
        "",
        "| trial | checkpoints (W) | trial directory (W) | as state.pt files (W) | "
        "per round (W) | per round as state.pt (W) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, m in quickstart["methods"].items():
        rounds = ", ".join(f"{x:.2f}" for x in m["rounds_w"])
        legacy = ", ".join(f"{x:.2f}" for x in m["legacy_rounds_w"])
        lines.append(f"| {label} | {m['checkpoints_w']:.2f} | {m['trial_dir_w']:.2f} | "
                     f"{m['legacy_w']:.2f} | {rounds} | {legacy} |")
    rounds = ", ".join(f"{x:.2f}" for x in resnet["rounds_w"])
    legacy = ", ".join(f"{x:.2f}" for x in resnet["legacy_rounds_w"])
    lines += [
        "",
        f"ResNet-18 (width {resnet['width']}, W = {resnet['w_bytes'] / 1e6:.1f} MB), one-shot "
        f"IMP to 90%: checkpoints {resnet['checkpoints_w']:.2f} W (rounds: {rounds}); as "
        f"state.pt files {resnet['legacy_w']:.2f} W (rounds: {legacy}). Writing its pruned "
        f"round takes {resnet['save_store_s']:.2f} s (as a state.pt file: "
        f"{resnet['save_state_pt_s']:.2f} s), reading it back {resnet['load_store_s']:.2f} s "
        f"(state.pt: {resnet['load_state_pt_s']:.2f} s); the store hashes every tensor when "
        "writing and checks it when reading (medians of 5, interleaved).",
        "",
        "Means over a method's seeds. \"As state.pt files\": the same round states saved as one "
        "torch.save file each, the earlier layout, less the optimizer state it also kept.",
        "",
        f"Bookkeeping at scale: copies of the quickstart's trials, {scale['epoch_rows_per_trial']}"
        " epoch rows each (JSON files only).",
        "",
        "| trials | JSON (MB) | `plot` wall (s) | `plot` peak memory (GB) | disk guard: count of "
        "the synced files (ms) | disk guard: round checkpoints found (ms) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for trials, f in scale["trials"].items():
        lines.append(f"| {trials} | {f['json_mb']:.0f} | {f['wall_s']:.1f} | "
                     f"{f['peak_rss_gb']:.2f} | {1000 * f['synced_bytes_s']:.1f} | "
                     f"{1000 * f['round_checkpoints_s']:.1f} |")
    lines += ["", "`plot` wall includes its start (Python, pandas, matplotlib). The disk guard "
              "counts the synced files once a minute (and when the free space nears them), "
              "and finds the round checkpoints only when the disk fills."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the quickstart's --smoke run, seed 0; 24 trials at scale")
    parser.add_argument("--epoch-rows", type=int, default=EPOCH_ROWS,
                        help="epoch rows per trial in the scaled experiments")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        quickstart = quickstart_storage(Path(tmp), args.quick)
        resnet = resnet18_rounds(Path(tmp), args.quick)
        sizes, epoch_rows = ((24,), 20) if args.quick else (SCALE_TRIALS, args.epoch_rows)
        scale = analysis_at_scale(Path(quickstart.pop("experiment_dir")), Path(tmp), sizes,
                                  epoch_rows)
    methods = quickstart["methods"]
    imp, snip = methods["imp"]["checkpoints_w"], methods["snip 0.992"]["checkpoints_w"]
    size = quickstart["experiment_mb"]
    largest = scale["trials"][str(max(sizes))]
    common.emit(
        {
            "benchmark": "storage",
            "quick": args.quick,
            "quickstart": quickstart,
            "resnet18": resnet,
            "scale": scale,
            "bars": [
                common.bar("IMP trial with rewinding (quickstart), checkpoints", imp,
                           f"<= {IMP_BAR_W:g} W", imp <= IMP_BAR_W, "W"),
                common.bar("SNIP trial at 99.2% (quickstart), checkpoints", snip,
                           f"<= {SNIP_BAR_W:g} W", snip <= SNIP_BAR_W, "W"),
                common.bar("whole quickstart experiment", size, f"<= {EXPERIMENT_BAR_MB:g} MB",
                           size <= EXPERIMENT_BAR_MB, "MB"),
                common.bar(f"plot's peak memory, {max(sizes)} trials x {epoch_rows} epoch rows",
                           largest["peak_rss_gb"], f"< {PLOT_BAR_GB:g} GB",
                           largest["peak_rss_gb"] < PLOT_BAR_GB, "GB"),
            ],
            "markdown": markdown(quickstart, resnet, scale),
        },
        started,
    )


if __name__ == "__main__":
    main()
