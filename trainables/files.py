"""Writing files so that a crash mid-write never leaves a half-written file under the real name."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write` on `<path>.tmp`, then rename it to `path`; on failure remove the temporary.

    Readers see the old file or the new one, never a partial one (rename is atomic on POSIX).
    """
    temporary = path.with_name(path.name + ".tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
