"""The pure pieces of training-time pruning against independent computations: Zhu & Gupta's cubic
schedule, RigL's cosine drop schedule, one drop-and-grow step worked out by hand, and LAMP scores
against a brute-force reading of the paper's definition."""

from __future__ import annotations

import math

import pytest
import torch

from pruning import (
    DropSchedule,
    GradualSchedule,
    drop_and_grow_layer,
    lamp_scores,
    prune_to_sparsity,
)

# ---- GMP: s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3 ---------------------------------------


@pytest.mark.parametrize(
    ("total", "start", "end", "frequency", "t0", "dt", "n"),
    [
        # Worked out by hand: t0 = floor(start T), dt = round(frequency T), and n the largest
        # count with t0 + n dt <= min(floor(end T), T - 1).
        (100, 0.1, 0.75, 0.05, 10, 5, 13),  # 10, 15, ..., 75
        (100, 0.0, 1.0, 0.1, 0, 10, 9),  # the last step, 90, stays inside 0..99
        (7, 0.0, 0.75, 0.3, 0, 2, 2),  # 0, 2, 4 (floor(5.25) = 5)
        (10, 0.5, 0.5, 0.2, 5, 2, 0),  # one pruning step, straight to the final sparsity
        (3, 0.9, 1.0, 0.5, 2, 2, 0),  # floor(2.7) = 2 = T - 1
    ],
)
def test_gradual_schedule_steps_and_sparsities_follow_the_formula(
    total, start, end, frequency, t0, dt, n
):
    s_i, s_f = 0.1, 0.9
    schedule = GradualSchedule.from_fractions(
        total, start=start, end=end, frequency=frequency, initial=s_i, final=s_f
    )
    steps = [t0 + k * dt for k in range(n + 1)]
    assert schedule.pruning_steps() == steps
    for step in steps:
        expected = s_f if n == 0 else s_f + (s_i - s_f) * (1 - (step - t0) / (n * dt)) ** 3
        assert schedule.target_at_step(step) == pytest.approx(expected, abs=1e-15)
    others = [step for step in range(total) if step not in steps]
    assert all(schedule.target_at_step(step) is None for step in others)
    assert schedule.target_at_step(steps[-1]) == s_f and steps[-1] <= total - 1


def test_gradual_schedule_refuses_inverted_or_out_of_range_settings():
    with pytest.raises(ValueError, match="start"):
        GradualSchedule.from_fractions(10, start=0.8, end=0.2, frequency=0.1, initial=0, final=0.5)
    with pytest.raises(ValueError, match="initial sparsity"):
        GradualSchedule.from_fractions(10, start=0, end=1, frequency=0.1, initial=0.6, final=0.5)
    with pytest.raises(ValueError, match="final"):
        GradualSchedule.from_fractions(10, start=0, end=1, frequency=0.1, initial=0, final=1.0)


# ---- RigL: alpha/2 (1 + cos(pi t / T_end)) every dT steps up to T_end ---------------------------


def test_drop_schedule_follows_the_cosine_and_the_update_steps():
    schedule = DropSchedule.from_fractions(1000, interval=100, end=0.75, alpha=0.3)
    assert schedule.end_step == 750
    assert schedule.update_steps() == [100, 200, 300, 400, 500, 600, 700]
    assert [t for t in range(1001) if schedule.due(t)] == schedule.update_steps()
    for t in schedule.update_steps():
        assert schedule.drop_fraction(t) == pytest.approx(0.15 * (1 + math.cos(math.pi * t / 750)))
    assert schedule.drop_fraction(375) == pytest.approx(0.15)  # half-way: alpha / 2


# ---- one drop-and-grow step, by hand -----------------------------------------------------------


def test_drop_and_grow_layer_by_hand():
    weight = torch.tensor([[0.5, -0.1, 0.0, 0.3, -0.2, 0.0, 0.9, 0.0]])
    keep = torch.tensor([[True, True, False, True, True, False, True, False]])
    grow = torch.tensor([[0.0, 0.0, 0.7, 0.0, 0.0, 0.2, 0.0, 0.4]])
    # 5 active, fraction 0.5: floor(2.5) = 2 dropped, the two smallest magnitudes among the
    # active ones, |-0.1| (index 1) and |-0.2| (index 4). The growth candidates are the inactive
    # positions 1, 2, 4, 5, 7 with scores 0, 0.7, 0, 0.2, 0.4: grow 2 (0.7) and 7 (0.4).
    new = drop_and_grow_layer(weight, keep, grow, 0.5)
    assert new.tolist() == [[True, False, True, True, False, False, True, True]]
    assert int(new.sum()) == int(keep.sum())


