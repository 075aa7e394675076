"""A trial on many workers: Ray Train's data-parallel workers inside one Ray Tune trial.

The Tune trial (`run_data_parallel`) holds no CPU or GPU itself: it builds a `TorchTrainer` of
`resources.workers` workers, each with `resources.cpu` CPUs and `resources.gpu` GPUs, on one node
or across nodes, and waits for it. Every worker runs the same trial (`run_trial`) as one rank of
a `torch.distributed` process group (NCCL on GPUs, gloo on CPUs); `trainables/ranks.py` says what
the ranks split and what they share.

Rows and checkpoints come from rank 0 only, into the Tune trial's own directory, so a
data-parallel trial has the layout of any other and analysis and export read it unchanged:

* rows travel rank 0 -> Ray Train -> `TuneReportCallback` -> the Tune trial -> the driver. Ray
  Train's `report` is a barrier that every rank must call as often as the others, so every rank
  calls it once per row (the others with an empty row), and the progress-checkpoint cadence is
  rank 0's decision (`CheckpointCadence(agree=...)`);
* checkpoints are written by rank 0 into the trial store. Ray Tune is not told of them (the
  callback forwards metrics only), so a restarted worker group, or a restarted trial, resumes
  from the store's newest usable slot, which every rank reads.

Each round row records the workers and the checksum of the mask that every rank was checked to
hold (`mask_checksum`). Faults: Ray Train restarts a lost worker (or node) group up to the
sweep's `max_failures` times, and the workers resume from the newest slot; Ray Tune's own
`max_failures` covers the trial process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainables.ranks import Ranks, mask_checksum
from trainables.reporting import is_progress, logged_rows
from trainables.schema import ROUND_CHECKPOINT, ROUND_ROW
from trainables.trial_store import TrialStore, is_round_slot, slot_name

#: Round-row fields a data-parallel trial adds: how many workers trained it, and the checksum
#: of the mask all of them held (`ranks.mask_checksum`).
WORKERS_FIELD = "workers"
MASK_CHECKSUM_FIELD = "mask_checksum"
#: Round-row field: on how many Ray nodes the workers ran.
NODES_FIELD = "worker_nodes"
#: The file in a data-parallel trial's directory naming its worker group's placement group, for
#: the sweep to remove when Tune ends the trial (sweeps/worker_groups.py).
WORKER_GROUP_FILE = "worker_group.json"
#: The slot key holding the rows of its round reported so far (see `WorkerReporter`).
SENT_ROWS = "sent_rows"


@dataclass(frozen=True)
class Scaling:
    """A sweep's `resources` for data-parallel trials: `workers` ranks of `cpu` CPUs and `gpu`
    GPUs each; `max_failures` restarts of a lost worker group."""

    workers: int
    cpu: float
    gpu: float
    max_failures: int = 1

    @property
    def backend(self) -> str:
        return "nccl" if self.gpu > 0 else "gloo"


class WorkerReporter:
    """A rank's `Reporter`: rank 0 writes the checkpoints and reports the rows; every rank takes
    part in each report (Ray Train's barrier) and in the mask check.

    Ray Train hands reported rows on when its controller next polls the workers, so the rows of
    a checkpoint written just before a worker is lost may never reach the driver. Each slot
    therefore also holds the rows of its round reported so far (`SENT_ROWS`), and a restarted
    group reports again those the driver's `result.json` lacks."""

    def __init__(self, ranks: Ranks, store: TrialStore, nodes: list[str] | None = None) -> None:
        self.ranks, self.store = ranks, store
        self.nodes = nodes or []  # the Ray node of each rank, in rank order
        self.round_rows: list[dict[str, Any]] = []

    def report(self, rows: list[dict[str, Any]], state: dict[str, Any] | None = None,
               shared: Any = None) -> None:
        rows = list(rows)
        if state is not None:
            fields = self._checked(state)
            rows[-1] = {**rows[-1], **fields}
            if state.get("metrics") is not None:  # metrics.json, which analysis reads, too
                state = {**state, "metrics": {**state["metrics"], **fields}}
            if not is_progress(state):
                rows[-1] = {**rows[-1], ROUND_ROW.name(ROUND_CHECKPOINT): slot_name(state)}
            if self.ranks.main:
                name = self.store.write({**state, SENT_ROWS: self.round_rows + rows}, shared)
                self.store.keep_only(name)
        self.round_rows += rows
        for row in rows:
            self._send(row)
        if rows[-1].get("row_type") == "round":
            self.round_rows = []

    def _checked(self, state: dict[str, Any]) -> dict[str, Any]:
        """Check that every rank holds the state's mask; the round row's record of it."""
        mask = state.get("masks") if "masks" in state else state.get("mask")
        fields = {} if is_progress(state) else {WORKERS_FIELD: self.ranks.world,
                                                 NODES_FIELD: len(set(self.nodes)) or 1}
        if mask is None:
            return fields
        checksum = mask_checksum(mask)
        where = f"round {state.get('round')}" if not is_progress(state) else "a progress checkpoint"
        self.ranks.check_same(checksum, f"the mask at {where} (SHA-256 prefix)")
        return fields if is_progress(state) else {**fields, MASK_CHECKSUM_FIELD: checksum}

    def _send(self, row: dict[str, Any]) -> None:
        import ray.train

        ray.train.report(row if self.ranks.main else {})

    def latest_state(self) -> dict[str, Any] | None:
        """The newest usable slot of the store, the same on every rank (rank 0 chooses), after
        the rows its slots hold that the driver never logged are reported again."""
        chosen, unsent, state = None, [], None
        if self.ranks.main:
            found = self.store.newest_usable()
            if found is not None:
                chosen, state = found
                unsent = self._unsent(found)
        chosen, unsent = self.ranks.from_main((chosen, unsent))
        for row in unsent:
            self._send(row)
        if chosen is None:
            return None
        if state is None:  # the other ranks read the slot rank 0 chose
            state = self.store.load(chosen)
        self.round_rows = [] if not is_progress(state) else list(state.get(SENT_ROWS) or [])
        return {key: value for key, value in state.items() if key != SENT_ROWS}

    def _unsent(self, found: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows held by the slots up to `found` that the trial's result.json lacks."""
        logged = {_row_key(row) for row in logged_rows(self.store)}
        slots = self.store.slots()
        held: list[dict[str, Any]] = []
        for name in slots[: slots.index(found[0])]:
            if is_round_slot(name):
                held += self.store.load(name, only=[SENT_ROWS]).get(SENT_ROWS) or []
        held += found[1].get(SENT_ROWS) or []
        return [row for row in held if _row_key(row) not in logged]


def _row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return row.get("row_type"), row.get("round"), row.get("epoch")


def run_data_parallel(raw_trial: dict[str, Any], scaling: Scaling, shared_data: Any,
                      methods: dict[str, Any] | None, plugins: list[Any] | None) -> None:
    """Inside a Tune trial: train it on `scaling.workers` Ray Train workers and wait for them.
    A worker's error that a retry cannot fix is raised here as itself."""
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from trainables.errors import FATAL_TRIAL_ERRORS
    from trainables.ray_adapter import trial_storage

    filesystem, path = trial_storage()
    loop_config = {
        "trial": raw_trial, "scaling": scaling, "storage": (filesystem, path),
        "data": ray.put(shared_data) if shared_data is not None else None,
        "methods": methods, "plugins": plugins,
    }
    per_worker = {"CPU": scaling.cpu, **({"GPU": scaling.gpu} if scaling.gpu else {})}
    trainer = TorchTrainer(
        data_parallel_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend=scaling.backend),
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling.workers, use_gpu=scaling.gpu > 0, resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name="train", storage_path=path, storage_filesystem=filesystem,
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures),
        ),
    )
    try:
        trainer.fit()
    except ray.train.TrainingFailedError as error:
        for failure in getattr(error, "worker_failures", {}).values():
            cause = getattr(failure, "cause", failure)
            if isinstance(cause, FATAL_TRIAL_ERRORS):
                raise cause from None
        raise


