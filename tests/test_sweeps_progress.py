"""The progress line's counts (sweeps/progress.py): driven through the callbacks in the order
Ray 2.60's TuneController calls them, with a fake clock, and once through a real Tuner whose two
trials surely overlap."""

from __future__ import annotations

import io
import pickle
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sweeps import progress as progress_module
from sweeps.progress import CompactProgress

COUNTS = re.compile(r"(\d+)/(\d+) finished, (\d+) running, (\d+) errored")


class FakeTrial:
    def __init__(self, trial_id: str, status: str = "PENDING") -> None:
        self.trial_id = trial_id
        self.status = status

    def __str__(self) -> str:
        return self.trial_id


class FakeTune:
    """Calls a CompactProgress as ray/tune/execution/tune_controller.py (Ray 2.60) does: each
    `step` handles one event and ends with `on_step_end`; statuses change where Tune changes
    them relative to the callbacks (quoted per method)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, trials: list[FakeTrial],
                 **settings: Any) -> None:
        self.now = 0.0
        monkeypatch.setattr(progress_module, "time", SimpleNamespace(monotonic=lambda: self.now))
        self.out = io.StringIO()
        self.trials = trials
        self.progress = CompactProgress(len(trials), stream=self.out, **settings)
        self.iteration = 0

    def _call(self, name: str, trial: FakeTrial) -> None:
        getattr(self.progress, name)(iteration=self.iteration, trials=self.trials, trial=trial)

    def start(self, trial: FakeTrial) -> None:
        # _actor_started: callbacks.on_trial_start(...), then _set_trial_status(RUNNING).
        self._call("on_trial_start", trial)
        trial.status = "RUNNING"

    def complete(self, trial: FakeTrial) -> None:
        # stop_trial: callbacks.on_trial_complete(...), then _schedule_graceful_trial_stop ->
        # _schedule_trial_stop: TERMINATED (the actor cached for reuse).
        self._call("on_trial_complete", trial)
        trial.status = "TERMINATED"

    def retry(self, trial: FakeTrial) -> None:
        # _process_trial_failure with should_recover(): _try_recover -> _schedule_trial_stop
        # (ERROR) -> _requeue_trial (PENDING), then callbacks.on_trial_recover(...).
        trial.status = "ERROR"
        trial.status = "PENDING"
        self._call("on_trial_recover", trial)

    def fail(self, trial: FakeTrial) -> None:
        # _process_trial_failure, no retry left: _schedule_trial_stop (ERROR), then
        # callbacks.on_trial_error(...).
        trial.status = "ERROR"
        self._call("on_trial_error", trial)

    def step(self, event: Any = None, *args: Any) -> None:
        if event is not None:
            event(*args)
        self.iteration += 1
        self.progress.on_step_end(iteration=self.iteration, trials=self.trials)
        self.now += 0.1  # Tune waits up to 0.1 s for an event

    def idle(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.step()

    def end(self) -> None:
        # tune.run -> end_experiment_callbacks: callbacks.on_experiment_end(trials=...).
        self.progress.on_experiment_end(trials=self.trials)

    def lines(self) -> list[str]:
        """The printed lines without their clock and ETA."""
        return [line.split("] ", 1)[1].split(" | ETA")[0]
                for line in self.out.getvalue().splitlines()]


def test_two_running_trials_and_a_reused_workers_handover_are_counted(monkeypatch) -> None:
    a, b, c = FakeTrial("a"), FakeTrial("b"), FakeTrial("c")
    tune = FakeTune(monkeypatch, [a, b, c])
    tune.step()
    tune.idle(3)
    tune.step(tune.start, a)
    tune.step(tune.start, b)
    tune.idle(5)
    tune.step(tune.complete, a)
    tune.step(tune.start, c)  # a's cached actor, reset for c (_on_trial_reset)
    tune.idle(1.5)
    tune.step(tune.complete, b)
    tune.idle(3)
    tune.step(tune.complete, c)
    tune.end()
    assert tune.lines() == [
        "0/3 finished, 0 running, 0 errored",
        "0/3 finished, 2 running, 0 errored",
        "1/3 finished, 2 running, 0 errored",  # one line for a's end and c's start
        "2/3 finished, 1 running, 0 errored",
        "3/3 finished, 0 running, 0 errored",
    ]


def test_a_started_trial_counts_before_tune_marks_it_running(monkeypatch) -> None:
    a = FakeTrial("a")
    tune = FakeTune(monkeypatch, [a])
    tune.progress.on_trial_start(iteration=0, trials=[a], trial=a)
    assert a.status == "PENDING"  # Tune sets RUNNING after the callback
    assert "0/1 finished, 1 running, 0 errored" in tune.progress.line([a])


def test_a_retried_trial_is_running_again_and_errored_only_when_it_fails_for_good(
    monkeypatch,
) -> None:
    a = FakeTrial("a")
    tune = FakeTune(monkeypatch, [a])
    tune.step(tune.start, a)
    tune.idle(2)
    tune.step(tune.retry, a)
    tune.idle(2)
    tune.step(tune.start, a)
    tune.idle(2)
    tune.step(tune.fail, a)
    tune.end()
    assert tune.lines() == [
        "0/1 finished, 1 running, 0 errored",
        "0/1 finished, 0 running, 0 errored",  # requeued, not errored
        "0/1 finished, 1 running, 0 errored",
        "0/1 finished, 0 running, 1 errored",
    ]


def test_an_errored_trial_started_again_leaves_errored(monkeypatch) -> None:
    # A callback that saw the trial fail sees it start again (a restored experiment retrying its
    # errored trials with the callback of the same process).
    a = FakeTrial("a")
    tune = FakeTune(monkeypatch, [a])
    tune.start(a)
    tune.fail(a)
    tune.start(a)
    assert "0/1 finished, 1 running, 0 errored" in tune.progress.line([a])


def test_trials_stopped_with_the_experiment_are_not_running(monkeypatch) -> None:
    a, b = FakeTrial("a"), FakeTrial("b")
    tune = FakeTune(monkeypatch, [a, b])
    tune.start(a)
    tune.start(b)
    # _stop_experiment_if_needed -> _schedule_trial_stop(t): TERMINATED, no callback.
    a.status = b.status = "TERMINATED"
    assert "2/2 finished, 0 running, 0 errored" in tune.progress.line([a, b])


def test_a_resumed_run_counts_restored_trials_but_times_only_its_own(monkeypatch) -> None:
    trials = [FakeTrial("a", "TERMINATED"), FakeTrial("b", "TERMINATED"), FakeTrial("c"),
              FakeTrial("d")]
    tune = FakeTune(monkeypatch, trials)
    tune.now = 5000.0  # unpickled from the first run's process: Tune calls setup() per fit
    tune.progress.setup(total_num_samples=4)
    tune.step(tune.start, trials[2])
    tune.idle(10)
    tune.step(tune.complete, trials[2])
    tune.step(tune.start, trials[3])
    tune.idle(2)
    last = tune.out.getvalue().splitlines()[-1]
    # 11 s since this run began, for the one trial it finished; one left: ~11 s (not 11 s / 3
    # finished, nor timed from the first run's start).
    assert last == "[0m11s] 3/4 finished, 1 running, 0 errored | ETA ~0m11s", last


def test_counts_that_keep_changing_are_still_printed(monkeypatch) -> None:
    trials = [FakeTrial(str(i)) for i in range(60)]
    tune = FakeTune(monkeypatch, trials)
    for trial in trials:  # a start or an end every 0.5 s: never settled for 1 s
        tune.step(tune.start, trial)
        tune.idle(0.4)
        tune.step(tune.complete, trial)
        tune.idle(0.4)
    assert len(tune.lines()) >= 5, tune.lines()


def test_a_callback_pickled_by_an_older_version_still_counts(monkeypatch) -> None:
    # Tuner.restore unpickles the callbacks of tuner.pkl, written when the sweep first started.
    a = FakeTrial("a")
    tune = FakeTune(monkeypatch, [a])
    old = tune.progress
    for name in ("running", "settle_s", "changed_at", "last_counts"):
        del old.__dict__[name]
    tune.progress = pickle.loads(pickle.dumps(old))
    tune.progress.stream = tune.out  # not the pickled copy of the StringIO
    tune.step(tune.start, a)
    tune.idle(2)
    assert tune.lines() == ["0/1 finished, 1 running, 0 errored"]


class Recorder:
    """A stream that keeps each printed line with the time it was printed."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []

    def write(self, text: str) -> None:
        if text.strip():
            self.lines.append((time.time(), text.strip()))

    def flush(self) -> None:
        pass


