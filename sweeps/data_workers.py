"""The streaming DataLoader workers a sweep asks for, checked against its CPUs before Ray starts.

Ray packs trials onto a node by `resources.cpu`, but a streamed dataset's `data.workers` decode
in processes of their own: workers that with the training process need more CPUs than the
trial reserved would take cores from the trials packed beside it, slowing every one of them
(and their timings) with no error anywhere. So an explicit data.workers must fit (`workers + 1
<= resources.cpu`); unset, each trial takes what fits (`streaming.default_workers`). Refused,
not warned: the fix is one number in the sweep file, and a warning scrolls away under Ray's log
while the sweep runs slow for hours.
"""

from __future__ import annotations

from trainables.config import DataConfig
from trainables.datasets.streaming import default_workers
from trainables.errors import ConfigError


def check_data_workers(data: DataConfig, cpus: float, where: str) -> None:
    """ConfigError (one line, starting with `where`) when `data.workers` decoding processes and
    the training process need more than the `cpus` (resources.cpu) each trial reserves.

    Workers that are never started pass: 0 (decoding in the training process), unset (the
    trial's default fits), or a dataset decoded into memory (`storage: memory`)."""
    workers = data.workers
    if not workers or data.storage == "memory" or workers + 1 <= cpus:
        return
    raise ConfigError(
        f"{where}: data.workers is {workers}, and with the training process a trial needs "
        f"{workers + 1} CPUs, but resources.cpu reserves {cpus:g}: raise resources.cpu to "
        f"{workers + 1}, or lower data.workers (unset, a trial streams with "
        f"{default_workers(int(cpus))} here: resources.cpu - 1)"
    )