def data_parallel_worker(loop_config: dict[str, Any]) -> None:
    """One rank of a data-parallel trial (runs in a Ray Train worker)."""
    import ray
    import ray.train
    import ray.train.torch

    from trainables.runtime import GpuGrant
    from trainables.shared_data import from_shareable
    from trainables.trial import prepare_trial, run_trial

    context = ray.train.get_context()
    ranks = Ranks(context.get_world_rank(), context.get_world_size())
    scaling: Scaling = loop_config["scaling"]
    config = prepare_trial(loop_config["trial"], loop_config["methods"], loop_config["plugins"])
    data = loop_config["data"]
    splits = from_shareable(ray.get(data)) if data is not None else None
    device = ray.train.torch.get_device()
    grant = GpuGrant(share=scaling.gpu, ids=tuple(str(gpu) for gpu in ray.get_gpu_ids()))
    store = TrialStore(*loop_config["storage"])
    if ranks.main:
        record_worker_group(*loop_config["storage"])
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)  # NCCL's object collectives use the current device
    nodes = ranks.gather(ray.get_runtime_context().get_node_id())
    run_trial(config, WorkerReporter(ranks, store, nodes), splits, scaling.cpu, grant,
              ranks=ranks, device_index=device.index or 0)


def record_worker_group(filesystem: Any, trial_path: str) -> None:
    """In rank 0 of a worker group: write the group's placement group id into the trial."""
    import json

    import ray.util

    group = ray.util.get_current_placement_group()
    if group is None:
        return
    with filesystem.open_output_stream(f"{trial_path}/{WORKER_GROUP_FILE}") as stream:
        stream.write(json.dumps({"placement_group": group.id.hex()}).encode())