@pytest.fixture
def local_ray() -> Any:
    """A 2-CPU Ray of this test's own: address="local", never another one on this machine."""
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray instance of another test module is up")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _overlapping_trial(config: dict[str, Any]) -> None:
    """Trials 0 and 1 wait for each other, then both run 3 s; trial 2 runs 2.5 s alone."""
    marks, index = Path(config["marks"]), config["i"]
    (marks / f"start-{index}").write_text(repr(time.time()))
    if index < 2:
        deadline = time.time() + 60
        while not all((marks / f"start-{j}").exists() for j in (0, 1)):
            assert time.time() < deadline, "the other trial never started"
            time.sleep(0.05)
        time.sleep(3)
    else:
        time.sleep(2.5)
    (marks / f"end-{index}").write_text(repr(time.time()))


@pytest.mark.slow
def test_a_real_tune_run_shows_both_running_trials_and_never_more(local_ray, tmp_path) -> None:
    from ray import tune

    local_ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack tests/
    marks = tmp_path / "marks"
    marks.mkdir()
    recorder = Recorder()
    progress = CompactProgress(total_trials=3, stream=recorder)  # run_sweep's settings
    tuner = tune.Tuner(
        tune.with_resources(_overlapping_trial, {"cpu": 1, "gpu": 0}),
        param_space={"marks": str(marks), "i": tune.grid_search([0, 1, 2])},
        tune_config=tune.TuneConfig(max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(name="progress", storage_path=str(tmp_path / "out"),
                                  verbose=0, callbacks=[progress]),
    )
    assert not tuner.fit().errors
    spans = [(float((marks / f"start-{i}").read_text()), float((marks / f"end-{i}").read_text()))
             for i in range(3)]
    shown = []
    for printed, text in recorder.lines:
        finished, _, running, errored = map(int, COUNTS.search(text).groups())
        # What ran then, by the trials' own clocks, a second's slack for Tune's bookkeeping.
        ran = sum(start - 1 <= printed <= end + 1 for start, end in spans)
        ended = sum(end <= printed for _, end in spans)
        assert running <= ran and finished <= ended and errored == 0, (text, printed, spans)
        shown.append((finished, running))
    assert (0, 2) in shown, recorder.lines  # both at once
    assert (2, 1) in shown, recorder.lines  # trial 2 alone, on a reused worker
    assert shown[-1] == (3, 0), recorder.lines
