"""Everything prunetune relies on in Ray beyond its public API, in one module.

Ray's public API (`ray.init`, `tune.Tuner`, `tune.report`, `tune.get_checkpoint`, callbacks)
is used where it is needed. What it cannot do is here: the private attributes and modules read,
the behaviours relied on, and every environment variable set for Ray. Each was checked against
`RAY_VERSION`; tests/test_ray_adapter.py checks each against the installed Ray, so that a Ray
upgrade that moves one fails that test by name instead of silently changing what prunetune
does (resume numbering doing nothing, an auth check stepping aside).

Imports of Ray are inside the functions: the analysis and the planner never need Ray.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: The Ray this module was written against (constraints.txt pins it).
RAY_VERSION = "2.60.0"

# ---- environment toggles -------------------------------------------------------------------

#: Ray Tune adds its default loggers (JSON, CSV, TensorBoard) to the callbacks of a Tuner unless
#: this is set; a sweep's `loggers:` are exactly what it asked for.
NO_DEFAULT_LOGGERS = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
#: Tune warns when trials checkpoint within seconds of each other with `num_to_keep` set, and
#: advises keeping more checkpoints: a sweep keeps one pointer per trial by design
#: (trainables/trial_store.py), and short search trials checkpoint every epoch.
NO_SNAPSHOT_WARNING = {"TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
#: A starting raylet connects to its own object store while another of its threads is still
#: creating it; on a miss it retries after raylet_client_connect_timeout_milliseconds (1000 ms
#: by default), so a local ray.init often took a whole second longer (benchmarks/README.md,
#: "Start-up"). Retry every 100 ms instead, 100 times: Ray's 10 s before giving up.
FAST_LOCAL_CONNECT = {
    "RAY_raylet_client_connect_timeout_milliseconds": "100",
    "RAY_raylet_client_num_connect_attempts": "100",
}
#: Ray starts its worker processes, where trials run, at niceness 15 unless told otherwise. On a
#: machine where anything at the default niceness runs (a browser, another user's job, a
#: neighbour on a cluster node), the scheduler then gives a trial a few percent of a core: an
#: epoch beside two busy loops on two cores took 35 times as long, where a plain PyTorch loop
#: slowed 1.4 times (benchmarks/README.md, "busy_machine"). Workers at 0 take their fair share.
FAIR_WORKERS = {"RAY_worker_niceness": "0"}
#: Tune's classic console output, which honours `verbose=0`: run_sweep prints its own progress
#: lines (sweeps/progress.py) instead of Ray's trial table.
CLASSIC_OUTPUT = {"RAY_AIR_NEW_OUTPUT": "0"}
#: Every toggle above, by name (what the tests check and docs/cluster.md lists).
TOGGLES = {**NO_DEFAULT_LOGGERS, **FAST_LOCAL_CONNECT, **FAIR_WORKERS, **CLASSIC_OUTPUT}


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """`values` set in os.environ for the block; what was there before is put back after."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def local_start() -> dict[str, str]:
    """What a locally started Ray is started with (FAST_LOCAL_CONNECT, FAIR_WORKERS), but for
    the settings the user made themselves (theirs win)."""
    toggles = {} if any(key in os.environ for key in FAST_LOCAL_CONNECT) else FAST_LOCAL_CONNECT
    return {**toggles, **{key: value for key, value in FAIR_WORKERS.items()
                          if key not in os.environ}}


def niceness() -> int:
    """This process's niceness (0 is the default; Ray's workers get 15 unless FAIR_WORKERS)."""
    return os.getpriority(os.PRIO_PROCESS, 0)


def classic_output() -> None:
    """Set CLASSIC_OUTPUT for this process (a user's own setting wins)."""
    for key, value in CLASSIC_OUTPUT.items():
        os.environ.setdefault(key, value)


#: What a data-parallel trial's own process asks Ray for: no CPU or GPU (its Ray Train workers
#: hold those), but Tune refuses a trial that asks for nothing at all, so one byte of memory.
WAITING_TRIAL = {"cpu": 0, "memory": 1}


# ---- inside a trial --------------------------------------------------------------------------

def trial_storage() -> tuple[Any, str]:
    """Where this trial's directory lies on the sweep's storage: (pyarrow filesystem, path).

    Read from `tune.get_context().get_storage()`, the storage context Ray documents as a
    developer API on its public trial context (RunConfig's `storage_path` and
    `storage_filesystem`, resolved).
    """
    from ray import tune

    storage = tune.get_context().get_storage()
    return storage.storage_filesystem, storage.trial_fs_path


# ---- in the driver ---------------------------------------------------------------------------


def remove_placement_group_by_id(hex_id: str) -> bool:
    """Remove the placement group with id `hex_id` (`PlacementGroup.id.hex()`) unless it is
    removed already; True when this call removed it. Rebuilt from its id through the private
    `PlacementGroupID`: Ray has no public lookup by id."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import (
        PlacementGroup,
        placement_group_table,
        remove_placement_group,
    )

    group = PlacementGroup(PlacementGroupID(bytes.fromhex(hex_id)))
    if placement_group_table(group).get("state") in (None, "REMOVED"):
        return False
    remove_placement_group(group)
    return True


def never_retry(trial: Any) -> None:
    """Tell Tune not to restart `trial` when it fails (its `max_failures`, which
    `Trial.should_recover` reads, set to 0)."""
    trial.max_failures = 0


def stop_experiment() -> bool:
    """End a running `Tuner.fit` as Ctrl-C would (Tune saves its state; trials stay resumable),
    through the SIGUSR1 handler Tune installs in the main thread; False when none is installed."""
    if not callable(signal.getsignal(signal.SIGUSR1)):
        return False
    os.kill(os.getpid(), signal.SIGUSR1)
    return True


def local_session_dir() -> Path | None:
    """The session directory of the Ray node this process started or joined (None from a Ray
    client, or when none is known)."""
    import ray

    with contextlib.suppress(Exception):
        return Path(ray._private.worker._global_node.get_session_dir_path())
    return None


#: The key Ray's autoscaler monitor keeps its status under in the GCS's internal KV store
#: (ray._private.ray_constants.DEBUG_AUTOSCALING_STATUS).
AUTOSCALER_STATUS_KEY = "__autoscaling_status"


def autoscaler_status() -> bytes | None:
    """What the connected cluster's autoscaler monitor last published (None: nothing)."""
    from ray.experimental import internal_kv

    try:
        return internal_kv._internal_kv_get(AUTOSCALER_STATUS_KEY)
    except Exception:  # noqa: BLE001 - an unreadable KV store means "nothing published"
        return None


def has_auth_token() -> bool | None:
    """Whether Ray's token loader finds a token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
    ~/.ray/auth_token); None when this Ray has no such loader."""
    try:
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:
        return None
    return bool(AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True))


def open_gcs_client(address: str) -> Any:
    """A bare GCS client of the cluster at `address`, connecting with this process's auth
    settings (raises Ray's AuthenticationError when refused); None when this Ray has none."""
    try:
        from ray._raylet import GcsClient
    except ImportError:
        return None
    return GcsClient(address=address)


def wandb_logging_actor_class() -> type:
    """The per-trial logging actor Ray's WandbLoggerCallback runs (its `_logger_actor_cls`), to
    subclass."""
    from ray.air.integrations.wandb import _WandbLoggingActor

    return _WandbLoggingActor
