"""The trial order that holds back trials waiting for a dense model (sweeps/dense_first.py),
driven by hand without Ray: which trial Tune is handed at each step, written out by hand."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sweeps.dense_first import DenseFirst, entry_of, plan_entries
from sweeps.plan import plan_sweep
from trainables.round_store import INDEX_FILE

SWEEP = {
    "name": "order",
    "base": {"data": {"name": "digits"}, "model": {"name": "resnet18_cifar", "width": 4}},
    "grid": {"seed": [0, 1]},
    "experiments": [
        {"label": "imp", "config": {"method": "imp", "imp": {"rounds": 1}}},
        {"label": "oneshot", "config": {"method": "imp", "imp": {"schedule": "oneshot"}}},
        {"label": "snip", "config": {"method": "snip"}},
    ],
}


@pytest.fixture
def grid(tmp_path: Path) -> dict[str, Any]:
    """The sweep's planned trials as Tune trials (named `label-seed`), in grid order."""
    plan = plan_sweep(SWEEP, "order.yaml", storage=str(tmp_path))
    assert plan_entries(plan.trials, local=True) == 4  # imp and oneshot, two seeds
    trials = [SimpleNamespace(trial_id=f"{t.label}-{t.config.seed}", config={"trial": t.raw})
              for t in plan.trials]
    return {"trials": trials, "by_id": {t.trial_id: t for t in trials}}


def order(trials: list[Any], max_concurrent: int = 0) -> DenseFirst:
    generator = DenseFirst(max_concurrent=max_concurrent)
    generator._trial_generator = list(trials)  # what Tune's grid iterator yields
    return generator


def handed(generator: DenseFirst) -> list[str]:
    """The trials Tune is handed now, until the generator has none to give."""
    ids = []
    while (trial := generator.next_trial()) is not None:
        ids.append(trial.trial_id)
    return ids


EPOCH_ROW = {"row_type": "epoch", "round": 0, "epoch": 0}
ROUND0_ROW = {"row_type": "round", "round": 0}


def test_imp_and_oneshot_of_a_seed_share_one_entry_and_snip_needs_none(grid) -> None:
    by_id = grid["by_id"]
    assert entry_of(by_id["imp-0"]) == entry_of(by_id["oneshot-0"]) is not None
    assert entry_of(by_id["imp-1"]) == entry_of(by_id["oneshot-1"]) != entry_of(by_id["imp-0"])
    assert entry_of(by_id["snip-0"]) is None
    assert Path(entry_of(by_id["imp-0"])).parent.name == "dense_cache"


def test_a_trial_waits_unstarted_until_its_dense_model_is_written(grid) -> None:
    generator = order(grid["trials"])
    ids = [t.trial_id for t in grid["trials"]]
    first = [i for i in ids if i.startswith("imp") or i.startswith("snip")]
    assert sorted(handed(generator)) == sorted(first)  # both producers and every snip
    assert generator.held == 2 and not generator.is_finished()
    generator.on_trial_result("imp-0", EPOCH_ROW)  # an epoch of round 0: not written yet
    assert handed(generator) == []
    generator.on_trial_result("imp-0", ROUND0_ROW)
    assert handed(generator) == ["oneshot-0"]
    generator.on_trial_result("imp-1", {"row_type": "round", "round": 1})  # round 0 was before
    assert handed(generator) == ["oneshot-1"]
    assert generator.is_finished()


def test_a_producer_that_fails_hands_its_entry_to_the_next_trial(grid) -> None:
    generator = order(grid["trials"])
    handed(generator)
    generator.on_trial_complete("imp-0", error=True)
    assert handed(generator) == ["oneshot-0"]  # it trains the dense model itself now
    generator.on_trial_result("oneshot-0", ROUND0_ROW)
    generator.on_trial_complete("imp-1")  # stopped before its round 0: nothing written
    assert handed(generator) == ["oneshot-1"]


def test_an_entry_an_earlier_run_wrote_releases_everything_at_once(grid) -> None:
    entry = Path(entry_of(grid["by_id"]["imp-0"]))
    entry.mkdir(parents=True)
    (entry / INDEX_FILE).write_text("{}")
    generator = order(grid["trials"])
    assert "oneshot-0" in handed(generator) and generator.held == 1  # oneshot-1 waits


def test_held_trials_count_toward_no_concurrency_limit(grid) -> None:
    ids = [t.trial_id for t in grid["trials"]]
    assert ids == ["imp-0", "imp-1", "oneshot-0", "oneshot-1", "snip-0", "snip-1"]
    generator = order(grid["trials"], max_concurrent=2)
    assert handed(generator) == ["imp-0", "imp-1"]
    generator.on_trial_result("imp-0", ROUND0_ROW)
    assert handed(generator) == []  # two run
    generator.on_trial_complete("imp-0")
    assert handed(generator) == ["oneshot-0"]
    generator.on_trial_complete("oneshot-0")
    assert handed(generator) == ["snip-0"]  # oneshot-1 is held and takes no slot
    assert generator.held == 1


def test_held_trials_survive_tunes_saved_state(grid, tmp_path: Path) -> None:
    generator = order(grid["trials"])
    handed(generator)
    generator.save_to_dir(str(tmp_path), session_str="s")
    restored = DenseFirst()
    restored.restore_from_dir(str(tmp_path))
    assert restored.held == 2
    restored.on_trial_result("imp-1", ROUND0_ROW)
    assert handed(restored) == ["oneshot-1"]


def test_held_trials_nothing_can_release_are_started_rather_than_stranded(grid) -> None:
    generator = order(grid["trials"])
    handed(generator)
    state = generator.get_state()
    state["_live_trials"] = set()  # a restored run whose producers Tune no longer holds
    generator.set_state(state)
    assert handed(generator) == ["oneshot-0"]
