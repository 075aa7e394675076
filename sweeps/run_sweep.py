"""Run a prunetune sweep file as one Ray Tune experiment.

    python sweeps/run_sweep.py FILE.yaml [--set key.path=value ...] [--smoke] [--resume]
                                         [--address ADDR] [--storage PATH] [--name NAME]

Everything that can be checked is checked before Ray starts: a bad sweep file, an unwritable
output directory or a missing dataset ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, Protocol

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeps.cluster_access import check_cluster_access, connection_failure  # noqa: E402
from sweeps.finished_trials import tidy_finished_trials  # noqa: E402
from sweeps.gpu_requests import check_gpu_request, cluster_autoscales  # noqa: E402
from sweeps.grow import Growth, archive_previous_run, grown_summary, plan_growth  # noqa: E402
from sweeps.loggers import LoggerContext, check_reachable, logger_callbacks  # noqa: E402
from sweeps.plan import (  # noqa: E402
    MAX_TRIALS,
    Chosen,
    PlannedTrial,
    PlanningProgress,
    SweepPlan,
    load_sweep,
)
from sweeps.provenance import SWEEP_SUMMARY_FILE, code_source  # noqa: E402
from sweeps.spec import SweepSpec, shipped_sweeps, sweep_path  # noqa: E402
from sweeps.state_files import repair_experiment  # noqa: E402
from sweeps.trial_names import TrialNamer  # noqa: E402
from trainables import ray_adapter  # noqa: E402
from trainables.errors import ConfigError, PrunetuneError  # noqa: E402
from trainables.files import atomic_write  # noqa: E402

EXIT_BAD_INPUT = 2
EXIT_TRIALS_FAILED = 1
#: What prunetune_sweep.json keeps of a grown experiment's earlier runs (sweeps/grow.py).
EARLIER_KEYS = ("reused_trials", "removed_trials", "current_run_trials")


@dataclass(frozen=True)
class Commands:
    """How the follow-up commands run_sweep suggests are spelled: the scripts of a checkout, or
    the `prunetune` console script of an installed package."""

    run: str
    plot: str
    tensorboard: str


SCRIPT_COMMANDS = Commands("python sweeps/run_sweep.py", "python analysis/plot.py",
                           "python sweeps/tensorboard_view.py")
CONSOLE_COMMANDS = Commands("prunetune run", "prunetune plot", "prunetune tensorboard")


class Replan(Protocol):
    def __call__(self, chosen: Chosen) -> SweepPlan: ...


@dataclass(frozen=True)
class Launch:
    """A planned sweep, where it goes and how it meets what is already there: what the
    preflight checks and the run need, decided before anything is written or started."""

    plan: SweepPlan
    resume: bool
    address: str | None
    commands: Commands = SCRIPT_COMMANDS
    explicit_storage: bool = False
    resume_note: str = ""
    growth: Growth | None = None  # a grown sweep: what it runs, reuses, leaves out
    earlier: dict[str, Any] = field(default_factory=dict)
    """What prunetune_sweep.json says of earlier runs of a grown experiment (`EARLIER_KEYS`)."""
    replan: Replan | None = None
    """A tuned sweep's final trials on what its search chose (None: no search, or planned)."""

    @property
    def name(self) -> str:
        return self.plan.output.name

    @property
    def storage(self) -> str:
        return self.plan.output.storage

    @property
    def experiment_dir(self) -> str:
        return self.plan.output.experiment_dir

    @property
    def run_trials(self) -> list[PlannedTrial]:
        """The trials this run's Tuner holds: a grown sweep's new ones, else all the plan's."""
        if self.growth is None:
            return list(self.plan.trials)
        return [self.plan.trials[i] for i in self.growth.to_run]

    @property
    def planned(self) -> int:
        """How many trials this run's Tune experiment must end with: a grown experiment's
        latest Tune run holds only the trials it added."""
        if self.growth is not None:
            return len(self.growth.to_run)
        return self.earlier.get("current_run_trials", len(self.plan.trials))


@dataclass(frozen=True)
class Preflight:
    """What the checks before Ray starts produced, for the run to use."""

    loggers: tuple[Any, ...]  # Ray Tune logger callbacks, set up once to see they can start
    datasets: dict[str, dict[str, Any]]  # decoded once here, shared with the local trials
    notes: tuple[str, ...] = ()  # what a resume repaired


