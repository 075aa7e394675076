"""Scorers against independent computations, and the model left exactly as it was."""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from pruning import (
    SCORERS,
    Mask,
    Scorer,
    ScoringInputs,
    Snip,
    full_mask,
    make_scorer,
    prune_to_sparsity,
    score,
)
from trainables.plugins import load_installed_plugins

load_installed_plugins()  # installed plug-ins' scorers take the contract tests too
EVERY_SCORER = SCORERS.names()


def conv_bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 4, 3, stride=2),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 5),
    )


def batches(count: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(6, 3, 8, 8, generator=generator), torch.randint(5, (6,), generator=generator))
        for _ in range(count)
    ]


def half_mask(net: nn.Module) -> Mask:
    generator = torch.Generator().manual_seed(7)
    return {n: torch.rand(k.shape, generator=generator) < 0.7 for n, k in full_mask(net).items()}


def snapshot(net: nn.Module) -> dict[str, object]:
    return {
        "state": {k: v.clone() for k, v in net.state_dict().items()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in net.named_parameters()},
        "modes": [m.training for m in net.modules()],
    }


def assert_unchanged(net: nn.Module, before: dict[str, object]) -> None:
    after = snapshot(net)
    assert after["modes"] == before["modes"]
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
    for key, value in before["grads"].items():
        got = after["grads"][key]
        assert (got is None and value is None) or torch.equal(got, value), key


def test_registry_names_and_errors() -> None:
    assert {"grasp", "magnitude", "random", "snip", "synflow"} <= set(SCORERS.names())
    assert SCORERS.get("snip") is Snip
    hint = re.escape("unknown scorer 'snp' (did you mean 'snip'?); allowed: grasp, magnitude")
    with pytest.raises(ValueError, match=hint):
        score(conv_bn_net(), full_mask(conv_bn_net()), "snp")


def test_magnitude_is_absolute_weight() -> None:
    net = conv_bn_net()
    mask = full_mask(net)
    scores = score(net, mask, "magnitude")
    for name, parameter in net.named_parameters():
        if name in mask:
            assert torch.equal(scores[name], torch.abs(parameter.detach()))


def test_random_scores_are_seeded_uniform() -> None:
    net = conv_bn_net()
    mask = full_mask(net)
    first, again, other = (score(net, mask, "random", seed=s) for s in (3, 3, 4))
    for name in mask:
        assert torch.equal(first[name], again[name])
        assert not torch.equal(first[name], other[name])
        assert float(first[name].min()) >= 0.0 and float(first[name].max()) < 1.0


def hand_snip(
    net: nn.Module, mask: Mask, data: list[tuple[torch.Tensor, torch.Tensor]], training: bool = True
) -> dict[str, torch.Tensor]:
    """The reference recipe: masked copy, train mode, loss.backward() per batch, |w * grad|."""
    reference = copy.deepcopy(net).train(training)
    parameters = dict(reference.named_parameters())
    with torch.no_grad():
        for name, keep in mask.items():
            parameters[name].mul_(keep)
    reference.zero_grad()
    for inputs, targets in data:
        F.cross_entropy(reference(inputs), targets).backward()
    return {name: (parameters[name] * parameters[name].grad).abs().detach() for name in mask}


@pytest.mark.parametrize("num_batches", [1, 2])
def test_snip_equals_hand_autograd_and_leaves_the_model_untouched(num_batches: int) -> None:
    net = conv_bn_net()
    data = batches(3)
    net(data[2][0])  # non-trivial running statistics
    net.eval()
    net[1].train()  # a mixed mode that must be restored per module
    for parameter in net.parameters():
        parameter.grad = torch.randn_like(parameter)
    mask = half_mask(net)
    before = snapshot(net)
    scores = score(net, mask, "snip", batches=iter(data), num_batches=num_batches)
    assert_unchanged(net, before)
    expected = hand_snip(net, mask, data[:num_batches])
    for name in mask:
        torch.testing.assert_close(scores[name], expected[name], rtol=1e-5, atol=1e-7)
        assert bool((scores[name][~mask[name]] == 0).all())
    # Eval-mode statistics would give other scores: the test can tell the modes apart.
    eval_scores = hand_snip(net, mask, data[:num_batches], training=False)
    assert not all(torch.allclose(scores[n], eval_scores[n]) for n in mask)


