"""Run `sweeps/run_sweep.py` in this process with every trial time-stamping its training steps
(for `bench_gpu_packing.py`; not a tool for users).

    PRUNETUNE_PACKING_TRACE=DIR python benchmarks/packing_probe.py sweeps/run_sweep.py ARGS

Nothing in prunetune knows about this probe. In the driver it puts `traced_trainable` where
run_sweep looks the trainable up (Ray pickles it by reference to this module: its folder is on
PYTHONPATH for the workers too); in the trial, `traced_trainable` wraps `Stepper.step` so that
each training step's start and end are recorded (`StepTimes`), and writes them when the trial
ends to DIR/<trial>-<pid>.json: {"trial", "steps": [[start, end, images], ...]}, in seconds of
`time.time()`, which every process on the machine shares.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TRACE_ENV = "PRUNETUNE_PACKING_TRACE"


class StepTimes:
    """Start, end (seconds on the host's `clock`) and images of each step of one trial.

    On the CPU a step is done when it returns, so the clock is read around it. On CUDA the host
    returns before the kernels finish, and synchronising every step would change what is being
    measured: a CUDA event is recorded before and after each step instead, and `steps()` places
    them on the host's clock through one reference event recorded, after a synchronisation, on
    an idle GPU. `event` (record a timing event now) and `synchronize` are torch.cuda's unless
    a test passes fakes.
    """

    def __init__(
        self,
        cuda: bool,
        clock: Callable[[], float] = time.time,
        event: Callable[[], Any] | None = None,
        synchronize: Callable[[], None] | None = None,
    ) -> None:
        self.cuda, self.clock = cuda, clock
        self._event = event or _cuda_event
        self._synchronize = synchronize or _cuda_synchronize
        self._marks: list[tuple[Any, Any, int]] = []
        self._reference: Any = None
        self._reference_s = 0.0

    def begin(self) -> Any:
        """A mark for the start of a step (before its first kernel is queued)."""
        if not self.cuda:
            return self.clock()
        if self._reference is None:
            self._synchronize()
            self._reference_s = self.clock()
            self._reference = self._event()
        return self._event()

    def end(self, begun: Any, images: int) -> None:
        """The step begun at `begun` has been queued (CUDA) or done (CPU) on `images` images."""
        self._marks.append((begun, self.clock() if not self.cuda else self._event(), images))

    def steps(self) -> list[tuple[float, float, int]]:
        """(start, end, images) of every step so far (on CUDA: waits for them to finish)."""
        if not self.cuda:
            return list(self._marks)
        if self._marks:
            self._synchronize()
        return [(self._on_clock(begun), self._on_clock(ended), images)
                for begun, ended, images in self._marks]

    def _on_clock(self, event: Any) -> float:
        return self._reference_s + self._reference.elapsed_time(event) / 1000.0


def _cuda_event() -> Any:
    import torch

    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def _cuda_synchronize() -> None:
    import torch

    torch.cuda.synchronize()


_current: StepTimes | None = None
"""The running trial's steps (a worker runs one trial at a time)."""


def _trace_steps() -> None:
    """Wrap `trainables.loop.Stepper.step` (once per process) to record into `_current`."""
    from trainables import loop

    original = loop.Stepper.step
    if getattr(original, "packing_probe", False):
        return

    @functools.wraps(original)
    def step(self: Any, index: int, inputs: Any, targets: Any, *args: Any, **kwargs: Any) -> Any:
        global _current
        if _current is None:  # the device is known only once a batch arrives
            _current = StepTimes(cuda=inputs.device.type == "cuda")
        begun = _current.begin()
        result = original(self, index, inputs, targets, *args, **kwargs)
        _current.end(begun, len(targets))
        return result

    step.packing_probe = True  # type: ignore[attr-defined]
    loop.Stepper.step = step


def traced_trainable(
    config: dict[str, Any], datasets: dict[str, Any] | None = None, **extra: Any
) -> None:
    """The prunetune trainable, its steps recorded and written to the trace folder at the end."""
    global _current
    from trainables.tune_trainable import prunetune_trainable

    raw = config.get("trial", config)
    trial = f"seed{raw.get('seed')}"
    _trace_steps()
    _current = None
    try:
        prunetune_trainable(config, datasets, **extra)
    finally:
        steps = _current.steps() if _current is not None else []
        _current = None
        path = Path(os.environ[TRACE_ENV]) / f"{trial}-{os.getpid()}.json"
        path.write_text(json.dumps({"trial": trial, "steps": steps}))


def _trace_trials(tuner: Any) -> Any:
    """Wrap run_sweep._tuner: put `traced_trainable` where run_sweep looks the trainable up."""

    @functools.wraps(tuner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import packing_probe  # by reference from the workers, not by value from __main__

        import trainables.tune_trainable as module

        packing_probe.traced_trainable.__name__ = module.prunetune_trainable.__name__
        module.prunetune_trainable = packing_probe.traced_trainable
        return tuner(*args, **kwargs)

    return wrapper


def read_trace(directory: Path) -> dict[str, list[tuple[float, float, int]]]:
    """{trial: [(start, end, images), ...]} from a trace folder the trials wrote."""
    trials = {}
    for path in sorted(Path(directory).glob("*.json")):
        record = json.loads(path.read_text())
        trials[record["trial"]] = [tuple(step) for step in record["steps"]]
    return trials


def main() -> int:
    run_sweep_path = Path(sys.argv[1]).resolve()
    sys.path.insert(0, str(run_sweep_path.parents[1]))
    run_sweep = importlib.import_module("sweeps.run_sweep")
    run_sweep._tuner = _trace_trials(run_sweep._tuner)
    sys.argv = [str(run_sweep_path), *sys.argv[2:]]
    if hasattr(run_sweep, "command"):  # the script's own entry point (exits)
        run_sweep.command()
    return run_sweep.main()


if __name__ == "__main__":
    sys.exit(main())
