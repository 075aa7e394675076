"""Data-parallel trials before Ray and without it: the `resources.workers` schema and its
refusals, the concurrency a sweep derives, the ranks' one-process behaviour, the mask checksum,
the shared checkpoint cadence, the rank condition of the test faults, and the worker reporter's
resending of rows a lost worker group never delivered."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from sweeps.plan import plan_sweep
from sweeps.spec import SweepSpec
from trainables import faults
from trainables.data_parallel import SENT_ROWS, WorkerReporter
from trainables.errors import ConfigError
from trainables.ranks import SOLO, Ranks, mask_checksum
from trainables.reporting import CheckpointCadence
from trainables.trial_store import TrialStore

BASE = {"method": "dense", "data": {"name": "digits"},
        "model": {"name": "resnet18_cifar", "width": 4},
        "train": {"epochs": 1, "batch_size": 32, "max_batches": 2}}


def sweep(resources: dict[str, Any], **train: Any) -> dict[str, Any]:
    return {"name": "dp", "base": {**BASE, "train": {**BASE["train"], **train}},
            "resources": resources}


def test_one_worker_is_the_sweep_without_workers() -> None:
    assert SweepSpec(**sweep({"workers": 1})) == SweepSpec(**sweep({}))
    resources = SweepSpec(**sweep({"workers": 4, "cpu": 2, "gpu": 1})).resources
    assert resources.data_parallel
    assert (resources.cpus_per_trial, resources.gpus_per_trial) == (8, 4)


@pytest.mark.parametrize(("resources", "says"), [
    ({"workers": 2, "gpu": 0.5}, "need a whole GPU each"),
    ({"gpu": 2}, "set workers: 2 and gpu: 1"),
    ({"workers": 0}, "workers"),
])
def test_resources_data_parallel_cannot_have_are_refused(resources: dict[str, Any],
                                                         says: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=says):
        plan_sweep(sweep(resources), "dp.yaml", launch_dir=tmp_path)


def test_the_global_batch_must_split_evenly_across_the_workers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.batch_size 30 is the global batch .* 4"):
        plan_sweep(sweep({"workers": 4}, batch_size=30), "dp.yaml", launch_dir=tmp_path)
    plan = plan_sweep(sweep({"workers": 2}, batch_size=30), "dp.yaml", launch_dir=tmp_path)
    assert plan.spec.resources.workers == 2


def test_sync_bn_is_refused_on_cpu_workers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sync_bn needs GPUs"):
        plan_sweep(sweep({"workers": 2}, sync_bn=True), "dp.yaml", launch_dir=tmp_path)
    plan_sweep(sweep({"workers": 1}, sync_bn=True), "dp.yaml", launch_dir=tmp_path)


@pytest.mark.parametrize(("resources", "cluster", "expected"), [
    ({"workers": 2, "cpu": 1}, {"CPU": 5.0}, 2),
    ({"workers": 4, "cpu": 4, "gpu": 1}, {"CPU": 64.0, "GPU": 8.0}, 2),   # 8 GPUs / 4
    ({"workers": 2, "cpu": 8, "gpu": 1}, {"CPU": 24.0, "GPU": 8.0}, 1),   # 24 CPUs / 16
    ({"workers": 8, "cpu": 1}, {"CPU": 2.0}, 1),                          # never below 1
])
def test_data_parallel_trials_run_as_many_at_once_as_the_cluster_holds(
        resources: dict[str, Any], cluster: dict[str, float], expected: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from sweeps.run_sweep import max_concurrent_trials

    monkeypatch.setattr(ray, "cluster_resources", lambda: cluster)
    assert max_concurrent_trials(SweepSpec(**sweep(resources))) == expected
    capped = SweepSpec(**sweep(resources), max_concurrent_trials=7)
    assert max_concurrent_trials(capped) == 7
    assert max_concurrent_trials(SweepSpec(**sweep({}))) is None


def test_one_process_ranks_change_nothing() -> None:
    batch = torch.arange(10)
    assert SOLO.main and not SOLO.parallel
    assert SOLO.part(10) == slice(0, 10)
    assert SOLO.sum(batch) is batch
    assert SOLO.from_main("x") == "x"
    SOLO.check_same("anything", "nothing")


@pytest.mark.parametrize(("total", "world"), [(10, 3), (8, 2), (1, 2), (7, 7)])
def test_rank_parts_are_tensor_splits_rows(total: int, world: int) -> None:
    rows = torch.arange(total)
    expected = torch.tensor_split(rows, world)  # torch's own split, the reference
    for rank in range(world):
        assert torch.equal(rows[Ranks(rank, world).part(total)], expected[rank])


def test_the_mask_checksum_is_sha256_of_names_shapes_and_entries() -> None:
    mask = {"b.weight": torch.tensor([[True, False], [False, True]]),
            "a.weight": torch.tensor([True, True, False])}
    digest = hashlib.sha256()
    digest.update(b"a.weight:(3,):" + bytes([1, 1, 0]))
    digest.update(b"b.weight:(2, 2):" + bytes([1, 0, 0, 1]))
    assert mask_checksum(mask) == digest.hexdigest()[:16]
    flipped = {**mask, "a.weight": torch.tensor([True, True, True])}
    assert mask_checksum(flipped) != mask_checksum(mask)


def test_every_rank_takes_rank_zeros_checkpoint_decision() -> None:
    """The first epoch always checkpoints alone; with `agree`, the shared decision wins."""
    assert CheckpointCadence().due()
    decisions: list[bool] = []

    def rank_zero_says_no(due: bool) -> bool:
        decisions.append(due)
        return False

    assert not CheckpointCadence(agree=rank_zero_says_no).due()
    assert decisions == [True]


def test_a_fault_can_name_the_rank_it_strikes() -> None:
    [fault] = faults.parse_faults("kill_once:round=1,epoch=1,rank=1:/tmp/x")
    assert fault.matches("kill_once", {"round": 1, "epoch": 1, "seed": 0, "rank": 1})
    assert not fault.matches("kill_once", {"round": 1, "epoch": 1, "seed": 0, "rank": 0})


def _state(kind: str, round_index: int, epochs_done: int = 0) -> dict[str, Any]:
    weights = {"w": torch.full((2,), float(round_index))}
    if kind == "progress":
        return {"kind": "progress", "round": round_index,
                "phase": {"epochs_done": epochs_done, "model": weights}}
    return {"kind": "round", "round": round_index, "masks": None, "best_model": weights}


def test_rows_a_lost_worker_group_never_delivered_are_sent_again(tmp_path: Path) -> None:
    """Rows reach the driver when Ray Train's controller next polls: a checkpoint's rows can be
    lost with its worker group. The restarted group sends again exactly the slots' rows that
    result.json lacks, in order, once."""
    store = TrialStore.for_directory(tmp_path)
    sent: list[dict[str, Any]] = []
    first = WorkerReporter(SOLO, store)
    first._send = sent.append  # type: ignore[method-assign]
    rows = [{"row_type": "epoch", "round": 0, "epoch": 0, "val_acc": 0.1},
            {"row_type": "epoch", "round": 0, "epoch": 1, "val_acc": 0.2},
            {"row_type": "round", "round": 0, "val_acc": 0.2},
            {"row_type": "epoch", "round": 1, "epoch": 0, "val_acc": 0.3}]
    first.report(rows[:1], _state("progress", 0, 1))
    first.report(rows[1:3], _state("round", 0))
    first.report(rows[3:], _state("progress", 1, 1))
    assert [(r["row_type"], r.get("epoch")) for r in sent] == [
        ("epoch", 0), ("epoch", 1), ("round", None), ("epoch", 0)]
    assert sent[2]["round_checkpoint"] == "round_000000" and sent[2]["workers"] == 1
    # The driver logged the first two rows only: the round row and round 1's epoch were lost.
    (tmp_path / "result.json").write_text("".join(json.dumps(r) + "\n" for r in sent[:2]))
    resent: list[dict[str, Any]] = []
    second = WorkerReporter(SOLO, store)
    second._send = resent.append  # type: ignore[method-assign]
    state = second.latest_state()
    assert resent == sent[2:]
    assert state is not None and state["kind"] == "progress" and SENT_ROWS not in state
    assert state["round"] == 1
    # Nothing is sent twice once the driver has it all.
    (tmp_path / "result.json").write_text("".join(json.dumps(r) + "\n" for r in sent))
    again: list[dict[str, Any]] = []
    third = WorkerReporter(SOLO, store)
    third._send = again.append  # type: ignore[method-assign]
    third.latest_state()
    assert again == []


def test_a_cluster_must_hold_a_trials_workers() -> None:
    """8 workers of 1 GPU fit two 4-GPU nodes, not one 4-GPU and one 2-GPU node (refused, or a
    warning where the cluster autoscales); 2 workers of 1 GPU fit two 1-GPU nodes, which a
    one-process trial of 2 GPUs would not."""
    from sweeps.gpu_requests import check_gpu_request

    def nodes(*gpus: float) -> list[dict[str, Any]]:
        return [{"Alive": True, "Resources": {"GPU": g}} for g in gpus]

    assert check_gpu_request(1, nodes(4, 4), autoscales=False, workers=8) is None
    with pytest.raises(ConfigError, match="8 workers x 1 GPU .* hold 6 such worker"):
        check_gpu_request(1, nodes(4, 2), autoscales=False, workers=8)
    assert "wait until nodes join" in check_gpu_request(1, nodes(4, 2), autoscales=True,
                                                        workers=8)
    assert check_gpu_request(1, nodes(1, 1), autoscales=False, workers=2) is None
    assert check_gpu_request(0, nodes(), autoscales=False, workers=8) is None


def test_a_cluster_sweep_scans_streamed_file_lists_once_in_the_driver(tmp_path: Path) -> None:
    from dataset_files import write_imagenet

    from sweeps.run_sweep import _shared_datasets
    from trainables.datasets import StreamingSplits, data_identity

    write_imagenet(tmp_path / "imagenet", ["n01440764", "n01443537"], train_per_class=4,
                   val_per_class=1)
    imagenet = {"name": "imagenet", "root": str(tmp_path / "imagenet"), "image_size": 16,
                "val_size": 2}
    plan = plan_sweep({"name": "scan", "base": BASE, "experiments": [
        {"label": "streamed", "config": {"data": {**imagenet, "storage": "stream"}}},
        {"label": "decoded", "config": {"data": {**imagenet, "image_size": 24,
                                                  "storage": "memory"}}},
        {"label": "digits", "config": {}},
    ]}, "scan.yaml", storage=str(tmp_path / "out"))
    streamed = next(t for t in plan.trials if t.label == "streamed").config.data
    shared = _shared_datasets(plan, streamed_only=True)
    assert list(shared) == [data_identity(streamed)]  # decoded data stays with the nodes
    lists = shared[data_identity(streamed)]
    assert isinstance(lists, StreamingSplits)
    # 2 classes x 4 training files, 2 of them held out for validation; 2 x 1 test (val/) files.
    assert [lists.size(split) for split in ("train", "val", "test")] == [6, 2, 2]
    assert len(_shared_datasets(plan)) == 3  # on one machine every dataset is shared


@pytest.mark.parametrize("crop", ["random_resized", "padded"])
def test_a_rank_augments_its_rows_exactly_as_the_whole_batch_does(crop: str) -> None:
    from trainables.augment import BatchAugment

    images = torch.randint(0, 256, (10, 3, 20, 20), dtype=torch.uint8)
    augment = BatchAugment(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), train=True, crop=crop)
    whole_generator = torch.Generator().manual_seed(3)
    whole = augment(images, whole_generator)
    for rank in range(3):
        rows = Ranks(rank, 3).part(10)
        generator = torch.Generator().manual_seed(3)
        part = augment(images[rows], generator, rows, 10)
        assert torch.equal(part, whole[rows])
        assert torch.equal(generator.get_state(), whole_generator.get_state())  # same draws


def test_rank_parts_of_every_batch_make_the_whole_batches(tmp_path: Path) -> None:
    from dataset_files import write_imagenet

    from trainables.augment import BatchAugment
    from trainables.batches import iterate_batches
    from trainables.datasets import load_dataset
    from trainables.datasets.common import clear_process_cache
    from trainables.loop import rank_part

    write_imagenet(tmp_path, ["n01440764", "n01443537"], train_per_class=4, val_per_class=3)
    streamed = load_dataset(types_namespace(root=str(tmp_path)))
    clear_process_cache()
    images = torch.randint(0, 256, (7, 3, 12, 12), dtype=torch.uint8)
    labels = torch.arange(7)
    train = BatchAugment(8, (0.5,) * 3, (0.25,) * 3, train=True)
    evaluate = BatchAugment(16, (0.5,) * 3, (0.25,) * 3, train=False)

    def memory(**part: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(iterate_batches(images, labels, 3, shuffle=True,
                                    generator=torch.Generator().manual_seed(1), device="cpu",
                                    augment=train, **part))

    def stream(**part: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # The test split: 6 images in batches of 4, so the last batch of 2 leaves rank 2 of 3
        # nothing to decode.
        return list(streamed.batches("test", 4, shuffle=False, generator=None, device="cpu",
                                     augment=evaluate, **part))

    for batches in (memory, stream):
        whole = batches()
        parts = [batches(**rank_part(Ranks(rank, 3))) for rank in range(3)]
        for index, (x, y) in enumerate(whole):
            assert torch.equal(torch.cat([p[index][0] for p in parts]), x)
            assert torch.equal(torch.cat([p[index][1] for p in parts]), y)
    assert [len(y) for _, y in stream(**rank_part(Ranks(2, 3)))] == [1, 0]


def types_namespace(**fields: Any) -> Any:
    import types

    base = dict(name="imagenet", image_size=16, download=False, split_seed=0, val_size=2,
                split_fractions=None, storage="stream", workers=0, prefetch=None,
                cache_dir=None, augment=True, crop=None, crop_padding=None,
                crop_scale_min=None, hflip=None)
    return types.SimpleNamespace(**{**base, **fields})
