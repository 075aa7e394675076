"""Keeping pruned weights exactly zero for the whole of training.

Two hooks, because neither alone is enough:

* a post-accumulate-grad hook on each masked parameter zeroes the pruned entries of
  ``.grad`` in place as soon as backward has written it, so gradient clipping norms, Adam's
  moment estimates and GradScaler's inf checks see only the surviving weights (in place: an
  out-of-place tensor hook allocates a gradient-sized tensor per parameter per backward);
* an optimizer step post-hook multiplies the weights by their masks after every
  ``optimizer.step()``, because momentum buffers and (decoupled) weight decay can move a pruned
  weight even when its gradient is zero (e.g. a momentum buffer carried over from dense
  training, or a state loaded with ``optimizer.load_state_dict``).

The step hook runs one ``torch._foreach_mul_`` over lists cached at attach time; nothing is
rebuilt per step. A skipped GradScaler step never calls ``optimizer.step()`` and leaves the
weights as they were, so it needs no special case.

Masks that change during training (gradual pruning, dynamic sparse training) go through
``set_mask``: newly pruned weights and their optimizer state become zero, regrown weights start
at zero with zero optimizer state. A method that grows by gradient (RigL) reads the dense
gradient of pruned weights inside ``dense_gradients()``, where the gradient hook lets it through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from pruning.masks import Mask, apply_mask, check_mask_fits


class MaskedTraining:
    """Keeps ``model``'s masked-out weights exactly zero while ``optimizer`` trains it.

    Attaching zeroes the pruned weights at once. The mask is re-applied after every
    ``optimizer.step()`` and after every ``model.load_state_dict`` (including
    ``assign=True``, which replaces the parameter tensors). ``detach()`` removes every hook;
    the object is also a context manager. Attach after moving the model to its device and
    dtype: the float masks are cached on the parameters' device and dtype at attach time.
    """

    def __init__(self, model: nn.Module, mask: Mask, optimizer: torch.optim.Optimizer) -> None:
        check_mask_fits(model, mask)
        self.model = model
        self.mask = {name: keep.clone() for name, keep in mask.items()}  # immune to later edits
        self.optimizer = optimizer
        self._gradient_handles: list[RemovableHandle] = []
        self._parameters: list[torch.Tensor] = []
        self._float_masks: list[torch.Tensor] = []
        self._pass_dense_gradients = False
        self._bind_parameters()
        self._step_handle = optimizer.register_step_post_hook(self._after_step)
        self._load_handle = model.register_load_state_dict_post_hook(self._after_load)
        self.attached = True

    def _bind_parameters(self) -> None:
        """Cache parameters and float masks, hook the gradients, zero the pruned weights."""
        for handle in self._gradient_handles:
            handle.remove()
        parameters = dict(self.model.named_parameters())
        self._parameters = [parameters[name] for name in self.mask]
        self._float_masks = [
            keep.to(device=parameter.device, dtype=parameter.dtype)
            for keep, parameter in zip(self.mask.values(), self._parameters, strict=True)
        ]
        self._gradient_handles = [
            parameter.register_post_accumulate_grad_hook(self._gradient_masker(float_mask))
            for parameter, float_mask in zip(self._parameters, self._float_masks, strict=True)
        ]
        apply_mask(self.model, self.mask)

    def _gradient_masker(self, float_mask: torch.Tensor) -> Callable[[torch.Tensor], None]:
        @torch.no_grad()
        def mask_gradient(parameter: torch.Tensor) -> None:
            if not self._pass_dense_gradients:
                parameter.grad.mul_(float_mask)

        return mask_gradient

    @contextmanager
    def dense_gradients(self) -> Iterator[None]:
        """Inside this block, backward leaves the gradients of pruned weights in ``.grad``.

        Leaving the block masks them again, so an optimizer step after it sees only the
        surviving weights' gradients.
        """
        self._pass_dense_gradients = True
        try:
            yield
        finally:
            self._pass_dense_gradients = False
            self.mask_gradients()

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of pruned weights now (the gradient hooks do it during backward;
        a data-parallel step calls this again after DDP's all-reduce)."""
        grads = [parameter.grad for parameter in self._parameters if parameter.grad is not None]
        masks = [m for p, m in zip(self._parameters, self._float_masks, strict=True)
                 if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, masks)

    @torch.no_grad()
    def set_mask(self, mask: Mask) -> None:
        """Replace the mask during training (same parameter names, same shapes).

        Weights the new mask prunes are zeroed with their optimizer state (momentum, Adam
        moments); weights it regrows start at zero with zero optimizer state; gradients already
        in ``.grad`` are masked with the new mask.
        """
        if mask.keys() != self.mask.keys():
            raise ValueError("set_mask: the new mask must cover the same parameters")
        check_mask_fits(self.model, mask)
        for name, parameter, float_mask in zip(
            self.mask, self._parameters, self._float_masks, strict=True
        ):
            new = mask[name].to(parameter.device)
            changed = new != self.mask[name].to(parameter.device)
            if not changed.any():
                continue
            # Pruned now: zero the weight. Regrown: it was pruned, so it is zero already; the
            # explicit zero also covers a weight that was nonzero under a kept-but-zero entry.
            parameter.masked_fill_(changed, 0)
            for state in self.optimizer.state.get(parameter, {}).values():
                if isinstance(state, torch.Tensor) and state.shape == parameter.shape:
                    state.masked_fill_(changed, 0)
            float_mask.copy_(new)
            self.mask[name] = new.clone()
        self.mask_gradients()

    @torch.no_grad()
    def _after_step(self, optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        torch._foreach_mul_(self._parameters, self._float_masks)

    def _after_load(self, module: nn.Module, incompatible_keys: object) -> None:
        current = dict(self.model.named_parameters())
        replaced = any(
            current[name] is not cached
            for name, cached in zip(self.mask, self._parameters, strict=True)
        )
        if replaced:
            self._bind_parameters()
        else:
            apply_mask(self.model, self.mask)

    def detach(self) -> None:
        """Remove all hooks; the weights are left as they are."""
        if not self.attached:
            return
        for handle in self._gradient_handles:
            handle.remove()
        self._gradient_handles = []
        self._step_handle.remove()
        self._load_handle.remove()
        self.attached = False

    def __enter__(self) -> MaskedTraining:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.detach()


def attach_mask(model: nn.Module, mask: Mask, optimizer: torch.optim.Optimizer) -> MaskedTraining:
    """Zero the pruned weights now and keep them zero through ``optimizer``'s steps."""
    return MaskedTraining(model, mask, optimizer)
