"""Build synthetic prunetune experiment directories in Ray Tune 2.60's on-disk layout, with rows
and configs in the schema prunetune really writes.

Each trial's config is a real `TrialConfig` (validated and written out in full, as the planner
writes it; `params.json` is `{"trial": config}`, as run_sweep's `param_space` gives it). Its rows
are copies of rows a real tiny trial of the same method wrote (run once per process, through
`DirectoryReporter`), with the numbers a test needs planted in: the field names, tags and shapes
are the real writer's, and planting a field the real rows lack is an error, so the analysis
tests never read files the trainable could not write. Ray's own fields (`timestamp`,
`checkpoint_dir_name`, `training_iteration`, `config`, ...) are added as Ray adds them
(checked against a real run), and so are its experiment-level files (`experiment_state-*.json`,
`tuner.pkl`). Each round gets its slot `round_00000k/` holding its `metrics.json`, named by the
round row's `round_checkpoint` (trainables/trial_store.py).

The numbers are chosen by the caller, so tests can compare aggregates with hand-computed values.
"""

from __future__ import annotations

import csv
import functools
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.schema import ROUND_CHECKPOINT

PRUNABLE_DENSE = 1_000_000
TOTAL_DENSE = 1_010_000  # 10,000 non-prunable parameters (biases, batch norm)
LAYERS = {"conv1.weight": 200_000, "layer1.0.conv1.weight": 300_000, "fc.weight": 500_000}
#: Fields a test may plant that real rows lack: to check that the analysis tolerates them.
TOLERATED_EXTRAS = {"some_future_field"}


@dataclass
class TrialSpec:
    """One synthetic trial of a real method: a round per entry of ``rounds`` as
    (target_sparsity, test_acc). ``schedule`` is IMP's or channels' (iterative / oneshot).

    ``outcome``: "finished" (last round has final_round true), "errored" (error.txt, no final
    round), "unfinished" (no final round, no error.txt) or "diverged" (last round status
    "diverged" and final). ``sparsity_offset`` is added to the target to make the measured
    sparsity differ from it.
    """

    method: str
    seed: int
    rounds: list[tuple[float, float]]
    schedule: str | None = None
    outcome: str = "finished"
    sparsity_offset: float = 0.0
    val_offset: float = -0.01
    extra_config: dict[str, Any] = field(default_factory=dict)
    epochs_per_round: int = 2
    round_fields: list[dict[str, Any]] = field(default_factory=list)
    """Per round (in order), fields merged into its row last: measured cost, or tags that
    override the defaults (label, level_by, target_sparsity, ...)."""