def test_snip_needs_enough_batches() -> None:
    net = conv_bn_net()
    with pytest.raises(ValueError, match="num_batches is 3"):
        score(net, full_mask(net), "snip", batches=batches(2), num_batches=3)
    with pytest.raises(ValueError, match="needs batches"):
        score(net, full_mask(net), "snip")


def tanh_mlp() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


@pytest.mark.parametrize("num_batches", [1, 2])
def test_grasp_equals_explicit_hessian_times_gradient(num_batches: int) -> None:
    net = tanh_mlp()
    mask = full_mask(net)
    mask["0.weight"][1, 2] = False
    generator = torch.Generator().manual_seed(0)
    data = [
        (torch.randn(5, 3, generator=generator, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1]))
        for _ in range(num_batches)
    ]
    temperature = 3.0
    scores = score(
        net, mask, "grasp", batches=data, num_batches=num_batches, temperature=temperature
    )
    # Independent: the full Hessian of the summed loss over the flattened masked weights.
    names = list(mask)
    parameters = dict(net.named_parameters())
    masked = [(parameters[n] * mask[n]).detach() for n in names]
    sizes = [w.numel() for w in masked]

    def total_loss(flat: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(flat, sizes)
        state = {n: p.detach() for n, p in net.named_parameters()}
        state.update(
            {n: piece.view(w.shape) for n, piece, w in zip(names, pieces, masked, strict=True)}
        )
        return sum(
            F.cross_entropy(functional_call(net, state, (x,)) / temperature, y) for x, y in data
        )

    flat = torch.cat([w.flatten() for w in masked])
    keep = torch.cat([mask[n].flatten() for n in names]).double()
    gradient = torch.autograd.functional.jacobian(total_loss, flat)
    hessian = torch.autograd.functional.hessian(total_loss, flat)
    # The reference's m * H (m * g): the pruned weight's gradient must not reach H g.
    expected = torch.split(flat * keep * (hessian @ (keep * gradient)), sizes)
    for name, piece in zip(names, expected, strict=True):
        torch.testing.assert_close(
            scores[name], piece.view(mask[name].shape), rtol=1e-9, atol=1e-15
        )


def test_grasp_keeps_the_lowest_paper_scores() -> None:
    """Wang et al. remove the weights with the highest S = -w * Hg."""
    net = tanh_mlp()
    mask = full_mask(net)
    data = [(torch.randn(8, 3, dtype=torch.float64), torch.randint(2, (8,)))]
    scores = score(net, mask, "grasp", batches=data)
    kept = prune_to_sparsity(scores, mask, 0.5)
    paper = torch.cat([-scores[n].flatten() for n in mask])
    is_kept = torch.cat([kept[n].flatten() for n in mask])
    assert float(paper[is_kept].max()) <= float(paper[~is_kept].min())


def two_layer_net() -> nn.Sequential:
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))


def closed_form_synflow(net: nn.Sequential, mask: Mask) -> dict[str, torch.Tensor]:
    """With all-ones input, |W| and |b|: R = 1^T (|W2| (|W1| 1 + |b1|) + |b2|)."""
    w1 = net[0].weight.detach().double().abs() * mask["0.weight"]
    b1 = net[0].bias.detach().double().abs()
    w2 = net[2].weight.detach().double().abs() * mask["2.weight"]
    column_sums = w2.sum(dim=0)  # dR/dW1[i, j] = sum_k |W2[k, i]|
    hidden = w1.sum(dim=1) + b1  # dR/dW2[k, i] = (|W1| 1 + |b1|)_i
    return {"0.weight": w1 * column_sums[:, None], "2.weight": w2 * hidden[None, :]}


def test_synflow_single_round_equals_closed_form() -> None:
    net = two_layer_net()
    mask = full_mask(net)
    mask["2.weight"][0, 0] = False
    scores = score(net, mask, "synflow", iterations=1, input_shape=(4,))
    expected = closed_form_synflow(net, mask)
    for name, keep in mask.items():
        assert scores[name].dtype == torch.float64
        torch.testing.assert_close(scores[name][keep], expected[name][keep], rtol=1e-12, atol=0)
    assert float(scores["2.weight"][0, 0]) == float("-inf")  # pruned weights score -inf


