"""`prunetune`, the console script of the installed package.

    prunetune run FILE.yaml [--set K=V ...] [--smoke] [--resume] [--address A] [--storage P]
                            [--name N] [--dry-run]
    prunetune dry-run FILE.yaml [...]      validate the sweep and list its trials; start nothing
    prunetune plot DIR [DIR ...] [...]     tables and figures of experiments
    prunetune export DIR --trial NAME [...] one round's network as ONNX, TorchScript or
                                           safetensors (flags: `python sweeps/export.py -h`)
    prunetune tensorboard DIR [--port P]   TensorBoard on an experiment (or a folder of them)
    prunetune list                         shipped sweeps; registered methods, datasets, models

FILE.yaml is a path, or the name of a sweep shipped with the package (`prunetune run quickstart
--smoke`). `run` takes the flags of `python sweeps/run_sweep.py`, `plot` those of
`python analysis/plot.py`; `prunetune run --help` lists them.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from sweeps.run_sweep import Commands

EXIT_BAD_INPUT = 2
COMMANDS = ("run", "dry-run", "plot", "export", "tensorboard", "list")


def _usage() -> str:
    return __doc__.split("\n\n")[1]


def list_registered() -> int:
    """`prunetune list`: what a sweep file can name, installed plug-ins included."""
    from sweeps.registries import plural, registered_names, registries
    from sweeps.spec import shipped_sweeps
    from trainables.errors import PrunetuneError
    from trainables.plugins import load_installed_plugins

    try:
        load_installed_plugins()
    except PrunetuneError as error:
        print(f"prunetune: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    lines = [("sweeps", shipped_sweeps())]
    lines += [(plural(kind), registered_names(kind)) for kind in registries()]
    width = max(len(title) for title, _ in lines) + 2
    for title, names in lines:
        print(f"{title + ':':<{width}}" + ", ".join(names))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Dispatch `prunetune COMMAND ...`; the exit status of the command (2: bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage:\n{_usage()}")
        return 0 if argv else EXIT_BAD_INPUT
    command, rest = argv[0], argv[1:]
    if command in ("run", "dry-run"):
        from sweeps import run_sweep

        return run_sweep.main(*_sweep_arguments(command, rest))
    if command == "plot":
        from analysis import plot

        return plot.main(rest, prog="prunetune plot")
    if command == "export":
        from sweeps import export

        return export.main(rest, prog="prunetune export")
    if command == "tensorboard":
        from sweeps import tensorboard_view

        return tensorboard_view.main(rest, prog="prunetune tensorboard")
    if command == "list":
        return list_registered()
    print(f"prunetune: unknown command {command!r}; one of {', '.join(COMMANDS)}",
          file=sys.stderr)
    return EXIT_BAD_INPUT


def _sweep_arguments(command: str, rest: list[str]) -> tuple[list[str], str, Commands]:
    from sweeps import run_sweep

    extra = ["--dry-run"] if command == "dry-run" else []
    return [*rest, *extra], f"prunetune {command}", run_sweep.CONSOLE_COMMANDS


def console() -> NoReturn:
    """The `prunetune` console script (a sweep runs as `run_sweep.command` does: in a process of
    its own, with the start-up's garbage collection paused)."""
    argv = sys.argv[1:]
    if argv and argv[0] in ("run", "dry-run"):
        from sweeps import run_sweep

        run_sweep.command(*_sweep_arguments(argv[0], argv[1:]))
    sys.exit(main(argv))


if __name__ == "__main__":
    console()