def parse_args(argv: list[str] | None, prog: str = "run_sweep.py") -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description="Run a prunetune sweep file with Ray Tune."
    )
    parser.add_argument("file", help="sweep YAML file, or the name of a shipped one "
                                     f"({', '.join(shipped_sweeps())})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a sweep or trial field (repeatable)")
    parser.add_argument("--smoke", action="store_true",
                        help="the whole grid with 1 epoch and 2 batches per phase")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted experiment; finished trials are kept")
    parser.add_argument("--address", default=None,
                        help="existing Ray cluster (auto, ray://host:10001); default: RAY_ADDRESS"
                             " or a local in-process Ray")
    parser.add_argument("--storage", default=None,
                        help="results root: a local or shared path, or a URI such as s3://b/p"
                             " (default: ./output)")
    parser.add_argument("--name", default=None, help="experiment name (default: the file's)")
    parser.add_argument("--max-trials", type=int, default=MAX_TRIALS, metavar="N",
                        help=f"refuse a grid of more than N trials (default {MAX_TRIALS:,}): "
                             "a safeguard against a typo that would plan a million")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and expand the sweep, print its trials and exit 0 "
                             "without starting Ray or writing anything")
    return parser.parse_args(argv)


def _check_writable(directory: Path) -> None:
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"output directory {directory} cannot be created: {existing} is not a directory"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output directory {directory} is not writable ({existing} is not)")


def _has_experiment_state(directory: Path) -> bool:
    return any(directory.glob("experiment_state*.json")) or (directory / "tuner.pkl").exists()


def _saved_summary(directory: Path) -> dict[str, Any] | None:
    """The experiment's prunetune_sweep.json, if it is whole (None: absent or unreadable)."""
    summary = directory / SWEEP_SUMMARY_FILE
    if not summary.is_file():
        return None
    try:
        saved = json.loads(summary.read_text())
        [entry["trial"] for entry in saved["trials"]]  # noqa: B018 - checks the shape
    except (ValueError, KeyError, TypeError):
        return None
    return saved


def prepare(args: argparse.Namespace, commands: Commands = SCRIPT_COMMANDS) -> Launch:
    """Plan the sweep and decide how it meets the experiment already at its output, without
    side effects; ConfigError (one line) if the sweep is bad or cannot go there."""
    progress = PlanningProgress(lambda line: print(f"run_sweep: {line}", file=sys.stderr,
                                                   flush=True))
    replan = partial(load_sweep, sweep_path(args.file), args.set, smoke=args.smoke,
                     storage=args.storage, name=args.name, max_trials=args.max_trials)
    plan = replan(progress=progress)
    launch = Launch(plan, resume=args.resume,
                    address=args.address or os.environ.get("RAY_ADDRESS"), commands=commands,
                    explicit_storage=args.storage is not None)
    if plan.search is not None:
        # The final trials are known once the search has chosen (`with_search_choice`).
        from sweeps.search.stage import check_earlier_search

        if plan.output.is_uri:
            raise ConfigError(
                f"{plan.source}: a sweep with `search:` needs --storage on a local or shared "
                f"filesystem (its search stage keeps its units' state there), not {launch.storage}")
        _check_writable(Path(launch.experiment_dir))
        check_earlier_search(plan.search, launch.experiment_dir, plan.source)
        return replace(launch, replan=lambda chosen: replan(chosen=chosen))
    if plan.output.is_uri:
        return launch
    return _meet_existing_experiment(launch, Path(launch.experiment_dir))


def with_search_choice(launch: Launch, checked: Preflight, chosen: Chosen
                       ) -> tuple[Launch, Preflight]:
    """A tuned sweep after its search: its final trials on the values chosen, meeting the
    experiment already there as any sweep does (continued, grown), and their loggers."""
    assert launch.replan is not None
    final = replace(launch, plan=launch.replan(chosen), replan=None, resume=False)
    if not final.plan.output.is_uri:
        final = _meet_existing_experiment(final, Path(final.experiment_dir))
    context = LoggerContext(final.name, final.experiment_dir, tuple(final.plan.trials))
    loggers = logger_callbacks(final.plan.spec.loggers, context)
    return final, replace(checked, loggers=tuple(loggers))