def test_iterative_synflow_equals_a_hand_rolled_schedule() -> None:
    net = two_layer_net()
    mask = full_mask(net)
    total, rounds, target = 35, 4, 0.8
    reference = {n: k.clone() for n, k in mask.items()}
    for k in range(1, rounds + 1):
        sparsity = target if k == rounds else 1 - (1 - target) ** (k / rounds)
        keep = total - round(sparsity * total)
        scores = closed_form_synflow(net, reference)
        flat = torch.cat([scores[n].flatten() for n in reference])
        chosen = torch.zeros(total, dtype=torch.bool)
        chosen[torch.topk(flat, keep).indices] = True
        reference = dict(zip(reference, torch.split(chosen, [20, 15]), strict=True))
        reference = {n: v.view(mask[n].shape) for n, v in reference.items()}
    scores = score(
        net, mask, "synflow", iterations=rounds, target_sparsity=target, input_shape=(4,)
    )
    ours = prune_to_sparsity(scores, mask, target)
    assert sum(int(k.sum()) for k in ours.values()) == total - round(target * total)
    for name in mask:
        assert torch.equal(ours[name], reference[name]), name


def test_synflow_needs_a_target_to_iterate() -> None:
    net = two_layer_net()
    with pytest.raises(ValueError, match="target_sparsity"):
        score(net, full_mask(net), "synflow", input_shape=(4,))


def contract_scorer(name: str) -> Scorer:
    """The registered scorer `name` with its defaults, shrunk as --smoke shrinks it."""
    return make_scorer(name, SCORERS.get(name).smoke_settings)


def contract_inputs(scorer: Scorer, target: float) -> ScoringInputs:
    """Everything a trial gives a scorer: as many batches as it reads, a seed, the input shape."""
    return ScoringInputs(batches=batches(max(scorer.batches_needed, 1)), target_sparsity=target,
                         seed=5, input_shape=(3, 8, 8))


@pytest.mark.parametrize("name", EVERY_SCORER)
def test_every_scorer_leaves_a_batchnorm_model_untouched(name: str) -> None:
    net = conv_bn_net()
    data = batches(2)
    net(data[1][0])
    net.eval()
    net[4].train()
    for parameter in list(net.parameters())[:3]:
        parameter.grad = torch.randn_like(parameter)
    mask = half_mask(net)
    before = snapshot(net)
    scorer = contract_scorer(name)
    with torch.no_grad():  # scorers must work even where the caller disabled autograd
        scorer(net, mask, contract_inputs(scorer, 0.6))
    assert_unchanged(net, before)


@pytest.mark.parametrize("name", EVERY_SCORER)
@pytest.mark.parametrize("target", [0.5, 0.9])
def test_every_scorer_hits_the_exact_count_and_never_revives(name: str, target: float) -> None:
    net = conv_bn_net()
    mask = half_mask(net)  # about 30% already pruned
    scorer = contract_scorer(name)
    scores = scorer(net, mask, contract_inputs(scorer, target))
    assert set(scores) == set(mask)
    assert all(scores[key].shape == mask[key].shape for key in mask)
    again = scorer(net, mask, contract_inputs(scorer, target))
    assert all(torch.equal(scores[key], again[key]) for key in mask)  # deterministic
    pruned = prune_to_sparsity(scores, mask, target)
    total = sum(k.numel() for k in mask.values())
    assert sum(int(k.sum()) for k in pruned.values()) == total - round(target * total)
    for name in mask:
        assert not bool((pruned[name] & ~mask[name]).any())


def _bn_mlp() -> nn.Sequential:
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():  # running statistics far from a fresh batch's
        net[1].running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        net[1].running_var.copy_(torch.tensor([4.0, 0.25, 1.0, 9.0]))
        net[1].weight.copy_(torch.tensor([1.5, 0.5, -1.0, 2.0]))
    return net