def test_a_just_dropped_weight_can_be_grown_back_as_in_the_reference():
    weight = torch.tensor([0.1, 0.5, 0.0, 0.0])
    keep = torch.tensor([True, True, False, False])
    grow = torch.tensor([9.0, 0.0, 1.0, 2.0])  # the dropped weight (index 0) has the top score
    assert drop_and_grow_layer(weight, keep, grow, 0.5).tolist() == [True, True, False, False]


def test_drop_and_grow_breaks_ties_by_position():
    weight = torch.tensor([0.2, 0.2, 0.2, 0.0, 0.0, 0.0])
    keep = torch.tensor([True, True, True, False, False, False])
    grow = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    # floor(3 * 0.34) = 1: drop the later of the tied weights (index 2), grow the first tied
    # candidate (index 2 itself, dropped just now, comes before 3).
    assert drop_and_grow_layer(weight, keep, grow, 0.34).tolist() == [
        True, True, False, True, False, False]


# ---- LAMP (Lee et al. 2021) ------------------------------------------------------------------


def _lamp_brute_force(weights: dict, mask: dict) -> dict:
    """score(w) = w^2 / sum of v^2 over the layer's kept weights v with |v| >= |w|."""
    scores = {}
    for name, w in weights.items():
        alive = [abs(float(v)) for v, k in zip(w.flatten(), mask[name].flatten(), strict=True)
                 if k]
        out = []
        for value, kept in zip(w.flatten().tolist(), mask[name].flatten().tolist(), strict=True):
            if not kept:
                out.append(-math.inf)
                continue
            denominator = sum(v * v for v in alive if v >= abs(value))
            out.append(value * value / denominator if denominator else 0.0)
        scores[name] = torch.tensor(out, dtype=torch.float64).view(w.shape)
    return scores


def test_lamp_scores_match_the_definition_including_ties():
    generator = torch.Generator().manual_seed(3)
    weights = {
        "a": torch.randn(4, 5, generator=generator),
        "b": torch.tensor([[0.5, -0.5, 0.25, 0.5], [1.0, 0.0, -0.25, 0.75]]),  # ties
    }
    mask = {"a": torch.rand(4, 5, generator=generator) < 0.8,
            "b": torch.tensor([[True, True, True, True], [True, False, True, False]])}
    computed = lamp_scores(weights, mask)
    expected = _lamp_brute_force(weights, mask)
    for name in weights:
        torch.testing.assert_close(computed[name], expected[name], rtol=1e-12, atol=0)
    # The largest kept weight of each layer scores 1 (1/k for k tied).
    assert computed["b"][1, 0] == 1.0


def test_lamp_allocation_keeps_the_globally_highest_lamp_scores():
    generator = torch.Generator().manual_seed(5)
    weights = {"a": torch.randn(30, generator=generator) * 5,
               "b": torch.randn(10, generator=generator) * 0.1}
    mask = {name: torch.ones(w.shape, dtype=torch.bool) for name, w in weights.items()}
    kept = prune_to_sparsity(weights, mask, 0.75, "lamp")
    assert sum(int(k.sum()) for k in kept.values()) == 10
    # Brute force: the 10 highest brute-force LAMP scores over both layers.
    lamp = _lamp_brute_force(weights, mask)
    flat = [(float(s), name, i) for name in weights for i, s in enumerate(lamp[name].tolist())]
    top = sorted(flat, key=lambda item: -item[0])[:10]
    expected = {name: torch.zeros(w.shape, dtype=torch.bool) for name, w in weights.items()}
    for _, name, i in top:
        expected[name][i] = True
    for name in weights:
        assert torch.equal(kept[name], expected[name]), name
    # Plain magnitude would have emptied the small-weight layer; LAMP keeps its largest weight.
    assert kept["b"].any()
    assert not prune_to_sparsity(weights, mask, 0.75, "global")["b"].any()