def _meet_existing_experiment(launch: Launch, directory: Path) -> Launch:
    """`launch` as it meets an experiment already at `directory`: continue the same sweep, grow
    it (sweeps/grow.py), or refuse; ConfigError if refused."""
    _check_writable(directory)
    exists = _has_experiment_state(directory)
    if launch.resume and not exists:
        raise ConfigError(f"--resume: no experiment to resume at {directory}")
    if not exists:
        return launch
    saved = _saved_summary(directory)
    earlier = {key: saved[key] for key in EARLIER_KEYS if saved and key in saved}
    if launch.resume:
        return replace(launch, earlier=earlier)
    if saved is None:
        raise ConfigError(f"{directory} holds a sweep prunetune cannot read back (no "
                          f"{SWEEP_SUMMARY_FILE}); choose another --name, or pass --resume")
    if [entry["trial"] for entry in saved["trials"]] == launch.plan.raw_trials:
        return replace(launch, resume=True, earlier=earlier, resume_note=(
            "the same sweep is already there: continuing it (finished trials are kept)"))
    growth = plan_growth(directory, launch.plan, saved)
    left_out = f"; {len(growth.removed)} trial(s) no longer in the file are kept on disk and " \
        "left out of the analysis (plot --all shows them)" if growth.removed else ""
    return replace(launch, growth=growth, earlier=earlier, resume_note=(
        f"growing the experiment: {len(growth.to_run)} new trial(s) to run, "
        f"{len(growth.reused)} finished trial(s) reused{left_out}"))


def _check_local_gpus(gpus_per_trial: float) -> None:
    """A local run needs the GPUs it asks for on this machine (a --dry-run does not: it
    validates a GPU sweep anywhere)."""
    if gpus_per_trial == 0:
        return
    import torch

    available = torch.cuda.device_count()
    if gpus_per_trial > available:
        raise ConfigError(
            f"resources ask for {gpus_per_trial:g} GPU(s) per trial (gpu x workers) but this "
            f"machine has {available} GPU(s) torch can use; lower resources.gpu or "
            "resources.workers, or run on a cluster with --address "
            "(--dry-run checks the file without GPUs)"
        )


def _check_start_weights(plan: SweepPlan) -> None:
    """Pretrained or local starting weights must load (ImageNet weights are fetched once here,
    into the torch hub cache the local trials then read)."""
    from trainables.models import check_weights_available

    checked: set[str] = set()
    for trial in plan.trials:
        model = trial.config.model
        key = f"{model.name}|{model.pretrained}|{model.weights_path}"
        if key not in checked:
            checked.add(key)
            check_weights_available(model)


def _check_dense_checkpoints(plan: SweepPlan) -> None:
    """Explicit `dense_model.checkpoint` paths must exist, load, and match their trial's recipe:
    a wrong one is a ConfigError here, before Ray starts, not an errored trial later."""
    from trainables.methods import METHODS
    from trainables.methods.dense_model import check_dense_checkpoint

    for trial in plan.trials:
        config = trial.config
        directory = config.dense_model.checkpoint
        if directory and "://" not in directory:
            keep = set(config.dense_model.keep_epochs)
            keep |= METHODS.get(config.method).dense_epochs(config)
            check_dense_checkpoint(config, directory, sorted(keep))


def _shared_datasets(plan: SweepPlan, streamed_only: bool = False) -> dict[str, dict[str, Any]]:
    """Decode each distinct dataset once in the driver (errors here stop before Ray starts).

    `streamed_only` (a cluster): only the file lists of `data.storage: stream` datasets. Scanned
    here once, they travel to every node through the object store, instead of each trial and
    worker walking the tree itself (1.28 M files for ImageNet); decoded datasets are left to the
    nodes, which keep their own caches."""
    from trainables.datasets import data_identity, load_dataset
    from trainables.shared_data import to_shareable

    if not streamed_only:
        _check_start_weights(plan)
    shared: dict[str, dict[str, Any]] = {}
    for trial in plan.trials:
        data = trial.config.data
        key = data_identity(data)  # trials with equal keys share one decoded copy
        if key not in shared and (not streamed_only or data.storage == "stream"):
            print(f"run_sweep: {'scanning' if streamed_only else 'loading'} dataset "
                  f"{data.name} ...", flush=True)
            shared[key] = to_shareable(load_dataset(data))
    return shared


