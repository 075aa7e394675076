"""ResNet-18's channel groups written out by hand, and checks of a channel-pruned network against
the original sliced by hand: shared by the pruning-level and the trial-level structured tests."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock


def hand_groups() -> dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]:
    """ResNet-18's channel groups from its architecture: (filters, norms, consumers).

    Each block's first conv is a group of its own, read by the block's second conv. The
    residual additions tie a stage's output convs (stage 1: the stem and both blocks' conv2;
    later stages: block 0's conv2 and downsample conv and block 1's conv2); the stage output is
    read by the next block's conv1 (and, across stages, the next stage's downsample) or fc.
    """
    groups = {}
    for stage in range(1, 5):
        s = f"layer{stage}"
        if stage == 1:
            producers = ("conv1", f"{s}.0.conv2", f"{s}.1.conv2")
            norms = ("bn1", f"{s}.0.bn2", f"{s}.1.bn2")
        else:
            producers = (f"{s}.0.conv2", f"{s}.0.downsample.0", f"{s}.1.conv2")
            norms = (f"{s}.0.bn2", f"{s}.0.downsample.1", f"{s}.1.bn2")
        readers = ((f"{s}.0.conv1",) if stage == 1 else ()) + (f"{s}.1.conv1",)
        readers += (
            (f"layer{stage + 1}.0.conv1", f"layer{stage + 1}.0.downsample.0")
            if stage < 4
            else ("fc",)
        )
        groups[producers[0]] = (producers, norms, readers)
        for block in range(2):
            groups[f"{s}.{block}.conv1"] = (
                (f"{s}.{block}.conv1",),
                (f"{s}.{block}.bn1",),
                (f"{s}.{block}.conv2",),
            )
    return groups


def brute_force_l1(model: nn.Module) -> dict[str, list[float]]:
    """Per group, per channel: the mean over the group's producing convs of the filter's L1.

    Summed in float64, as the criterion does (pruning/channel_importance.py): a float32 sum is
    off in the 7th digit, and by a different amount on a CPU whose vector width differs, which
    could swap two channels with near-equal scores; in float64 the two computations agree to
    about 1e-16, far below any gap between the scores of distinct trained or random filters.
    """
    modules = dict(model.named_modules())
    scores = {}
    for name, (filters, _, _) in hand_groups().items():
        channels = modules[filters[0]].out_channels
        scores[name] = [
            sum(float(modules[f].weight.detach()[c].double().abs().sum()) for f in filters)
            / len(filters)
            for c in range(channels)
        ]
    return scores


def old_and_new_slices(
    before: nn.Module, after: nn.Module, kept: dict[str, list[int]]
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Each pruned tensor next to the original sliced to the kept channels (by hand)."""
    out_keep, in_keep = {}, {}
    for name, (filters, norms, readers) in hand_groups().items():
        for module in (*filters, *norms):
            out_keep[module] = kept[name]
        for module in readers:
            in_keep[module] = kept[name]
    old, new = dict(before.named_modules()), dict(after.named_modules())
    pairs = []
    for name, module in old.items():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            expected = module.weight.detach()
            if name in out_keep:
                expected = expected[out_keep[name]]
            if name in in_keep:
                expected = expected[:, in_keep[name]]
            pairs.append((name, new[name].weight.detach(), expected))
            if module.bias is not None:
                bias = module.bias.detach()
                pairs.append(
                    (
                        name,
                        new[name].bias.detach(),
                        bias[out_keep[name]] if name in out_keep else bias,
                    )
                )
        elif isinstance(module, nn.BatchNorm2d):
            for key in ("weight", "bias", "running_mean", "running_var"):
                pairs.append(
                    (
                        f"{name}.{key}",
                        getattr(new[name], key).detach(),
                        getattr(module, key).detach()[out_keep[name]],
                    )
                )
    return pairs


def residual_shapes_match(model: nn.Module, inputs: torch.Tensor) -> list[tuple]:
    """Run a forward pass and record, per BasicBlock, its residual branch and identity shapes."""
    records, handles = [], []
    for name, block in model.named_modules():
        if isinstance(block, BasicBlock):

            def hook(module, args, output, name=name):
                (x,) = args
                identity = module.downsample(x) if module.downsample is not None else x
                branch = module.bn2(module.conv2(module.relu(module.bn1(module.conv1(x)))))
                records.append(
                    (name, tuple(branch.shape), tuple(identity.shape), tuple(output.shape))
                )

            handles.append(block.register_forward_hook(hook))
    with torch.no_grad():
        model.eval()(inputs)
    for handle in handles:
        handle.remove()
    return records
