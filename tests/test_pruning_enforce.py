"""Pruned weights stay exactly zero through training: optimizers, clipping, AMP, reloads."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruning import Mask, apply_mask, attach_mask, full_mask

Optimizers = dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]]
OPTIMIZERS: Optimizers = {
    "sgd_momentum_decay": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
    "sgd_nesterov": lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01
    ),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
}


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 3 * 3, 16),
        nn.ReLU(),
        nn.Linear(16, 4),
    )


def random_mask(net: nn.Module, density: float = 0.5) -> Mask:
    generator = torch.Generator().manual_seed(1)
    return {
        name: torch.rand(keep.shape, generator=generator) < density
        for name, keep in full_mask(net).items()
    }


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    return torch.randn(8, 3, 8, 8, generator=generator), torch.randint(4, (8,), generator=generator)


def pruned_entries(net: nn.Module, mask: Mask) -> torch.Tensor:
    parameters = dict(net.named_parameters())
    return torch.cat([parameters[name].detach()[~keep] for name, keep in mask.items()])


def assert_pruned_exactly_zero(net: nn.Module, mask: Mask) -> None:
    values = pruned_entries(net, mask)
    assert values.numel() > 0
    assert bool((values == 0).all()), f"{int((values != 0).sum())} pruned weights are nonzero"


def warm_optimizer(net: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 3) -> None:
    """Dense steps, so momentum / Adam moments are nonzero at the soon-to-be-pruned weights."""
    for step in range(steps):
        inputs, targets = batch(1000 + step)
        optimizer.zero_grad()
        F.cross_entropy(net(inputs), targets).backward()
        optimizer.step()


def train_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    clip: float | None = None,
    autocast_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    inputs, targets = batch(step)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(
        "cpu", dtype=autocast_dtype or torch.bfloat16, enabled=bool(autocast_dtype)
    ):
        loss = F.cross_entropy(net(inputs), targets)
    if scaler is None:
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
    scaler.step(optimizer)
    scaler.update()


@pytest.mark.parametrize("optimizer_name", list(OPTIMIZERS))
@pytest.mark.parametrize("clip", [None, 0.5])
def test_pruned_weights_stay_zero_through_training(optimizer_name: str, clip: float | None) -> None:
    net = small_net()
    optimizer = OPTIMIZERS[optimizer_name](list(net.parameters()))
    warm_optimizer(net, optimizer)
    mask = random_mask(net)
    kept_before = {n: p.detach().clone() for n, p in net.named_parameters()}
    with attach_mask(net, mask, optimizer):
        for step in range(25):
            train_step(net, optimizer, step, clip=clip)
            assert_pruned_exactly_zero(net, mask)
    # Training really happened: surviving weights moved.
    parameters = dict(net.named_parameters())
    assert all(not torch.equal(parameters[n][k], kept_before[n][k]) for n, k in mask.items())


def test_masking_gradients_alone_does_not_keep_weights_zero() -> None:
    """Control: without the post-step re-mask, momentum revives pruned weights."""
    net = small_net()
    optimizer = OPTIMIZERS["sgd_momentum_decay"](list(net.parameters()))
    warm_optimizer(net, optimizer)
    mask = random_mask(net)
    apply_mask(net, mask)
    parameters = dict(net.named_parameters())
    for name, keep in mask.items():
        parameters[name].register_hook(lambda g, keep=keep: g * keep)
    for step in range(5):
        train_step(net, optimizer, step)
    assert bool((pruned_entries(net, mask) != 0).any())


def test_adam_moments_and_gradients_ignore_pruned_weights() -> None:
    net = small_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    mask = random_mask(net)
    parameters = dict(net.named_parameters())
    with attach_mask(net, mask, optimizer):
        for step in range(5):
            train_step(net, optimizer, step)
            for name, keep in mask.items():
                assert bool((parameters[name].grad[~keep] == 0).all())
    for name, keep in mask.items():
        state = optimizer.state[parameters[name]]
        assert bool((state["exp_avg"][~keep] == 0).all())
        assert bool((state["exp_avg_sq"][~keep] == 0).all())
        assert bool((state["exp_avg_sq"][keep] != 0).any())


def test_clip_norm_sees_only_surviving_weights() -> None:
    net = small_net()
    mask = random_mask(net)
    apply_mask(net, mask)
    reference = copy.deepcopy(net)
    inputs, targets = batch(0)
    # Independent: plain autograd on an unhooked copy, pruned entries dropped by hand.
    F.cross_entropy(reference(inputs), targets).backward()
    squares = 0.0
    for name, parameter in reference.named_parameters():
        gradient = parameter.grad[mask[name]] if name in mask else parameter.grad
        squares += float((gradient.double() ** 2).sum())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    attach_mask(net, mask, optimizer)
    F.cross_entropy(net(inputs), targets).backward()
    norm = torch.nn.utils.clip_grad_norm_(net.parameters(), 1e9)
    assert float(norm) == pytest.approx(squares**0.5, rel=1e-5)


def test_bf16_autocast_keeps_pruned_weights_zero() -> None:
    net = small_net()
    optimizer = OPTIMIZERS["sgd_momentum_decay"](list(net.parameters()))
    warm_optimizer(net, optimizer)
    mask = random_mask(net)
    attach_mask(net, mask, optimizer)
    for step in range(15):
        train_step(net, optimizer, step, clip=1.0, autocast_dtype=torch.bfloat16)
        assert_pruned_exactly_zero(net, mask)


def test_grad_scaler_with_skipped_steps_keeps_pruned_weights_zero() -> None:
    net = small_net()
    optimizer = OPTIMIZERS["adamw"](list(net.parameters()))
    warm_optimizer(net, optimizer)
    mask = random_mask(net)
    attach_mask(net, mask, optimizer)
    # A large initial scale overflows the fp16 gradients: the first steps are skipped; the
    # scale then oscillates (growth every step), mixing taken and skipped steps.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24, growth_interval=1)
    scales = []
    for step in range(20):
        train_step(net, optimizer, step, clip=1.0, autocast_dtype=torch.float16, scaler=scaler)
        scales.append(scaler.get_scale())
        assert_pruned_exactly_zero(net, mask)
    steps = list(zip(scales, scales[1:], strict=False))
    assert scales[0] < 2.0**24  # a step was skipped (the scale backed off)
    assert any(later < earlier for earlier, later in steps[5:])  # skipped later on, too
    assert any(later > earlier for earlier, later in steps)  # and steps were taken


def test_mask_survives_model_and_optimizer_load_state_dict() -> None:
    net = small_net()
    optimizer = OPTIMIZERS["sgd_momentum_decay"](list(net.parameters()))
    warm_optimizer(net, optimizer)
    dense_model_state = copy.deepcopy(net.state_dict())
    dense_optimizer_state = copy.deepcopy(optimizer.state_dict())  # momentum nonzero everywhere
    mask = random_mask(net)
    keys_before = list(net.state_dict())
    attach_mask(net, mask, optimizer)
    assert list(net.state_dict()) == keys_before  # checkpoints stay plain state_dicts
    net.load_state_dict(dense_model_state)
    assert_pruned_exactly_zero(net, mask)
    optimizer.load_state_dict(dense_optimizer_state)
    for step in range(5):
        train_step(net, optimizer, step)
        assert_pruned_exactly_zero(net, mask)


def test_load_state_dict_with_assign_rebinds_to_the_new_parameters() -> None:
    net = small_net()
    mask = random_mask(net)
    training = attach_mask(net, mask, torch.optim.SGD(net.parameters(), lr=0.1))
    dense = {
        name: torch.randn_like(value) if value.is_floating_point() else value
        for name, value in small_net().state_dict().items()
    }
    net.load_state_dict(dense, assign=True)
    assert_pruned_exactly_zero(net, mask)
    inputs, targets = batch(0)
    F.cross_entropy(net(inputs), targets).backward()
    parameters = dict(net.named_parameters())
    for name, keep in mask.items():
        assert bool((parameters[name].grad[~keep] == 0).all())
    training.detach()


def test_detach_removes_every_hook() -> None:
    net = small_net()
    optimizer = OPTIMIZERS["sgd_momentum_decay"](list(net.parameters()))
    warm_optimizer(net, optimizer)
    mask = random_mask(net)
    training = attach_mask(net, mask, optimizer)
    training.detach()
    training.detach()  # idempotent
    assert_pruned_exactly_zero(net, mask)  # attaching zeroed them
    train_step(net, optimizer, 0)
    parameters = dict(net.named_parameters())
    assert any(bool((parameters[n].grad[~k] != 0).any()) for n, k in mask.items())
    assert bool((pruned_entries(net, mask) != 0).any())