def preflight(launch: Launch) -> Preflight:
    """Everything that can be checked before Ray starts, beyond the sweep file itself: GPUs on
    this machine, dense checkpoints, a resumed experiment's state files, the loggers' servers,
    the datasets (decoded here once); ConfigError (one line) on the first that fails."""
    if launch.address is None:
        _check_local_gpus(launch.plan.spec.resources.gpus_per_trial)
    _check_dense_checkpoints(launch.plan)
    notes: tuple[str, ...] = ()
    if launch.resume and not launch.plan.output.is_uri:
        notes = tuple(repair_experiment(Path(launch.experiment_dir)))
    context = LoggerContext(launch.name, launch.experiment_dir, tuple(launch.plan.trials))
    loggers = logger_callbacks(launch.plan.spec.loggers, context)
    check_reachable(loggers)
    datasets = _shared_datasets(launch.plan, streamed_only=launch.address is not None)
    return Preflight(tuple(loggers), datasets, notes)


def _start_ray(address: str | None) -> bool:
    """Connect to the cluster at `address`, or start Ray in-process; True if we started it."""
    import ray

    if address is not None:
        # Token authentication (Ray 2.60) and unreachable heads: one line at once, not a
        # traceback after ~20 s of retries (see sweeps/cluster_access.py).
        check_cluster_access(address)
        try:
            ray.init(address=address, log_to_driver=False)
        except Exception as error:
            failure = connection_failure(error, address)
            if failure is None:
                raise
            raise failure from None
        return False
    # The raylet takes its settings from the environment it starts with, inside ray.init.
    with ray_adapter.environment(ray_adapter.local_start()):
        # address="local": a bare ray.init() joins whatever Ray instance already runs on this
        # machine (another user's sweep, a test cluster) and then refuses num_cpus.
        ray.init(
            address="local", num_cpus=os.cpu_count(), include_dashboard=False,
            dashboard_host="127.0.0.1", log_to_driver=False, logging_level="WARNING",
        )
    return True


def _check_cluster(launch: Launch) -> None:
    import ray

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    resources = launch.plan.spec.resources
    warning = check_gpu_request(resources.gpu, nodes, cluster_autoscales(), resources.workers)
    if warning is not None:
        print(f"run_sweep: warning: {warning}", file=sys.stderr, flush=True)
    if len(nodes) > 1 and not launch.explicit_storage:
        raise ConfigError(
            f"the cluster has {len(nodes)} nodes: pass --storage on a shared filesystem or a "
            "cloud URI (s3://...), or checkpoints stay on the node that wrote them"
        )


def _write_sweep_files(launch: Launch) -> None:
    if launch.plan.output.is_uri:
        return  # Ray writes the experiment there; our summary also lands in each params.json
    directory = Path(launch.experiment_dir)
    directory.mkdir(parents=True, exist_ok=True)
    summary = {**launch.plan.summary(), "source": code_source(), **launch.earlier}
    if launch.growth is not None:
        summary.update(grown_summary(launch.plan, launch.growth))
    text = json.dumps(summary, indent=1)
    atomic_write(directory / SWEEP_SUMMARY_FILE, lambda target: target.write_text(text))


def _tuner(launch: Launch, checked: Preflight, guard: Any) -> Any:
    from ray import tune

    from sweeps.dense_first import plan_entries
    from sweeps.fatal_errors import NoRetryOnFatalErrors
    from sweeps.progress import CompactProgress
    from trainables.tune_trainable import prunetune_trainable

    trainable = _trainable(launch, checked, prunetune_trainable)
    namer = TrialNamer(launch.plan)  # the names the restored name creators look up too
    plan_entries(launch.plan.trials, local=not launch.plan.output.is_uri)  # and the order
    if launch.resume:
        # The restored run config brings its own logger callbacks (Ray's defaults stay off).
        return tune.Tuner.restore(
            launch.experiment_dir, trainable=trainable, resume_unfinished=True,
            resume_errored=True,
        )
    trials = launch.run_trials
    callbacks = [CompactProgress(total_trials=len(trials)), NoRetryOnFatalErrors(), guard,
                 *_worker_groups(launch), *checked.loggers]
    return tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([trial.raw for trial in trials])},
        tune_config=tune.TuneConfig(
            search_alg=trial_order(max_concurrent_trials(launch.plan.spec)),
            # A fresh worker per trial re-imports torch (~5-15 s on a busy node); every trial of
            # a sweep asks for the same resources, so one warm worker can run them in turn.
            reuse_actors=True,
            trial_name_creator=namer.name,
            trial_dirname_creator=namer.dirname,
        ),
        run_config=tune.RunConfig(
            name=launch.name,
            storage_path=launch.storage,
            failure_config=tune.FailureConfig(max_failures=launch.plan.spec.max_failures),
            # Ray's checkpoint only names the trial's newest slot (trainables/trial_store.py).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[callback for callback in callbacks if callback is not None],
            verbose=0,
            log_to_file=True,
        ),
    )