def _hand_snip(net: nn.Sequential, mask: Mask, x: torch.Tensor, y: torch.Tensor, mode: str):
    """|w * dL/dw| written out with plain tensor ops: BatchNorm normalises with the batch's own
    mean and biased variance in train mode, with the running statistics in eval mode."""
    w1 = (net[0].weight * mask["0.weight"]).detach().requires_grad_()
    w2 = (net[3].weight * mask["3.weight"]).detach().requires_grad_()
    bn = net[1]
    h = x @ w1.T + net[0].bias.detach()
    if mode == "train":
        mean, var = h.mean(0), h.var(0, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    h = (h - mean) / torch.sqrt(var + bn.eps) * bn.weight.detach() + bn.bias.detach()
    out = torch.tanh(h) @ w2.T + net[3].bias.detach()
    loss = F.cross_entropy(out, y)
    g1, g2 = torch.autograd.grad(loss, (w1, w2))
    return {"0.weight": (w1 * g1).abs().detach(), "3.weight": (w2 * g2).abs().detach()}


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_snip_batchnorm_mode_equals_a_hand_computation(mode: str) -> None:
    net = _bn_mlp()
    mask = full_mask(net)
    mask["0.weight"][1, 1] = False
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(8, 3, generator=generator, dtype=torch.float64)
    y = torch.randint(2, (8,), generator=generator)
    scores = score(net, mask, "snip", batches=[(x, y)], batchnorm_mode=mode)
    expected = _hand_snip(net, mask, x, y, mode)
    for name in mask:
        torch.testing.assert_close(scores[name], expected[name], rtol=1e-10, atol=1e-14)
    other = _hand_snip(net, mask, x, y, "eval" if mode == "train" else "train")
    assert not torch.allclose(scores["0.weight"], other["0.weight"])  # the mode matters here


def test_grasp_batchnorm_mode_is_used_and_checked() -> None:
    net = _bn_mlp()
    mask = full_mask(net)
    data = [(torch.randn(8, 3, dtype=torch.float64), torch.randint(2, (8,)))]
    train = score(net, mask, "grasp", batches=data, batchnorm_mode="train")
    evaluated = score(net, mask, "grasp", batches=data, batchnorm_mode="eval")
    assert not torch.allclose(train["0.weight"], evaluated["0.weight"])
    with pytest.raises(ValueError, match="batchnorm_mode"):
        score(net, mask, "grasp", batches=data, batchnorm_mode="frozen")


def test_a_scorer_is_an_object_that_carries_its_settings() -> None:
    grasp = make_scorer("grasp", {"temperature": 3.0, "num_batches": 2})
    assert grasp.settings() == {"num_batches": 2, "batchnorm_mode": "train", "temperature": 3.0}
    assert grasp.batches_needed == 2 and make_scorer("magnitude").batches_needed == 0
    net, data = conv_bn_net(), batches(2)
    mask = half_mask(net)
    by_object = score(net, mask, grasp, batches=data)
    by_name = score(net, mask, "grasp", batches=data, temperature=3.0, num_batches=2)
    assert all(torch.equal(by_object[key], by_name[key]) for key in mask)
    with pytest.raises(TypeError, match="given with a scorer object"):
        score(net, mask, grasp, batches=data, temperature=1.0)


@pytest.mark.parametrize("name, settings, words", [
    ("snip", {"score_batches": 2}, "scorer 'snip' has no setting 'score_batches' (did you mean "
                                   "'num_batches'?); its settings: num_batches, batchnorm_mode"),
    ("synflow", {"iteration": 3}, "no setting 'iteration' (did you mean 'iterations'?)"),
    ("magnitude", {"x": 1}, "its settings: none"),
    ("synflow", {"iterations": 0}, "iterations must be >= 1; got 0"),
    ("grasp", {"temperature": 0.0}, "temperature must be > 0"),
    ("snip", {"batchnorm_mode": "frozen"}, "batchnorm_mode must be one of ('train', 'eval')"),
    ("snp", {}, "unknown scorer 'snp' (did you mean 'snip'?)"),
])
def test_bad_scorer_settings_are_one_value_error(name: str, settings: dict, words: str) -> None:
    with pytest.raises(ValueError) as refused:
        make_scorer(name, settings)
    assert words in str(refused.value)
