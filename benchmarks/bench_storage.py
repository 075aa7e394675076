"""Storage: the bytes a trial's round checkpoints take, as multiples of W, the bytes of one fp32
copy of the network's state dict.

* The quickstart (`sweeps/quickstart.yaml`: dense, IMP with rewinding, SNIP and random at 80%,
  96% and 99.2%, 3 seeds; `--quick`: seed 0, `--smoke`) run through `sweeps/run_sweep.py`:
  per method and level, a trial's checkpoint bytes (every file under its `checkpoint_*`
  directories) and its whole directory's bytes, over W; per round, one round checkpoint's
  bytes over W; the whole experiment directory in MB.
* Beside each figure, what the same round states take as one `torch.save` file each (the earlier
  layout's `state.pt`, which also held the optimizer state this layout no longer keeps in
  finished rounds: the earlier figure here is a lower bound of what that layout took).
* A real ResNet-18 (11.2 M parameters, torchvision's, 10 classes): a one-shot IMP trial to 90%
  on synthetic 32 px images, one training batch per phase, in-process: its dense and its pruned
  round, over W.

Bars: an IMP trial with rewinding <= 4 W, a SNIP trial at 99.2% <= 1.5 W, the whole quickstart
<= 120 MB.

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
    return sorted(path for path in trial_dir.glob("checkpoint_*")
                  if (path / "metrics.json").is_file())


def trial_label(trial_dir: Path) -> str:
    raw = json.loads((trial_dir / "params.json").read_text())["trial"]
    method = raw["method"]
    target = (raw.get("prune") or {}).get("target_sparsity")
    return method if method in ("dense", "imp") or target is None else f"{method} {target:g}"


def trial_figures(trial_dir: Path, w: int) -> dict[str, Any]:
    checkpoints = round_checkpoints(trial_dir)
    stored = sum(tree_bytes(path) for path in trial_dir.glob("checkpoint_*"))
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
    if quick:  # one seed, a few batches per phase: the same networks, rounds and files
        spec = yaml.safe_load(sweep.read_text())
        sweep = common.write_sweep(work, {**spec, "grid": {**spec["grid"], "seed": [0]}})
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
    return {"w_bytes": w, "sweep_wall_s": wall, "experiment_mb": tree_bytes(experiment) / 1e6,
            "trials": len(trials), "methods": methods}


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
            **trial_figures(trial_dir, w)}


def markdown(quickstart: dict[str, Any], resnet: dict[str, Any]) -> str:
    lines = [
        f"The quickstart ({quickstart['trials']} trials, W = {quickstart['w_bytes'] / 1e6:.2f} MB"
        f"): {quickstart['experiment_mb']:.1f} MB in all.",
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
        f"state.pt files {resnet['legacy_w']:.2f} W (rounds: {legacy}).",
        "",
        "Means over a method's seeds. \"As state.pt files\": the same round states saved as one "
        "torch.save file each, the earlier layout, less the optimizer state it also kept.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quickstart's --smoke run")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        quickstart = quickstart_storage(Path(tmp), args.quick)
        resnet = resnet18_rounds(Path(tmp), args.quick)
    methods = quickstart["methods"]
    imp, snip = methods["imp"]["checkpoints_w"], methods["snip 0.992"]["checkpoints_w"]
    size = quickstart["experiment_mb"]
    common.emit(
        {
            "benchmark": "storage",
            "quick": args.quick,
            "quickstart": quickstart,
            "resnet18": resnet,
            "bars": [
                common.bar("IMP trial with rewinding (quickstart), checkpoints", imp,
                           f"<= {IMP_BAR_W:g} W", imp <= IMP_BAR_W, "W"),
                common.bar("SNIP trial at 99.2% (quickstart), checkpoints", snip,
                           f"<= {SNIP_BAR_W:g} W", snip <= SNIP_BAR_W, "W"),
                common.bar("whole quickstart experiment", size, f"<= {EXPERIMENT_BAR_MB:g} MB",
                           size <= EXPERIMENT_BAR_MB, "MB"),
            ],
            "markdown": markdown(quickstart, resnet),
        },
        started,
    )


if __name__ == "__main__":
    main()
