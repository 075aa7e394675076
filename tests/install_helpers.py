"""Installing prunetune and plug-ins as a user would, offline: copies of the sources (what git
would ship: tracked and untracked, not ignored), built by pip without build isolation (the
test venv's setuptools), into a fresh venv or a `--target` folder outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def source_copy(folder: Path, destination: Path) -> Path:
    """The files git would ship from `folder` (a part of this checkout), copied to
    `destination`; builds there leave nothing behind in the checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "."],
        cwd=folder, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for relative in filter(None, listed):
        source = folder / relative
        if source.is_file():  # a file deleted but not yet committed is still listed
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def pip(*args: str, python: str | None = None) -> None:
    """`pip install`-style command with no index and no build isolation; AssertionError with
    pip's output if it fails."""
    command = [sys.executable, "-m", "pip", *(["--python", python] if python else []), *args,
               "--no-index", "--no-build-isolation", "--no-deps", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def fresh_venv(directory: Path) -> Path:
    """A new venv at `directory` whose own site-packages comes first and which finds the
    dependencies (torch, Ray, ...) in this test environment's site-packages after it. That
    folder holds this checkout's editable install only as a `.pth` hook, which Python runs only
    in a site directory: the checkout's packages stay invisible."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True)
    python = directory / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    (Path(own) / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would point a child at the checkout or at a
    running Ray."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "RAY_ADDRESS", "VIRTUAL_ENV")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}
