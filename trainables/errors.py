"""The project's own error types: each carries one line meant for a person, not a traceback."""


class PrunetuneError(Exception):
    """Base class for errors prunetune reports to the user as one line (exit status 2)."""


class ConfigError(PrunetuneError, ValueError):
    """A config file, field or override is invalid; the message names the field path."""


class DatasetUnavailableError(PrunetuneError):
    """A dataset is absent and cannot be downloaded; the message says where to put the files."""


class WeightsUnavailableError(PrunetuneError):
    """Pretrained weights are neither cached nor downloadable, or a weights file is unusable."""
