"""The Ray Tune function trainable: one trial's config dict in, rows and checkpoints out."""

from __future__ import annotations

import gc
from typing import Any

# A trial's worker process imports torch, torchvision and prunetune through this module, before
# its first epoch. The cyclic collector's passes over those hundreds of thousands of new,
# long-lived objects free nothing but took a large share of that import: pause it, and freeze
# what the import made so that later collections do not scan it either
# (benchmarks/bench_startup.py).
_collecting = gc.isenabled()
gc.disable()
try:
    from trainables.data_parallel import Scaling, run_data_parallel
    from trainables.datasets import data_identity
    from trainables.errors import FATAL_TRIAL_ERRORS
    from trainables.methods import Method
    from trainables.plugins import Plugin
    from trainables.reporting import FATAL_ROW, TuneReporter
    from trainables.runtime import GpuGrant
    from trainables.shared_data import from_shareable
    from trainables.trial import prepare_trial, run_trial
finally:
    if _collecting:
        gc.freeze()
        gc.enable()


def prunetune_trainable(
    config: dict[str, Any],
    datasets: dict[str, dict[str, Any]] | None = None,
    methods: dict[str, Method] | None = None,
    plugins: list[Plugin] | None = None,
    scaling: Scaling | None = None,
) -> None:
    """Run one trial inside Ray Tune.

    `config` is Ray's trial config: `{"trial": <TrialConfig dict>}` as the sweep layer builds it
    (`param_space={"trial": tune.grid_search([...])}`), or a bare TrialConfig dict ("trial" is
    not a TrialConfig field, so the two cannot be confused).

    `datasets` (passed with `tune.with_parameters`, so it travels through the object store once
    per node) maps `data_identity(data)` to `shared_data.to_shareable` splits; trials whose data
    is not in it decode their own copy.

    `plugins` are the sweep file's plug-ins as the driver resolved them: imported here, with
    the installed packages' plug-ins, before the trial's names are looked up. `methods` are the
    method objects the driver used to plan the sweep; a method registered in the driver only
    (defined in the user's own script or a test module) becomes known here too.

    `scaling` (a sweep's `resources.workers` > 1): the trial runs on that many data-parallel Ray
    Train workers (trainables/data_parallel.py); this process only waits for them.
    """
    import ray
    from ray import tune

    raw = config["trial"] if isinstance(config, dict) and "trial" in config else config
    trial_config = prepare_trial(raw, methods, plugins)
    shared = (datasets or {}).get(data_identity(trial_config.data))
    try:
        if scaling is not None:
            run_data_parallel(raw, scaling, shared, methods, plugins)
            return
        resources = tune.get_context().get_trial_resources()
        required = resources.required_resources if resources is not None else {}
        grant = GpuGrant(share=float(required.get("GPU", 0.0)),
                         ids=tuple(str(gpu) for gpu in ray.get_gpu_ids()))
        splits = from_shareable(shared) if shared is not None else None
        run_trial(trial_config, TuneReporter(), splits, required.get("CPU"), grant)
    except FATAL_TRIAL_ERRORS as error:
        # Said to the driver before the error, so that it does not retry (sweeps/fatal_errors.py).
        tune.report({FATAL_ROW: f"{type(error).__name__}: {error}", "row_type": FATAL_ROW})
        raise
