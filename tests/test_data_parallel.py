"""Data-parallel trials (`resources.workers`) on the CPU: Ray Train's workers with gloo inside
Ray Tune trials, as a sweep runs them (`prunetune_trainable` with `scaling`).

- 2 workers against 1, same global batch and seed: IMP's and RigL's masks agree, every rank
  held the same mask (the rows' checksums equal the test's own hash of the saved masks), and
  the accuracy differences lie within the spread between seeds;
- a worker SIGKILLed mid-round: Ray Train restarts the group from the newest checkpoint and the
  round rows equal the uninterrupted run's;
- Tune stopping a data-parallel trial frees its workers' CPUs and placement group;
- an error no retry can fix, raised in a worker, ends the trial as itself, not as Ray Train's
  wrapper;
- sharded evaluation sums counts: its accuracy equals one process's, to the image.

The network has no BatchNorm (tests/plugins/plain_cnn.py): 2 workers then differ from 1 only
in the order of float additions. One Ray start for the module, 2 CPUs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.slow

PLUGIN = Path(__file__).parent / "plugins" / "plain_cnn.py"
# AdamW: this BatchNorm-free network learns little in a few SGD steps.
TRAIN = {"epochs": 2, "batch_size": 32, "max_batches": 20, "optimizer": "adamw", "lr": 0.01,
         "device": "cpu"}
MODEL = {"name": "plain_cnn", "width": 8}
IMP = {"method": "imp", "imp": {"rounds": 2, "rate": 0.5}}
RIGL = {"method": "rigl", "prune": {"target_sparsity": 0.8},
        "rigl": {"update_interval": 10, "end": 0.75}}
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def fault_marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The marker of a kill of rank 1 in round 1: created up front (disarmed) and removed by
    the fault test (armed). Set before Ray starts, so that every Ray worker inherits it."""
    marker = tmp_path_factory.mktemp("fault").resolve() / "killed"
    marker.write_text("disarmed")
    return marker


@pytest.fixture(scope="module")
def ray_dp(fault_marker: Path) -> Any:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    previous = os.environ.get("PRUNETUNE_FAULT")
    os.environ["PRUNETUNE_FAULT"] = f"kill_once:round=1,epoch=1,rank=1:{fault_marker}"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop("PRUNETUNE_FAULT", None)
        else:
            os.environ["PRUNETUNE_FAULT"] = previous


def _trial(tiny_trial: Any, kind: dict[str, Any], seed: int) -> dict[str, Any]:
    return tiny_trial(**kind, seed=seed, model=MODEL, train=TRAIN)


def _tune(trials: list[dict[str, Any]], storage: Path, name: str, workers: int,
          stop: dict[str, Any] | None = None, errors: bool = False
          ) -> dict[tuple[str, int], Path]:
    """Run `trials` as a sweep would, on `workers` workers each; {(method, seed): trial dir}."""
    from ray import tune

    from sweeps.worker_groups import FreeWorkerGroups
    from trainables.data_parallel import Scaling
    from trainables.plugins import resolve_plugins
    from trainables.ray_adapter import WAITING_TRIAL
    from trainables.tune_trainable import prunetune_trainable

    plugins = resolve_plugins([str(PLUGIN)], PLUGIN.parent, PLUGIN.parent)
    scaling = Scaling(workers, 1.0, 0.0, max_failures=1) if workers > 1 else None
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(prunetune_trainable, plugins=plugins, scaling=scaling),
            WAITING_TRIAL if scaling else {"cpu": 1}),
        param_space={"trial": tune.grid_search(trials)},
        tune_config=tune.TuneConfig(max_concurrent_trials=1 if scaling else None),
        run_config=tune.RunConfig(storage_path=str(storage), name=name, verbose=0, stop=stop,
                                  callbacks=[FreeWorkerGroups()]),
    )
    results = tuner.fit()
    if stop is None and not errors:
        assert not results.errors, results.errors
    return {(r.config["trial"]["method"], r.config["trial"]["seed"]): Path(r.path)
            for r in results}


