"""The project's own error types: each carries one line meant for a person, not a traceback."""


class PrunetuneError(Exception):
    """Base class for errors prunetune reports to the user as one line (exit status 2)."""


class ConfigError(PrunetuneError, ValueError):
    """A config file, field or override is invalid; the message names the field path."""


class DatasetUnavailableError(PrunetuneError):
    """A dataset is absent and cannot be downloaded; the message says where to put the files."""


class WeightsUnavailableError(PrunetuneError):
    """Pretrained weights are neither cached nor downloadable, or a weights file is unusable."""


class GpuUnavailableError(PrunetuneError):
    """Ray granted a trial a GPU that torch cannot compute on; the message names the driver, the
    wheel's CUDA and architectures, and CUDA_VISIBLE_DEVICES. A retry cannot fix it."""


class RankDivergenceError(PrunetuneError):
    """The data-parallel workers of one trial hold different masks: they would go on training
    different networks. The message names the ranks and what differs."""


#: Errors of a trial that a retry cannot fix: the trial fails at once (sweeps/fatal_errors.py).
FATAL_TRIAL_ERRORS = (ConfigError, GpuUnavailableError, RankDivergenceError)