def _nested(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _raw_config(spec: TrialSpec) -> dict[str, Any]:
    """The spec as a config a user would write."""
    raw: dict[str, Any] = {"method": spec.method, "seed": spec.seed,
                           "train": {"epochs": spec.epochs_per_round, "lr": 0.001},
                           "measure": {"enabled": False}}
    pruned = [target for target, _ in spec.rounds if target > 0]
    if spec.method == "imp":
        imp = {"schedule": spec.schedule or "iterative"}
        if imp["schedule"] == "iterative":
            imp.update(rounds=len(pruned), rate=pruned[0])
        else:
            raw["prune"] = {"target_sparsity": pruned[-1]}
        raw["imp"] = imp
    elif spec.method == "channels":
        raw["channels"] = {"schedule": spec.schedule or "oneshot"}
        if "channels.channel_fraction" not in spec.extra_config:
            raw["prune"] = {"target_sparsity": pruned[-1]}
    elif spec.method == "budget_dense":
        raw["budget_dense"] = {"of": "imp"}
    elif spec.method != "dense":
        raw["prune"] = {"target_sparsity": pruned[-1]}
    for dotted, value in spec.extra_config.items():
        _nested(raw, dotted, value)
    return raw


def _config(spec: TrialSpec) -> Any:
    from trainables.resolve import parse_trial_config

    return parse_trial_config(_raw_config(spec), source=f"fixture {spec.method}")


@functools.cache
def _real_rows(raw_json: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """An epoch row and the last round row of a real tiny run of the config `raw_json` (its
    --smoke form: a width-4 network, a few batches a phase)."""
    from sweeps.plan import plan_sweep
    from trainables.reporting import DirectoryReporter
    from trainables.trial import run_trial

    raw = json.loads(raw_json)
    raw["model"] = {"name": "resnet18_cifar", "width": 4}
    raw["train"] = {**raw.get("train", {}), "batch_size": 32, "eval_batch_size": 512,
                    "device": "cpu"}
    with tempfile.TemporaryDirectory(prefix="prunetune-fixture-") as directory:
        plan = plan_sweep({"name": "fixture", "experiments": [{"config": raw}]}, "fixture",
                          smoke=True, launch_dir=Path(directory))
        reporter = DirectoryReporter(Path(directory) / "trial")
        run_trial(plan.trials[0].config, reporter, cpus=1)
    epoch = next(row for row in reporter.rows if row["row_type"] == "epoch")
    last_round = [row for row in reporter.rows if row["row_type"] == "round"][-1]
    return epoch, last_round


def _template(spec: TrialSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """Real rows of a trial like `spec`'s: its method and schedule (the seed and the levels do
    not change which fields a row has)."""
    raw = _raw_config(spec)
    for key in ("seed", "prune", "train"):
        raw.pop(key, None)
    for section in ("imp", "channels"):
        for level in ("rounds", "rate", "channel_fraction"):
            raw.get(section, {}).pop(level, None)
    return _real_rows(json.dumps(raw, sort_keys=True))


@functools.cache
def measured_fields() -> frozenset[str]:
    """The cost fields a real round row has when its round is measured (batch sizes 1, 64)."""
    raw = {"method": "dense", "measure": {"batch_sizes": [1, 64], "budget_s": 0.0,
                                          "min_repeats": 1}}
    return frozenset(_real_rows(json.dumps(raw, sort_keys=True))[1])


def _planted(template: dict[str, Any], planted: dict[str, Any],
             allowed: frozenset[str] = frozenset()) -> dict[str, Any]:
    unknown = set(planted) - set(template) - allowed - TOLERATED_EXTRAS
    if unknown:
        raise AssertionError(f"the fixture plants fields no real row has: {sorted(unknown)}")
    return {**template, **planted}


def write_trial(exp_dir: Path, index: int, spec: TrialSpec, exp_id: str = "a1b2c") -> Path:
    """Write one trial directory and return its path."""
    from trainables.methods import METHODS

    trial_id = f"{exp_id}_{index:05d}"
    trial_dir = exp_dir / f"train_fn_{trial_id}_{index}_method={spec.method},seed={spec.seed}"
    trial_dir = Path(str(trial_dir) + "_2026-01-01_00-00-00")
    trial_dir.mkdir(parents=True)
    typed = _config(spec)
    config = {"trial": typed.model_dump(mode="json")}
    (trial_dir / "params.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    epoch_template, round_template = _template(spec)
    tags = METHODS.get(typed.method).row_tags(typed)

    rows: list[dict[str, Any]] = []
    iteration = 0
    total_time = 0.0
    last = len(spec.rounds) - 1 + (0 if spec.method in ("dense", "imp") else 1)
    # Like the trainables: only methods that start from the dense model report a round 0.
    first = 0 if spec.method in ("dense", "imp") else 1
    for round_index, (target, acc) in enumerate(spec.rounds, start=first):
        for epoch in range(spec.epochs_per_round):
            iteration += 1
            total_time += 1.5
            epoch_row = _planted(epoch_template, {
                "row_type": "epoch",
                "round": round_index,
                "epoch": epoch,
                "train_loss": 1.0 / (epoch + 1),
                "train_acc": acc,
                "val_acc": acc - 0.01,
                "lr": 0.001,
                "epoch_time_s": 1.5,
                "images_per_s": 1000.0,
            })
            if round_index == 0 or spec.method == "dense":
                epoch_row.pop("sparsity", None)  # a dense phase has no mask
            rows.append(_ray_fields(epoch_row, trial_id, config, iteration, total_time, None))
        sparsity = target + spec.sparsity_offset if target > 0 else 0.0
        prunable = round((1.0 - sparsity) * PRUNABLE_DENSE)
        is_last = round_index == last
        final = is_last and spec.outcome in ("finished", "diverged")
        layer_sparsity = {}
        for param, numel in LAYERS.items():
            # Deeper layers pruned harder; remaining counts consistent with the layer sparsity.
            share = sparsity * (
                0.5 if param == "conv1.weight" else 1.1 if param == "fc.weight" else 1.0
            )
            share = min(share, 1.0)
            remaining = round((1.0 - share) * numel)
            layer_sparsity[param] = {
                "numel": numel,
                "remaining": remaining,
                "sparsity": 1.0 - remaining / numel,
            }
        round_row = _planted(round_template, {
            **tags,
            "method": spec.method,
            "seed": spec.seed,
            "round": round_index,
            "target_sparsity": target,
            "sparsity": sparsity,
            "params_total": prunable + (TOTAL_DENSE - PRUNABLE_DENSE),
            "params_prunable": prunable,
            "params_total_dense": TOTAL_DENSE,
            "params_prunable_dense": PRUNABLE_DENSE,
            "val_acc": acc + spec.val_offset,
            "test_acc": acc,
            "best_epoch": spec.epochs_per_round - 1,
            "epochs": spec.epochs_per_round,
            "round_time_s": 1.5 * spec.epochs_per_round,
            "status": "diverged" if (is_last and spec.outcome == "diverged") else "ok",
            "final_round": final,
            "layer_sparsity": {name: layer["sparsity"] for name, layer in layer_sparsity.items()},
            "some_future_field": {"nested": [1, 2]},  # load_results must tolerate extras
        })
        if spec.round_fields:
            extra = spec.round_fields[round_index - first]
            round_row = _planted(round_row, extra, allowed=measured_fields())
        iteration += 1
        name = f"round_{round_index:06d}"  # the round's slot
        round_row[ROUND_CHECKPOINT] = name
        ckpt = trial_dir / name
        ckpt.mkdir()
        # As trainables/checkpoints.py writes it: the row, with the per-layer counts.
        (ckpt / "metrics.json").write_text(
            json.dumps({**round_row, "layer_sparsity": layer_sparsity}, indent=1)
        )
        (ckpt / "state.pt").write_bytes(b"not a real torch file: analysis must never read it")
        # Ray's checkpoint beside it only names the slot (and is kept for the newest only).
        rows.append(_ray_fields(round_row, trial_id, config, iteration, total_time,
                                f"checkpoint_{iteration:06d}"))

    with open(trial_dir / "result.json", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    flat_rows = [_flatten({k: v for k, v in r.items() if k != "config"}) for r in rows]
    columns: list[str] = []
    for row in flat_rows:
        columns.extend(k for k in row if k not in columns)
    with open(trial_dir / "progress.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat_rows)
    if spec.outcome == "errored":
        (trial_dir / "error.txt").write_text(
            "Failure # 1 (occurred at 2026-01-01_00-00-10)\n"
            "ray::ImplicitFunc.train() (pid=1, ip=192.0.2.2, repr=train_fn)\n"
            '  File "trainables/imp.py", line 1, in train_fn\n'
            "RuntimeError: CUDA out of memory (synthetic)\n"
        )
    return trial_dir


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _ray_fields(row, trial_id, config, iteration, total_time, checkpoint_name):
    out = dict(row)
    out.update(
        {
            "timestamp": 1767225600 + iteration,
            "checkpoint_dir_name": checkpoint_name,
            "should_checkpoint": checkpoint_name is not None,
            "done": False,
            "training_iteration": iteration,
            "trial_id": trial_id,
            "date": "2026-01-01_00-00-00",
            "time_this_iter_s": 1.5,
            "time_total_s": total_time,
            "pid": 1234,
            "hostname": "node",
            "node_ip": "192.0.2.2",
            "config": config,
            "time_since_restore": total_time,
            "iterations_since_restore": iteration,
        }
    )
    return out


def build_experiment(
    root: Path,
    name: str,
    specs: list[TrialSpec],
    grid_keys: list[str] | None = None,
    write_sweep: bool = True,
) -> Path:
    """Write an experiment directory ``root/name`` holding one trial per spec."""
    exp_dir = Path(root) / name
    exp_dir.mkdir(parents=True)
    for index, spec in enumerate(specs):
        write_trial(exp_dir, index, spec)
    # Ray's experiment-level files: analysis must skip them.
    (exp_dir / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    (exp_dir / "basic-variant-state-2026-01-01_00-00-00.json").write_text("{}")
    (exp_dir / ".validate_storage_marker").write_text("")
    (exp_dir / "tuner.pkl").write_bytes(b"\x80\x04N.")
    if write_sweep:
        # What run_sweep writes (SweepPlan.summary): the file's spec, grid keys and trials.
        from sweeps.spec import SweepSpec

        seeds = sorted({spec.seed for spec in specs})
        written = SweepSpec(name=name, grid={"seed": seeds})
        sweep = {
            "name": name,
            "grid_keys": grid_keys or ["method", "seed", "prune.target_sparsity"],
            "sweep": written.model_dump(mode="json"),
            "trials": [{"label": spec.method, "trial": _config(spec).model_dump(mode="json")}
                       for spec in specs],
        }
        (exp_dir / "prunetune_sweep.json").write_text(json.dumps(sweep, indent=1))
    return exp_dir


# --- the standard experiment used by the tests, with numbers worked out by hand ---------------
#
# dense, seeds 0-2: test_acc 0.80, 0.82, 0.84 -> mean 0.82, std 0.02.
# IMP iterative, 3 rounds after round 0 (targets 0.5, 0.75, 0.875), seeds 0-2:
#   round 0 (dense training, must be ignored since dense trials exist): 0.90, 0.90, 0.90
#   round 1: 0.82, 0.83, 0.84 -> mean 0.83,  std 0.01
#   round 2: 0.81, 0.815, 0.82 -> mean 0.815, std 0.005
#   round 3: 0.77, 0.79, 0.81 -> mean 0.79,  std 0.02
# IMP one-shot to 0.5 (rounds 0, 1), seeds 0-2: round 1: 0.80, 0.81, 0.85 -> mean 0.82,
#   std sqrt(((-.02)^2 + (-.01)^2 + .03^2)/2) = sqrt(0.0007)
# SNIP (scorer snip) at 0.5: 0.81, 0.812, 0.814 -> mean 0.812, std 0.002;
#   at 0.9: 0.68, 0.70, 0.72 -> mean 0.70, std 0.02
# random at init (method random), at 0.5, seeds 0 and 1 only: 0.74, 0.76 -> mean 0.75,
#   std sqrt(0.0002)
# Excluded, each with an outlier accuracy that would move any mean it entered:
#   IMP iterative seed 3, errored after 2 rounds; SNIP 0.9 seed 3 unfinished (no final round);
#   SNIP 0.5 seed 4 diverged.
# Measured sparsity = target + 0.001 for every pruned round.
IMP_TARGETS = [0.0, 0.5, 0.75, 0.875]
IMP_ACC = {0: [0.90, 0.82, 0.81, 0.77], 1: [0.90, 0.83, 0.815, 0.79], 2: [0.90, 0.84, 0.82, 0.81]}
DENSE_ACC = [0.80, 0.82, 0.84]
ONESHOT_ACC = [0.80, 0.81, 0.85]
SNIP_ACC = {0.5: [0.81, 0.812, 0.814], 0.9: [0.68, 0.70, 0.72]}
RANDOM_ACC = [0.74, 0.76]
OFFSET = 0.001


def standard_specs() -> list[TrialSpec]:
    specs: list[TrialSpec] = []
    for seed in range(3):
        specs.append(TrialSpec("dense", seed, [(0.0, DENSE_ACC[seed])]))
        specs.append(
            TrialSpec(
                "imp",
                seed,
                list(zip(IMP_TARGETS, IMP_ACC[seed], strict=True)),
                schedule="iterative",
                sparsity_offset=OFFSET,
            )
        )
        specs.append(
            TrialSpec(
                "imp",
                seed,
                [(0.0, 0.90), (0.5, ONESHOT_ACC[seed])],
                schedule="oneshot",
                sparsity_offset=OFFSET,
            )
        )
        for target, accs in SNIP_ACC.items():
            specs.append(
                TrialSpec("snip", seed, [(target, accs[seed])], sparsity_offset=OFFSET)
            )
    for seed in range(2):
        specs.append(TrialSpec("random", seed, [(0.5, RANDOM_ACC[seed])], sparsity_offset=OFFSET))
    specs.append(
        TrialSpec(
            "imp",
            3,
            [(0.0, 0.10), (0.5, 0.10)],
            schedule="iterative",
            outcome="errored",
            sparsity_offset=OFFSET,
        )
    )
    specs.append(
        TrialSpec(
            "snip", 3, [(0.9, 0.10)], outcome="unfinished", sparsity_offset=OFFSET
        )
    )
    specs.append(
        TrialSpec(
            "snip", 4, [(0.5, 0.10)], outcome="diverged", sparsity_offset=OFFSET
        )
    )
    return specs


def build_standard_experiment(root: Path, name: str = "toy_study", **kwargs) -> Path:
    return build_experiment(root, name, standard_specs(), **kwargs)