def trial_order(max_concurrent: int | None) -> Any:
    """The grid in order, with trials that start from a dense model another trial is training
    held back until it is written (sweeps/dense_first.py); it also caps the trials at once."""
    from sweeps.dense_first import DenseFirst

    return DenseFirst(max_concurrent=max_concurrent or 0)


def _worker_groups(launch: Launch) -> list[Any]:
    """The callback that frees a stopped data-parallel trial's workers (none otherwise)."""
    if not launch.plan.spec.resources.data_parallel:
        return []
    from sweeps.worker_groups import FreeWorkerGroups

    return [FreeWorkerGroups()]


def max_concurrent_trials(spec: SweepSpec) -> int | None:
    """The sweep's `max_concurrent_trials`; for data-parallel trials left unset, as many as the
    connected cluster's CPUs and GPUs can hold at once. Their Tune trials hold no resources
    themselves (`ray_adapter.WAITING_TRIAL`), so Tune alone would start every trial and leave
    all but these waiting for workers."""
    resources = spec.resources
    if spec.max_concurrent_trials is not None or not resources.data_parallel:
        return spec.max_concurrent_trials
    import ray

    total = ray.cluster_resources()
    fits = int(total.get("CPU", 0) // resources.cpus_per_trial)
    if resources.gpu:
        fits = min(fits, int(total.get("GPU", 0) // resources.gpus_per_trial))
    fits = max(1, fits)
    print(f"run_sweep: data-parallel trials of {resources.workers} workers x "
          f"{resources.cpu:g} CPU{f' + {resources.gpu:g} GPU' if resources.gpu else ''}: at most "
          f"{fits} at once on this cluster (set max_concurrent_trials to change it)", flush=True)
    return fits


def _trainable(launch: Launch, checked: Preflight, function: Any) -> Any:
    """`function` as the sweep's trials run it: with the sweep's datasets, methods, plug-ins
    and resources."""
    from ray import tune

    from trainables.data_parallel import Scaling
    from trainables.ray_adapter import WAITING_TRIAL

    spec = launch.plan.spec
    resources = spec.resources
    scaling = (Scaling(resources.workers, resources.cpu, resources.gpu, spec.max_failures)
               if resources.data_parallel else None)
    return tune.with_resources(
        tune.with_parameters(function, datasets=checked.datasets,
                             methods=_methods_of(launch.plan), plugins=list(launch.plan.plugins),
                             scaling=scaling),
        # A data-parallel trial's process only waits for its workers, which hold its resources.
        WAITING_TRIAL if scaling is not None else {"cpu": resources.cpu, "gpu": resources.gpu},
    )


def _search_stage(launch: Launch, checked: Preflight) -> tuple[Launch, Preflight]:
    """Run (or reuse) a tuned sweep's search, then plan its final stage on the choice."""
    from sweeps.fatal_errors import NoRetryOnFatalErrors
    from sweeps.json_rows import RowsJsonLogger
    from sweeps.progress import CompactProgress
    from sweeps.search.stage import run_search, search_trainable

    search = launch.plan.search
    assert search is not None
    for note in search.notes:
        print(f"run_sweep: {note}")
    print(f"run_sweep: search stage: {len(search.units)} unit(s) -> "
          f"{launch.experiment_dir}/search", flush=True)
    spec = launch.plan.spec

    def callbacks(total: int) -> list[Any]:
        return [CompactProgress(total_trials=total, metric=search.spec.metric),
                NoRetryOnFatalErrors(), *_worker_groups(launch), RowsJsonLogger()]

    with _only_the_sweeps_loggers():
        chosen = run_search(search, launch.experiment_dir, launch.name,
                            _trainable(launch, checked, search_trainable),
                            max_concurrent_trials(spec), spec.max_failures, callbacks)
    return with_search_choice(launch, checked, chosen)


def _methods_of(plan: SweepPlan) -> dict[str, Any]:
    """The method objects the sweep uses that workers would not know otherwise, to travel with
    the trainable: a method registered only in this process (defined in the user's script or a
    test module) must reach the workers too. Workers import the `trainables` package and the
    plug-ins themselves; any other method module is pickled by value, because a worker's import
    path need not contain it."""
    import ray.cloudpickle

    from trainables.methods import METHODS
    from trainables.plugins import is_plugin_module

    methods = {}
    for name in {trial.method for trial in plan.trials}:
        method = METHODS.get(name)
        module = type(method).__module__
        if module.startswith("trainables.") or is_plugin_module(module):
            continue
        if module != "__main__":
            ray.cloudpickle.register_pickle_by_value(sys.modules[module])
        methods[name] = method
    return methods


def _disk_guard(launch: Launch) -> Any:
    """The sweep's guard against a full results disk (see sweeps/disk_guard.py)."""
    from sweeps.disk_guard import DiskGuard
    from trainables.methods import METHODS

    rounds = sum(METHODS.get(trial.method).round_checkpoints(trial.config)
                 for trial in launch.run_trials)
    return DiskGuard(None if launch.plan.output.is_uri else launch.experiment_dir, rounds)


def _disk_full(launch: Launch, guard: Any) -> int:
    print(f"run_sweep: error: {guard.message()}; free space (or choose another "
          f"--storage), then: {launch.commands.run} {launch.plan.source} --resume --name "
          f"{launch.name}", file=sys.stderr)
    return EXIT_TRIALS_FAILED


def _report(launch: Launch, results: Any, guard: Any) -> int:
    if guard.reason is not None:
        return _disk_full(launch, guard)
    tidy_finished_trials(results)
    errored = [result for result in results if result.error is not None]
    diverged = [
        result for result in results
        if result.error is None and (result.metrics or {}).get("status") == "diverged"
    ]
    total = len(results)
    print(f"\nrun_sweep: {total - len(errored)}/{total} trials finished; results in "
          f"{launch.experiment_dir}")
    planned = launch.planned
    if total != planned:  # never a success with trials missing
        print(f"run_sweep: error: the experiment holds {total} of the sweep's {planned} "
              f"trials; {launch.experiment_dir} is not the sweep's whole experiment",
              file=sys.stderr)
        return EXIT_TRIALS_FAILED
    for result in diverged:
        print(f"  diverged (kept out of averages): {result.path}")
    # A trial's stdout/stderr are not in its trial dir but on the node that ran it (see
    # sweeps/trial_logs.py); Ray is still up here, so its nodes' session dirs are known.
    from sweeps.trial_logs import errored_trial_lines, ray_nodes

    nodes = ray_nodes() if errored else []
    for result in errored:
        print("\n".join(errored_trial_lines(result.path, result.metrics, nodes)))
    print("next:")
    if "tensorboard" in launch.plan.spec.loggers:
        print(f"  {launch.commands.tensorboard} {launch.experiment_dir}")
    print(f"  {launch.commands.plot} {launch.experiment_dir}")
    if errored:
        print(f"  {launch.commands.run} {launch.plan.source} --resume --name {launch.name}"
              " (retries the errored trials)")
    return EXIT_TRIALS_FAILED if errored else 0


def _print_plan(launch: Launch) -> int:
    """--dry-run: the trials the sweep would run, by trial name, and their count."""
    plan = launch.plan
    note = f" ({launch.resume_note})" if launch.resume_note else ""
    print(f"run_sweep: {launch.name}: {len(plan.trials)} trials -> {launch.experiment_dir}{note}")
    reused = launch.growth.reused if launch.growth is not None else {}
    for index, trial in enumerate(plan.trials):
        done = f", reused: {reused[index].name}" if index in reused else ""
        print(f"  {index:4d}  {trial.name}  (method={trial.method}, "
              f"seed={trial.config.seed}{done})")
    if plan.search is not None:
        spec = plan.search.spec
        print(f"run_sweep: search stage first: {len(plan.search.units)} unit(s), each "
              f"{spec.samples} sample(s) x seeds {spec.seeds}; the trials above then run on "
              "each unit's chosen values")
        for unit in plan.search.units:
            space = ", ".join(f"{key} {d.as_json()}" for key, d in sorted(unit.space.items()))
            print(f"run_sweep: search unit {unit.name} (per {unit.per}: {space})")
    print(f"run_sweep: dry run: {len(plan.trials)} trials valid; nothing was started")
    return 0


def main(argv: list[str] | None = None, prog: str = "run_sweep.py",
         commands: Commands = SCRIPT_COMMANDS) -> int:
    """Plan, check, run: exit 2 with one line when the plan or a check fails (nothing started),
    1 when trials failed, 0 when every trial of the sweep finished."""
    args = parse_args(argv, prog)
    try:
        launch = prepare(args, commands)
        if args.dry_run:
            return _print_plan(launch)
        checked = preflight(launch)
    except PrunetuneError as error:
        print(f"run_sweep: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for note in checked.notes:
        print(f"run_sweep: {note}")
    if _announce(launch, launch.name):
        return 0
    return run(launch, checked)


def _announce(launch: Launch, stage: str) -> bool:
    """Say how the sweep meets the experiment already there; True (the sweep's files written)
    when a grown experiment has nothing left to run."""
    if launch.resume_note:
        print(f"run_sweep: {launch.resume_note}")
    if launch.growth is not None and not launch.growth.to_run:
        _write_sweep_files(launch)
        print(f"run_sweep: {stage}: nothing to run: every trial of the sweep is in "
              f"{launch.experiment_dir}")
        return True
    return False


def run(launch: Launch, checked: Preflight) -> int:
    """Start (or join) Ray, write the sweep's files, run the Tuner and report."""
    print(f"run_sweep: {launch.name}: {launch.planned} trials -> {launch.experiment_dir}",
          flush=True)
    ray_adapter.classic_output()
    import ray

    started = False
    try:
        try:
            started = _start_ray(launch.address)
            _check_cluster(launch)
        except PrunetuneError as error:
            print(f"run_sweep: error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if launch.replan is not None:
            from sweeps.search.stage import SearchFailedError

            try:
                launch, checked = _search_stage(launch, checked)
            except SearchFailedError as error:
                print(f"run_sweep: error: search stage: {error}", file=sys.stderr)
                return EXIT_TRIALS_FAILED
            if _announce(launch, "final stage"):
                return 0
            print(f"run_sweep: final stage: {launch.planned} trials on the chosen recipes -> "
                  f"{launch.experiment_dir}", flush=True)
        if launch.growth is not None:
            archive_previous_run(Path(launch.experiment_dir))
        _write_sweep_files(launch)
        guard = _disk_guard(launch)  # before a restore, whose pickled guard is this one
        with guard.quiet_ray(launch.resume):
            tuner = _tuner(launch, checked, guard)
        _collect_again()
        with _only_the_sweeps_loggers(), guard.quiet_ray(launch.resume):
            try:
                results = tuner.fit()
            except Exception as error:
                from sweeps.disk_guard import is_disk_full_error

                # Ray reading back a result file the full disk cut off (EOFError, ...).
                if guard.reason is None and not is_disk_full_error(str(error)):
                    raise
                guard.reason = guard.reason or f"{type(error).__name__}: {error}"
                return _disk_full(launch, guard)
        return _report(launch, results, guard)
    finally:
        if started:
            ray.shutdown()


@contextlib.contextmanager
def _only_the_sweeps_loggers() -> Iterator[None]:
    """While a sweep runs, exactly its `loggers` (JSON always among them), not Ray's default set
    as well: a resumed sweep keeps the callbacks it was saved with, without Ray's TensorBoard
    dump beside prunetune's events. Restored after, so that other Tuners in this process keep
    Ray's defaults."""
    with ray_adapter.environment({**ray_adapter.NO_DEFAULT_LOGGERS,
                                  **ray_adapter.NO_SNAPSHOT_WARNING}):
        yield


def _collect_again() -> None:
    """End of start-up (see `command`): what start-up made is frozen, new garbage collected."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def command(argv: list[str] | None = None, prog: str = "run_sweep.py",
            commands: Commands = SCRIPT_COMMANDS) -> NoReturn:
    """`python sweeps/run_sweep.py ...` (and `prunetune run`): `main` in a process of its own.

    Start-up imports torch, torchvision and Ray Tune: millions of objects that live as long as
    the process. The cyclic collector's passes over them never free anything but took a large
    share of start-up and most of the exit (benchmarks/bench_startup.py), so it is paused until
    the sweep starts (`_collect_again`), and what exists at the end is not scanned again.
    """
    gc.disable()
    exit_code = main(argv, prog, commands)
    gc.freeze()
    sys.exit(exit_code)


if __name__ == "__main__":
    command()
