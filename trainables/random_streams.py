"""Every random stream a trial draws from, named in one place.

Each stream is a pure function of the trial's seed and of where it is used (round, epoch, step,
layer), never of what ran before. That is what makes a resumed trial replay exactly what an
uninterrupted one would have drawn: checkpoints hold no RNG state, because there is none to hold.

The constants are arbitrary but fixed (changing one changes every result that uses the stream);
they are distinct primes so that no two streams of one seed coincide.
"""

from __future__ import annotations

import torch

_DATA_SEED, _DATA_ROUND = 1_000_003, 10_007
_SCORING_EPOCH = 999_983  # data-order stream position reserved for the scoring batches
_CONTROL = 7_919
_REINIT_BASE, _REINIT = 1_000_000, 1_009
_GROW_SEED, _GROW_STEP = 2_000_003, 7_907
_CHANNELS = 7_877


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def seed_initialisation(seed: int) -> None:
    """Seed torch's global RNG right before the model is built: the initial weights."""
    torch.manual_seed(seed)


def data_order(seed: int, round_index: int, epoch: int) -> torch.Generator:
    """Shuffling and augmentation of one epoch of one round (a CPU generator)."""
    return _generator(seed * _DATA_SEED + round_index * _DATA_ROUND + epoch)


def scoring_batches(seed: int) -> torch.Generator:
    """Which training batches a data-dependent scorer (SNIP, GraSP) sees."""
    return data_order(seed, 0, _SCORING_EPOCH)


def random_scores_seed(seed: int) -> int:
    """Seed of the `random` scorer (a control: random pruning)."""
    return seed


def mask_control(seed: int, round_index: int) -> torch.Generator:
    """The layerwise-shuffle mask control of round `round_index`."""
    return _generator(seed * _CONTROL + round_index)


def reinitialisation_seed(seed: int, round_index: int) -> int:
    """Global-RNG seed for the fresh weights of `prune.reinit` in round `round_index`."""
    return _REINIT_BASE + seed * _REINIT + round_index


def regrowth(seed: int, step: int, layer_index: int) -> torch.Generator:
    """Random regrowth (SET) of layer `layer_index` at training step `step`."""
    return _generator((seed * _GROW_SEED + step) * _GROW_STEP + layer_index)


def random_channels_seed(seed: int, round_index: int) -> int:
    """Seed of the `random` channel criterion (the structured control) in round `round_index`."""
    return seed * _CHANNELS + round_index