def _rows(trial_dir: Path, kind: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    return [row for row in rows if row.get("row_type") == kind]


def _masks(trial_dir: Path, round_index: int) -> dict[str, torch.Tensor]:
    from trainables.checkpoints import load_round_checkpoint

    return load_round_checkpoint(trial_dir / f"round_{round_index:06d}")["masks"]


def _agreement(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    same = sum(int((a[name] == b[name]).sum()) for name in a)
    return same / sum(a[name].numel() for name in a)


def _own_checksum(mask: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the mask as this test lays it out (names, shapes, kept entries as bytes)."""
    digest = hashlib.sha256()
    for name in sorted(mask):
        keep = mask[name].bool().contiguous()
        digest.update(f"{name}:{tuple(keep.shape)}:".encode())
        digest.update(bytes(keep.flatten().tolist()))
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def runs(ray_dp: Any, tiny_trial: Any, tmp_path_factory: pytest.TempPathFactory
         ) -> dict[str, dict[tuple[str, int], Path]]:
    storage = tmp_path_factory.mktemp("dp").resolve()
    solo = [_trial(tiny_trial, kind, seed) for kind in (IMP, RIGL) for seed in SEEDS]
    pair = [_trial(tiny_trial, kind, 0) for kind in (IMP, RIGL)]
    return {"solo": _tune(solo, storage, "solo", 1), "pair": _tune(pair, storage, "pair", 2)}


@pytest.mark.parametrize(("method", "rounds", "bar"),
                         [("imp", (1, 2), 0.999), ("rigl", (1,), 0.99)])
def test_two_workers_train_the_masks_one_worker_does(runs: dict[str, Any], method: str,
                                                     rounds: tuple[int, ...], bar: float) -> None:
    solo, pair = runs["solo"][(method, 0)], runs["pair"][(method, 0)]
    for round_index in rounds:
        agreement = _agreement(_masks(solo, round_index), _masks(pair, round_index))
        assert agreement >= bar, (method, round_index, agreement)
    # The rows say the ranks held one mask: its checksum is this test's hash of the saved mask.
    pair_rounds = _rows(pair, "round")
    assert [row["round"] for row in pair_rounds] == [row["round"] for row in _rows(solo, "round")]
    for row in pair_rounds:
        assert row["workers"] == 2
        mask = _masks(pair, row["round"])
        if row["round"] > 0 or mask is not None:
            assert row["mask_checksum"] == _own_checksum(mask), row["round"]
    assert all("workers" not in row for row in _rows(solo, "round"))
    # The final accuracy of 2 workers lies within the spread of 1 worker's over two seeds (or
    # within one test image where the seeds happen to agree).
    final = {seed: _rows(runs["solo"][(method, seed)], "round")[-1]["test_acc"] for seed in SEEDS}
    spread = max(abs(final[0] - final[1]), 1 / 360)  # digits' test split: 360 images
    assert abs(pair_rounds[-1]["test_acc"] - final[0]) <= spread, (final, pair_rounds[-1])


def test_epoch_statistics_cover_the_global_batch(runs: dict[str, Any]) -> None:
    """Training loss and accuracy are over all the workers' parts, not rank 0's half: the
    2-worker epoch's first-epoch loss equals one worker's up to float order (same weights, same
    batches, no BatchNorm), where rank 0's half alone would differ."""
    solo = _rows(runs["solo"][("imp", 0)], "epoch")[0]
    pair = _rows(runs["pair"][("imp", 0)], "epoch")[0]
    assert pair["train_loss"] == pytest.approx(solo["train_loss"], rel=1e-4)
    assert pair["train_acc"] == pytest.approx(solo["train_acc"], abs=1e-9)
    assert pair["val_acc"] == pytest.approx(solo["val_acc"], abs=1 / 359)


def test_a_worker_killed_mid_round_restarts_and_the_rows_match(
        runs: dict[str, Any], ray_dp: Any, tiny_trial: Any, fault_marker: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    fault_marker.unlink()  # armed: rank 1 is killed at round 1, epoch 1
    storage = tmp_path_factory.mktemp("dp-fault").resolve()
    killed = _tune([_trial(tiny_trial, IMP, 0)], storage, "fault", 2)[("imp", 0)]
    assert fault_marker.read_text().isdigit(), "the fault did not fire"
    reference = _rows(runs["pair"][("imp", 0)], "round")
    rows = _rows(killed, "round")
    keys = ("round", "sparsity", "val_acc", "test_acc", "best_epoch", "mask_checksum")
    assert [{k: r.get(k) for k in keys} for r in rows] == [
        {k: r.get(k) for k in keys} for r in reference]
    epochs = [(row["round"], row["epoch"]) for row in _rows(killed, "epoch")]
    assert epochs == [(r, e) for r in range(3) for e in range(2)]  # each once, none lost


def test_a_stopped_trial_frees_its_workers(ray_dp: Any, runs: dict[str, Any], tiny_trial: Any,
                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tune stops the trial after its second row; its Ray Train workers and their placement
    group go with it (the leak of ray#54305, checked on this Ray)."""
    from ray.util import placement_group_table

    storage = tmp_path_factory.mktemp("dp-stop").resolve()
    trial = _trial(tiny_trial, IMP, 1) | {"train": {**TRAIN, "epochs": 6}}
    stopped = _tune([trial], storage, "stop", 2, stop={"training_iteration": 2})[("imp", 1)]
    assert len(_rows(stopped, "epoch")) < 6
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        held = [pg for pg in placement_group_table().values()
                if pg["state"] not in ("REMOVED",)]
        if ray_dp.available_resources().get("CPU") == 2.0 and not held:
            break
        time.sleep(1)
    assert ray_dp.available_resources().get("CPU") == 2.0, ray_dp.available_resources()
    assert not held, held


def test_a_workers_fatal_error_ends_the_trial_as_itself(
        ray_dp: Any, tiny_trial: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A dense checkpoint that is not there (run_sweep's preflight would refuse it; here the
    Tuner runs without it) is a ConfigError in every worker: the trial's error is that one
    line, as in a one-process trial, not Ray Train's TrainingFailedError around it."""
    storage = tmp_path_factory.mktemp("dp-fatal").resolve()
    missing = storage / "no-such-dense-checkpoint"
    trial = _trial(tiny_trial, IMP, 0) | {"dense_model": {"checkpoint": str(missing)}}
    failed = _tune([trial], storage, "fatal", 2, errors=True)[("imp", 0)]
    error = (failed / "error.txt").read_text()
    last = error.strip().splitlines()[-1]  # the exception the trial ended with
    assert last.startswith(f"trainables.errors.ConfigError: dense_model.checkpoint: {missing}"), \
        error
    assert "WorkerGroupError" not in error, error  # Ray Train's wrapper of the workers' errors


def _evaluate_as_rank(rank: int, world: int, init_file: str, raw: dict[str, Any],
                      out: str) -> None:
    """One rank of a gloo group: the test accuracy of a seeded network, sharded."""
    import torch.distributed as dist

    from trainables.loop import accuracy, eval_batches
    from trainables.ranks import Ranks

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        config, model, data, runtime = _evaluation_setup(raw, Ranks(rank, world))
        own = sum(len(labels) for _, labels in eval_batches(
            model, data.splits, "test", data.eval_augment, runtime, 100, shard=True))
        result = {"accuracy": accuracy(model, data, config, runtime, "test"), "own": own}
        Path(out, f"rank{rank}").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _evaluation_setup(raw: dict[str, Any], ranks: Any) -> tuple[Any, Any, Any, Any]:
    from trainables import random_streams
    from trainables.datasets import load_dataset
    from trainables.methods.context import build_network
    from trainables.resolve import parse_trial_config
    from trainables.runtime import resolve_runtime
    from trainables.trial_data import TrialData

    config = parse_trial_config(raw, check_ignored=False)
    runtime = resolve_runtime(config.train, 1, None, ranks)
    splits = load_dataset(config.data)
    random_streams.seed_initialisation(config.seed)
    model = build_network(config, splits)
    return config, model, TrialData.build(splits, config, runtime), runtime


def test_sharded_evaluation_counts_every_test_image_once(tiny_trial: Any, tmp_path: Path) -> None:
    """2 gloo ranks, each evaluating its part of every batch (an uneven last batch included),
    sum to the accuracy of one forward pass over the whole split, to the image."""
    import torch.multiprocessing as mp

    from trainables.ranks import SOLO

    # 100 per batch: digits' 360 test images end in a batch of 60; BatchNorm in eval mode.
    raw = tiny_trial(train={**TRAIN, "eval_batch_size": 100})
    mp.spawn(_evaluate_as_rank, args=(2, str(tmp_path / "init"), raw, str(tmp_path)), nprocs=2)
    results = [json.loads((tmp_path / f"rank{rank}").read_text()) for rank in (0, 1)]
    assert [result["own"] for result in results] == [180, 180]  # each image on one rank
    sharded = {result["accuracy"] for result in results}
    config, model, data, runtime = _evaluation_setup(raw, SOLO)
    images, labels = data.splits.split("test")
    model.eval()
    with torch.no_grad():
        inputs = next(iter(data.splits.batches("test", len(labels), shuffle=False,
                                                generator=None, device="cpu",
                                                augment=data.eval_augment)))[0]
        correct = int((model(inputs).argmax(dim=1) == torch.as_tensor(labels)).sum())
    assert sharded == {correct / len(labels)}
