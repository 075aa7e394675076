"""Channel groups: the sets of layers that must lose the same channels together.

Torch-Pruning's ``DependencyGraph`` traces the network once and knows which layers are tied: a
convolution's output channels are the channels of the BatchNorm after it and the input
channels of every layer that reads them, and across a residual addition the two branches' last
convolutions share their output channels. prunetune asks it for these groups and lets it do the
surgery (slicing weights, BatchNorm statistics and downstream inputs consistently); prunetune
decides only *which* channels go.

Two kinds of channels are never pruned: the network's input channels (no layer produces them,
so they form no group) and the outputs of the ``keep_outputs`` layers (by default the last
``nn.Linear``: the classifier's class scores).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

#: Layers whose output channels root a group (as Torch-Pruning's own pruners use them).
ROOT_TYPES = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class ChannelGroup:
    """One set of coupled channels, named after its first producing layer (module order)."""

    name: str
    channels: int
    filters: tuple[str, ...]
    """Conv2d/Linear layers whose output channels (filters) these are."""
    norms: tuple[str, ...]
    """BatchNorm layers over these channels."""
    consumers: tuple[str, ...]
    """Conv2d/Linear layers that read these channels as input."""


class ChannelGraph:
    """Torch-Pruning's dependency graph of ``model`` and its channel groups, in module order.

    ``example_inputs`` only traces the graph (one small batch is enough; its spatial size does
    not matter as long as the network accepts it).
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: torch.Tensor,
        keep_outputs: Sequence[str] | None = None,
    ) -> None:
        self.model = model
        self._modules = dict(model.named_modules())
        self._names = {module: name for name, module in self._modules.items()}
        if keep_outputs is None:
            linears = [name for name, m in self._modules.items() if isinstance(m, nn.Linear)]
            keep_outputs = linears[-1:]
        unknown = [name for name in keep_outputs if name not in self._modules]
        if unknown:
            raise ValueError(f"keep_outputs names no module of the model: {unknown}")
        self.keep_outputs = tuple(keep_outputs)
        self.graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
        ignored = [self._modules[name] for name in self.keep_outputs]
        found = [
            self._describe(group)
            for group in self.graph.get_all_groups(
                ignored_layers=ignored, root_module_types=ROOT_TYPES
            )
        ]
        order = {name: index for index, name in enumerate(self._modules)}
        self.groups: list[ChannelGroup] = sorted(found, key=lambda group: order[group.name])

    def group(self, name: str) -> ChannelGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"no channel group {name!r}; groups: {[g.name for g in self.groups]}")

    def module(self, name: str) -> nn.Module:
        return self._modules[name]

    def remove(self, removed: dict[str, Sequence[int]]) -> None:
        """Remove channels in place: ``group name -> channel indices`` (current numbering).

        Groups are disjoint, so removing one group's channels leaves another's numbering as it
        was. A group must keep at least one channel.
        """
        for name, indices in removed.items():
            group = self.group(name)
            indices = sorted({int(index) for index in indices})
            if not indices:
                continue
            if indices[0] < 0 or indices[-1] >= group.channels:
                raise IndexError(f"group {name} has {group.channels} channels; got {indices}")
            if len(indices) >= group.channels:
                raise ValueError(f"group {name} must keep at least one of its {group.channels}")
            root = self._modules[name]
            pruner = self.graph.get_pruner_of_module(root)
            pruning_group = self.graph.get_pruning_group(root, pruner.prune_out_channels, indices)
            if not self.graph.check_pruning_group(pruning_group):
                raise ValueError(f"Torch-Pruning refuses to remove {indices} from group {name}")
            pruning_group.prune()
        self.groups = [self._recount(group) for group in self.groups]

    def _describe(self, group: tp.Group) -> ChannelGroup:
        filters, norms, consumers = [], [], []
        for dependency, _ in group:
            module = dependency.target.module
            name = self._names.get(module) if isinstance(module, nn.Module) else None
            if name is None:  # elementwise ops (add, ReLU, ...): nodes without parameters
                continue
            outgoing = self.graph.is_out_channel_pruning_fn(dependency.handler)
            if isinstance(module, ROOT_TYPES):
                (filters if outgoing else consumers).append(name)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                norms.append(name)
            elif any(True for _ in module.parameters(recurse=False)):
                raise NotImplementedError(
                    f"channel pruning supports Conv2d, Linear and BatchNorm layers; "
                    f"{name} ({type(module).__name__}) shares channels with them"
                )
        order = {name: index for index, name in enumerate(self._modules)}
        filters = sorted(set(filters), key=order.__getitem__)
        channels = _out_channels(self._modules[filters[0]])
        for name in (*filters, *norms):
            module = self._modules[name]
            size = _out_channels(module) if name in filters else module.num_features
            grouped = isinstance(module, nn.Conv2d) and module.groups != 1
            if size != channels or grouped:
                # Concatenations, splits and grouped convolutions map channel indices between
                # layers; the criteria here read channel c of every layer as the same channel.
                raise NotImplementedError(
                    f"channel group of {filters[0]} maps channels between layers ({name}); "
                    "supported: networks without concatenation, split or grouped convolution"
                )
        return ChannelGroup(
            name=filters[0],
            channels=channels,
            filters=tuple(filters),
            norms=tuple(sorted(set(norms), key=order.__getitem__)),
            consumers=tuple(sorted(set(consumers), key=order.__getitem__)),
        )

    def _recount(self, group: ChannelGroup) -> ChannelGroup:
        channels = _out_channels(self._modules[group.name])
        return ChannelGroup(group.name, channels, group.filters, group.norms, group.consumers)


def _out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels
