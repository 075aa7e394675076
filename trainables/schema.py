"""The fields a trial writes and analysis reads, defined once (no torch, no Ray here: the
analysis imports it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The field of a round row naming its round checkpoint's slot in the trial directory.
ROUND_CHECKPOINT = "round_checkpoint"
#: Where rows of the earlier layout named their checkpoint (Ray's own checkpoint directory).
LEGACY_CHECKPOINT = "checkpoint_dir_name"


def row_checkpoint(row: Mapping[str, Any]) -> str | None:
    """The checkpoint directory a round row names, relative to its trial directory (either
    layout); None when it names none."""
    name = row.get(ROUND_CHECKPOINT) or row.get(LEGACY_CHECKPOINT)
    return name if isinstance(name, str) and name else None
